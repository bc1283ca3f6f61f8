"""How worker processes start: fork only when no other Python thread runs."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_parallel import _make_inputs

from nimask.batch import pool as parallel
from nimask.batch.run import mask_dataset

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"),
                           reason="fork is used on Linux only")


class _OtherThread:
    """A second Python thread for the duration of a ``with`` block."""

    def __enter__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._stop.wait)
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _only_this_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide threads that earlier tests of the session left idle (the runner's own)."""
    if threading.active_count() != 1:
        baseline = threading.active_count() - 1
        monkeypatch.setattr(parallel.threading, "active_count",
                            lambda: len(threading.enumerate()) - baseline)


@LINUX
def test_fork_only_without_other_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    _only_this_thread(monkeypatch)
    assert parallel._pool_context().get_start_method() == "fork"
    with _OtherThread():
        assert parallel._pool_context().get_start_method() == "forkserver"
    assert parallel._pool_context().get_start_method() == "fork"


@LINUX
@pytest.mark.slow
def test_forked_and_forkserver_workers_write_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _only_this_thread(monkeypatch)
    _make_inputs(tmp_path / "in", 3)
    forked = mask_dataset(tmp_path / "in", tmp_path / "fork", workers=2, progress=False)
    with _OtherThread():
        served = mask_dataset(tmp_path / "in", tmp_path / "server", workers=2, progress=False)
    assert [(r.status, r.error, r.mask_voxels) for r in forked] == [
        (r.status, r.error, r.mask_voxels) for r in served]
    names = sorted(p.name for p in (tmp_path / "fork").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "server").iterdir())
    assert len(names) == 3
    for name in names:
        assert (tmp_path / "fork" / name).read_bytes() == (
            tmp_path / "server" / name).read_bytes()


@LINUX
@pytest.mark.slow
def test_fork_after_itk_ran_threads_in_the_parent(tmp_path: Path) -> None:
    """ITK's thread pool is alive in the parent (native threads, invisible to Python):
    forked workers must still run multi-threaded-capable ITK filters without hanging."""
    _make_inputs(tmp_path / "in", 3)
    script = f"""
import threading, SimpleITK as sitk
from nimask import mask_dataset
from nimask.batch import pool as parallel
sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(2)
image = sitk.GaussianSource(sitk.sitkFloat32, [96, 96, 96])
sitk.SmoothingRecursiveGaussian(image, 2.0)         # ITK's pool threads now exist
sitk.BinaryMorphologicalClosing(sitk.BinaryThreshold(image, 0.5, 2.0), [2] * 3)
assert threading.active_count() == 1
assert parallel._pool_context().get_start_method() == "fork"
results = mask_dataset({str(tmp_path / 'in')!r}, {str(tmp_path / 'out')!r}, workers=2,
                       progress=False)
print([r.status for r in results])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    # The three volumes are written; the truncated vol_99 fails alone.
    assert proc.stdout.strip() == "['written', 'written', 'written', 'failed']"
