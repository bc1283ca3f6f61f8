"""How worker processes start: fork only when no other Python thread runs."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from test_parallel import _make_inputs

from nimask import dataset
from nimask.dataset import mask_dataset

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
        monkeypatch.setattr(dataset.threading, "active_count",
                            lambda: len(threading.enumerate()) - baseline)


@LINUX
def test_fork_only_without_other_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    _only_this_thread(monkeypatch)
    assert dataset._pool_context().get_start_method() == "fork"
    with _OtherThread():
        assert dataset._pool_context().get_start_method() == "forkserver"
    assert dataset._pool_context().get_start_method() == "fork"


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
