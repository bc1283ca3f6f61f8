"""Resumed runs (``skip_existing``): kept masks keep their evidence, and a mask is kept
only for the input content it was made from."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _nifti_fixtures import load_mask, ramp, write

from nimask import mask_dataset
from nimask.evidence.report import MIN_COHORT
from nimask.io.nifti import INPUT_ID_ECODE, input_identity, read_input_token
from nimask.records import FileResult

WINDOW = (20.0, 60.0)
STAT_FIELDS = ("mask_voxels", "total_voxels", "coverage_percent", "volume_ml", "components",
               "largest_component_share", "large_components", "touches_border",
               "border_faces", "flags", "coverage_z")


def _cohort(folder: Path) -> Path:
    """Six volumes (enough for coverage outliers); ``s5`` has a far larger foreground."""
    folder.mkdir()
    for i in range(5):
        write(folder / f"s{i}.nii.gz", ramp() + i)
    big = ramp()
    big[:, :, :] = 40
    big[0, 0, 0] = 0
    write(folder / "s5.nii.gz", big)
    return folder


def _stats(res: FileResult) -> tuple[object, ...]:
    return tuple(getattr(res, name) for name in STAT_FIELDS)


@pytest.mark.parametrize("workers", [1, 2])
def test_kept_masks_keep_statistics_flags_and_qc_picture(tmp_path: Path, workers: int) -> None:
    folder = _cohort(tmp_path / "in")
    out = tmp_path / "out"
    first = mask_dataset(folder, out, WINDOW, 1, workers=workers)
    assert len(first) >= MIN_COHORT
    assert "coverage_outlier" in first[5].flags
    kept = mask_dataset(folder, out, WINDOW, 1, workers=workers, skip_existing=True,
                        qc_dir=tmp_path / "qc")
    assert [r.status for r in kept] == ["skipped"] * 6
    for a, b in zip(first, kept, strict=True):
        assert _stats(b) == _stats(a)
        assert b.mask_voxels == int(load_mask(Path(b.output)).sum())
        assert (b.threshold_low, b.threshold_high) == WINDOW
        assert Path(b.qc_png).is_file()
        assert Path(b.qc_png).read_bytes().startswith(b"\x89PNG")
    page = (tmp_path / "qc" / "index.html").read_text(encoding="utf-8")
    assert page.count('<img loading="lazy"') == 6  # one per case (the viewer has its own)


def _mask_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_swapped_inputs_are_masked_again(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.nii.gz", ramp())
    b = ramp()
    b[:6] = 0
    write(folder / "b.nii.gz", b)
    out = tmp_path / "out"
    first = {Path(r.input).name: r for r in mask_dataset(folder, out, WINDOW, 1)}
    masks = _mask_bytes(out)
    # Swap the two inputs with mv: each keeps its modification time (older than the masks).
    subprocess.run(["mv", str(folder / "a.nii.gz"), str(folder / "tmp.nii.gz")], check=True)
    subprocess.run(["mv", str(folder / "b.nii.gz"), str(folder / "a.nii.gz")], check=True)
    subprocess.run(["mv", str(folder / "tmp.nii.gz"), str(folder / "b.nii.gz")], check=True)
    assert (folder / "a.nii.gz").stat().st_mtime < (out / "a_mask.nii.gz").stat().st_mtime
    again = {Path(r.input).name: r for r in mask_dataset(folder, out, WINDOW, 1,
                                                         skip_existing=True)}
    assert {k: r.status for k, r in again.items()} == {"a.nii.gz": "written",
                                                      "b.nii.gz": "written"}
    assert again["a.nii.gz"].notes == [
        "mask made again: existing mask was made from another input content (size or "
        "SHA-256 hash differ: input renamed, swapped or changed)"]
    assert again["a.nii.gz"].mask_voxels == first["b.nii.gz"].mask_voxels
    assert _mask_bytes(out) == {"a_mask.nii.gz": masks["b_mask.nii.gz"],
                                "b_mask.nii.gz": masks["a_mask.nii.gz"]}


def test_input_restored_with_its_old_time_is_masked_again(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.nii.gz", ramp())
    other = write(tmp_path / "other.nii.gz", ramp() + 30)
    os.utime(other, (1_000_000_000, 1_000_000_000))  # 2001: far older than any mask
    out = tmp_path / "out"
    mask_dataset(folder, out, WINDOW, 1)
    subprocess.run(["cp", "-p", str(other), str(folder / "a.nii.gz")], check=True)
    (res,) = mask_dataset(folder, out, WINDOW, 1, skip_existing=True)
    assert res.status == "written"
    expected = mask_dataset(tmp_path / "in", tmp_path / "fresh", WINDOW, 1)[0]
    assert res.mask_voxels == expected.mask_voxels
    # The same content again: kept.
    (kept,) = mask_dataset(folder, out, WINDOW, 1, skip_existing=True)
    assert kept.status == "skipped"


def test_mask_records_the_input_content(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    scan = write(folder / "a.nii.gz", ramp())
    mask_dataset(folder, tmp_path / "out", WINDOW, 1)
    mask = tmp_path / "out" / "a_mask.nii.gz"
    identity = input_identity(scan)
    assert identity.size == scan.stat().st_size
    token = read_input_token(mask)
    assert token == f"nimask-input size={identity.size} sha256={identity.digest}"
    assert identity.digest == hashlib.sha256(scan.read_bytes()).hexdigest()
    extensions = nib.load(str(mask)).header.extensions
    assert [(e.get_code(), e.get_content()) for e in extensions] == [
        (INPUT_ID_ECODE, token.encode())]


def test_masks_without_an_input_record_are_made_again(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.nii.gz", ramp())
    out = tmp_path / "out"
    mask_dataset(folder, out, WINDOW, 1)
    mask = out / "a_mask.nii.gz"
    # The same mask as an older nimask wrote it: provenance in descrip, no extension.
    image = nib.load(str(mask))
    header = image.header.copy()
    header.extensions.clear()
    old = nib.Nifti1Image(np.asanyarray(image.dataobj), None, header=header)
    nib.save(old, str(tmp_path / "old.nii.gz"))
    shutil.move(tmp_path / "old.nii.gz", mask)
    assert read_input_token(mask) is None
    (res,) = mask_dataset(folder, out, WINDOW, 1, skip_existing=True)
    assert res.status == "written"
    assert res.notes == ["mask made again: existing mask does not record which input content "
                         "it was made from (made by an older nimask)"]
    assert read_input_token(mask) is not None


def test_input_token_of_foreign_or_broken_files_is_none(tmp_path: Path) -> None:
    plain = write(tmp_path / "plain.nii.gz", ramp())
    assert read_input_token(plain) is None
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"x" * 400))
    assert read_input_token(tmp_path / "junk.nii.gz") is None
