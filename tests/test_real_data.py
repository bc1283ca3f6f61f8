"""The documented function on the real volumes of ``shared/data``."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from nimask import brain_mask, generate_brain_mask_dataset, mask_dataset

pytestmark = pytest.mark.slow

CT = "invesalius_ct_head_hu.nii.gz"
T1 = "itk_t1_2x2x3mm.nii.gz"
MNI = "mni152_t1_brain_1mm.nii.gz"


def load(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


def copy_inputs(shared: Path, dest: Path, *names: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(shared / name, dest / name)
    return dest


def test_ct_tissue_window_reproduces_invesalius_mask_exactly(shared_data: Path) -> None:
    # InVesalius' tissue mask is the HU window -142..2986 with no closing.
    image = sitk.ReadImage(str(shared_data / CT))
    mask = sitk.GetArrayFromImage(brain_mask(image, (-142, 2986), 0))
    reference = load(shared_data / "invesalius_ct_tissuethresh_mask.nii.gz")
    assert int(np.count_nonzero(mask != reference)) == 0
    assert int(mask.sum()) == 2319106


def test_ct_head_window_in_hu(shared_data: Path, tmp_path: Path) -> None:
    inputs = copy_inputs(shared_data, tmp_path / "in", CT)
    generate_brain_mask_dataset(inputs, tmp_path / "out", threshold=(-500, 3000))
    out = tmp_path / "out" / "invesalius_ct_head_hu_mask.nii.gz"
    mask = load(out)
    reference = load(shared_data / "invesalius_ct_tissuethresh_mask.nii.gz")
    # Measured: 2,430,929 voxels (34.35 %), Dice 0.9765 with the tissue mask.
    assert 0.976 <= dice(mask, reference) <= 0.977
    assert 0.343 <= mask.mean() <= 0.344
    src, written = nib.load(inputs / CT), nib.load(out)
    np.testing.assert_allclose(written.affine, src.affine, atol=1e-5)
    assert written.shape == src.shape == (256, 256, 108)
    bone = load(shared_data / "invesalius_ct_bonethresh_mask.nii.gz")
    assert np.all(mask[bone > 0] == 1)  # the whole skull is inside the head mask


def test_t1_otsu_is_a_head_mask(shared_data: Path, tmp_path: Path) -> None:
    inputs = copy_inputs(shared_data, tmp_path / "in", T1)
    [result] = mask_dataset(inputs, tmp_path / "out")
    assert result.status == "written"
    assert result.threshold_mode == "otsu"
    assert result.otsu_threshold == 47.0
    mask = load(Path(result.output))
    brain = load(shared_data / "itk_brainmask_2x2x3mm.nii.gz")
    # A head mask: 23.9 % of the volume, it holds 98.6 % of the brain but is
    # almost twice as large (Dice 0.69), because scalp and skull are included.
    assert 0.235 <= mask.mean() <= 0.243
    assert np.count_nonzero(mask[brain > 0]) / np.count_nonzero(brain) > 0.98
    assert 0.68 <= dice(mask, brain) <= 0.70


def test_mni_template_otsu(shared_data: Path) -> None:
    image = sitk.ReadImage(str(shared_data / MNI))
    mask = sitk.GetArrayFromImage(brain_mask(image))
    reference = load(shared_data / "mni152_brainmask_1mm.nii.gz")
    assert dice(mask, reference) >= 0.994  # measured 0.9947


def test_whole_shared_folder(shared_data: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(shared_data, inputs)
    results = mask_dataset(inputs, tmp_path / "out", threshold=None, closing_radius=1)
    by_name = {Path(r.input).name: r for r in results}
    # The big-endian .nii is not an input (only .nii.gz files are).
    assert "small_bigendian_anatomical.nii" not in by_name
    assert len(results) == 9
    failed = [name for name, r in by_name.items() if r.status == "failed"]
    assert failed == ["bad_4d_fmri_example4d.nii.gz"]
    assert "4D volume with 2 time points" in by_name[failed[0]].error
    singleton = by_name["bad_4d_singleton_dipy_S0_10slices.nii.gz"]
    assert singleton.status == "written"
    assert any("squeezed" in n for n in singleton.notes)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(written) == 8
    assert "bad_4d_fmri_example4d_mask.nii.gz" not in written
    for name, result in by_name.items():
        if result.status != "written":
            continue
        src, mask = nib.load(inputs / name), nib.load(result.output)
        assert mask.shape == src.shape[:3]
        np.testing.assert_allclose(mask.affine, src.affine, atol=1e-5)
        assert mask.get_data_dtype() == np.uint8
    # Input files are untouched.
    for name in by_name:
        assert (inputs / name).read_bytes() == (shared_data / name).read_bytes()


def test_two_valued_reference_masks_mask_to_themselves(shared_data: Path) -> None:
    for name in ("itk_brainmask_2x2x3mm.nii.gz", "invesalius_ct_bonethresh_mask.nii.gz"):
        image = sitk.ReadImage(str(shared_data / name))
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(brain_mask(image, None, 0)), sitk.GetArrayFromImage(image)
        )
