"""Bad, odd and unusual inputs: each bad file fails alone with a one-line reason.

Every fixture is generated here.  A bad file must give ``status="failed"``
with a clear one-line reason in the result and in the log, no output file, and
the rest of the batch must go on.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from _nifti_fixtures import (
    AFFINE,
    checksums,
    header_only,
    load_mask,
    ramp,
    raw_nifti,
    write,
    write_scaled,
)

import nimask.batch.case
import nimask.io.nifti
from nimask import mask_dataset
from nimask.batch.case import process_file
from nimask.batch.settings import MaskSettings
from nimask.exceptions import InputFolderError, ParameterError, VolumeReadError
from nimask.io.discovery import scan_folder
from nimask.io.nifti import read_volume
from nimask.records import Case

GOOD = ramp()
WINDOW = (20.0, 60.0)


def _truncated(path: Path) -> None:
    raw = gzip.compress(header_only(GOOD.shape, np.int16, GOOD.astype("<i2").tobytes("F")))
    path.write_bytes(raw[: len(raw) // 2])


def _rgb(path: Path) -> None:
    data = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))


def _beyond_4gib(path: Path) -> None:
    # The header claims 2**32 + 2**22 uint8 voxels, the file holds 2**22 random
    # bytes: the gzip size field (size mod 2**32) agrees with the header, and
    # the compressed file is big enough to pass the deflate-ratio bound.
    payload = np.random.default_rng(0).integers(0, 256, 1 << 22, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(header_only((4096, 1024, 1025), np.uint8, payload),
                                   compresslevel=1))


# name -> (builder, expected reason); the reason is checked as a substring.
BAD: dict[str, tuple[Callable[[Path], object], str]] = {
    "truncated.nii.gz": (_truncated, "truncated gzip file"),
    "plain_text.nii.gz": (lambda p: p.write_bytes(b"not an image\n" * 50),
                          "not a NIfTI file (no NIfTI-1 header)"),
    "gzip_text.nii.gz": (lambda p: p.write_bytes(gzip.compress(b"not an image\n" * 50)),
                         "not a NIfTI file (no NIfTI-1 header)"),
    "short_gzip.nii.gz": (lambda p: p.write_bytes(gzip.compress(b"tiny")),
                          "not a NIfTI file: only 4 bytes"),
    "zero_bytes.nii.gz": (lambda p: p.write_bytes(b""), "empty file"),
    "flat2d.nii.gz": (lambda p: write(p, GOOD[:, :, 0].copy()),
                      "not a 3D volume: 2D with shape [12, 10]"),
    "series4d.nii.gz": (lambda p: write(p, np.stack([GOOD, GOOD], axis=-1)),
                        "4D volume with 2 time points (shape [12, 10, 8, 2])"),
    "rgb.nii.gz": (_rgb, "voxels of type RGB (RGB/complex) are not supported"),
    "vector.nii.gz": (lambda p: write(p, np.zeros((4, 4, 4, 1, 3), np.float32),
                                      intent="vector"),
                      "vector-valued voxels (dim [4, 4, 4, 1, 3])"),
    "huge_header.nii.gz": (
        lambda p: p.write_bytes(gzip.compress(header_only((30000, 30000, 30000), np.float32))),
        "its header needs 108000000000352 bytes of data but a",
    ),
    "wrapped_size.nii.gz": (
        # 2**32 claimed voxels, none stored: ISIZE (mod 2**32) matches the header.
        lambda p: p.write_bytes(gzip.compress(header_only((16384, 16384, 16), np.uint8))),
        "its header needs 4294967648 bytes of data but a",
    ),
    "beyond_4gib.nii.gz": (_beyond_4gib, "file holds 4194656 bytes of data but its header "
                                         "needs 4299161952"),
    "all_nan.nii.gz": (lambda p: write(p, np.full((6, 5, 4), np.nan, np.float32)),
                       "volume holds no finite voxel (all NaN/Inf)"),
    "constant.nii.gz": (lambda p: write(p, np.full((6, 5, 4), 7, np.int16)),
                        "constant volume (every finite voxel is 7): Otsu's threshold is "
                        "undefined; give a manual threshold"),
}


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, (build, _) in BAD.items():
        build(folder / name)
    write(folder / "good.nii.gz", GOOD)
    os.symlink(folder / "missing_target.nii.gz", folder / "dangling.nii.gz")
    return folder


def test_each_bad_file_fails_alone_with_one_line_reason(
    bad_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    itk_reads: list[str] = []
    real_itk_reader = nimask.io.nifti._itk_reader

    def spy(path: Path) -> sitk.ImageFileReader:
        # every ITK read (header only for float volumes read directly, or whole)
        itk_reads.append(Path(path).name)
        return real_itk_reader(path)

    monkeypatch.setattr(nimask.io.nifti, "_itk_reader", spy)
    before = checksums(bad_folder)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="nimask"):
        results = mask_dataset(bad_folder, out, workers=1)  # Otsu; in-process for the spy
    by_name = {Path(r.input).name: r for r in results}
    assert sorted(by_name) == sorted([*BAD, "good.nii.gz", "dangling.nii.gz"])
    expected = {name: reason for name, (_, reason) in BAD.items()}
    expected["dangling.nii.gz"] = "broken symbolic link: its target"
    for name, reason in expected.items():
        res = by_name[name]
        assert res.status == "failed", name
        assert reason in res.error, (name, res.error)
        assert "\n" not in res.error
        assert not (out / name.replace(".nii.gz", "_mask.nii.gz")).exists()
        logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
                  and r.getMessage().startswith(f"{name}: ")]
        assert logged == [f"{name}: failed, no mask written: {res.error}"]
    assert by_name["good.nii.gz"].status == "written"
    assert sorted(os.listdir(out)) == ["good_mask.nii.gz"]
    # The payload and header checks run before ITK: no header lying about its
    # size ever reaches ITK (which would allocate what the header claims).
    assert sorted(set(itk_reads)) == ["all_nan.nii.gz", "constant.nii.gz", "good.nii.gz"]
    assert checksums(bad_folder) == before


def test_manual_threshold_on_constant_and_all_nan(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "constant.nii.gz", np.full((6, 5, 4), 30, np.int16))
    write(folder / "all_nan.nii.gz", np.full((6, 5, 4), np.nan, np.float32))
    results = {
        Path(r.input).name: r for r in mask_dataset(folder, tmp_path / "out", WINDOW, workers=1)
    }
    assert results["constant.nii.gz"].status == "written"
    assert load_mask(tmp_path / "out" / "constant_mask.nii.gz").sum() == 6 * 5 * 4
    # A manual window is a rule per voxel: no NaN voxel is in it -> empty mask, with a note.
    nan_res = results["all_nan.nii.gz"]
    assert nan_res.status == "written"
    assert nan_res.mask_voxels == 0
    assert nan_res.notes == ["120 NaN/Inf voxels set to background"]


@pytest.mark.parametrize("window", [None, (-1.0, 60.0)])
def test_nan_and_inf_never_foreground(tmp_path: Path, window: tuple[float, float] | None) -> None:
    # ITK's NIfTI reader silently turns NaN/Inf into 0; a window holding 0 (or
    # Otsu on data with negative values) would then make them foreground.
    data = ramp().astype(np.float32) - 10
    bad = [(0, 0, 0), (5, 5, 5), (11, 9, 7), (3, 4, 2)]
    values = [np.nan, np.inf, -np.inf, np.nan]
    for index, value in zip(bad, values, strict=True):
        data[index] = value
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "holes.nii.gz", data)
    (res,) = mask_dataset(folder, tmp_path / "out", window, 0)
    assert res.status == "written"
    assert res.notes == ["4 NaN/Inf voxels set to background"]
    mask = load_mask(tmp_path / "out" / "holes_mask.nii.gz")
    for index in bad:
        assert mask[index] == 0
    finite = np.isfinite(data)
    if window is None:
        expected = finite & (data > res.otsu_threshold)
    else:
        expected = finite & (data >= window[0]) & (data <= window[1])
    np.testing.assert_array_equal(mask, expected.astype(np.uint8))


DTYPES = ["u1", "i1", "<i2", "<u2", "<i4", "<u4", "<i8", "<f4", "<f8", ">i2", ">u2", ">i4",
          ">f4", ">f8"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_common_dtype_gives_the_same_masks(tmp_path: Path, dtype: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "vol.nii.gz", ramp(), dtype=dtype)
    assert nib.load(str(folder / "vol.nii.gz")).get_data_dtype() == np.dtype(dtype)
    (manual,) = mask_dataset(folder, tmp_path / "manual", WINDOW, 0)
    mask = load_mask(tmp_path / "manual" / "vol_mask.nii.gz")
    np.testing.assert_array_equal(mask, ((ramp() >= 20) & (ramp() <= 60)).astype(np.uint8))
    (otsu,) = mask_dataset(folder, tmp_path / "otsu", None, 0)
    assert manual.status == otsu.status == "written"
    # Otsu on the values 0..99: the same voxels whatever the storage type.
    otsu_mask = load_mask(tmp_path / "otsu" / "vol_mask.nii.gz")
    assert otsu_mask.sum() == int((ramp() >= 50).sum())
    np.testing.assert_array_equal(otsu_mask, (ramp() >= 50).astype(np.uint8))


def test_scaled_data_thresholds_apply_to_scaled_values(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    raw = ramp()
    write_scaled(folder / "scaled.nii.gz", raw, slope=2.0, inter=10.0)
    loaded = read_volume(folder / "scaled.nii.gz")
    # ITK applies scl_slope/scl_inter and returns float32 for scaled int16 data.
    assert loaded.image.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(loaded.image).T, raw * 2.0 + 10)
    (res,) = mask_dataset(folder, tmp_path / "out", WINDOW, 0)
    scaled = raw * 2.0 + 10
    expected = (scaled >= 20) & (scaled <= 60)
    assert res.mask_voxels == int(expected.sum())
    np.testing.assert_array_equal(load_mask(tmp_path / "out" / "scaled_mask.nii.gz"),
                                  expected.astype(np.uint8))
    # The mask is not scaled: slope/intercept are reset in its header.
    header = nib.load(str(tmp_path / "out" / "scaled_mask.nii.gz")).header
    assert header.get_slope_inter() == (None, None)


def test_one_voxel_thick_volume_is_processed(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    data = ramp((12, 10, 1))
    write(folder / "slab.nii.gz", data)
    (res,) = mask_dataset(folder, tmp_path / "out", WINDOW, 2)
    assert res.status == "written"
    mask = load_mask(tmp_path / "out" / "slab_mask.nii.gz")
    assert mask.shape == (12, 10, 1)
    thresholded = (data >= 20) & (data <= 60)
    assert np.all(mask[thresholded] == 1)  # closing only adds voxels
    expected = sitk.BinaryMorphologicalClosing(
        sitk.GetImageFromArray(thresholded.T.astype(np.uint8)), [2] * 3, sitk.sitkBall, 1, True
    )
    np.testing.assert_array_equal(mask, sitk.GetArrayFromImage(expected).T)


def test_trailing_singleton_axis_is_squeezed_with_a_note(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "single.nii.gz", ramp()[..., np.newaxis])
    (res,) = mask_dataset(folder, tmp_path / "out", WINDOW, 0)
    assert res.status == "written"
    assert res.notes == ["trailing singleton dimension(s) squeezed: [12, 10, 8, 1] -> [12, 10, 8]"]
    assert load_mask(tmp_path / "out" / "single_mask.nii.gz").shape == (12, 10, 8)


def test_uncompressed_file_named_nii_gz_is_processed_with_a_note(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "plain.nii.gz", ramp(), gzipped=False)
    (res,) = mask_dataset(folder, tmp_path / "out", WINDOW, 0)
    assert res.status == "written"
    assert res.notes == ["file is named .nii.gz but is not gzip-compressed; read as plain NIfTI"]
    out = tmp_path / "out" / "plain_mask.nii.gz"
    assert out.read_bytes()[:2] == b"\x1f\x8b"  # the mask itself is gzipped
    np.testing.assert_array_equal(load_mask(out), ((ramp() >= 20) & (ramp() <= 60)))


def test_awkward_file_names(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    names = {
        "with space.nii.gz": "with space_mask.nii.gz",
        "ünïcødé_脑.nii.gz": "ünïcødé_脑_mask.nii.gz",
        "sub.01.run.2.nii.gz": "sub.01.run.2_mask.nii.gz",
        "UPPER.NII.GZ": "UPPER_mask.nii.gz",
        "user_mask.nii.gz": "user_mask_mask.nii.gz",  # no nimask provenance: an input
    }
    for name in names:
        write(folder / name, ramp())
    results = mask_dataset(folder, tmp_path / "out", WINDOW, 0)
    assert [r.status for r in results] == ["written"] * len(names)
    assert sorted(os.listdir(tmp_path / "out")) == sorted(names.values())
    for out_name in names.values():
        assert load_mask(tmp_path / "out" / out_name).sum() == int(
            ((ramp() >= 20) & (ramp() <= 60)).sum()
        )


def test_entries_that_are_not_inputs_are_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "scan.nii.gz", ramp())
    (folder / "._scan.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (folder / "folder.nii.gz").mkdir()
    (folder / ".scan_mask.nii.gz.nimask-tmp-1-abc.nii.gz").write_bytes(b"partial")
    (folder / "notes.txt").write_text("x")
    scan = scan_folder(folder)
    assert [p.name for p in scan.inputs] == ["scan.nii.gz"]
    temporary = ("a temporary file of nimask (of a run writing here, or left by a stopped "
                 "one), not an input")
    assert [(p.name, why) for p, why in scan.ignored] == [
        ("._scan.nii.gz", "macOS resource-fork file, not a volume"),
        (".scan_mask.nii.gz.nimask-tmp-1-abc.nii.gz", temporary),
        ("folder.nii.gz", "a directory, not a file"),
    ]
    with caplog.at_level(logging.WARNING, logger="nimask"):
        results = mask_dataset(folder, tmp_path / "out", WINDOW, 0)
    assert [(Path(r.input).name, r.status) for r in results] == [
        ("scan.nii.gz", "written"), ("._scan.nii.gz", "ignored"),
        (".scan_mask.nii.gz.nimask-tmp-1-abc.nii.gz", "ignored"), ("folder.nii.gz", "ignored")]
    messages = [r.getMessage() for r in caplog.records]
    assert "ignoring folder.nii.gz: a directory, not a file" in messages
    assert "ignoring ._scan.nii.gz: macOS resource-fork file, not a volume" in messages
    assert f"ignoring .scan_mask.nii.gz.nimask-tmp-1-abc.nii.gz: {temporary}" in messages


def test_folder_with_only_ignored_entries_says_so(tmp_path: Path) -> None:
    (tmp_path / "x.nii.gz").mkdir()
    with pytest.raises(InputFolderError, match=r"no \.nii\.gz files in input folder: .*"
                       r"\(1 \.nii\.gz entries ignored\)"):
        mask_dataset(tmp_path, tmp_path / "out")


def test_unreadable_file_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests may run as root, for whom chmod 000 changes nothing: simulate the
    # PermissionError that open() raises for an ordinary user.
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "locked.nii.gz", ramp())
    write(folder / "open.nii.gz", ramp())
    real_open = open

    def guarded_open(file: object, *args: object, **kwargs: object) -> object:
        if Path(str(file)).name == "locked.nii.gz":
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(nimask.io.nifti, "open", guarded_open, raising=False)
    results = {
        Path(r.input).name: r for r in mask_dataset(folder, tmp_path / "out", WINDOW, workers=1)
    }
    assert results["locked.nii.gz"].status == "failed"
    assert results["locked.nii.gz"].error == "cannot open: Permission denied"
    assert results["open.nii.gz"].status == "written"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads files whatever their permissions")
def test_unreadable_file_chmod(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    locked = write(folder / "locked.nii.gz", ramp())
    locked.chmod(0)
    try:
        (res,) = mask_dataset(folder, tmp_path / "out", WINDOW)
    finally:
        locked.chmod(0o644)
    assert res.status == "failed"
    assert res.error == "cannot open: Permission denied"


def test_process_file_on_a_directory_does_not_raise(tmp_path: Path) -> None:
    (tmp_path / "d.nii.gz").mkdir()
    res = process_file(tmp_path / "d.nii.gz", tmp_path, MaskSettings.create())
    assert res.status == "failed"
    assert res.error == "is a directory, not a file"


# --- headers that fail alone, in-process, with their own reason -------------------------

def _gz(raw: bytes) -> bytes:
    return gzip.compress(raw, mtime=0)


def _cut_with_size_field(raw: bytes) -> bytes:
    """A truncated gzip file whose last four bytes are the full size (ISIZE)."""
    cut = bytearray(_gz(raw)[: len(_gz(raw)) * 2 // 3])
    cut[-4:] = struct.pack("<I", len(raw))
    return bytes(cut)


_I16 = GOOD.astype(np.int16)
_F32 = GOOD.astype(np.float32)
_DIM8 = np.array([8, 12, 10, 8, 1, 1, 1, 1], dtype=np.int16)
# name -> (file bytes, exact reason)
BAD_HEADERS: dict[str, tuple[bytes, str]] = {
    "vox_offset_inf.nii.gz": (_gz(raw_nifti(_I16, vox_offset=np.inf)),
                              "invalid header: vox_offset is inf"),
    "vox_offset_nan.nii.gz": (_gz(raw_nifti(_I16, vox_offset=np.nan)),
                              "invalid header: vox_offset is nan"),
    "vox_offset_inside.nii.gz": (
        _gz(raw_nifti(_F32, vox_offset=100)),
        "invalid header: vox_offset = 100 lies inside the 352-byte header of a single-file "
        "NIfTI-1 (readers disagree on where the voxels start)"),
    "vox_offset_negative.nii.gz": (
        _gz(raw_nifti(_I16, vox_offset=-16)),
        "invalid header: vox_offset = -16 lies inside the 352-byte header of a single-file "
        "NIfTI-1 (readers disagree on where the voxels start)"),
    "nan_inter_int16.nii.gz": (
        _gz(raw_nifti(_I16, scl_slope=2.0, scl_inter=np.nan)),
        "invalid header: scl_inter is nan with scl_slope 2: the scaled intensities are "
        "undefined"),
    "nan_inter_float32.nii.gz": (
        _gz(raw_nifti(_F32, scl_slope=2.0, scl_inter=np.nan)),
        "invalid header: scl_inter is nan with scl_slope 2: the scaled intensities are "
        "undefined"),
    "truncated_float32.nii.gz": (
        _cut_with_size_field(raw_nifti(_F32)),
        "truncated gzip file: the compressed stream ends before its end marker"),
    "truncated_int16.nii.gz": (
        _cut_with_size_field(raw_nifti(_I16)),
        "truncated gzip file: the compressed stream ends before its end marker"),
    "dim0_8.nii.gz": (_gz(raw_nifti(_I16, dim=_DIM8)),
                      "invalid header: dim[0] = 8 (must be 1 to 7)"),
    "dim0_8_big_endian.nii.gz": (_gz(raw_nifti(_I16.astype(">i2"), dim=_DIM8)),
                                 "invalid header: dim[0] = 8 (must be 1 to 7)"),
    "binary.nii.gz": (
        _gz(raw_nifti(np.zeros((8, 8, 8), np.uint8), datatype=1, bitpix=1)),
        "unsupported voxel type binary (NIfTI datatype 1): nimask masks volumes of 8- to "
        "64-bit integers, float32 and float64"),
    "float128.nii.gz": (
        _gz(raw_nifti(np.zeros((4, 4, 4, 2), np.float64).reshape(4, 4, 8), datatype=1536,
                      bitpix=128, dim=np.array([3, 4, 4, 4, 1, 1, 1, 1], np.int16))),
        "unsupported voxel type float128 (NIfTI datatype 1536): nimask masks volumes of 8- "
        "to 64-bit integers, float32 and float64"),
    "slope_overflow.nii.gz": (
        _gz(raw_nifti(_I16, scl_slope=1e37, scl_inter=0.0)),
        "scaling overflow: scl_slope = 1e+37 and scl_inter = 0 take 623 voxels beyond the "
        "float32 range ITK reads scaled voxels into"),
}


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_headers_fail_alone_with_their_reason_and_the_report_is_written(
    tmp_path: Path, workers: int
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, (content, _) in BAD_HEADERS.items():
        (folder / name).write_bytes(content)
    write(folder / "zz_good.nii.gz", GOOD)  # processed after every bad file
    report = tmp_path / "report.csv"
    out = tmp_path / "out"
    results = mask_dataset(folder, out, WINDOW, 0, workers=workers, report=report)
    by_name = {Path(r.input).name: r for r in results}
    for name, (_, reason) in BAD_HEADERS.items():
        assert (by_name[name].status, by_name[name].error) == ("failed", reason), name
    assert by_name["zz_good.nii.gz"].status == "written"
    assert os.listdir(out) == ["zz_good_mask.nii.gz"]
    with open(report, newline="") as fh:
        rows = {Path(row["input"]).name: row for row in csv.DictReader(fh)}
    assert sorted(rows) == sorted(by_name)
    assert {name: rows[name]["error"] for name in BAD_HEADERS} == {
        name: reason for name, (_, reason) in BAD_HEADERS.items()}


def test_any_exception_while_reading_fails_only_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fault nimask does not foresee (here a KeyError from inside the reader
    # for one file) fails that file with its type named; the batch goes on.
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        write(folder / f"{name}.nii.gz", GOOD)
    real = nimask.batch.case.read_case

    def faulty(case: Case) -> object:
        if Path(case.source).name == "b.nii.gz":
            raise KeyError("no such field")
        return real(case)

    monkeypatch.setattr(nimask.batch.case, "read_case", faulty)
    results = mask_dataset(folder, tmp_path / "out", WINDOW, 0, workers=1)
    assert [(r.status, r.error) for r in results] == [
        ("written", ""), ("failed", "KeyError: 'no such field'"), ("written", "")]


def test_corrupt_gzip_streams_say_so(tmp_path: Path) -> None:
    # 40 single-byte corruptions anywhere after the gzip header's fixed fields
    # (bytes 4-9, time stamp and OS, do not affect the data).
    clean = _gz(raw_nifti(_I16))
    rng = np.random.default_rng(12)
    folder = tmp_path / "in"
    folder.mkdir()
    positions = sorted(rng.choice(np.arange(10, len(clean)), 40, replace=False).tolist())
    for position in positions:
        damaged = bytearray(clean)
        damaged[position] ^= 0xFF
        (folder / f"c{position:05d}.nii.gz").write_bytes(bytes(damaged))
    results = mask_dataset(folder, tmp_path / "out", WINDOW, 0, workers=1)
    assert len(results) == 40
    for result in results:
        assert result.status == "failed"
        assert result.error.startswith(("the gzip stream is corrupt (",
                                        "truncated gzip file")), result.error
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_bytes_paths_are_a_parameter_error(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    path = write(folder / "a.nii.gz", GOOD)
    with pytest.raises(ParameterError, match=r"nii_folder must be a str or os\.PathLike "
                       r"giving str, got bytes"):
        mask_dataset(os.fsencode(folder), tmp_path / "out")
    with pytest.raises(ParameterError, match="output_path must be a str"):
        mask_dataset(folder, os.fsencode(tmp_path / "out"))
    with pytest.raises(ParameterError, match="report must be a str"):
        mask_dataset(folder, tmp_path / "out", report=b"r.csv")
    with pytest.raises(ParameterError, match=r"path must be a str or os\.PathLike giving str"):
        read_volume(os.fsencode(path))
    assert not (tmp_path / "out").exists()  # rejected before any work
    with pytest.raises(VolumeReadError):  # str paths still reach the reader
        read_volume(str(folder / "missing.nii.gz"))
