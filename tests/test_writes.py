"""Writes: atomic masks, kills and Ctrl-C mid-batch, leftovers, unwritable outputs.

The kill and interrupt tests run a real batch in a child process
(``_batch_runner.py``); the file ``k05_pause.nii.gz`` half-writes its temporary
mask and then waits (see ``_faults.py``), so the signal always lands in the
middle of a write.  With two workers, ``k06_unreported.nii.gz`` runs beside it:
its mask is complete but its worker waits before reporting the result, so the
signal also lands between a mask's rename and its report.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from _nifti_fixtures import checksums, load_mask, ramp, write

import nimask.batch.case
import nimask.batch.run
import nimask.io.nifti
from nimask import mask_dataset
from nimask.exceptions import OutputError
from nimask.io.nifti import TEMP_MARKER, cleanup_temporaries, temporary_tag
from nimask.io.tempfiles import HOST_TAG, new_run_id

WINDOW = (20.0, 60.0)
RUNNER = Path(__file__).with_name("_batch_runner.py")
HANG_GUARD = 120  # seconds; only against a hung child, never a speed check


def _batch_folder(root: Path, n: int = 9) -> Path:
    folder = root / "in"
    folder.mkdir()
    for i in range(n):
        name = {5: "k05_pause.nii.gz", 6: "k06_unreported.nii.gz"}.get(i, f"k{i:02d}.nii.gz")
        write(folder / name, ramp((24, 20, 16)) + i)
    return folder


def _expected_mask(i: int) -> np.ndarray:
    """The plain ITK chain the runner's settings (window 20..60, radius 1) stand for."""
    image = sitk.GetImageFromArray((ramp((24, 20, 16)) + i).T.copy())
    mask = sitk.BinaryMorphologicalClosing(sitk.BinaryThreshold(image, 20, 60, 1, 0),
                                           [1] * 3, sitk.sitkBall, 1, True)
    return sitk.GetArrayFromImage(mask).T


