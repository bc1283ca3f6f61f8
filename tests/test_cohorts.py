"""Cohorts as they arrive: files, lists, nested trees, patterns, every ITK volume format.

Volumes are written by SimpleITK (or by hand, the way 3D Slicer writes NRRD and
MetaImage headers) inside the tests; the real volumes of the shared data are used in
the tests marked slow.  The box phantom (``conftest.box_volume``) gives 840 mask voxels
with the window (50, 150) and closing radius 1.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from _nifti_fixtures import checksums, ramp
from click.testing import CliRunner
from conftest import OBLIQUE, ORIGIN, SPACING, box_volume, make_image

import nimask.batch.run
from nimask import __version__, discover, generate_brain_mask_dataset, mask_dataset
from nimask.batch.settings import MaskSettings
from nimask.cli import main
from nimask.exceptions import InputFolderError, ParameterError
from nimask.io.discovery import output_problems
from nimask.io.formats import (
    PROVENANCE_KEY,
    header_differences,
    read_header_fields,
    read_provenance,
    sidecar_path,
)
from nimask.io.nifti import TEMP_MARKER

WINDOW = (50.0, 150.0)
BOX_VOXELS = 840
PROVENANCE = f"nimask {__version__} thr=50:150 r=1"
IN_FORMATS = ("nii.gz", "nii", "nrrd", "nhdr", "mha", "mhd", "mnc")
SAME = {"nii.gz": ".nii.gz", "nii": ".nii", "nrrd": ".nrrd", "nhdr": ".nrrd", "mha": ".mha",
        "mhd": ".mha", "mnc": ".mnc"}


def _write(image: sitk.Image, path: Path) -> Path:
    """Write with SimpleITK whatever the case of the name (ITK picks the IO by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lower = path.with_name(path.name.lower())
    sitk.WriteImage(image, str(lower))
    if lower != path:
        lower.rename(path)
    return path


def _box(value_shift: int = 0) -> sitk.Image:
    return make_image(box_volume() + np.int16(value_shift))


def _mask_array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _geometry(path: Path) -> tuple[tuple[float, ...], ...]:
    image = sitk.ReadImage(str(path))
    return image.GetOrigin(), image.GetSpacing(), image.GetDirection(), image.GetSize()


# ------------------------------------------------------------------ discovery


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for rel in ("a.nii.gz", "sub/b.nii.gz", "sub/deep/c.NII.GZ", ".hidden/d.nii.gz",
                "other/e.nrrd"):
        _write(_box(), root / rel)
    (root / "notes.txt").write_text("not an image")
    return root


def test_patterns_and_recursion_choose_the_inputs(tree: Path) -> None:
    def found(**kwargs: object) -> list[tuple[str, str]]:
        return [(c.label, c.stem) for c in discover(tree, **kwargs).cases]  # type: ignore[arg-type]

    assert found() == [("a.nii.gz", "a")]
    assert found(recursive=True) == [
        ("a.nii.gz", "a"), ("sub/b.nii.gz", "sub/b"), ("sub/deep/c.NII.GZ", "sub/deep/c")]
    assert found(pattern="sub/*.nii.gz") == [("sub/b.nii.gz", "sub/b")]
    assert found(pattern="**/C.nii.gz") == [("sub/deep/c.NII.GZ", "sub/deep/c")]
    assert found(pattern="*", recursive=True) == [
        ("a.nii.gz", "a"), ("other/e.nrrd", "other/e"), ("sub/b.nii.gz", "sub/b"),
        ("sub/deep/c.NII.GZ", "sub/deep/c")]
    assert found(pattern="deep/*", recursive=True) == [("sub/deep/c.NII.GZ", "sub/deep/c")]
    scan = discover(tree, pattern="*", recursive=True)
    assert scan.others == 1  # notes.txt matches "*" but is not a volume
    with pytest.raises(InputFolderError, match=r"no volume matching '\*\.mha' in "):
        discover(tree, pattern="*.mha", recursive=True)
    for bad in ("", "/abs/*.nii.gz", "../*.nii.gz", 3):
        with pytest.raises(ParameterError, match="pattern"):
            discover(tree, pattern=bad)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="recursive must be True or False"):
        discover(tree, recursive="yes")  # type: ignore[arg-type]


def test_recursive_batch_mirrors_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _write(_box(), root / "site_a" / "scan.nii.gz")
    _write(_box(), root / "site_b" / "scan.nii.gz")
    _write(_box(), root / "top.nii.gz")
    out, qc = tmp_path / "out", tmp_path / "qc"
    results = mask_dataset(root, out, WINDOW, 1, recursive=True, workers=1, qc_dir=qc,
                           report=tmp_path / "r.csv")
    assert [(r.input, r.status, r.mask_voxels) for r in results] == [
        (str(root / "site_a" / "scan.nii.gz"), "written", BOX_VOXELS),
        (str(root / "site_b" / "scan.nii.gz"), "written", BOX_VOXELS),
        (str(root / "top.nii.gz"), "written", BOX_VOXELS),
    ]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "site_a/scan_mask.nii.gz", "site_b/scan_mask.nii.gz", "top_mask.nii.gz"]
    assert [r.output for r in results] == [str(out / "site_a" / "scan_mask.nii.gz"),
                                           str(out / "site_b" / "scan_mask.nii.gz"),
                                           str(out / "top_mask.nii.gz")]
    assert [r.qc_png for r in results] == [str(qc / "site_a" / "scan_qc.png"),
                                           str(qc / "site_b" / "scan_qc.png"),
                                           str(qc / "top_qc.png")]
    page = (qc / "index.html").read_text()
    assert 'id="site_a/scan.nii.gz"' in page
    assert 'id="site_b/scan.nii.gz"' in page
    assert 'src="site_b/scan_qc.png"' in page


