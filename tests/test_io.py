"""Reading and writing: header fidelity and the SimpleITK pitfalls nimask handles."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from _nifti_fixtures import raw_nifti
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


# --- mirrored and odd geometry headers -----------------------------------------------

def _pixdim(qfac: float = 1.0, x: float = 2.0, y: float = 2.0, z: float = 3.0) -> np.ndarray:
    return np.array([qfac, x, y, z, 1, 1, 1, 1], dtype=np.float32)


_QUATERN = {"quatern_b": 0.1, "quatern_c": -0.2, "quatern_d": 0.3,
            "qoffset_x": -20.0, "qoffset_y": -30.0, "qoffset_z": 5.0}
_SFORM = {"srow_x": [0, 2.0, 0, -20.0], "srow_y": [-2.0, 0, 0, 14.0], "srow_z": [0, 0, 3.0, 5.0]}
# Headers whose geometry nibabel's writer "fixes" (or where the readers disagree).
MIRRORED = {
    "qfac-1": dict(pixdim=_pixdim(qfac=-1.0), qform_code=1, sform_code=0, **_QUATERN),
    "qfac-2": dict(pixdim=_pixdim(qfac=-2.0), qform_code=1, sform_code=0, **_QUATERN),
    "negative-x": dict(pixdim=_pixdim(x=-2.0), qform_code=1, sform_code=0, **_QUATERN),
    "negative-z": dict(pixdim=_pixdim(z=-3.0), qform_code=1, sform_code=0, **_QUATERN),
    "negative-y-qfac-1": dict(pixdim=_pixdim(qfac=-1.0, y=-2.0), qform_code=2, sform_code=0,
                              **_QUATERN),
    "qform-code-7": dict(qform_code=7, sform_code=0, **_QUATERN),
    "qform-code-minus-1": dict(qform_code=-1, sform_code=0, **_QUATERN),
    "sform-code-9": dict(qform_code=0, sform_code=9, **_SFORM),
    "sform-code-minus-3-with-qform": dict(qform_code=1, sform_code=-3, **_QUATERN, **_SFORM),
    "negative-x-with-sform": dict(pixdim=_pixdim(x=-2.0), qform_code=1, sform_code=2,
                                  **_QUATERN, **_SFORM),
}
ODD_FIELDS = {
    "qfac-1": None,
    "qfac-2": "pixdim[0] (qfac) = -2",
    "negative-x": "pixdim[1] = -2",
    "negative-z": "pixdim[3] = -3",
    "negative-y-qfac-1": "pixdim[2] = -2",
    "qform-code-7": "qform_code = 7 (outside 0-4)",
    "qform-code-minus-1": "qform_code = -1 (outside 0-4)",
    "sform-code-9": "sform_code = 9 (outside 0-4)",
    "sform-code-minus-3-with-qform": "sform_code = -3 (outside 0-4)",
    "negative-x-with-sform": "pixdim[1] = -2",
}


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize("case", sorted(MIRRORED))
def test_mirrored_headers_mask_reads_back_like_its_input(
    tmp_path: Path, case: str, dtype: type
) -> None:
    """ITK and nibabel each place the mask exactly where they place its input."""
    data = np.zeros((20, 18, 16), dtype=dtype)
    data[2:8, 3:12, 1:6] = 100  # an object away from every axis of symmetry
    obj = data > 50
    folder = tmp_path / "in"
    folder.mkdir()
    src = folder / "scan.nii.gz"
    src.write_bytes(gzip.compress(raw_nifti(data, **MIRRORED[case]), mtime=0))
    [result] = mask_dataset(folder, tmp_path / "out", (50, 150), 0, workers=1)
    assert result.status == "written", result.error
    out = tmp_path / "out" / "scan_mask.nii.gz"
    assert result.mask_voxels == int(obj.sum()) == 270
    odd = ODD_FIELDS[case]
    geometry_notes = [n for n in result.notes if "read differently" in n]
    if odd is None:
        assert geometry_notes == []
    else:
        assert geometry_notes == [
            f"header read differently by ITK and nibabel ({odd}): the mask keeps these "
            "fields unchanged, so each reader places the mask where it places the input"]

    # SimpleITK: the same origin, spacing and direction; resampled onto the
    # input's grid, the mask is exactly the object.
    itk_in, itk_mask = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    assert itk_mask.GetOrigin() == itk_in.GetOrigin()
    assert itk_mask.GetSpacing() == itk_in.GetSpacing()
    assert itk_mask.GetDirection() == itk_in.GetDirection()
    resampled = sitk.Resample(itk_mask, itk_in, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(resampled).T, obj.astype(np.uint8))

    # nibabel: the same affine, and the object's voxels.
    nib_in, nib_mask = nib.load(src), nib.load(out)
    np.testing.assert_array_equal(nib_mask.affine, nib_in.affine)
    np.testing.assert_array_equal(nib_mask.header.get_qform(), nib_in.header.get_qform())
    np.testing.assert_array_equal(nib_mask.header.get_sform(), nib_in.header.get_sform())
    np.testing.assert_array_equal(np.asarray(nib_mask.dataobj), obj.astype(np.uint8))

    # The spatial header fields are the input's, byte for byte.
    raw_in = inspect_nifti(src).header
    raw_mask = inspect_nifti(out).header
    for key in ("pixdim", "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
                "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z",
                "xyzt_units"):
        np.testing.assert_array_equal(raw_mask[key][:4] if key == "pixdim" else raw_mask[key],
                                      raw_in[key][:4] if key == "pixdim" else raw_in[key])


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_negative_pixdim_read_directly_as_itk_reads_it(tmp_path: Path, dtype: type) -> None:
    # nimask's own read (one decompression) takes ITK's geometry: a negative
    # spacing becomes a flipped direction column, as in ITK's ImageFileReader.
    data = np.arange(4 * 5 * 6, dtype=dtype).reshape(4, 5, 6)
    path = tmp_path / "neg.nii.gz"
    path.write_bytes(gzip.compress(raw_nifti(data, **MIRRORED["negative-y-qfac-1"])))
    mine, itk = read_volume(path).image, sitk.ReadImage(str(path))
    assert (mine.GetOrigin(), mine.GetSpacing(), mine.GetDirection()) == (
        itk.GetOrigin(), itk.GetSpacing(), itk.GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(mine),
                                  sitk.GetArrayViewFromImage(itk))


# --- the gzip stream must really end ----------------------------------------------------

def _size_field_forged(stream: bytes, size: int) -> bytes:
    """``stream`` cut short, its last four bytes set to ``size`` (the gzip ISIZE field)."""
    cut = bytearray(stream[: len(stream) * 2 // 3])
    cut[-4:] = struct.pack("<I", size % 2**32)
    return bytes(cut)


def _payload(dtype: type) -> tuple[np.ndarray, bytes]:
    data = (np.arange(30 * 28 * 26) % 1000).reshape(30, 28, 26).astype(dtype)
    return data, raw_nifti(data)


def _members(raw: bytes, at: int) -> bytes:
    return gzip.compress(raw[:at], mtime=0) + gzip.compress(raw[at:], mtime=0)


# name -> (builder of the file's bytes from the uncompressed NIfTI, expected reason)
BROKEN_STREAMS = {
    "cut-size-field-forged": (
        lambda raw: _size_field_forged(gzip.compress(raw, mtime=0), len(raw)),
        "truncated gzip file: the compressed stream ends before its end marker"),
    "second-member-cut-size-field-forged": (
        lambda raw: _size_field_forged(_members(raw, 352), len(raw) - 352),
        "truncated gzip file: the compressed stream ends before its end marker"),
    "complete-member-then-cut-member": (
        lambda raw: gzip.compress(raw, mtime=0) + gzip.compress(raw, mtime=0)[:200],
        "truncated gzip file: the compressed stream ends before its end marker"),
    "trailer-missing": (
        lambda raw: gzip.compress(raw, mtime=0)[:-8],
        "truncated gzip file: the compressed stream ends before its end marker"),
    "crc-wrong": (
        lambda raw: (lambda z: z[:-8] + bytes(4) + z[-4:])(gzip.compress(raw, mtime=0)),
        "the gzip stream is corrupt ("),
    "first-member-length-wrong": (
        lambda raw: (lambda a, b: a[:-4] + struct.pack("<I", 7) + b)(
            gzip.compress(raw[:1000], mtime=0), gzip.compress(raw[1000:], mtime=0)),
        "the gzip stream is corrupt ("),
    "short-member-then-garbage-size-field-forged": (
        lambda raw: gzip.compress(raw[:5000], mtime=0) + b"\0" * 100 + struct.pack(
            "<I", len(raw)),
        "file holds 5000 bytes of data but its header needs"),
}


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize("case", sorted(BROKEN_STREAMS))
def test_gzip_stream_must_end_with_its_checks(tmp_path: Path, case: str, dtype: type) -> None:
    # SimpleITK reads such files as a volume, with zeros where the data stop.
    build, reason = BROKEN_STREAMS[case]
    _, raw = _payload(dtype)
    folder = tmp_path / "in"
    folder.mkdir()
    bad = folder / "a_bad.nii.gz"
    bad.write_bytes(build(raw))
    (folder / "b_good.nii.gz").write_bytes(gzip.compress(raw, mtime=0))
    with pytest.raises(VolumeReadError) as caught:
        read_volume(bad)
    assert str(caught.value).startswith(reason)
    results = mask_dataset(folder, tmp_path / "out", (100, 600), 0, workers=1)
    assert [(r.status, r.error[: len(reason)]) for r in results] == [
        ("failed", reason), ("written", "")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b_good_mask.nii.gz"]


def test_multi_member_and_trailing_bytes_are_read(tmp_path: Path) -> None:
    data, raw = _payload(np.int16)
    expected = ((data >= 100) & (data <= 600)).astype(np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "members.nii.gz").write_bytes(_members(raw, 352) + gzip.compress(b"", mtime=0))
    (folder / "trailing.nii.gz").write_bytes(gzip.compress(raw, mtime=0) + b"\0" * 512)
    results = mask_dataset(folder, tmp_path / "out", (100, 600), 0, workers=1)
    assert [(r.status, r.notes) for r in results] == [
        ("written", []), ("written", ["512 bytes after the end of the gzip stream ignored"])]
    for result in results:
        np.testing.assert_array_equal(np.asarray(nib.load(result.output).dataobj), expected)