def _start(folder: Path, out: Path, workers: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(RUNNER), str(folder), str(out), str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def _wait_for_pause(proc: subprocess.Popen[str], root: Path, workers: int) -> Path:
    """Wait until the paused file (and, with two workers, the unreported one) waits.

    Returns the paused file's half-written temporary.
    """
    deadline = time.monotonic() + HANG_GUARD
    markers = ["paused-*"] + (["unreported-*"] if workers > 1 else [])
    while time.monotonic() < deadline:
        found = [list(root.glob(pattern)) for pattern in markers]
        if all(found):
            return Path(found[0][0].read_text())
        if proc.poll() is not None:
            pytest.fail(f"batch ended before the pause: {proc.communicate()}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    pytest.fail(f"the batch never reached the waiting files {markers}")


def _masks_before_signal(workers: int) -> list[str]:
    """The masks complete when the signal is sent: the files before ``k05_pause``,
    and with two workers ``k06_unreported`` too."""
    names = [f"k{i:02d}_mask.nii.gz" for i in range(5)]
    return [*names, "k06_unreported_mask.nii.gz"] if workers > 1 else names


def _task_pids(events: Path) -> set[int]:
    return {int(line.split()[2]) for line in events.read_text().splitlines()}


def _wait_until_gone(events: Path) -> None:
    """Wait until the killed workers have exited (SIGKILL is delivered asynchronously)."""
    deadline = time.monotonic() + HANG_GUARD
    for pid in _task_pids(events):
        while time.monotonic() < deadline:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                break
            if stat.rsplit(")", 1)[-1].split()[0] == "Z":
                break
            time.sleep(0.02)


def _assert_only_complete_masks(out: Path) -> list[str]:
    """Every mask in ``out`` is complete and right; return the masks' names."""
    masks = []
    for name in sorted(os.listdir(out)):
        if TEMP_MARKER in name:
            continue
        masks.append(name)
        i = int(name[1:3])
        np.testing.assert_array_equal(load_mask(out / name), _expected_mask(i))
    return masks


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_mid_batch_leaves_only_complete_masks(tmp_path: Path, workers: int) -> None:
    folder = _batch_folder(tmp_path)
    before = checksums(folder)
    out = tmp_path / "out"
    proc = _start(folder, out, workers)
    tmp_file = _wait_for_pause(proc, tmp_path, workers)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job: main process and workers
    proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == -signal.SIGKILL
    _wait_until_gone(tmp_path / "events.log")
    leftovers = [n for n in os.listdir(out) if TEMP_MARKER in n]
    assert tmp_file.name in leftovers  # the half-written temporary is still there...
    masks = _assert_only_complete_masks(out)  # ...but every mask is complete
    assert masks == _masks_before_signal(workers)
    assert checksums(folder) == before
    # The next run removes the leftovers and finishes the batch.
    results = mask_dataset(folder, out, WINDOW, 1, skip_existing=True)
    assert [r.status for r in results].count("failed") == 0
    assert sum(r.status == "skipped" for r in results) == len(masks)
    assert not [n for n in os.listdir(out) if TEMP_MARKER in n]
    assert len(_assert_only_complete_masks(out)) == 9
    assert checksums(folder) == before


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_cleans_up_and_reports(tmp_path: Path, workers: int) -> None:
    folder = _batch_folder(tmp_path)
    before = checksums(folder)
    out = tmp_path / "out"
    proc = _start(folder, out, workers)
    _wait_for_pause(proc, tmp_path, workers)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, stderr = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 130, stderr
    assert stderr.rstrip().endswith("KeyboardInterrupt")
    assert "Traceback" not in stderr  # workers ignore SIGINT; the parent stops them
    masks = _assert_only_complete_masks(out)
    assert not [n for n in os.listdir(out) if TEMP_MARKER in n]
    match = re.search(r"interrupted: (\d+) written before interruption, 0 skipped, 0 failed, "
                      r"(\d+) not processed; no partial mask left in ", stderr)
    assert match, stderr
    # The count agrees with the disk, also for a mask whose worker was stopped
    # before it could report it.
    assert masks == _masks_before_signal(workers)
    assert (int(match[1]), int(match[2])) == (len(masks), 9 - len(masks))
    # Every process that ran a task is gone (the workers were stopped and joined).
    for pid in _task_pids(tmp_path / "events.log"):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert checksums(folder) == before


def test_interrupt_in_process_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        write(folder / f"{name}.nii.gz", ramp())
    out = tmp_path / "out"
    real_save = nimask.io.nifti._save_mask_file

    def interrupted_save(image: object, filename: object) -> None:
        real_save(image, filename)
        if temporary_tag("b_mask.nii.gz") in str(filename):
            raise KeyboardInterrupt

    monkeypatch.setattr(nimask.io.nifti, "_save_mask_file", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        mask_dataset(folder, out, WINDOW, 1, workers=1)
    assert sorted(os.listdir(out)) == ["a_mask.nii.gz"]
    assert ("interrupted: 1 written before interruption, 0 skipped, 0 failed, 2 not processed; "
            f"no partial mask left in {out}") in caplog.text


def test_failed_write_keeps_the_previous_mask(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.nii.gz", ramp())
    out = tmp_path / "out"
    mask_dataset(folder, out, WINDOW, 1)
    previous = (out / "a_mask.nii.gz").read_bytes()

    def full_disk(image: object, filename: object) -> None:
        Path(str(filename)).write_bytes(b"\x1f\x8b partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nimask.io.nifti, "_save_mask_file", full_disk)
    (res,) = mask_dataset(folder, out, None, 2)
    assert res.status == "failed"
    assert res.error == "cannot write a_mask.nii.gz: No space left on device"
    assert os.listdir(out) == ["a_mask.nii.gz"]  # no temporary, old mask untouched
    assert (out / "a_mask.nii.gz").read_bytes() == previous


def test_disk_full_fails_each_file_cleanly_and_the_batch_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        write(folder / f"{name}.nii.gz", ramp())
    real_save = nimask.io.nifti._save_mask_file

    def full_after_first(image: object, filename: object) -> None:
        if temporary_tag("a_mask.nii.gz") in str(filename):
            real_save(image, filename)
            return
        Path(str(filename)).write_bytes(b"\x1f\x8b partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nimask.io.nifti, "_save_mask_file", full_after_first)
    results = mask_dataset(folder, tmp_path / "out", WINDOW, 1, workers=1)
    assert [(r.status, r.error) for r in results] == [
        ("written", ""),
        ("failed", "cannot write b_mask.nii.gz: No space left on device"),
        ("failed", "cannot write c_mask.nii.gz: No space left on device"),
    ]
    assert os.listdir(tmp_path / "out") == ["a_mask.nii.gz"]


def test_output_folder_not_writable_fails_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root ignores permission bits: simulate the refusal the kernel gives others.
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.nii.gz", ramp())
    out = tmp_path / "out"
    out.mkdir()

    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(nimask.batch.run.tempfile, "mkstemp", refuse)
    with pytest.raises(OutputError, match=rf"^output folder is not writable: {re.escape(str(out))}"
                       r": Permission denied$"):
        mask_dataset(folder, out, WINDOW, 1, workers=1)
    assert os.listdir(out) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_output_folder_not_writable_chmod(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.nii.gz", ramp())
    out = tmp_path / "out"
    out.mkdir(mode=0o555)
    try:
        with pytest.raises(OutputError, match="output folder is not writable"):
            mask_dataset(folder, out, WINDOW, 1, workers=1)
    finally:
        out.chmod(0o755)
    assert os.listdir(out) == []


def test_output_path_is_a_file(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.nii.gz", ramp())
    target = tmp_path / "report.txt"
    target.write_text("keep me")
    with pytest.raises(OutputError, match="output path exists and is not a folder"):
        mask_dataset(folder, target, WINDOW)
    with pytest.raises(OutputError, match=r"cannot create output folder .*: Not a directory"):
        mask_dataset(folder, target / "sub", WINDOW)
    assert target.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["in", "report.txt"]


def test_cleanup_removes_only_temporaries_whose_owner_is_gone(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    here, other_host = HOST_TAG, "abcdef" if HOST_TAG != "abcdef" else "fedcba"
    mine = new_run_id()
    day = 24 * 3600
    names = {  # name: (kept, age in seconds)
        f".a_mask.nii.gz{TEMP_MARKER}{dead_pid}-x1.nii.gz": (False, 0),  # older name, writer gone
        f".b_mask.nii.gz{TEMP_MARKER}xyz.nii.gz": (False, 0),  # no owner (older name): removed
        f".c_mask.nii.gz{TEMP_MARKER}{os.getppid()}-x2.nii.gz": (True, 0),  # live writer
        f".d_mask.nii.gz{TEMP_MARKER}{os.getpid()}-x3.nii.gz": (True, 0),  # this process
        f"e_mask.nii.gz{TEMP_MARKER}{dead_pid}-x4.nii.gz": (True, 0),  # no leading dot: not ours
        "f_mask.nii.gz": (True, 0),
        f".h_mask.nii.gz{TEMP_MARKER}0badc0de-{here}-{dead_pid}-x5.nii.gz": (False, 0),
        f".i_mask.nii.gz{TEMP_MARKER}0badc0de-{here}-{os.getppid()}-x6.nii.gz": (True, 0),
        f".j_mask.nii.gz{TEMP_MARKER}{mine}-{here}-{os.getpid()}-x7.nii.gz": (True, 0),
        # Another machine: its pids mean nothing here; only a long-untouched file is removed.
        f".k_mask.nii.gz{TEMP_MARKER}0badc0de-{other_host}-{dead_pid}-x8.nii.gz": (True, 0),
        f".l_mask.nii.gz{TEMP_MARKER}0badc0de-{other_host}-{dead_pid}-x9.nii.gz": (False, 2 * day),
        # Executor batches' storage probes: the owner decides, never the age.
        f"{TEMP_MARKER}0badc0de-{here}-{os.getppid()}-shared": (True, 2 * day),
        f"{TEMP_MARKER}0badc0de-{here}-{dead_pid}-shared": (False, 0),
        f"{TEMP_MARKER}0badc0de-{other_host}-{dead_pid}-shared": (True, 30 * day),
    }
    now = time.time()
    for name, (_, age) in names.items():
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (now - age, now - age))
    (tmp_path / f".g{TEMP_MARKER}{dead_pid}-dir").mkdir()  # not a file: kept
    assert cleanup_temporaries(tmp_path) == 5
    remaining = set(os.listdir(tmp_path))
    assert remaining == {n for n, (kept, _) in names.items() if kept} | {
        f".g{TEMP_MARKER}{dead_pid}-dir"}
    # The end of run `mine`: its files go, whoever wrote them; other runs' stay.
    assert cleanup_temporaries(tmp_path, run=mine) == 1
    assert f".j_mask.nii.gz{TEMP_MARKER}{mine}-{here}-{os.getpid()}-x7.nii.gz" not in (
        os.listdir(tmp_path))


def test_temporary_names_carry_marker_run_host_and_pid(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_save = nimask.io.nifti._save_mask_file

    def spy(image: object, filename: object) -> None:
        seen.append(Path(str(filename)).name)
        real_save(image, filename)

    monkeypatch.setattr(nimask.io.nifti, "_save_mask_file", spy)
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.nii.gz", ramp())
    mask_dataset(folder, tmp_path / "out", WINDOW, 1)
    (name,) = seen
    assert re.fullmatch(rf"{re.escape(TEMP_MARKER)}[0-9a-f]{{8}}-{HOST_TAG}-{os.getpid()}-"
                        rf"{temporary_tag('a_mask.nii.gz')}-\w{{8}}\.nii\.gz", name), name
    assert name.endswith(".nii.gz")
    assert len(name) <= 64  # whatever the mask name's length
    assert os.listdir(tmp_path / "out") == ["a_mask.nii.gz"]
    assert oct((tmp_path / "out" / "a_mask.nii.gz").stat().st_mode & 0o777) == oct(
        0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