def test_single_files_and_lists(tmp_path: Path) -> None:
    a = _write(_box(), tmp_path / "x" / "a.nii.gz")
    b = _write(_box(), tmp_path / "y" / "b.mha")
    folder = tmp_path / "z"
    _write(_box(), folder / "c.nii.gz")
    out = tmp_path / "out"
    results = mask_dataset([a, b, folder, a], out, WINDOW, 1, workers=1)
    assert [(Path(r.output).name, r.mask_voxels) for r in results] == [
        ("a_mask.nii.gz", BOX_VOXELS), ("b_mask.nii.gz", BOX_VOXELS),
        ("c_mask.nii.gz", BOX_VOXELS), ("", None)]
    assert (results[3].status, results[3].notes) == ("ignored", [f"given twice (also as {a})"])
    assert discover([a, a]).ignored == [(a, f"given twice (also as {a})")]
    assert [r.status for r in mask_dataset(b, out, WINDOW, 1)] == ["written"]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ParameterError, match="not a volume file nimask reads"):
        mask_dataset(tmp_path / "notes.txt", out)
    with pytest.raises(InputFolderError, match="input file does not exist"):
        mask_dataset(tmp_path / "nope.nrrd", out)
    # The documented function still wants a folder.
    with pytest.raises(InputFolderError, match="input path is not a folder"):
        generate_brain_mask_dataset(a, out)


