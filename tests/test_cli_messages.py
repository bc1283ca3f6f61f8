"""What the command prints: help, summary wording, option names in errors, late failures."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

from _nifti_fixtures import load_mask, ramp, write
from click.testing import CliRunner

from nimask import cli


def _invoke(args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli.main, args)


def _folder(tmp_path: Path, names: tuple[str, ...] = ("a.nii.gz", "b.nii.gz")) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in names:
        write(folder / name, ramp())
    return folder


def test_help_lists_the_mask_command_in_full_and_explains_debug() -> None:
    res = _invoke(["--help"])
    assert res.exit_code == 0
    lines = [line.strip() for line in res.stdout.splitlines()]
    assert "mask  Mask volumes (folders, files, trees) into OUTPUT_DIR." in lines
    commands = lines[lines.index("Commands:") + 1:]
    assert commands
    assert not any(line.endswith("...") for line in commands)
    text = " ".join(_invoke(["mask", "--help"]).stdout.split())
    assert ("-v, --debug Verbose logs (a line per file) and tracebacks on errors; unlike the "
            "API's debug=True, which only prints 'Total brain masks generated: N'.") in text


def test_summary_says_mask_for_one_and_masks_for_more(tmp_path: Path) -> None:
    folder = _folder(tmp_path, ("a.nii.gz",))
    res = _invoke(["mask", str(folder), str(tmp_path / "out"), "--threshold", "20", "60"])
    assert res.exit_code == 0, res.output
    assert "nimask: 1 mask written, 0 skipped, 0 failed, 0 ignored in " in res.stdout
    write(folder / "b.nii.gz", ramp())
    res = _invoke(["mask", str(folder), str(tmp_path / "out"), "--threshold", "20", "60"])
    assert "nimask: 2 masks written, 0 skipped, 0 failed, 0 ignored in " in res.stdout


def test_bad_opening_radius_names_the_option(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    res = _invoke(["mask", str(folder), str(tmp_path / "out"), "--opening-radius", "2cm"])
    assert res.exit_code == 2
    assert ("Invalid value for '--opening-radius': it must be an integer (voxels) or a "
            "string like '2.5mm', got '2cm'; give voxels (e.g. 2) or millimetres "
            "(e.g. 2.5mm)") in " ".join(res.output.split())
    assert "opening_radius" not in res.output
    assert not (tmp_path / "out").exists()
    res = _invoke(["mask", str(folder), str(tmp_path / "out"), "--opening-radius", "2.5mm",
                   "--threshold", "20", "60"])
    assert res.exit_code == 0, res.output


def _limit_file_size() -> None:
    # Files may not grow past 1 KiB: masks of these volumes (about 320 bytes) fit,
    # the JSON report (about 2 KiB) does not.  Python ignores SIGXFSZ, so the write
    # fails with EFBIG ("File too large"), as a full disk fails with ENOSPC.
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


def test_report_that_cannot_be_written_after_the_masks_exits_1_without_usage(
    tmp_path: Path,
) -> None:
    folder = _folder(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "nimask", "mask", str(folder), str(out), "--threshold", "20",
         "60", "--workers", "1", "--report", str(tmp_path / "report.json")],
        capture_output=True, text=True, timeout=120, preexec_fn=_limit_file_size,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 1, proc.stderr
    assert "Usage:" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: 2 masks written, but the report could not be written: cannot write "
        "report.json: File too large")
    assert "nimask: 2 masks written, 0 skipped, 0 failed, 0 ignored in " in proc.stdout
    assert sorted(os.listdir(out)) == ["a_mask.nii.gz", "b_mask.nii.gz"]
    for name in ("a_mask.nii.gz", "b_mask.nii.gz"):
        assert load_mask(out / name).sum() > 0
    assert not (tmp_path / "report.json").exists()
