"""What a folder may hold: ignored entries, special files, name clashes, the input folder
as output folder, long names, and the checks made before any work."""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _nifti_fixtures import checksums, load_mask, ramp, write

from nimask import mask_dataset
from nimask.exceptions import OutputError, ParameterError

WINDOW = (20.0, 60.0)
EXPECTED = int(((ramp() >= 20) & (ramp() <= 60)).sum())
TIMEOUT = 120  # seconds: a run that blocks on a FIFO never ends on its own


def _run_script(
    tmp_path: Path, body: str, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``body`` as a script file (guarded main) in a fresh interpreter."""
    script = tmp_path / "run_nimask.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path)


# ------------------------------------------------------------ failure lines, ignored entries


def test_failure_lines_say_failed_and_no_mask_in_the_api_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "good.nii.gz", ramp())
    write(folder / "dim4d.nii.gz", np.zeros((4, 4, 4, 3), np.int16))
    with caplog.at_level(logging.WARNING, logger="nimask"):
        results = mask_dataset(folder, tmp_path / "out", WINDOW, 1, workers=1)
    failed = [r for r in results if r.status == "failed"]
    assert [Path(r.input).name for r in failed] == ["dim4d.nii.gz"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"dim4d.nii.gz: failed, no mask written: {failed[0].error}"]
    assert failed[0].error.startswith("4D volume with 3 time points")


def test_ignored_entries_are_named_at_the_default_level_counted_and_reported(
    tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "scan.nii.gz", ramp())
    (folder / "._scan.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (folder / "series.nii.gz").mkdir()
    # A user's script with no logging set up: Python's default handler shows warnings.
    proc = _run_script(tmp_path, f"""
        from nimask import mask_dataset

        if __name__ == "__main__":
            results = mask_dataset({str(folder)!r}, {str(tmp_path / 'out')!r}, (20, 60), 1,
                                   workers=1, report={str(tmp_path / 'r.csv')!r})
            print([(r.status, r.notes) for r in results])
    """)
    assert proc.returncode == 0, proc.stderr
    assert "ignoring ._scan.nii.gz: macOS resource-fork file, not a volume" in proc.stderr
    assert "ignoring series.nii.gz: a directory, not a file" in proc.stderr
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as fh:
        rows = {Path(r["input"]).name: r for r in csv.DictReader(fh)}
    assert rows["._scan.nii.gz"]["status"] == "ignored"
    assert json.loads(rows["._scan.nii.gz"]["notes"]) == [
        "macOS resource-fork file, not a volume"]
    assert rows["series.nii.gz"]["status"] == "ignored"
    assert rows["series.nii.gz"]["output"] == ""
    assert rows["scan.nii.gz"]["status"] == "written"
    # The command line counts them in its summary.
    cli = subprocess.run([sys.executable, "-m", "nimask", "mask", str(folder),
                          str(tmp_path / "out2"), "--threshold", "20", "60"],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert cli.returncode == 0, cli.stderr
    assert "nimask: 1 mask written, 0 skipped, 0 failed, 2 ignored in " in cli.stdout
    assert "warning: ignoring series.nii.gz: a directory, not a file" in cli.stderr


# ------------------------------------------------------------ FIFOs, sockets, devices


def test_fifo_socket_and_device_are_never_opened(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "scan.nii.gz", ramp())
    os.mkfifo(folder / "x.nii.gz")
    os.symlink(folder / "x.nii.gz", folder / "to_fifo.nii.gz")
    os.symlink("/dev/null", folder / "null.nii.gz")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(folder / "s.nii.gz"))
        for workers in (1, 2):
            proc = _run_script(tmp_path, f"""
                import json
                from nimask import mask_dataset

                if __name__ == "__main__":
                    results = mask_dataset({str(folder)!r}, {str(tmp_path / f'out{workers}')!r},
                                           (20, 60), 0, workers={workers})
                    print(json.dumps([[r.input, r.status, r.notes, r.error] for r in results]))
            """)
            assert proc.returncode == 0, proc.stderr
            rows = {Path(i).name: (s, n, e) for i, s, n, e in json.loads(proc.stdout)}
            assert rows == {
                "null.nii.gz": ("ignored", [
                    "a character device, not a regular file: never opened"], ""),
                "s.nii.gz": ("ignored", ["a socket, not a regular file: never opened"], ""),
                "scan.nii.gz": ("written", [], ""),
                "to_fifo.nii.gz": ("ignored", [
                    "a FIFO (named pipe), not a regular file: never opened"], ""),
                "x.nii.gz": ("ignored", ["a FIFO (named pipe), not a regular file: never opened"],
                             ""),
            }
            assert load_mask(tmp_path / f"out{workers}" / "scan_mask.nii.gz").sum() == EXPECTED
    finally:
        sock.close()


def test_a_fifo_given_to_process_file_fails_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "late.nii.gz")
    proc = _run_script(tmp_path, f"""
        from pathlib import Path
        from nimask.batch import MaskSettings, process_file

        if __name__ == "__main__":
            res = process_file(Path({str(tmp_path / 'late.nii.gz')!r}),
                               Path({str(tmp_path)!r}), MaskSettings.create())
            print(res.status, res.error)
    """, timeout=60)
    assert proc.stdout.strip() == (
        "failed a FIFO (named pipe), not a regular file: never read")


# ------------------------------------------------------------ mask-name clashes


@pytest.mark.parametrize("workers", [1, 2])
def test_two_inputs_with_one_mask_name_both_fail_before_any_work(
    tmp_path: Path, workers: int
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.nii.gz", ramp())
    write(folder / "a.NII.GZ", ramp() + 1)
    write(folder / "B.nii.gz", ramp())
    write(folder / "b.nii.gz", ramp())  # B_mask / b_mask: one file on a case-insensitive disk
    write(folder / "c.nii.gz", ramp())
    out = tmp_path / "out"
    results = mask_dataset(folder, out, WINDOW, 1, workers=workers)
    by_name = {Path(r.input).name: r for r in results}
    assert by_name["c.nii.gz"].status == "written"
    for name in ("a.nii.gz", "a.NII.GZ"):
        assert by_name[name].status == "failed"
        assert by_name[name].error == (
            "mask name clash: a.NII.GZ and a.nii.gz both give the mask a_mask (names "
            "compared ignoring case and extension); rename all but one")
        assert by_name[name].output == ""
    for name in ("B.nii.gz", "b.nii.gz"):
        assert by_name[name].status == "failed"
        assert by_name[name].error.startswith(
            "mask name clash: B.nii.gz and b.nii.gz both give the mask B_mask")
    assert sorted(os.listdir(out)) == ["c_mask.nii.gz"]


# ------------------------------------------------------------ output folder = input folder


@pytest.mark.parametrize("workers", [1, 2])
def test_input_folder_as_output_never_replaces_a_file_nimask_did_not_write(
    tmp_path: Path, workers: int
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.nii.gz", ramp())
    handmade = write(folder / "a_mask.nii.gz", (ramp() > 50).astype(np.uint8))
    write(folder / "b.nii.gz", ramp())
    before = handmade.read_bytes()
    results = mask_dataset(folder, folder, WINDOW, 1, workers=workers)
    by_name = {Path(r.input).name: r for r in results}
    assert by_name["a.nii.gz"].status == "failed"
    assert by_name["a.nii.gz"].error == (
        f"its mask would replace the input file {folder / 'a_mask.nii.gz'}: never done")
    assert handmade.read_bytes() == before
    assert by_name["b.nii.gz"].status == "written"
    # The user's file is an input of its own; nimask's outputs never are.
    assert by_name["a_mask.nii.gz"].status == "written"
    again = mask_dataset(folder, folder, WINDOW, 1, workers=workers)
    statuses = {Path(r.input).name: r.status for r in again}
    assert statuses == {"a.nii.gz": "failed", "a_mask.nii.gz": "written",
                        "a_mask_mask.nii.gz": "ignored", "b.nii.gz": "written",
                        "b_mask.nii.gz": "ignored"}
    assert handmade.read_bytes() == before
    assert sorted(os.listdir(folder)) == [
        "a.nii.gz", "a_mask.nii.gz", "a_mask_mask.nii.gz", "b.nii.gz", "b_mask.nii.gz"]


# ------------------------------------------------------------ long names


def test_long_names_are_limited_by_the_mask_name_only(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    long_ok = "s" * (250 - len(".nii.gz")) + ".nii.gz"  # mask name: 255 bytes
    too_long = "t" * (251 - len(".nii.gz")) + ".nii.gz"  # mask name: 256 bytes
    write(folder / long_ok, ramp())
    write(folder / too_long, ramp())
    out = tmp_path / "out"
    results = mask_dataset(folder, out, WINDOW, 0, workers=1, qc_dir=tmp_path / "qc")
    by_name = {Path(r.input).name: r for r in results}
    assert by_name[long_ok].status == "written", by_name[long_ok].error
    assert load_mask(out / (long_ok[:-7] + "_mask.nii.gz")).sum() == EXPECTED
    assert Path(by_name[long_ok].qc_png).is_file()
    assert by_name[too_long].status == "failed"
    assert by_name[too_long].error == (
        "its mask name would be 256 bytes long, more than the 255 the output file system "
        "allows; shorten the input's name")
    assert os.listdir(out) == [long_ok[:-7] + "_mask.nii.gz"]


# ------------------------------------------------------------ parameters and folders first


def test_numpy_integers_are_accepted_as_workers(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.nii.gz", ramp())
    write(folder / "b.nii.gz", ramp())
    results = mask_dataset(folder, tmp_path / "out", WINDOW, np.int64(1),
                           workers=np.int64(2))
    assert [r.status for r in results] == ["written", "written"]
    with pytest.raises(ParameterError, match="workers must be a positive integer"):
        mask_dataset(folder, tmp_path / "out", workers=np.int64(0))


def test_report_path_that_is_a_folder_fails_before_any_work(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.nii.gz", ramp())
    (tmp_path / "report.csv").mkdir()
    with pytest.raises(OutputError, match="report path is an existing folder: "):
        mask_dataset(folder, tmp_path / "out", WINDOW, report=tmp_path / "report.csv")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("option", ["report", "qc_dir"])
def test_unwritable_report_or_qc_folder_is_named_and_creates_nothing(
    tmp_path: Path, option: str
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.nii.gz", ramp())
    before = checksums(folder)
    # Nobody (not even root) can create a folder in /proc.
    target = "/proc/nimask-test/report.csv" if option == "report" else "/proc/nimask-test/qc"
    what = "report folder" if option == "report" else "QC folder"
    with pytest.raises(OutputError, match=f"^cannot create {what} /proc/nimask-test"):
        mask_dataset(folder, tmp_path / "out", WINDOW, **{option: target})  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    assert checksums(folder) == before
