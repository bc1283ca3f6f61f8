"""A worker process that dies fails only its own file; the batch finishes.

Workers are made to die by ``_faults.faulty_process_file`` (SIGSEGV, SIGKILL as
sent by the OOM killer, ``os._exit``), chosen by file name; it replaces
``nimask.batch.case.process_file`` here and is pickled by reference into the
spawned workers.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

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


_FORKING_CALLER = """\
import json, logging, sys
sys.path.insert(0, {tests!r})
import _faults
import nimask.batch.case
from nimask import mask_dataset
from nimask.batch.pool import start_method
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
nimask.batch.case.process_file = _faults.faulty_process_file
assert start_method() == "fork"
results = mask_dataset({folder!r}, {out!r}, (20.0, 60.0), 1, workers=2)
print(json.dumps([[r.input, r.status, r.error] for r in results]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("caller", ["this process", "a single-threaded script"])
def test_dying_workers_fail_only_their_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    caller: str,
) -> None:
    # This (multi-threaded) test process gets workers started as fresh interpreters,
    # a single-threaded script gets forked workers.
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["a0", "a1", "b_segv", "c0", "c1", "d_sigkill", "e0", "f_exit", "g0", "g1"]
    data = {name: ramp((20, 18, 12)) + i for i, name in enumerate(names)}
    for name in names:
        write(folder / f"{name}.nii.gz", data[name])
    before = checksums(folder)
    out = tmp_path / "out"
    if caller == "this process":
        monkeypatch.setattr(nimask.batch.case, "process_file", _faults.faulty_process_file)
        with caplog.at_level(logging.WARNING, logger="nimask"):
            results = mask_dataset(folder, out, WINDOW, 1, workers=2)
        rows = [(r.input, r.status, r.error) for r in results]
        log = caplog.text
    else:
        script = _FORKING_CALLER.format(tests=str(Path(__file__).parent), folder=str(folder),
                                        out=str(out))
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        rows = [tuple(row) for row in json.loads(proc.stdout)]
        log = proc.stderr
    # Deterministic report: one row per input, in input order.
    assert [Path(row[0]).name for row in rows] == [f"{n}.nii.gz" for n in names]
    errors = {Path(row[0]).name: row[2] for row in rows if row[1] == "failed"}
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
    for name, error in errors.items():  # one warning when it died, one error at the end
        assert f"{name}: {error}; running it again alone once the other files are done" in log
    events = (tmp_path / "events.log").read_text().splitlines()
    # No file was ever processed by two live processes at once...
    assert not [e for e in events if e.startswith("overlap")]
    # ...and each good file was started and completed exactly once: a death is
    # charged to the file its worker was running, never to the others.
    for name in written:
        ends = [e for e in events if e.startswith(f"end {name}.nii.gz ")]
        starts = [e for e in events if e.startswith(f"start {name}.nii.gz ")]
        assert (len(starts), len(ends)) == (1, 1), (name, starts, ends)
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
