"""File names that are not valid UTF-8 (e.g. Latin-1 bytes): masked, and reported readably.

SimpleITK cannot take such a path (it aborts the process with a C++
``std::logic_error``), so each run is a child process: a crash fails the test
instead of the test session.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import SimpleITK as sitk
from _nifti_fixtures import load_mask, ramp, write

LATIN1 = b"M\xfcller.nii.gz"  # "Müller" in Latin-1: not valid UTF-8
EXPECTED = int(((ramp() >= 20) & (ramp() <= 60)).sum())


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "plain.nii.gz", ramp())
    write(folder / "tmp.nii.gz", ramp())
    os.rename(os.fsencode(folder / "tmp.nii.gz"), os.fsencode(folder) + b"/" + LATIN1)
    return folder


@pytest.mark.parametrize("workers", [1, 2])
def test_non_utf8_names_are_masked_and_reported(tmp_path: Path, workers: int) -> None:
    folder = _folder(tmp_path)
    out, qc = tmp_path / "out", tmp_path / "qc"
    script = tmp_path / "run_nimask.py"
    script.write_text(textwrap.dedent(f"""
        from nimask import mask_dataset

        if __name__ == "__main__":
            for report in ("r.csv", "r.json"):
                results = mask_dataset({str(folder)!r}, {str(out)!r}, (20, 60), 0,
                                       workers={workers}, report=report, qc_dir={str(qc)!r})
            print(",".join(r.status for r in results))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["written,written"]
    mask = os.fsencode(out) + b"/M\xfcller_mask.nii.gz"
    assert load_mask(Path(os.fsdecode(mask))).sum() == EXPECTED
    # Reports: valid UTF-8, the name's byte written as \xfc.
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["input"]).name for r in rows] == ["M\\xfcller.nii.gz", "plain.nii.gz"]
    assert Path(rows[0]["output"]).name == "M\\xfcller_mask.nii.gz"
    files = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["files"]
    assert Path(files[0]["input"]).name == "M\\xfcller.nii.gz"
    # QC page: valid UTF-8; the picture's link is the name's bytes, percent-encoded.
    page = (qc / "index.html").read_text(encoding="utf-8")
    assert 'src="M%FCller_qc.png"' in page
    assert "M\\xfcller.nii.gz" in page
    assert (os.fsencode(qc) + b"/M\xfcller_qc.png") in [
        os.fsencode(qc) + b"/" + n for n in os.listdir(os.fsencode(qc))]


def test_cli_summary_and_log_with_a_non_utf8_name(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (Path(os.fsdecode(os.fsencode(folder) + b"/" + LATIN1))).write_bytes(b"not a volume")
    proc = subprocess.run(
        [sys.executable, "-m", "nimask", "mask", str(folder), str(tmp_path / "out"),
         "--threshold", "20", "60", "--workers", "1"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    assert proc.returncode == 1, proc.stderr
    assert "error: M\\xfcller.nii.gz: failed, no mask written: not a NIfTI file" in proc.stderr
    assert "nimask: 1 mask written, 0 skipped, 1 failed, 0 ignored" in proc.stdout


def test_non_utf8_name_of_another_format_fails_alone(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    image = sitk.GetImageFromArray(ramp().T.copy())
    sitk.WriteImage(image, str(folder / "plain.nrrd"))
    sitk.WriteImage(image, str(folder / "tmp.nrrd"))
    os.rename(os.fsencode(folder / "tmp.nrrd"), os.fsencode(folder) + b"/M\xfcller.nrrd")
    script = tmp_path / "run_nimask.py"
    script.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from nimask import mask_dataset

        if __name__ == "__main__":
            for r in mask_dataset({str(folder)!r}, {str(tmp_path / 'out')!r}, (20, 60), 0,
                                  pattern="*.nrrd", workers=1):
                print(Path(r.input).name.encode("utf-8", "surrogateescape"), r.status, r.error)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "b'M\\xfcller.nrrd' failed its path is not valid UTF-8, which SimpleITK cannot open "
        "(NIfTI files are read through a link; rename this one)",
        "b'plain.nrrd' written ",
    ]