def test_name_clashes_fail_every_file_involved(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _write(_box(), folder / "a.nii")
    _write(_box(), folder / "a.nii.gz")
    _write(_box(), folder / "ok.nrrd")
    out = tmp_path / "out"
    results = mask_dataset(folder, out, WINDOW, 1, pattern="*", output_format="same",
                           workers=1)
    reason = ("mask name clash: a.nii and a.nii.gz both give the mask a_mask (names "
              "compared ignoring case and extension); rename all but one")
    assert [(Path(r.input).name, r.status, r.error) for r in results] == [
        ("a.nii", "failed", reason), ("a.nii.gz", "failed", reason), ("ok.nrrd", "written", "")]
    assert sorted(os.listdir(out)) == ["ok_mask.nrrd"]
    # Files of the same name from two folders given together clash too.
    _write(_box(), tmp_path / "other" / "OK.nrrd")
    results = mask_dataset([folder / "ok.nrrd", tmp_path / "other" / "OK.nrrd"], out,
                           WINDOW, 1, workers=1)
    assert [r.status for r in results] == ["failed", "failed"]
    assert results[0].error.startswith("mask name clash: ok.nrrd and OK.nrrd both give")


def test_a_foreign_file_in_the_input_folder_is_never_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _write(_box(), folder / "x.nrrd")
    _write(_box(), folder / "y.nrrd")
    foreign = _write(_box(7), folder / "x_mask.nrrd")  # someone else's file, not a mask
    before = foreign.read_bytes()
    results = mask_dataset(folder, folder, WINDOW, 1, pattern="x.nrrd", output_format="same",
                           workers=1)
    assert [(r.status, r.error) for r in results] == [
        ("failed", "x_mask.nrrd already exists in an input folder and was not written by "
                   "nimask (no nimask provenance): it is never replaced; move it, or write "
                   "the masks to another folder")]
    assert foreign.read_bytes() == before
    # A mask nimask wrote there is replaced on a re-run, and never taken as an input.
    foreign.unlink()
    assert [r.status for r in mask_dataset(folder, folder, WINDOW, 1, pattern="*.nrrd",
                                           output_format="same", workers=1)] == ["written"] * 2
    scan = discover(folder, pattern="*.nrrd")
    assert [c.label for c in scan.cases] == ["x.nrrd", "y.nrrd"]
    assert [(p.name, why) for p, why in scan.ignored] == [
        ("x_mask.nrrd", f"a mask written by nimask ({PROVENANCE!r}), not an input"),
        ("y_mask.nrrd", f"a mask written by nimask ({PROVENANCE!r}), not an input")]
    results = mask_dataset(folder, folder, WINDOW, 1, pattern="*.nrrd", output_format="same")
    assert [r.status for r in results] == ["written"] * 2 + ["ignored"] * 2


@pytest.mark.parametrize("fmt", ["nii.gz", "nii", "nrrd", "mha", "mnc"])
def test_masks_of_every_format_are_never_inputs(tmp_path: Path, fmt: str) -> None:
    folder = tmp_path / "in"
    _write(_box(), folder / f"scan.{fmt}")
    output_format = "same" if fmt == "mnc" else fmt
    mask_dataset(folder, folder, WINDOW, 1, pattern="*", output_format=output_format)
    scan = discover(folder, pattern="*")
    assert [c.label for c in scan.cases] == [f"scan.{fmt}"]
    assert [p.name for p, _ in scan.ignored] == [f"scan_mask.{fmt}"]


def test_a_fifo_is_never_opened(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _write(_box(), folder / "a.nrrd")
    os.mkfifo(folder / "pipe.nrrd")
    scan = discover(folder, pattern="*.nrrd")
    assert [c.label for c in scan.cases] == ["a.nrrd"]
    assert scan.ignored == [(folder / "pipe.nrrd",
                             "a FIFO (named pipe), not a regular file: never opened")]
    results = mask_dataset(folder, tmp_path / "out", WINDOW, 1, pattern="*.nrrd")
    assert [r.status for r in results] == ["written", "ignored"]


def test_output_problems_finds_long_names(tmp_path: Path) -> None:
    long = _write(_box(), tmp_path / ("x" * 250 + ".nrrd"))
    cases = discover(long).cases
    problems = output_problems(cases, tmp_path, "nii.gz")
    assert problems == {0: "its mask name would be 262 bytes long, more than the 255 the "
                           "output file system allows; shorten the input's name"}


# ------------------------------------------------------------------ formats


@pytest.mark.parametrize("output_format", ["nii.gz", "same", "nrrd", "mha", "nii"])
@pytest.mark.parametrize("in_format", IN_FORMATS)
def test_every_format_in_and_out(tmp_path: Path, in_format: str, output_format: str) -> None:
    source = _write(_box(), tmp_path / "in" / f"scan.{in_format}")
    files_before = checksums(source.parent)
    out = tmp_path / "out"
    [res] = mask_dataset(source.parent, out, WINDOW, 1, pattern="*", output_format=output_format,
                         workers=1)
    ext = SAME[in_format] if output_format == "same" else "." + output_format
    mask = out / f"scan_mask{ext}"
    assert (res.status, res.error, res.output) == ("written", "", str(mask))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [mask.name] + (["scan_mask.json"] if ext == ".mnc" else []))
    assert _mask_array(mask).sum() == BOX_VOXELS == res.mask_voxels
    image, written = sitk.ReadImage(str(source)), sitk.ReadImage(str(mask))
    assert written.GetPixelID() == sitk.sitkUInt8
    assert written.GetSize() == image.GetSize()
    nifti_out = ext in (".nii.gz", ".nii")
    if nifti_out and in_format not in ("nii.gz", "nii"):
        # NIfTI stores float32: the geometry agrees to float32 precision.
        np.testing.assert_allclose(written.GetOrigin(), image.GetOrigin(), rtol=1e-6)
        np.testing.assert_allclose(written.GetSpacing(), image.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(written.GetDirection(), image.GetDirection(), atol=1e-6)
    elif ext == ".mnc":  # MINC stores the origin along its axes: the last bits move
        np.testing.assert_allclose(written.GetOrigin(), image.GetOrigin(), rtol=1e-14)
        assert written.GetSpacing() == image.GetSpacing()
        np.testing.assert_allclose(written.GetDirection(), image.GetDirection(), atol=1e-15)
    elif ext == ".nrrd":  # NRRD stores spacing x direction: the last bits may move
        assert written.GetOrigin() == image.GetOrigin()
        np.testing.assert_allclose(written.GetSpacing(), image.GetSpacing(), rtol=1e-15)
        np.testing.assert_allclose(written.GetDirection(), image.GetDirection(), atol=1e-15)
    else:
        assert written.GetOrigin() == image.GetOrigin()
        assert written.GetSpacing() == image.GetSpacing()
        assert written.GetDirection() == image.GetDirection()
    assert read_provenance(mask) == PROVENANCE
    if ext == ".mnc":
        doc = json.loads(sidecar_path(mask).read_text())
        assert doc["nimask"]["provenance"] == PROVENANCE
    assert checksums(source.parent) == files_before  # inputs only read


def test_nifti_of_nifti_keeps_the_header_copy(tmp_path: Path) -> None:
    source = _write(_box(), tmp_path / "in" / "a.nii")
    mask_dataset(source.parent, tmp_path / "out", WINDOW, 1, pattern="*.nii",
                 output_format="same")
    mask = nib.load(str(tmp_path / "out" / "a_mask.nii"))
    header = nib.load(str(source)).header
    np.testing.assert_array_equal(mask.header.get_sform(), header.get_sform())
    np.testing.assert_array_equal(mask.header.get_qform(), header.get_qform())
    assert mask.header["descrip"].tobytes().rstrip(b"\0").decode() == PROVENANCE


def test_nrrd_and_metaimage_masks_are_deterministic(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _write(_box(), folder / "a.nrrd")
    _write(_box(), folder / "b.mha")
    first = mask_dataset(folder, tmp_path / "one", WINDOW, 1, pattern="*", output_format="same")
    second = mask_dataset(folder, tmp_path / "two", WINDOW, 1, pattern="*", output_format="same")
    for a, b in zip(first, second, strict=True):
        assert Path(a.output).read_bytes() == Path(b.output).read_bytes()
    fields = read_header_fields(tmp_path / "one" / "a_mask.nrrd")
    assert fields is not None
    assert fields[PROVENANCE_KEY] == PROVENANCE
    assert fields["encoding"] == "gzip"


# The way 3D Slicer writes them: NRRD in LPS space with space directions, MetaImage with
# TransformMatrix/Offset and AnatomicalOrientation RAI for an identity direction.
def _slicer_nrrd(path: Path, array_zyx: np.ndarray, space: str = "left-posterior-superior",
                 flip: bool = False) -> Path:
    d = np.array(OBLIQUE).reshape(3, 3)
    columns = d * np.array(SPACING)  # column j: direction of axis j times its spacing
    origin = np.array(ORIGIN)
    if flip:  # the same physical geometry expressed in RAS
        columns = columns * np.array([-1.0, -1.0, 1.0])[:, None]
        origin = origin * np.array([-1.0, -1.0, 1.0])
    vectors = " ".join("(" + ",".join(repr(float(v)) for v in columns[:, j]) + ")"
                       for j in range(3))
    header = (
        "NRRD0004\n# Complete NRRD file format specification at:\n"
        "# http://teem.sourceforge.net/nrrd/format.html\ntype: short\ndimension: 3\n"
        f"space: {space}\nsizes: {array_zyx.shape[2]} {array_zyx.shape[1]} "
        f"{array_zyx.shape[0]}\nspace directions: {vectors}\nkinds: domain domain domain\n"
        "endian: little\nencoding: gzip\n"
        f"space origin: ({','.join(repr(float(v)) for v in origin)})\n\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.encode() + gzip.compress(array_zyx.astype("<i2").tobytes(), mtime=0))
    return path


def _slicer_mha(path: Path, array_zyx: np.ndarray, *, compressed: bool = False,
                orientation: str = "RAI") -> Path:
    data = array_zyx.astype("<i2").tobytes()
    payload = zlib.compress(data) if compressed else data
    lines = [
        "ObjectType = Image", "NDims = 3", "BinaryData = True",
        "BinaryDataByteOrderMSB = False", f"CompressedData = {compressed}",
        *([f"CompressedDataSize = {len(payload)}"] if compressed else []),
        "TransformMatrix = 1 0 0 0 1 0 0 0 1", "Offset = -10 20.5 3.25",
        "CenterOfRotation = 0 0 0", f"AnatomicalOrientation = {orientation}",
        "ElementSpacing = 0.7 1.1 2.5",
        f"DimSize = {array_zyx.shape[2]} {array_zyx.shape[1]} {array_zyx.shape[0]}",
        "ElementType = MET_SHORT", "ElementDataFile = LOCAL",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode() + payload)
    return path


def _fields(path: Path, separator: str) -> dict[str, str]:
    """Header lines ``key<sep>value`` of a NRRD or MetaImage file (the test's own parser)."""
    text = path.read_bytes().split(b"\n\n", 1)[0] if separator == ": " else \
        path.read_bytes().split(b"ElementDataFile", 1)[0]
    out = {}
    for line in text.decode("latin-1").splitlines():
        if separator in line and ":=" not in line:
            key, value = line.split(separator, 1)
            out[key.strip()] = value.strip()
    return out


def _numbers(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"[-+]?\d*\.?\d+(?:e[-+]?\d+)?", text)]


def test_slicer_nrrd_and_metaimage_headers_round_trip(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    nrrd = _slicer_nrrd(folder / "ct.nrrd", box_volume())
    mha = _slicer_mha(folder / "mr.mha", box_volume(), compressed=True)
    out = tmp_path / "out"
    results = mask_dataset(folder, out, WINDOW, 1, pattern="*", output_format="same",
                           workers=1)
    assert [(r.status, r.mask_voxels, r.notes) for r in results] == [
        ("written", BOX_VOXELS, []), ("written", BOX_VOXELS, [])]
    source, mask = _fields(nrrd, ": "), _fields(out / "ct_mask.nrrd", ": ")
    assert mask["space"] == source["space"] == "left-posterior-superior"
    for key in ("space directions", "space origin", "sizes", "kinds"):
        assert _numbers(mask[key]) == pytest.approx(_numbers(source[key]), rel=1e-15), key
    source, mask = _fields(mha, " = "), _fields(out / "mr_mask.mha", " = ")
    assert mask["AnatomicalOrientation"] == source["AnatomicalOrientation"] == "RAI"
    for key in ("TransformMatrix", "Offset", "ElementSpacing", "DimSize", "CenterOfRotation"):
        assert _numbers(mask[key]) == _numbers(source[key]), key
    for name in ("ct", "mr"):
        src = _geometry(folder / f"{name}.{'nrrd' if name == 'ct' else 'mha'}")
        got = _geometry(out / f"{name}_mask.{'nrrd' if name == 'ct' else 'mha'}")
        assert got == src


def test_nrrd_in_ras_space_is_written_in_lps_with_a_note(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    lps = _slicer_nrrd(folder / "lps.nrrd", box_volume())
    ras = _slicer_nrrd(folder / "ras.nrrd", box_volume(), space="right-anterior-superior",
                       flip=True)
    np.testing.assert_allclose(np.array(_geometry(ras)[0]), np.array(_geometry(lps)[0]))
    [res] = mask_dataset(folder, tmp_path / "out", WINDOW, 1, pattern="ras.nrrd",
                         output_format="same")
    assert res.status == "written"
    assert [re.sub(r": input .*", "", n) for n in res.notes] == [
        "NRRD header differs from the input's: space",
        "NRRD header differs from the input's: space directions",
        "NRRD header differs from the input's: space origin"]
    assert res.notes[0] == ("NRRD header differs from the input's: space: input "
                            "'right-anterior-superior', mask 'left-posterior-superior' "
                            "(same physical geometry)")
    _close_geometry(tmp_path / "out" / "ras_mask.nrrd", ras)


def _close_geometry(a: Path, b: Path) -> None:
    """Same grid to the last bits (NRRD stores spacing times direction)."""
    (oa, sa, da, na), (ob, sb, db, nb) = _geometry(a), _geometry(b)
    assert na == nb
    np.testing.assert_allclose(oa, ob, rtol=1e-15, atol=1e-13)
    np.testing.assert_allclose(sa, sb, rtol=1e-15)
    np.testing.assert_allclose(da, db, rtol=0, atol=1e-15)


def test_header_differences_compares_numbers_and_names() -> None:
    a = {"space": "LPS", "space directions": "(1,0,0) (0,1,0) (0,0,1)",
         "space origin": "(0,0,0)"}
    b = {"space": "left-posterior-superior", "space directions": "(1,-0,0) (0,1,0) (0,0,1)",
         "space origin": "(0,0,1e-30)"}
    assert header_differences(a, b, "nrrd") == []
    b["space origin"] = "(0,0,0.5)"
    assert header_differences(a, b, "nrrd") == [
        "space origin: input '(0,0,0)', mask '(0,0,0.5)'"]
    assert header_differences({"Position": "1 2 3"}, {"Offset": "1 2 3"}, "mha") == []


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("flat.nrrd", lambda p: _write(make_image(np.ones((1, 5, 5), np.int16))[:, :, 0], p),
         "not a 3D volume: a 2D image"),
        ("four.mha", lambda p: _write(sitk.JoinSeries([_box(), _box()]), p),
         "4D volume (2 time points"),
        ("rgb.mha", lambda p: _write(sitk.Compose([_box(), _box(), _box()]), p),
         "vector-valued voxels (3 components)"),
        ("cut.mha", lambda p: p.write_bytes(
            _slicer_mha(p, box_volume()).read_bytes()[:-2000]),
         "file is truncated: its header needs 14400 bytes of data, the file holds 12400"),
        ("cut.nrrd", lambda p: p.write_bytes(
            _write(_box(), p).read_bytes()[:-1500]),
         "file is truncated: its header needs 14400 bytes of data, the file holds 12900"),
        ("cutgz.nrrd", lambda p: p.write_bytes(
            _slicer_nrrd(p, box_volume()).read_bytes()[:-30]),
         "ITK cannot read it: [nrrd] _nrrdEncodingGzip_read: expected 14400 bytes"),
        ("old.mnc", lambda p: p.write_bytes(b"CDF\x01" + b"\0" * 100),
         "MINC-1 (netCDF) file: ITK reads MINC-2 only"),
        ("junk.nrrd", lambda p: p.write_bytes(b"not an image at all"),
         "ITK cannot read its header"),
    ],
)
def test_bad_volumes_of_other_formats_fail_alone(tmp_path: Path, name: str, make: object,
                                                 message: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    make(folder / name)  # type: ignore[operator]
    _write(_box(), folder / "good.nrrd")
    out = tmp_path / "out"
    results = {Path(r.input).name: r for r in mask_dataset(folder, out, WINDOW, 1, pattern="*",
                                                            workers=1)}
    assert results["good.nrrd"].status == "written"
    assert results[name].status == "failed"
    assert message in results[name].error, results[name].error
    assert sorted(os.listdir(out)) == ["good_mask.nii.gz"]


def test_a_four_d_singleton_is_squeezed(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _write(sitk.JoinSeries([_box()]), folder / "one.nrrd")
    [res] = mask_dataset(folder, tmp_path / "out", WINDOW, 1, pattern="*.nrrd",
                         output_format="same")
    assert (res.status, res.mask_voxels) == ("written", BOX_VOXELS)
    assert res.notes == ["trailing singleton dimension squeezed: [30, 20, 12, 1] -> [30, 20, 12]"]
    assert sitk.ReadImage(str(tmp_path / "out" / "one_mask.nrrd")).GetDimension() == 3


# ------------------------------------------------------------------ re-runs


@pytest.mark.parametrize("fmt", ["nrrd", "nhdr", "mha", "mhd", "mnc"])
def test_skip_existing_for_every_format(tmp_path: Path, fmt: str) -> None:
    folder = tmp_path / "in"
    source = _write(_box(), folder / f"scan.{fmt}")
    out = tmp_path / "out"
    kwargs = {"pattern": "*", "output_format": "same", "workers": 1}
    assert [r.status for r in mask_dataset(folder, out, WINDOW, 1, **kwargs)] == ["written"]
    mask = out / f"scan_mask{SAME[fmt]}"
    stamp = mask.stat().st_mtime_ns
    assert [r.status for r in mask_dataset(folder, out, WINDOW, 1, skip_existing=True,
                                           **kwargs)] == ["skipped"]
    assert mask.stat().st_mtime_ns == stamp
    [res] = mask_dataset(folder, out, WINDOW, 2, skip_existing=True, **kwargs)
    assert (res.status, res.notes) == (
        "written", ["mask made again: existing mask made with closing_radius=1, now 2"])
    later = mask.stat().st_mtime + 10
    files = discover(source, pattern="*").cases[0].files
    for path in files:
        os.utime(path, (later, later))
    [res] = mask_dataset(folder, out, WINDOW, 2, skip_existing=True, **kwargs)
    assert res.status == "skipped"  # touched, same content: still its mask
    _write(_box(1), source)  # another content, then its old times back
    for path in files:
        os.utime(path, (1, 1))
    [res] = mask_dataset(folder, out, WINDOW, 2, skip_existing=True, **kwargs)
    assert res.notes == ["mask made again: existing mask was made from another input content "
                         "(size or SHA-256 hash differ: input renamed, swapped or changed)"]
    if fmt == "mnc":
        sidecar_path(mask).unlink()  # MINC keeps the provenance in the sidecar
        [res] = mask_dataset(folder, out, WINDOW, 2, skip_existing=True, **kwargs)
        assert res.notes == ["mask made again: existing file has no nimask provenance ('')"]
    else:
        mask.write_bytes(mask.read_bytes()[:-40])
        [res] = mask_dataset(folder, out, WINDOW, 2, skip_existing=True, **kwargs)
        assert res.status == "written"
        assert res.notes[0].startswith("mask made again: existing mask is not a complete file")
    assert _mask_array(mask).sum() == BOX_VOXELS


def test_skip_existing_checks_the_grid_of_other_formats(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _write(_box(), folder / "scan.mha")
    out = tmp_path / "out"
    mask_dataset(folder, out, WINDOW, 1, pattern="*.mha", output_format="nrrd")
    moved = _box()
    moved.SetOrigin((0.0, 0.0, 0.0))
    _write(moved, folder / "scan.mha")
    os.utime(folder / "scan.mha", (1, 1))  # older than the mask: only the grid differs
    [res] = mask_dataset(folder, out, WINDOW, 1, pattern="*.mha", output_format="nrrd",
                         skip_existing=True)
    assert res.status == "written"
    assert res.notes == ["mask made again: existing mask has origin [-10.0, 20.5, 3.25], "
                         "input has [0.0, 0.0, 0.0]"]


def test_default_folder_mode_is_unchanged(tmp_path: Path) -> None:
    """A flat folder of .nii.gz gives the same files and bytes through every entry point."""
    folder = tmp_path / "in"
    _write(_box(), folder / "a.nii.gz")
    _write(_box(3), folder / "B.NII.GZ")
    _write(_box(), folder / "c.nrrd")  # not matched by the default pattern
    generate_brain_mask_dataset(folder, tmp_path / "one", WINDOW, 1)
    mask_dataset([folder / "a.nii.gz", folder / "B.NII.GZ"], tmp_path / "two", WINDOW, 1)
    mask_dataset(folder, tmp_path / "three", WINDOW, 1, recursive=True)
    names = sorted(os.listdir(tmp_path / "one"))
    assert names == ["B_mask.nii.gz", "a_mask.nii.gz"]
    for other in ("two", "three"):
        assert sorted(os.listdir(tmp_path / other)) == names
        for name in names:
            assert (tmp_path / other / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


@pytest.mark.parametrize("how", ["pool", "executor"])
def test_nested_cases_in_worker_processes_and_on_executors(tmp_path: Path, how: str) -> None:
    folder = tmp_path / "in"
    for rel in ("a/x.nrrd", "b/x.mha", "c/d/x.nii.gz"):
        _write(_box(), folder / rel)
    out = tmp_path / "out"
    if how == "pool":
        results = mask_dataset(folder, out, WINDOW, 1, pattern="*", recursive=True,
                               output_format="same", workers=2)
    else:
        with ThreadPoolExecutor(2) as executor:
            results = mask_dataset(folder, out, WINDOW, 1, pattern="*", recursive=True,
                                   output_format="same", executor=executor)
    assert [(r.input, r.output, r.mask_voxels) for r in results] == [
        (str(folder / "a" / "x.nrrd"), str(out / "a" / "x_mask.nrrd"), BOX_VOXELS),
        (str(folder / "b" / "x.mha"), str(out / "b" / "x_mask.mha"), BOX_VOXELS),
        (str(folder / "c" / "d" / "x.nii.gz"), str(out / "c" / "d" / "x_mask.nii.gz"),
         BOX_VOXELS),
    ]
    assert not [p for p in out.rglob("*") if TEMP_MARKER in p.name]


# ------------------------------------------------------------------ command line


def test_cli_inputs_then_output(tmp_path: Path) -> None:
    a = _write(_box(), tmp_path / "a.nrrd")
    b = _write(_box(), tmp_path / "tree" / "x" / "b.mha")
    _write(_box(), tmp_path / "tree" / "y" / "b.mha")
    runner = CliRunner()
    res = runner.invoke(main, ["mask", str(a), str(b), str(tmp_path / "out"), "--threshold",
                               "50", "150", "--closing-radius", "1", "--output-format", "same"])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(tmp_path / "out")) == ["a_mask.nrrd", "b_mask.mha"]
    res = runner.invoke(main, ["mask", str(tmp_path / "tree"), str(tmp_path / "o2"),
                               "--pattern", "*.MHA", "--recursive", "--threshold", "50", "150"])
    assert res.exit_code == 0, res.output
    assert sorted(p.relative_to(tmp_path / "o2").as_posix()
                  for p in (tmp_path / "o2").rglob("*.nii.gz")) == [
        "x/b_mask.nii.gz", "y/b_mask.nii.gz"]
    res = runner.invoke(main, ["mask", str(tmp_path / "missing.nrrd"), str(tmp_path / "o3")])
    assert res.exit_code == 2
    assert f"File '{tmp_path / 'missing.nrrd'}' does not exist" in res.output
    res = runner.invoke(main, ["mask", str(a), str(tmp_path / "o4"), "--output-format", "png"])
    assert res.exit_code == 2
    assert "'png' is not one of" in res.output


def test_interrupted_nested_batch_leaves_no_partial_mask(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "in"
    for name in ("a", "b", "c"):
        _write(_box(), folder / name / f"{name}.nrrd")
    out = tmp_path / "out"
    real = nimask.io.nifti.atomic_write

    def interrupted(out_path: Path, write: object) -> None:
        if out_path.name == "b_mask.nrrd":
            def then_stop(tmp: Path) -> None:
                write(tmp)  # type: ignore[operator]
                raise KeyboardInterrupt
            real(out_path, then_stop)
        real(out_path, write)

    monkeypatch.setattr(nimask.io.nifti, "atomic_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mask_dataset(folder, out, WINDOW, 1, pattern="*.nrrd", recursive=True,
                     output_format="same", workers=1)
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert left == ["a/a_mask.nrrd"]
    assert not [p for p in out.rglob("*") if TEMP_MARKER in p.name]
    monkeypatch.setattr(nimask.io.nifti, "atomic_write", real)
    results = mask_dataset(folder, out, WINDOW, 1, pattern="*.nrrd", recursive=True,
                           output_format="same", skip_existing=True)
    assert [r.status for r in results] == ["skipped", "written", "written"]


def _tree_sums(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _ramp_image(i: int) -> sitk.Image:
    return make_image(ramp((24, 20, 16)) + np.int16(i))


def _ramp_mask(i: int) -> np.ndarray:
    """The plain ITK chain the runner's settings (window 20..60, radius 1) stand for."""
    image = _ramp_image(i)
    return sitk.GetArrayFromImage(sitk.BinaryMorphologicalClosing(
        sitk.BinaryThreshold(image, 20, 60, 1, 0), [1] * 3, sitk.sitkBall, 1, True))


@pytest.mark.slow
def test_sigkill_mid_nested_batch_then_resume(tmp_path: Path) -> None:
    """A batch of NRRD/MetaImage files in a tree, killed while writing a mask, resumed."""
    names = ["g0/k00.nrrd", "g0/k01.mha", "g1/k02.nrrd", "g1/k03_pause.nrrd", "g2/k04.nrrd",
             "g2/k05.mha"]
    folder = tmp_path / "in"
    for i, rel in enumerate(names):
        _write(_ramp_image(i), folder / rel)
    before = _tree_sums(folder)
    out = tmp_path / "out"
    runner = Path(__file__).with_name("_batch_runner.py")
    proc = subprocess.Popen([sys.executable, str(runner), str(folder), str(out), "1", "*", "1",
                             "same"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120  # against a hung child only
    while not list(out.glob("paused-*")) and time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"batch ended before the pause: {proc.communicate()}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=120)
    leftovers = [p for p in out.rglob("*") if TEMP_MARKER in p.name]
    assert [p.parent.name for p in leftovers] == ["g1"]  # the half-written mask's temporary
    masks = sorted(p.relative_to(out).as_posix() for p in out.rglob("*_mask.*")
                   if TEMP_MARKER not in p.name)
    assert masks == ["g0/k00_mask.nrrd", "g0/k01_mask.mha", "g1/k02_mask.nrrd"]
    for i, rel in enumerate(masks):
        np.testing.assert_array_equal(_mask_array(out / rel), _ramp_mask(i))
    assert _tree_sums(folder) == before
    for marker in out.glob("paused-*"):
        marker.unlink()
    results = mask_dataset(folder, out, (20.0, 60.0), 1, pattern="*", recursive=True,
                           output_format="same", skip_existing=True)
    assert [r.status for r in results] == ["skipped"] * 3 + ["written"] * 3
    assert not [p for p in out.rglob("*") if TEMP_MARKER in p.name]
    for i, rel in enumerate(names):
        stem, ext = rel.rsplit(".", 1)
        np.testing.assert_array_equal(_mask_array(out / f"{stem}_mask.{ext}"), _ramp_mask(i))
    assert _tree_sums(folder) == before


# ------------------------------------------------------------------ real volumes


@pytest.mark.slow
@pytest.mark.parametrize("name", ["itk_t1_2x2x3mm", "invesalius_ct_head_hu"])
def test_real_volumes_as_nrrd_and_metaimage(shared_data: Path, tmp_path: Path,
                                            name: str) -> None:
    """NRRD/MetaImage copies of real volumes give the NIfTI input's mask, voxel for voxel."""
    image = sitk.ReadImage(str(shared_data / f"{name}.nii.gz"))
    for key in image.GetMetaDataKeys():
        image.EraseMetaData(key)
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(shared_data / f"{name}.nii.gz", folder / f"{name}.nii.gz")
    sitk.WriteImage(image, str(_dest(folder, "nrrd", name)), True)
    sitk.WriteImage(image, str(_dest(folder, "mha", name)), True)
    out = tmp_path / "out"
    results = mask_dataset(folder, out, pattern="*", recursive=True, output_format="same",
                           workers=1)
    assert [r.status for r in results] == ["written"] * 3
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{name}_mask.nii.gz")))
    for fmt in ("nrrd", "mha"):
        mask_file = out / fmt / f"{name}_mask.{fmt}"
        np.testing.assert_array_equal(_mask_array(mask_file), reference)
        _close_geometry(mask_file, _dest(folder, fmt, name))
    assert len({r.mask_voxels for r in results}) == 1


def _dest(folder: Path, fmt: str, name: str) -> Path:
    path = folder / fmt / f"{name}.{fmt}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_settings_output_format_is_not_provenance() -> None:
    settings = MaskSettings.create(WINDOW, 1)
    assert settings.provenance() == PROVENANCE


# ------------------------------------------------------------------ DICOM series as cases


@pytest.mark.slow
def test_dicom_series_are_cases(shared_data: Path, tmp_path: Path) -> None:
    """A DICOM export goes through the same batch: names, sidecars, report, QC, re-runs."""
    pytest.importorskip("pydicom")
    export = tmp_path / "export"
    shutil.copytree(shared_data / "dicom" / "mixed_two_series_xa30_enhanced", export / "a")
    shutil.copytree(shared_data / "dicom" / "mr_t1w_enhanced_siemens_xa30", export / "b")
    before = _tree_sums(export)
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(main, ["mask", str(export), str(out), "--dicom", "--workers", "1",
                               "--qc", str(tmp_path / "qc"), "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    rows = {Path(f["output"]).name: f for f in doc["files"]}
    assert sorted(rows) == [
        "12343_hucheng_20220711_5_anat-T1w_acq-tfl_mask.nii.gz",
        "12343_hucheng_20220711_6_anat-T1w_acq-tfl_mask.nii.gz",
        "12343_hucheng_20220711_9_gre_field_mapping_mask.nii.gz"]
    row = rows["12343_hucheng_20220711_5_anat-T1w_acq-tfl_mask.nii.gz"]
    assert row["input"] == ("anat-T1w_acq-tfl (series 5, UID "
                            "1.3.12.2.1107.5.2.43.67093.2022071112080803357602701.0.0.0)")
    assert row["status"] == "written"
    sidecar = json.loads((out / "12343_hucheng_20220711_5_anat-T1w_acq-tfl_mask.json"
                          ).read_text())
    assert sidecar["SeriesInstanceUID"] == \
        "1.3.12.2.1107.5.2.43.67093.2022071112080803357602701.0.0.0"
    assert sidecar["SourceFiles"] == 1
    assert sidecar["nimask"]["provenance"] == f"nimask {__version__} otsu r=3"
    mask = nib.load(out / "12343_hucheng_20220711_5_anat-T1w_acq-tfl_mask.nii.gz")
    assert int(np.asanyarray(mask.dataobj).sum()) == row["mask_voxels"]
    assert (tmp_path / "qc" / "12343_hucheng_20220711_5_anat-T1w_acq-tfl_qc.png").is_file()
    assert _tree_sums(export) == before
    results = mask_dataset(export, out, dicom=True, skip_existing=True, workers=1)
    assert [r.status for r in results] == ["skipped"] * 3
