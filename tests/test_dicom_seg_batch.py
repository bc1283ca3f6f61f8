"""output_format="dicom-seg": a DICOM SEG per series through the batch (API and CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from _dicom_fixtures import ct_volume, write_oblique_ct_series
from click.testing import CliRunner
from conftest import OBLIQUE

from nimask._version import __version__
from nimask.batch.run import mask_dataset
from nimask.batch.settings import MaskSettings
from nimask.cli import main
from nimask.exceptions import ParameterError

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

STEM = "PAT01_20240131_7_oblique_head"


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A DICOM export: one oblique CT series of 20 slices written by SimpleITK."""
    folder = tmp_path_factory.mktemp("export")
    write_oblique_ct_series(folder / "study" / "series", shared_data, OBLIQUE)
    return folder


def _sources(folder: Path) -> dict[str, np.ndarray]:
    """SOPInstanceUID -> ImagePositionPatient of every file under ``folder``."""
    out = {}
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out[ds.SOPInstanceUID] = np.asarray(ds.ImagePositionPatient, dtype=float)
    return out


def _slice_order(sources: dict[str, np.ndarray], normal: np.ndarray) -> list[str]:
    return sorted(sources, key=lambda uid: float(sources[uid] @ normal))


def test_seg_through_the_batch_matches_the_nifti_mask(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    results = mask_dataset(export, out, dicom=True, output_format="dicom-seg", workers=1,
                           report=report)
    (res,) = results
    assert res.status == "written", res.error
    assert sorted(p.name for p in out.iterdir()) == [
        f"{STEM}_mask.json", f"{STEM}_mask.nii.gz", f"{STEM}_seg.dcm"]
    assert res.output == str(out / f"{STEM}_mask.nii.gz")
    # the report shows the series as the user knows it: description, number, UID
    row = json.loads(report.read_text())["files"][0]
    sidecar = json.loads((out / f"{STEM}_mask.json").read_text())
    assert row["input"] == f"oblique head (series 7, UID {sidecar['SeriesInstanceUID']})"

    # the JSON sidecar: the series' identity and nimask's parameters, nothing else
    first = pydicom.dcmread(next(export.rglob("*.dcm")), stop_before_pixels=True)
    assert sidecar == {
        "StudyInstanceUID": "1.2.826.0.1.3680043.10.1234.999",
        "SeriesInstanceUID": first.SeriesInstanceUID,
        "SeriesDescription": "oblique head",
        "SeriesNumber": 7,
        "Modality": "CT",
        "SourceFiles": 20,
        "SourceImages": 20,
        "nimask": {"version": __version__, "provenance": f"nimask {__version__} otsu r=3",
                   "threshold_mode": "otsu", "threshold": None, "closing_radius": 3,
                   "closing_radius_mm": None},
    }
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or p.name.startswith(".")]

    seg = hd.seg.segread(out / f"{STEM}_seg.dcm")
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "Head"  # default settings: a head mask
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "69536005"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("nimask", __version__)
    assert algorithm.AlgorithmParameters == f"provenance=nimask {__version__} otsu r=3"
    # references: the series, each of its 20 instances, one frame lying on each
    sources = _sources(export)
    assert len(sources) == 20
    (ref_series,) = seg.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == sidecar["SeriesInstanceUID"]
    assert seg.StudyInstanceUID == sidecar["StudyInstanceUID"]
    assert {i.ReferencedSOPInstanceUID for i in ref_series.ReferencedInstanceSequence} == set(
        sources)
    assert len(seg.PerFrameFunctionalGroupsSequence) == 20
    for item in seg.PerFrameFunctionalGroupsSequence:
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_allclose(item.PlanePositionSequence[0].ImagePositionPatient,
                                   sources[uid], atol=1e-4)
    # decoded in slice order: the NIfTI mask the batch wrote, voxel for voxel
    nifti = sitk.ReadImage(str(out / f"{STEM}_mask.nii.gz"))
    normal = np.asarray(nifti.GetDirection()).reshape(3, 3)[:, 2]
    order = _slice_order(sources, normal)
    decoded = seg.get_pixels_by_source_instance(order, segment_numbers=[1])[..., 0]
    expected = sitk.GetArrayFromImage(nifti)
    assert expected.shape == (20, 56, 60)
    assert 0 < int(expected.sum()) == res.mask_voxels < expected.size
    np.testing.assert_array_equal(decoded, expected)


