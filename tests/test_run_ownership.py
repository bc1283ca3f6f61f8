"""Runs own their workers and their files: real processes, real signals, concurrent runs.

* Workers die with the process that started them (``kill -9`` of the main
  process, as the out-of-memory killer or a scheduler does) and never publish a
  mask for a run that is gone.
* Runs sharing one output folder keep each other's temporaries and storage probes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import pytest
from _nifti_fixtures import ramp, write
from test_pool_start import _children, _gone
from test_writes import RUNNER, _batch_folder, _wait_for_pause

from nimask import mask_dataset
from nimask.io.nifti import TEMP_MARKER
from nimask.io.tempfiles import cleanup_temporaries

WINDOW = (20.0, 60.0)
HANG_GUARD = 120  # seconds; only against a hung child, never a speed check
TESTS = Path(__file__).parent
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")


def _published(out: Path) -> dict[str, int]:
    """The masks in ``out`` and their inodes (a rename into place changes the inode)."""
    return {p.name: p.stat().st_ino for p in out.iterdir() if TEMP_MARKER not in p.name}


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def _descrip(path: Path) -> str:
    return bytes(nib.load(path).header["descrip"]).decode().rstrip("\0")


@pytest.mark.slow
@LINUX
@pytest.mark.parametrize("method", ["default", "spawn"])
def test_workers_die_with_a_killed_run_and_publish_nothing(tmp_path: Path, method: str) -> None:
    folder = _batch_folder(tmp_path)
    out = tmp_path / "out"
    env = dict(os.environ)
    if method != "default":  # workers are then fresh interpreters in a session of their own
        env["NIMASK_TEST_START_METHOD"] = method
    proc = subprocess.Popen(
        [sys.executable, str(RUNNER), str(folder), str(out), "2"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    # One worker waits in the middle of a write, the other after a rename.
    _wait_for_pause(proc, tmp_path, 2)
    workers = _children(proc.pid)
    assert len(workers) == 2
    published = _published(out)
    os.kill(proc.pid, signal.SIGKILL)  # the main process only
    proc.communicate(timeout=HANG_GUARD)
    _wait_for(lambda: all(_gone(pid) for pid in workers), "the orphaned workers to end")
    time.sleep(0.5)
    assert _published(out) == published  # nothing renamed into place after the kill
    # The half-written temporary is left for the next run, which removes it.
    assert [n for n in os.listdir(out) if TEMP_MARKER in n]
    assert cleanup_temporaries(out) == 1


_SUBMITTER = """\
import multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor
sys.path.insert(0, {tests!r})
import _faults
import nimask.batch.cluster
from nimask import mask_dataset
nimask.batch.cluster.process_file = _faults.faulty_process_file
pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
mask_dataset({folder!r}, {out!r}, (20.0, 60.0), 1, executor=pool, progress=False)
"""


@pytest.mark.slow
@LINUX
def test_a_task_of_a_killed_executor_batch_does_not_overwrite_a_newer_mask(
    tmp_path: Path,
) -> None:
    # The batch's submitting process is killed; its task goes on in a process that
    # does not die with it.  A newer run writes the mask; the old task must not
    # replace it when it ends.
    old, new, out = tmp_path / "old", tmp_path / "new", tmp_path / "out"
    for folder in (old, new):
        folder.mkdir()
        write(folder / "a_hold.nii.gz", ramp((24, 20, 16)))
    # Output to a file: the task's process keeps it open after the kill.
    log = tmp_path / "submitter.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SUBMITTER.format(tests=str(TESTS), folder=str(old),
                                                     out=str(out))],
            stdout=fh, stderr=fh, start_new_session=True,
        )
    _wait_for(lambda: list(tmp_path.glob("held-*")) or proc.poll() is not None,
              "the task to start")
    assert proc.poll() is None, log.read_text()
    (marker,) = tmp_path.glob("held-*")
    task_pid = int(marker.name.split("-")[1])
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=HANG_GUARD)
        # The newer run: another closing radius, so the two masks differ.
        (res,) = mask_dataset(new, out, WINDOW, 2, workers=1)
        assert res.status == "written"
        assert _descrip(out / "a_hold_mask.nii.gz").endswith(" r=2")
        (tmp_path / "release").touch()
        events = tmp_path / "events.log"
        _wait_for(lambda: f"end a_hold.nii.gz {task_pid}" in events.read_text(),
                  "the old task to end")
        assert _descrip(out / "a_hold_mask.nii.gz").endswith(" r=2")
        assert sorted(os.listdir(out)) == ["a_hold_mask.nii.gz"]  # its temporary removed
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["executor", "local workers"])
def test_a_run_keeps_the_temporaries_of_another_live_run(tmp_path: Path, mode: str) -> None:
    # Run B writes x_pause's mask and waits in the middle of the write.
    folder_b = tmp_path / "in_b"
    folder_b.mkdir()
    write(folder_b / "x_pause.nii.gz", ramp((24, 20, 16)))
    out = tmp_path / "out"
    run_b = subprocess.Popen(
        [sys.executable, str(RUNNER), str(folder_b), str(out), "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        temporary = _wait_for_pause(run_b, tmp_path, 1)
        # Run A masks the same names into the same folder, start to end.
        folder_a = tmp_path / "in_a"
        folder_a.mkdir()
        for i, name in enumerate(["x_pause", "y"]):
            write(folder_a / f"{name}.nii.gz", ramp((24, 20, 16)) + i)
        if mode == "executor":
            with ThreadPoolExecutor(2) as pool:
                results = mask_dataset(folder_a, out, WINDOW, 1, executor=pool)
        else:
            results = mask_dataset(folder_a, out, WINDOW, 1, workers=2)
        assert [r.status for r in results] == ["written", "written"]
        assert temporary.exists()  # B's write in progress is left alone
        assert run_b.poll() is None
    finally:
        os.killpg(run_b.pid, signal.SIGKILL)
        run_b.communicate(timeout=HANG_GUARD)
    _wait_for(lambda: _gone(run_b.pid), "run B to end")
    assert cleanup_temporaries(out) == 1  # B is gone: its temporary goes
    assert sorted(os.listdir(out)) == ["x_pause_mask.nii.gz", "y_mask.nii.gz"]


_EXECUTOR_BATCH = """\
import json, sys
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, {tests!r})
import _faults
import nimask.batch.cluster
from nimask import mask_dataset
nimask.batch.cluster.process_file = _faults.faulty_process_file
with ThreadPoolExecutor(1) as pool:
    results = mask_dataset({folder!r}, {out!r}, (20.0, 60.0), 1, executor=pool,
                           progress=False)
