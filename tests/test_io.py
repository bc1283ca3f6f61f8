"""Reading and writing: header fidelity and the SimpleITK pitfalls nimask handles."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_image

from nimask import mask_dataset
from nimask.data.phantoms import ct_head_phantom
from nimask.exceptions import InvalidVolumeError, VolumeReadError
from nimask.io.nifti import inspect_nifti, read_volume


def _affine(rotation_deg: float, shift: tuple[float, float, float]) -> np.ndarray:
    a = np.radians(rotation_deg)
    affine = np.eye(4)
    affine[:3, :3] = np.array(
        [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    ) @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = shift
    return affine


def ct_array() -> np.ndarray:
    """A CT phantom as an (x, y, z) int16 array for nibabel."""
    return sitk.GetArrayFromImage(ct_head_phantom((40, 36, 20))).T.copy()


def test_qform_sform_differ_mask_keeps_both(tmp_path: Path) -> None:
    qform = _affine(10, (-20.0, 15.0, -30.0))
    sform = qform.copy()
    sform[:3, 3] += (4.0, -2.5, 3.0)  # a few mm away from the qform
    image = nib.Nifti1Image(ct_array(), sform)
    image.set_qform(qform, code=1)
    image.set_sform(sform, code=2)
    image.header.set_xyzt_units("mm", "sec")
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "oblique.nii.gz"
    nib.save(image, src)

    [result] = mask_dataset(tmp_path / "in", tmp_path / "out", (0, 100), 1)
    assert result.status == "written", result.error
    mask_nib = nib.load(tmp_path / "out" / "oblique_mask.nii.gz")
    src_nib = nib.load(src)
    np.testing.assert_allclose(mask_nib.affine, src_nib.affine, atol=1e-5)
    np.testing.assert_allclose(mask_nib.affine, sform, atol=1e-5)
    np.testing.assert_allclose(mask_nib.header.get_qform(), qform, atol=1e-5)
    for key in ("qform_code", "sform_code", "xyzt_units", "dim_info"):
        assert mask_nib.header[key] == src_nib.header[key], key
    assert mask_nib.get_data_dtype() == np.uint8
    assert mask_nib.shape == src_nib.shape

    # ITK's own view of the geometry is identical as well.
    itk_src = sitk.ReadImage(str(src))
    itk_mask = sitk.ReadImage(str(tmp_path / "out" / "oblique_mask.nii.gz"))
    assert itk_mask.GetOrigin() == itk_src.GetOrigin()
    assert itk_mask.GetSpacing() == itk_src.GetSpacing()
    assert itk_mask.GetDirection() == itk_src.GetDirection()

    # ... whereas writing the mask with ITK alone moves it to the qform.
    itk_written = tmp_path / "itk_written.nii.gz"
    sitk.WriteImage(itk_mask, str(itk_written))
    assert not np.allclose(nib.load(itk_written).affine, src_nib.affine, atol=1e-3)


def test_mask_file_contents(tmp_path: Path, write_nifti: Callable[..., Path]) -> None:
    src = write_nifti(ct_head_phantom((30, 30, 16)), "ct.nii.gz")
    [result] = mask_dataset(src.parent, tmp_path / "out", (-500, 3000), 2)
    mask = nib.load(result.output)
    data = np.asarray(mask.dataobj)
    assert data.dtype == np.uint8
    assert set(np.unique(data).tolist()) == {0, 1}
    assert mask.header["descrip"].tobytes().rstrip(b"\0") == b"nimask 0.1.0 thr=-500:3000 r=2"
    assert mask.header["cal_max"] == 1
    assert mask.header.get_slope_inter() == (None, None)
    assert int(data.sum()) == result.mask_voxels


def test_truncated_gzip_is_detected(tmp_path: Path, write_nifti: Callable[..., Path]) -> None:
    src = write_nifti(ct_head_phantom((40, 40, 20)), "cut.nii.gz")
    good = write_nifti(ct_head_phantom((20, 20, 10)), "good.nii.gz")
    blob = src.read_bytes()
    src.write_bytes(blob[: len(blob) * 2 // 3])
    # The pitfall: SimpleITK reads the truncated file without error.
    assert sitk.ReadImage(str(src)).GetSize() == (40, 40, 20)
    with pytest.raises(VolumeReadError, match="truncated"):
        read_volume(src)
    results = mask_dataset(src.parent, tmp_path / "out", (-500, 3000), 1)
    assert [r.status for r in results] == ["failed", "written"]
    assert "truncated" in results[0].error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_mask.nii.gz"]
    assert good.exists()


def test_header_claiming_more_data_than_the_file_holds(tmp_path: Path) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4 + np.zeros(1000, np.float32).tobytes()
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(raw))
    with pytest.raises(VolumeReadError, match="header needs 32000000352"):
        read_volume(path)


def test_singleton_fourth_axis_is_squeezed_with_a_note(tmp_path: Path) -> None:
    data = ct_array()[..., np.newaxis]
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(data, _affine(0, (1.0, 2.0, 3.0))), tmp_path / "in" / "t1.nii.gz")
    [result] = mask_dataset(tmp_path / "in", tmp_path / "out", (0, 100), 0)
    assert result.status == "written", result.error
    assert any("squeezed" in note for note in result.notes)
    mask = nib.load(result.output)
    assert mask.shape == data.shape[:3]
    assert mask.header["dim"][0] == 3
    np.testing.assert_array_equal(
        np.asarray(mask.dataobj), ((data[..., 0] >= 0) & (data[..., 0] <= 100)).astype(np.uint8)
    )


def test_real_4d_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fmri.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.int16), np.eye(4)), path)
    with pytest.raises(InvalidVolumeError, match="4D volume with 3 time points"):
        read_volume(path)


def test_nifti2_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "n2.nii.gz"
    nib.save(nib.Nifti2Image(ct_array(), np.eye(4)), path)
    with pytest.raises(VolumeReadError, match="NIfTI-2 header: not supported"):
        inspect_nifti(path)


def test_scaled_data_thresholds_apply_in_scaled_units(tmp_path: Path) -> None:
    raw = np.arange(0, 4000, 2, dtype=np.int16).reshape(10, 10, 20)
    image = nib.Nifti1Image(raw, np.eye(4))
    image.header.set_slope_inter(0.5, -1024.0)
    (tmp_path / "in").mkdir()
    nib.save(image, tmp_path / "in" / "scaled.nii.gz")
    [result] = mask_dataset(tmp_path / "in", tmp_path / "out", (-500, 0), 0)
    hu = raw * 0.5 - 1024
    expected = ((hu >= -500) & (hu <= 0)).astype(np.uint8)
    assert result.mask_voxels == int(expected.sum()) == 501
    np.testing.assert_array_equal(np.asarray(nib.load(result.output).dataobj), expected)
    assert nib.load(result.output).header.get_slope_inter() == (None, None)


def test_uint8_volume_with_spec_window(tmp_path: Path, write_nifti: Callable[..., Path]) -> None:
    values = np.arange(4 * 8 * 8, dtype=np.int64).reshape(4, 8, 8) % 256
    src = write_nifti(make_image(values.astype(np.uint8)), "u8.nii.gz")
    [result] = mask_dataset(src.parent, tmp_path / "out", (50, 300), 0)
    assert result.status == "written", result.error
    assert result.mask_voxels == int((values >= 50).sum())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"plain text, not an image", "not a NIfTI file"),
        (gzip.compress(b"x" * 400), "not a NIfTI file"),
    ],
    ids=["empty", "text", "gzip-garbage"],
)
def test_not_nifti(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(content)
    with pytest.raises(VolumeReadError, match=message):
        read_volume(path)