def test_seg_rerun_skips_then_remakes_for_other_settings(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (first,) = mask_dataset(export, out, dicom=True, output_format="dicom-seg", workers=1)
    seg_file = out / f"{STEM}_seg.dcm"
    stamp = seg_file.stat().st_mtime_ns
    (again,) = mask_dataset(export, out, dicom=True, output_format="dicom-seg", workers=1,
                            skip_existing=True)
    assert again.status == "skipped"
    assert seg_file.stat().st_mtime_ns == stamp
    # a NIfTI mask alone (a run without dicom-seg) does not count for a SEG run
    seg_file.unlink()
    (remade,) = mask_dataset(export, out, dicom=True, output_format="dicom-seg", workers=1,
                             skip_existing=True)
    assert remade.status == "written"
    assert f"mask made again: no DICOM SEG yet ({STEM}_seg.dcm)" in remade.notes
    # other parameters: the SEG's provenance says it is stale
    (changed,) = mask_dataset(export, out, dicom=True, output_format="dicom-seg", workers=1,
                              skip_existing=True, closing_radius=1)
    assert changed.status == "written"
    params = hd.seg.segread(seg_file).SegmentSequence[0] \
        .SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters
    assert params == f"provenance=nimask {__version__} otsu r=1"
    # a file at the SEG's path that nimask did not write is never replaced
    seg_file.write_bytes(b"not dicom")
    mask_stamp = (out / f"{STEM}_mask.nii.gz").stat().st_mtime_ns
    (foreign,) = mask_dataset(export, out, dicom=True, output_format="dicom-seg", workers=1,
                              skip_existing=True, closing_radius=1)
    assert foreign.status == "failed"
    assert foreign.error == (f"{STEM}_seg.dcm already exists and is not a DICOM SEG written "
                             "by nimask: it is never replaced; move it, or write the masks "
                             "to another folder")
    assert seg_file.read_bytes() == b"not dicom"
    assert (out / f"{STEM}_mask.nii.gz").stat().st_mtime_ns == mask_stamp
    assert first.mask_voxels is not None


def test_segment_kind_follows_the_preset() -> None:
    assert MaskSettings.create(None, 3).segment_kind == "head"
    assert MaskSettings.create(None, 3, preset="ct-head").segment_kind == "head"
    assert MaskSettings.create(None, 3, preset="ct-brain").segment_kind == "brain"
    assert MaskSettings.create(None, 3, preset="mri-brain").segment_kind == "brain"


def test_seg_of_a_non_dicom_input_fails_that_case(
    export: Path, tmp_path: Path, shared_data: Path
) -> None:
    nifti = tmp_path / "in" / "head.nii.gz"
    nifti.parent.mkdir()
    sitk.WriteImage(ct_volume(shared_data, shrink=4), str(nifti))
    out = tmp_path / "out"
    results = mask_dataset([export, nifti], out, dicom=True, output_format="dicom-seg",
                           workers=1)
    by_input = {Path(r.output).name: r for r in results if r.status != "failed"}
    assert by_input[f"{STEM}_mask.nii.gz"].status == "written"
    (failed,) = [r for r in results if r.status == "failed"]  # failed rows have no output
    assert Path(failed.input).name == "head.nii.gz"
    assert failed.status == "failed"
    assert failed.error == ("output_format 'dicom-seg' needs a DICOM series; this input is a "
                            "nii.gz file (use another output_format for it)")
    assert not (out / "head_mask.nii.gz").exists()


def test_seg_without_any_dicom_input_is_refused_before_any_work(
    tmp_path: Path, shared_data: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    sitk.WriteImage(ct_volume(shared_data, shrink=4), str(folder / "a.nii.gz"))
    out = tmp_path / "out"
    with pytest.raises(ParameterError, match=r"^output_format 'dicom-seg' writes a DICOM SEG "
                       r"over a DICOM series, and no input is one"):
        mask_dataset(folder, out, output_format="dicom-seg")
    assert not out.exists()
    res = CliRunner().invoke(main, ["mask", str(folder), str(out), "--output-format",
                                    "dicom-seg"])
    assert res.exit_code == 2
    assert "no input is one" in res.output
    assert not out.exists()


def test_seg_from_the_cli(export: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["mask", str(export), str(out), "--dicom", "--workers",
                                    "1", "--output-format", "dicom-seg", "--preset",
                                    "ct-brain"])
    assert res.exit_code == 0, res.output
    assert "1 mask written" in res.output
    seg = hd.seg.segread(out / f"{STEM}_seg.dcm")
    assert seg.SegmentSequence[0].SegmentLabel == "Brain"  # the ct-brain preset
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "12738006"
    assert "warning" not in res.output.replace("touches_border", "")


def test_seg_without_highdicom_names_the_extra(export: Path, tmp_path: Path) -> None:
    """Without highdicom (import blocked in a fresh interpreter) the run is refused
    before any work with the pip hint."""
    out = tmp_path / "out"
    code = (
        "import sys; sys.modules['highdicom'] = None\n"
        "from nimask.batch.run import mask_dataset\n"
        "from nimask.exceptions import MissingDependencyError\n"
        "try:\n    mask_dataset(sys.argv[1], sys.argv[2], dicom=True,"
        " output_format='dicom-seg')\n"
        "except MissingDependencyError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(export), str(out)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, check=True)
    assert done.stdout.strip() == (
        "MissingDependencyError writing DICOM SEG needs the optional package 'highdicom': "
        'pip install "nimask[dicom]"'
    )
    assert not out.exists()


@pytest.mark.slow
def test_seg_of_a_real_enhanced_series_through_the_batch(
    tmp_path: Path, shared_data: Path
) -> None:
    """The real Siemens enhanced T1w (one file, 96 frames): each SEG frame references its
    source frame, lies on it, and holds the NIfTI mask's slice at that position."""
    source = shared_data / "dicom" / "mr_t1w_enhanced_siemens_xa30"
    out = tmp_path / "out"
    (res,) = mask_dataset(source, out, dicom=True, output_format="dicom-seg", workers=1)
    assert res.status == "written", res.error
    (seg_file,) = out.glob("*_seg.dcm")
    (mask_file,) = out.glob("*_mask.nii.gz")
    assert seg_file.name == mask_file.name.replace("_mask.nii.gz", "_seg.dcm")
    (src_file,) = source.iterdir()
    src = pydicom.dcmread(src_file, stop_before_pixels=True)
    src_positions = [np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
                     for f in src.PerFrameFunctionalGroupsSequence]
    seg = pydicom.dcmread(seg_file)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    nifti = sitk.ReadImage(str(mask_file))
    expected = sitk.GetArrayFromImage(nifti)
    assert int(expected.sum()) == res.mask_voxels > 0
    origin = np.asarray(nifti.GetOrigin())
    normal = np.asarray(nifti.GetDirection()).reshape(3, 3)[:, 2]
    step = nifti.GetSpacing()[2]
    pixels = seg.pixel_array
    assert pixels.shape == (96, *expected.shape[1:])
    seen = set()
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ref = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
        number = int(ref.ReferencedFrameNumber)
        position = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        np.testing.assert_allclose(position, src_positions[number - 1], atol=1e-4)
        k = round(float((position - origin) @ normal) / step)
        seen.add(k)
        np.testing.assert_array_equal(pixels[i], expected[k])
    assert seen == set(range(96))
