"""Running :func:`nimask.batch.case.process_file` in local worker processes.

A worker that dies (segfault, ``os._exit``, SIGKILL from the OOM killer) fails
only its own file; Ctrl-C stops the workers; results reach the caller in any
order through ``on_done(index, result)`` and :func:`nimask.mask_dataset` puts
them back in input order.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import SimpleITK as sitk

from ..io.nifti import cleanup_temporaries
from . import case
from .settings import MaskSettings

if TYPE_CHECKING:
    from ..records import FileResult

__all__ = ["itk_threads", "run_pool", "usable_cpus"]

logger = logging.getLogger(__name__)


def _case() -> ModuleType:
    """:mod:`nimask.batch.case`, its functions looked up at call time (tests replace
    its ``process_file``)."""
    return case


def usable_cpus() -> int:
    """CPUs this process may use (CPU affinity and cgroup quota respected)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


@contextlib.contextmanager
def itk_threads(count: int) -> Iterator[None]:
    """Run ITK filters with ``count`` threads, then restore the global default."""
    old = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(count)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old)


def _pool_context() -> Any:
    """How worker processes start: ``fork`` when that is safe, else ``forkserver``/``spawn``.

    On Linux, when the calling process runs no other Python thread, workers
    are forked from it directly: nimask, numpy and SimpleITK are already
    imported, so a pool starts in milliseconds (ITK's thread pool stops its
    threads around ``fork`` itself).  With other threads running (a progress
    bar's monitor, a notebook kernel, the caller's threads), a fork could copy
    a lock held by one of them, so workers come from a ``forkserver`` with
    nimask preloaded (about 0.3-0.5 s once per pool: the server imports
    nimask), or are spawned where forkserver does not exist.
    """
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["nimask.batch.case", __name__])
        return context
    return multiprocessing.get_context("spawn")


def _init_worker(itk_threads: int) -> None:
    # Ctrl-C reaches the whole process group: the parent alone handles it and
    # stops the workers, so that they do not print tracebacks or break the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(itk_threads)


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory, or killed)" if name == "SIGKILL" else ""
        return f"the worker process processing this file was killed by {name}{hint}"
    return f"the worker process processing this file died (exit code {exitcode})"


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Terminate the workers now (Ctrl-C, broken pool) and shut the pool down.

    Returns once every worker and the executor's manager thread have exited:
    every future the executor knows of is then settled, and nothing of the
    pool runs any more.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join()
    # With its workers gone the manager thread fails what they ran and exits.
    if manager is not None:
        manager.join()


def _run_window(
    pending: deque[int],
    inputs: Sequence[Path],
    output_dir: Path,
    settings: MaskSettings,
    workers: int,
    on_done: Callable[[int, FileResult], None],
    skip_existing: bool,
) -> list[int]:
    """Run ``pending`` files in one pool, at most ``workers`` tasks at a time.

    Returns the files in flight when a worker died (the pool is then broken
    and every running task lost), ``[]`` when all of ``pending`` is done.
    Keeping no more tasks queued than workers bounds these suspects.
    """
    itk_threads = max(1, usable_cpus() // workers)
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=_pool_context(),
        initializer=_init_worker, initargs=(itk_threads,),
    )
    in_flight: dict[Future[FileResult], int] = {}
    suspects: list[int] = []
    try:
        while pending or in_flight:
            while pending and len(in_flight) < workers and not suspects:
                index = pending[0]
                try:
                    future = pool.submit(_case().process_file, inputs[index], output_dir,
                                         settings, skip_existing=skip_existing)
                except RuntimeError as refused:
                    # BrokenProcessPool, or "cannot schedule new futures after
                    # shutdown" when the pool broke (and shut itself down) between
                    # submit's two checks.
                    if isinstance(refused, BrokenProcessPool) or getattr(pool, "_broken", False):
                        break
                    raise
                pending.popleft()
                in_flight[future] = index
            if not in_flight:
                break
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                # Every other running task fails too.  Stop the pool (workers and
                # manager thread joined) instead of waiting for each future: a
                # task submitted while the pool was breaking may never be settled
                # by the executor (it never ran; it is run again below).
                _stop_pool(pool)
                done = set(in_flight)
            for future in sorted(done, key=lambda f: in_flight[f]):
                index = in_flight.pop(future)
                if not future.done() or future.cancelled():
                    suspects.append(index)
                    continue
                exc = future.exception()
                if isinstance(exc, BrokenProcessPool):
                    suspects.append(index)
                elif exc is not None:
                    reason = f"worker error: {_case().reason(exc)}"
                    on_done(index, _case().failed_result(inputs[index], output_dir,
                                                            settings, reason))
                else:
                    on_done(index, future.result())
            if suspects and not in_flight:
                break
    except BaseException:
        _stop_pool(pool)
        raise
    # Joins every worker: nothing of this pool runs once this returns.
    pool.shutdown(wait=True)
    return sorted(suspects)


def _isolated_main(conn: Any, task: Callable[..., FileResult], args: tuple[Any, ...],
                   kwargs: dict[str, Any], itk_threads: int) -> None:
    _init_worker(itk_threads)
    conn.send(task(*args, **kwargs))
    conn.close()


def _run_isolated(
    path: Path, output_dir: Path, settings: MaskSettings, skip_existing: bool
) -> FileResult:
    """Run one file alone in a fresh process: a death there is this file's doing."""
    context = _pool_context()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_isolated_main,
        args=(sender, _case().process_file, (path, output_dir, settings),
              {"skip_existing": skip_existing}, usable_cpus()),
        daemon=True,
    )
    try:
        process.start()
        sender.close()
        try:
            result: FileResult = receiver.recv()
        except EOFError:
            process.join()
            return _case().failed_result(path, output_dir, settings,
                                           _death_reason(process.exitcode))
        process.join()
        return result
    finally:
        if process.is_alive():
            process.terminate()
            process.join()
        receiver.close()


def run_pool(
    inputs: Sequence[Path],
    output_dir: Path,
    settings: MaskSettings,
    workers: int,
    on_done: Callable[[int, FileResult], None],
    *,
    skip_existing: bool = False,
) -> None:
    """Process ``inputs`` in ``workers`` processes; ``on_done`` gets every result.

    A worker that dies (segfault, ``os._exit``, SIGKILL from the OOM killer)
    breaks a ``ProcessPoolExecutor`` and fails every task it was running.
    Those files (at most ``workers``: no more tasks are queued) are then run
    one at a time, each in a fresh process, after every worker of the broken
    pool has been joined: a file whose own process dies fails with the cause,
    the others get their normal result; the files not started yet go on in a
    new pool.  So a worker death fails only its own file, and no file is ever
    processed by two processes at once.  Leftover temporaries of the killed
    workers are removed.
    """
    pending = deque(range(len(inputs)))
    while pending:
        suspects = _run_window(pending, inputs, output_dir, settings, workers, on_done,
                               skip_existing)
        if not suspects:
            continue
        cleanup_temporaries(output_dir)
        logger.warning("a worker process died; running %d file(s) again one at a time: %s",
                       len(suspects), ", ".join(inputs[i].name for i in suspects))
        for index in suspects:
            on_done(index, _run_isolated(inputs[index], output_dir, settings, skip_existing))
        cleanup_temporaries(output_dir)