print(json.dumps([[r.status, r.error] for r in results]))
"""


@pytest.mark.slow
def test_a_local_run_keeps_the_storage_probe_of_a_live_executor_batch(tmp_path: Path) -> None:
    folder_a, folder_b, out = tmp_path / "in_a", tmp_path / "in_b", tmp_path / "out"
    folder_a.mkdir()
    folder_b.mkdir()
    for i, name in enumerate(["a_hold", "b", "c"]):
        write(folder_a / f"{name}.nii.gz", ramp((24, 20, 16)) + i)
    write(folder_b / "z.nii.gz", ramp((24, 20, 16)))
    batch = subprocess.Popen(
        [sys.executable, "-c", _EXECUTOR_BATCH.format(tests=str(TESTS), folder=str(folder_a),
                                                      out=str(out))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        _wait_for(lambda: list(tmp_path.glob("held-*")) or batch.poll() is not None,
                  "the executor batch to start")
        assert batch.poll() is None, batch.communicate()
        # A local run on the same output folder starts (and cleans up) meanwhile.
        (res,) = mask_dataset(folder_b, out, WINDOW, 1, workers=1)
        assert res.status == "written"
        (tmp_path / "release").touch()
        stdout, stderr = batch.communicate(timeout=HANG_GUARD)
    finally:
        if batch.poll() is None:
            os.killpg(batch.pid, signal.SIGKILL)
    assert batch.returncode == 0, stderr
    assert json.loads(stdout) == [["written", ""]] * 3
    assert sorted(os.listdir(out)) == [
        "a_hold_mask.nii.gz", "b_mask.nii.gz", "c_mask.nii.gz", "z_mask.nii.gz"]
