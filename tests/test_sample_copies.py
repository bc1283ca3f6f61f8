"""The BIDS and DICOM copies of the bundled sample (README's cohort commands)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import nimask
from nimask.data import write_sample_bids, write_sample_dicom
from nimask.io.dicom import find_series, read_series


def test_dicom_copy_reads_back_as_the_sample(tmp_path: Path) -> None:
    folder = write_sample_dicom(tmp_path / "dicom")
    sample = sitk.ReadImage(str(nimask.sample_path()))
    assert len(list(folder.glob("*.dcm"))) == sample.GetSize()[2]
    scan = find_series(folder)
    assert len(scan.series) == 1
    image, _ = read_series(scan.series[0])
    assert image.GetSize() == sample.GetSize()
    assert np.allclose(image.GetOrigin(), sample.GetOrigin(), atol=1e-4)
    assert np.allclose(image.GetSpacing(), sample.GetSpacing(), atol=1e-6)
    assert np.allclose(image.GetDirection(), sample.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayViewFromImage(image),
                          sitk.GetArrayViewFromImage(sample).astype(np.float32))


def test_dicom_copy_gives_the_niftis_mask(tmp_path: Path) -> None:
    folder = write_sample_dicom(tmp_path / "dicom")
    from_dicom = nimask.mask_dataset(folder, tmp_path / "d", dicom=True, progress=False)
    from_nifti = nimask.mask_dataset(nimask.sample_folder(), tmp_path / "n", progress=False)
    assert [r.status for r in from_dicom + from_nifti] == ["written", "written"]
    a = sitk.GetArrayFromImage(sitk.ReadImage(from_dicom[0].output))
    b = sitk.GetArrayFromImage(sitk.ReadImage(from_nifti[0].output))
    assert int(b.sum()) == from_nifti[0].mask_voxels > 0
    assert int(np.count_nonzero(a != b)) == 0
    sidecar = json.loads(Path(from_dicom[0].output).with_name(
        Path(from_dicom[0].output).name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["SeriesDescription"] == "sample T1"


def test_bids_copy_is_one_subject(tmp_path: Path) -> None:
    root = write_sample_bids(tmp_path / "bids")
    assert json.loads((root / "dataset_description.json").read_text())["BIDSVersion"]
    t1w = root / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    assert t1w.read_bytes() == nimask.sample_path().read_bytes()
    results = nimask.mask_bids(root, tmp_path / "out", participant_label=["01"], progress=False)
    assert [Path(r.output).name for r in results] == ["sub-01_desc-head_mask.nii.gz"]
