"""Re-runs: provenance in ``descrip``, ``skip_existing``, output folder = input folder."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _nifti_fixtures import load_mask, ramp, write

import nimask.batch.case
import nimask.batch.run
from nimask import __version__, generate_brain_mask_dataset, mask_dataset
from nimask.batch.case import existing_mask_problem
from nimask.batch.settings import MaskSettings, Provenance, parse_provenance
from nimask.exceptions import ParameterError
from nimask.io.discovery import scan_folder

WINDOW = (20.0, 60.0)


@pytest.mark.parametrize(
    ("threshold", "radius", "text"),
    [
        (None, 3, f"nimask {__version__} otsu r=3"),
        ((-500, 3000), 0, f"nimask {__version__} thr=-500:3000 r=0"),
        ((0.1, 1e300), 12, f"nimask {__version__} thr=0.1:1e+300 r=12"),
        ((-2.2250738585072014e-308, 1.7976931348623157e308), 4,
         f"nimask {__version__} thr=-2.2250738585072014e-308:1.7976931348623157e+308 r=4"),
        ((0.30000000000000004, 1 / 3), 3,
         f"nimask {__version__} thr=0.30000000000000004:0.3333333333333333 r=3"),
    ],
)
def test_provenance_round_trips_exactly(
    threshold: tuple[float, float] | None, radius: int, text: str
) -> None:
    settings = MaskSettings.create(threshold, radius)
    assert settings.provenance() == text
    assert len(text) <= 79  # NIfTI descrip: 80 bytes with the terminating NUL
    parsed = parse_provenance(text)
    assert parsed == Provenance(__version__, settings.threshold, radius)
    assert settings.matches(parsed) is None


def test_provenance_mismatches_are_explained() -> None:
    settings = MaskSettings.create(WINDOW, 3)
    assert settings.matches(Provenance("0.0.1", (20.0, 60.0), 3)) == (
        f"made by nimask 0.0.1, this is {__version__}"
    )
    assert settings.matches(Provenance(__version__, None, 3)) == (
        "made with otsu, now threshold 20:60"
    )
    assert settings.matches(Provenance(__version__, (20.0, 60.0), 2)) == (
        "made with closing_radius=2, now 3"
    )


@pytest.mark.parametrize(
    "text", ["", "FSL5.0", "nimask", "nimask 0.1.0", "nimask 0.1.0 thr=a:b r=3",
             "nimask 0.1.0 thr=nan:1 r=3", "nimask 0.1.0 otsu r=-1", "nimask 0.1.0 otsu r=3  x",
             "nimask 0.1.0 otsu r=infmm"],
)
def test_parse_provenance_rejects_other_text(text: str) -> None:
    assert parse_provenance(text) is None


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        write(folder / f"scan{i}.nii.gz", ramp() + i)
    return folder


def test_skip_existing_skips_only_up_to_date_masks(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = mask_dataset(folder, out, WINDOW, 1)
    assert [r.status for r in first] == ["written"] * 3
    assert nib.load(str(out / "scan0_mask.nii.gz")).header["descrip"].tobytes().rstrip(
        b"\0").decode() == f"nimask {__version__} thr=20:60 r=1"
    # scan0: mask removed; scan1: mask truncated (as by a foreign tool); scan2: intact.
    (out / "scan0_mask.nii.gz").unlink()
    data = (out / "scan1_mask.nii.gz").read_bytes()
    (out / "scan1_mask.nii.gz").write_bytes(data[: len(data) // 2])
    intact = (out / "scan2_mask.nii.gz").stat().st_mtime_ns
    second = mask_dataset(folder, out, WINDOW, 1, skip_existing=True)
    assert [r.status for r in second] == ["written", "written", "skipped"]
    assert second[0].notes == []
    assert second[1].notes[0].startswith(
        "mask made again: existing mask is not a complete NIfTI file (truncated gzip file")
    assert (out / "scan2_mask.nii.gz").stat().st_mtime_ns == intact
    assert second[2].output == str(out / "scan2_mask.nii.gz")
    for i in range(3):
        assert load_mask(out / f"scan{i}_mask.nii.gz").sum() == first[i].mask_voxels


def test_skip_existing_redoes_masks_made_with_other_parameters(
    folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    mask_dataset(folder, out, WINDOW, 1)
    results = mask_dataset(folder, out, WINDOW, 2, skip_existing=True)
    assert [r.status for r in results] == ["written"] * 3
    assert results[0].notes == ["mask made again: existing mask made with closing_radius=1, now 2"]
    results = mask_dataset(folder, out, None, 2, skip_existing=True)
    assert results[0].notes == [
        "mask made again: existing mask made with threshold 20:60, now otsu"
    ]
    assert [r.status for r in mask_dataset(folder, out, None, 2, skip_existing=True)] == [
        "skipped"] * 3


def test_skip_existing_requires_the_same_version(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    monkeypatch.setattr(nimask.batch.settings, "__version__", "0.0.9")
    mask_dataset(folder, out, WINDOW, 1, workers=1)  # in-process: sees the patched version
    monkeypatch.undo()
    results = mask_dataset(folder, out, WINDOW, 1, skip_existing=True)
    assert [r.status for r in results] == ["written"] * 3
    assert results[0].notes == [
        f"mask made again: existing mask made by nimask 0.0.9, this is {__version__}"
    ]


def test_skip_existing_checks_grid_age_and_provenance(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = MaskSettings.create(WINDOW, 1)
    mask_dataset(folder, out, WINDOW, 1)
    scan, mask = folder / "scan0.nii.gz", out / "scan0_mask.nii.gz"
    assert existing_mask_problem(scan, mask, settings) is None
    # Input touched (same content): the mask is still its mask.
    os.utime(scan, (mask.stat().st_mtime + 10,) * 2)
    assert existing_mask_problem(scan, mask, settings) is None
    # Input content replaced (same grid), even with the old modification time.
    stamp = scan.stat().st_mtime_ns
    write(scan, ramp() + 7)
    os.utime(scan, ns=(stamp, stamp))
    assert existing_mask_problem(scan, mask, settings) == (
        "existing mask was made from another input content (size or SHA-256 hash differ: "
        "input renamed, swapped or changed)")
    # A same-named file of another shape, or one without nimask provenance.
    write(mask, np.zeros((3, 3, 3), np.uint8))
    os.utime(scan, (mask.stat().st_mtime - 10,) * 2)
    assert existing_mask_problem(scan, mask, settings) == (
        "existing file has no nimask provenance (descrip '')")
    image = nib.Nifti1Image(np.zeros((3, 3, 3), np.uint8), np.eye(4))
    image.header["descrip"] = settings.provenance().encode()
    nib.save(image, str(mask))
    os.utime(scan, (mask.stat().st_mtime - 10,) * 2)
    assert existing_mask_problem(scan, mask, settings) == (
        "existing mask has shape [3, 3, 3], input has [12, 10, 8]")


def test_same_input_and_output_folder_never_masks_the_masks(folder: Path) -> None:
    # A user file ending in _mask.nii.gz without nimask provenance stays an input.
    write(folder / "atlas_mask.nii.gz", ramp())
    first = mask_dataset(folder, folder, WINDOW, 1)
    assert [Path(r.input).name for r in first] == [
        "atlas_mask.nii.gz", "scan0.nii.gz", "scan1.nii.gz", "scan2.nii.gz"]
    names = sorted(os.listdir(folder))
    assert names == sorted(["atlas_mask.nii.gz", "atlas_mask_mask.nii.gz", "scan0.nii.gz",
                            "scan0_mask.nii.gz", "scan1.nii.gz", "scan1_mask.nii.gz",
                            "scan2.nii.gz", "scan2_mask.nii.gz"])
    ignored = {p.name: why for p, why in scan_folder(folder).ignored}
    assert ignored["scan0_mask.nii.gz"] == (
        f"a mask written by nimask ('nimask {__version__} thr=20:60 r=1'), not an input")
    # Re-runs (plain, skip_existing, other parameters) see the same four inputs.
    for kwargs in ({}, {"skip_existing": True}):
        again = mask_dataset(folder, folder, WINDOW, 1, **kwargs)
        assert [Path(r.input).name for r in again if r.status != "ignored"] == [
            Path(r.input).name for r in first]
        assert [Path(r.input).name for r in again if r.status == "ignored"] == [
            "atlas_mask_mask.nii.gz", "scan0_mask.nii.gz", "scan1_mask.nii.gz",
            "scan2_mask.nii.gz"]
    mask_dataset(folder, folder, None, 2)
    assert sorted(os.listdir(folder)) == names


def test_a_renamed_nimask_mask_is_still_recognised(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    mask_dataset(folder, out, WINDOW, 1)
    os.replace(out / "scan0_mask.nii.gz", folder / "brain.nii.gz")
    assert "brain.nii.gz" not in [p.name for p in scan_folder(folder).inputs]
    # Detection reads the header only: an unreadable foreign file stays an input.
    (folder / "broken.nii.gz").write_bytes(gzip.compress(b"nimask " * 10))
    assert "broken.nii.gz" in [p.name for p in scan_folder(folder).inputs]


def test_skip_existing_in_the_documented_function_and_its_validation(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    generate_brain_mask_dataset(folder, out, WINDOW, 1, debug=True)
    generate_brain_mask_dataset(folder, out, WINDOW, 1, debug=True, skip_existing=True)
    assert capsys.readouterr().out.splitlines() == [
        "Total brain masks generated: 3", "Total brain masks generated: 0"]
    with pytest.raises(ParameterError, match="skip_existing must be True or False, got 'yes'"):
        mask_dataset(folder, out, skip_existing="yes")  # type: ignore[arg-type]


@pytest.mark.slow
def test_skip_existing_with_workers(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    mask_dataset(folder, out, WINDOW, 1, workers=2)
    (out / "scan1_mask.nii.gz").unlink()
    results = mask_dataset(folder, out, WINDOW, 1, workers=2, skip_existing=True)
    assert [r.status for r in results] == ["skipped", "written", "skipped"]


def test_provenance_with_steps_and_mm_radius_round_trips() -> None:
    settings = MaskSettings.create((0, 100), 3, preset="ct-brain")
    text = settings.provenance()
    parsed = parse_provenance(text)
    assert parsed is not None
    assert parsed.text == text
    assert settings.matches(parsed) is None
    # Same window and radius, but without the preset's steps: not up to date.
    plain = MaskSettings.create((0, 100), 3)
    assert plain.matches(parsed) == f"made with '{text}', now 'nimask {__version__} thr=0:100 r=3'"
    mm = MaskSettings.create(None, 3, 2.5)
    parsed_mm = parse_provenance(mm.provenance())
    assert parsed_mm == Provenance(__version__, None, None, 2.5)
    assert mm.matches(parsed_mm) is None
    assert MaskSettings.create(None, 3).matches(parsed_mm) == (
        "made with closing_radius_mm=2.5, now closing_radius=3"
    )
