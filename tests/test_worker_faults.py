"""A worker process that dies fails only its own file; the batch finishes.

Workers are made to die by ``_faults.faulty_process_file`` (SIGSEGV, SIGKILL as
sent by the OOM killer, ``os._exit``), chosen by file name; it replaces
``nimask.batch.case.process_file`` here and is pickled by reference into the
spawned workers.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import _faults
import numpy as np
import pytest
import SimpleITK as sitk
from _nifti_fixtures import checksums, load_mask, ramp, write

import nimask.batch.case
import nimask.batch.run
from nimask import mask_dataset
from nimask.io.nifti import TEMP_MARKER

WINDOW = (20.0, 60.0)


def _expected(data: np.ndarray) -> np.ndarray:
    image = sitk.GetImageFromArray(data.T.copy())
    mask = sitk.BinaryMorphologicalClosing(sitk.BinaryThreshold(image, 20, 60, 1, 0),
                                           [1] * 3, sitk.sitkBall, 1, True)
    return sitk.GetArrayFromImage(mask).T


@pytest.mark.slow
def test_dying_workers_fail_only_their_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["a0", "a1", "b_segv", "c0", "c1", "d_sigkill", "e0", "f_exit", "g0", "g1"]
    data = {name: ramp((20, 18, 12)) + i for i, name in enumerate(names)}
    for name in names:
        write(folder / f"{name}.nii.gz", data[name])
    before = checksums(folder)
    monkeypatch.setattr(nimask.batch.case, "process_file", _faults.faulty_process_file)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="nimask"):
        results = mask_dataset(folder, out, WINDOW, 1, workers=2)
    # Deterministic report: one row per input, in input order.
    assert [Path(r.input).name for r in results] == [f"{n}.nii.gz" for n in names]
    errors = {Path(r.input).name: r.error for r in results if r.status == "failed"}
    assert errors == {
        "b_segv.nii.gz": "the worker process processing this file was killed by SIGSEGV",
        "d_sigkill.nii.gz": "the worker process processing this file was killed by SIGKILL "
                            "(out of memory, or killed)",
        "f_exit.nii.gz": "the worker process processing this file died (exit code 3)",
    }
    written = [n for n in names if f"{n}.nii.gz" not in errors]
    assert sorted(os.listdir(out)) == sorted(f"{n}_mask.nii.gz" for n in written)
    for name in written:
        np.testing.assert_array_equal(load_mask(out / f"{name}_mask.nii.gz"),
                                      _expected(data[name]))
    assert "a worker process died; running" in caplog.text
    events = (tmp_path / "events.log").read_text().splitlines()
    # No file was ever processed by two live processes at once...
    assert not [e for e in events if e.startswith("overlap")]
    # ...and each good file was completed exactly once.
    for name in written:
        ends = [e for e in events if e.startswith(f"end {name}.nii.gz ")]
        assert len(ends) == 1, (name, ends)
    # Each crashing file was tried in the pool and once more on its own.
    for name in ("b_segv", "d_sigkill", "f_exit"):
        assert len([e for e in events if e.startswith(f"start {name}.nii.gz ")]) == 2
    assert checksums(folder) == before
    assert not [n for n in os.listdir(out) if TEMP_MARKER in n]


@pytest.mark.slow
def test_worker_error_that_is_not_a_death_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A task raising an unexpected exception (not a volume problem) fails its
    # file without breaking the pool.
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        write(folder / f"{name}.nii.gz", ramp())
    monkeypatch.setattr(nimask.batch.case, "process_file", _faults.raising_process_file)
    results = mask_dataset(folder, tmp_path / "out", WINDOW, 1, workers=2)
    assert [(r.status, r.error) for r in results] == [
        ("failed", "worker error: KeyError: 'injected for a.nii.gz'"),
        ("written", ""),
    ]


class _RacingPool(ProcessPoolExecutor):
    """A process pool that shows, on demand, what ``concurrent.futures`` does when a
    task is submitted while a worker's death breaks the pool (a race between
    ``submit`` and the executor's manager thread, too rare to hit on purpose):

    * ``*stranded*``: the task is accepted but never run nor settled (it was
      added after the breaking pool had failed its pending tasks);
    * ``*late*``: ``submit`` waits until the pool is broken, then refuses the task
      with the ``RuntimeError`` of a pool that has shut down (the pool broke
      between ``submit``'s check for a broken pool and its check for shutdown).

    Only the first submission of such a file misbehaves.
    """

    def __init__(self, *args: Any, seen: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = seen

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        name = Path(args[0]).name
        if name not in self.seen and ("stranded" in name or "late" in name):
            self.seen.add(name)
            if "stranded" in name:
                return Future()
            deadline = time.monotonic() + 60
            while not self._broken and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.01)
            if not self._broken:  # type: ignore[attr-defined]
                pytest.fail("the pool did not break")
            raise RuntimeError("cannot schedule new futures after shutdown")
        return super().submit(fn, *args, **kwargs)


@pytest.mark.slow
def test_tasks_submitted_while_the_pool_breaks_are_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A future the broken pool never settles must not hang the batch, and a
    # refused submission must not end it: both files are run again.
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["a_stranded", "b_segv", "c_late", "d0", "e0"]
    data = {name: ramp((20, 18, 12)) + i for i, name in enumerate(names)}
    for name in names:
        write(folder / f"{name}.nii.gz", data[name])
    monkeypatch.setattr(nimask.batch.case, "process_file", _faults.faulty_process_file)
    monkeypatch.setattr(nimask.batch.pool, "ProcessPoolExecutor",
                        functools.partial(_RacingPool, seen=set()))
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="nimask"):
        results = mask_dataset(folder, out, WINDOW, 1, workers=3)
    assert [(Path(r.input).name, r.status, r.error) for r in results] == [
        ("a_stranded.nii.gz", "written", ""),
        ("b_segv.nii.gz", "failed",
         "the worker process processing this file was killed by SIGSEGV"),
        ("c_late.nii.gz", "written", ""),
        ("d0.nii.gz", "written", ""),
        ("e0.nii.gz", "written", ""),
    ]
    assert ("a worker process died; running 2 file(s) again one at a time: "
            "a_stranded.nii.gz, b_segv.nii.gz") in caplog.text
    for name in names:
        if name != "b_segv":
            np.testing.assert_array_equal(load_mask(out / f"{name}_mask.nii.gz"),
                                          _expected(data[name]))
    events = (tmp_path / "events.log").read_text().splitlines()
    starts = {n: len([e for e in events if e.startswith(f"start {n}.nii.gz ")]) for n in names}
    # The stranded and the refused task never ran in the broken pool.
    assert starts == {"a_stranded": 1, "b_segv": 2, "c_late": 1, "d0": 1, "e0": 1}
    assert not [e for e in events if e.startswith("overlap")]
    assert not [n for n in os.listdir(out) if TEMP_MARKER in n]
