"""Running :func:`nimask.batch.case.process_file` in local worker processes.

nimask runs its own small pool: each worker process is connected to the caller
by one pipe and runs one file at a time, so the caller always knows which file
a worker holds.  Results reach the caller in any order through
``on_done(index, result)`` and :func:`nimask.mask_dataset` puts them back in
input order.

How workers start
    On Linux, when the calling process runs no other Python thread and the
    caller has not chosen another start method than ``"fork"`` with
    :func:`multiprocessing.set_start_method`, workers are forked from it: nimask,
    numpy and SimpleITK are already imported, so a pool starts in milliseconds
    (ITK's thread pool stops its threads around ``fork`` itself; the progress
    bar runs no monitor thread).  Otherwise (other threads: a notebook kernel, a
    progress bar of the caller's, the caller's own threads; a start method set
    to ``"spawn"`` or ``"forkserver"``; macOS) each worker is a fresh
    interpreter, ``python -c <bootstrap>``, that imports nimask (about 0.3 s, in
    parallel for all workers).  Its ``__main__`` is that bootstrap: unlike
    :mod:`multiprocessing`'s ``spawn`` and ``forkserver`` start methods, nothing
    runs the caller's script again, so a script without
    ``if __name__ == "__main__":`` works with any start method.  Such workers
    run in a session of their own, so a Ctrl-C typed in the terminal reaches
    only the caller, which stops them.

A worker keeps the C heap's freed volume buffers for its next volume
(:mod:`nimask.batch.allocator`): a worker is nimask's own process, and a volume
after its first no longer pays for fresh memory pages.

A worker that dies (segfault, ``os._exit``, SIGKILL from the OOM killer) fails
only its own file: once every other file is done and every worker has exited,
that file is run once more alone in a fresh worker, and fails with the cause if
that worker dies too.  If no worker can be started at all (no usable Python
executable, workers that die before they are ready), the files are processed in
the calling process after one warning.

Workers die with the caller: on Linux the kernel kills them when it exits
(``PR_SET_PDEATHSIG``), and a watchdog thread in each worker ends it when its
parent changes (other systems, or a kernel without ``prctl``).  A worker also
checks that its parent is still alive right before renaming a mask into place,
so a run that is gone (killed with ``kill -9``) never gets a mask published
after it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import SimpleITK as sitk

from ..io.discovery import as_case
from ..io.tempfiles import Run, cleanup_temporaries, current_run, working_for
from . import case
from .allocator import keep_freed_memory
from .settings import MaskSettings

if TYPE_CHECKING:
    from ..records import Case, FileResult

__all__ = ["itk_threads", "run_pool", "usable_cpus"]

logger = logging.getLogger(__name__)

#: Seconds a worker may take to start (import nimask) before it counts as failed.
START_TIMEOUT = 120.0

#: Seconds between two looks of a worker's watchdog at its parent.
WATCHDOG_INTERVAL = 0.25

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_ORPHAN_EXIT = 70  # exit status of a worker whose parent is gone

#: True in a nimask worker process (set by :func:`_serve`).
_IN_WORKER = False


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


def start_method() -> str:
    """How the next worker starts: ``"fork"``, ``"exec"`` (a fresh interpreter) or ``"spawn"``.

    ``"fork"`` on Linux when the calling process runs no other Python thread and
    :func:`multiprocessing.set_start_method` was not given another method;
    ``"exec"`` on other POSIX systems or cases (and inside a daemonic
    :mod:`multiprocessing` process, which may not fork children of its own);
    ``"spawn"`` (:mod:`multiprocessing`'s, which imports the caller's ``__main__``
    again) only where there is no POSIX.
    """
    chosen = multiprocessing.get_start_method(allow_none=True)
    if (sys.platform.startswith("linux") and chosen in (None, "fork")
            and threading.active_count() == 1
            and not multiprocessing.current_process().daemon):
        return "fork"
    return "exec" if os.name == "posix" else "spawn"


# --- the worker side ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """What every task of a batch shares; sent once to each worker."""

    task: Callable[..., FileResult]
    output_dir: Path
    settings: MaskSettings
    kwargs: dict[str, Any]
    run_id: str
    itk_threads: int
    log_level: int


class _ForwardLogs(logging.Handler):
    """Sends a worker's nimask log records to the caller, which logs them."""

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg, record.args = record.getMessage(), None
            record.exc_info = record.exc_text = record.stack_info = None
            self.conn.send(("log", record))
        except Exception:
            self.handleError(record)


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(WATCHDOG_INTERVAL)
        if os.getppid() != parent_pid:
            os._exit(_ORPHAN_EXIT)


def _die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` (its parent) ends."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent ended before prctl
        os._exit(_ORPHAN_EXIT)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="nimask-watchdog",
                     daemon=True).start()


def _portable(exc: BaseException) -> BaseException | str:
    """``exc`` if it survives pickling, else its description."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        text = " ".join(str(exc).split())
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return exc


def _serve(conn: Connection, parent_pid: int) -> int:
    """A worker's life: set up from the job, say ready, run tasks until told to stop."""
    global _IN_WORKER
    _IN_WORKER = True
    _die_with_parent(parent_pid)
    try:
        job: _Job = conn.recv()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(job.itk_threads)
        top = logging.getLogger(__name__.split(".")[0])
        top.handlers = [_ForwardLogs(conn)]
        top.propagate = False
        top.setLevel(job.log_level)
    except BaseException as exc:  # e.g. the task's module cannot be imported here
        with contextlib.suppress(OSError):
            conn.send(("unusable", _portable(exc)))
        return 1

    def parent_alive() -> str | None:
        if os.getppid() == parent_pid:
            return None
        return "the run that started this worker process has ended"

    keep_freed_memory()  # this process is nimask's own (see .allocator)
    with working_for(Run(job.run_id, parent_alive)):
        conn.send(("ready", os.getpid()))
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return 0
            if message is None:
                return 0
            index, path = message
            reply: tuple[str, int, object]
            try:
                reply = ("done", index, job.task(path, job.output_dir, job.settings,
                                                 **job.kwargs))
            except Exception as exc:
                reply = ("raised", index, _portable(exc))
            conn.send(reply)


def _mp_main(conn: Connection, parent_pid: int) -> None:
    """Entry point of a worker started by :mod:`multiprocessing` (fork, or spawn on Windows)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = _serve(conn, parent_pid)
    if code:
        sys.exit(code)


#: The whole program of a worker started as a fresh interpreter (its ``__main__``).
_BOOTSTRAP = f"""\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
if sys.path[:1] == [""]:
    del sys.path[0]
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[1]))
try:
    sys.path[:] = conn.recv()
except (EOFError, OSError):  # the caller stopped before sending anything
    os._exit(1)
from {__name__} import _exec_main
_exec_main(conn, int(sys.argv[2]))
"""


def _exec_main(conn: Connection, parent_pid: int) -> None:
    """Entry point of a worker started as a fresh interpreter (see ``_BOOTSTRAP``)."""
    code = _serve(conn, parent_pid)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)  # no interpreter teardown: nothing of the worker's state needs it


# --- the caller's side ----------------------------------------------------------------------


class _Worker:
    """One worker process as the caller sees it."""

    def __init__(self, conn: Connection, process: Any, method: str) -> None:
        self.conn = conn
        self.process = process
        self.method = method
        self.ready = False
        self.index: int | None = None  # the file it is processing
        self.deadline = time.monotonic() + START_TIMEOUT
        self.unusable = ""
        self.leaving = False  # told to exit: no file is left for it

    def exit_code(self, timeout: float | None = None) -> int | None:
        if self.method == "exec":
            try:
                return int(self.process.wait(timeout))
            except subprocess.TimeoutExpired:
                return None
        self.process.join(timeout)
        code = self.process.exitcode
        return None if code is None else int(code)

    def stop(self, kill: bool = False) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if kill:
                self.process.kill()
            else:
                self.process.terminate()


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Hold SIGINT back in this thread (a forked child inherits the block)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _interpreter_flags() -> list[str]:
    flags = getattr(subprocess, "_args_from_interpreter_flags", None)
    return list(flags()) if flags is not None else []


def _start_process(method: str, child_end: Connection) -> Any:
    """Start a worker holding ``child_end``: a ``Popen`` or a ``multiprocessing.Process``."""
    if method == "exec":
        if not sys.executable:
            raise OSError("no Python executable to start workers with (sys.executable is empty)")
        fd = child_end.fileno()
        command = [sys.executable, *_interpreter_flags(), "-c", _BOOTSTRAP, str(fd),
                   str(os.getpid())]
        return subprocess.Popen(command, pass_fds=(fd,), stdin=subprocess.DEVNULL,
                                start_new_session=True)
    context: Any = multiprocessing.get_context(method)
    process = context.Process(target=_mp_main, args=(child_end, os.getpid()),
                              name="nimask-worker", daemon=True)
    process.start()
    return process


def _launch(job: bytes) -> _Worker:
    """Start one worker and send it the job; raises ``OSError`` when it cannot be started."""
    method = start_method()
    parent_end, child_end = multiprocessing.Pipe(duplex=True)
    try:
        process = _start_process(method, child_end)
    except BaseException:
        parent_end.close()
        raise
    finally:
        child_end.close()
    worker = _Worker(parent_end, process, method)
    # A fresh interpreter first needs the caller's sys.path to import nimask and the task.
    first = [bytes(ForkingPickler.dumps(list(sys.path)))] if method == "exec" else []
    for message in [*first, job]:
        try:
            worker.conn.send_bytes(message)
        except OSError:  # it died already: seen as an end of file when read
            break
    return worker


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory, or killed)" if name == "SIGKILL" else ""
        return f"the worker process processing this file was killed by {name}{hint}"
    return f"the worker process processing this file died (exit code {exitcode})"


def _start_failure(worker: _Worker, exitcode: int | None) -> str:
    if worker.unusable:
        return f"a worker process could not set up: {worker.unusable}"
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"a worker process was killed by {signal.Signals(-exitcode).name} at start-up"
    return f"a worker process exited with status {exitcode} at start-up"


class _Pool:
    """Workers running the files of ``pending`` (indexes into ``inputs``)."""

    def __init__(self, job: _Job, inputs: Sequence[Case],
                 on_done: Callable[[int, FileResult], None], *, last_try: bool) -> None:
        self.job = job
        self.inputs = inputs
        self.on_done = on_done
        self.last_try = last_try
        self.workers: list[_Worker] = []
        self.start_failures: list[str] = []
        self.deaths: dict[int, str] = {}  # file index -> how its worker died
        self.job_bytes: bytes | None = None
        self.replacements = 0
        try:
            self.job_bytes = bytes(ForkingPickler.dumps(job))
        except Exception as exc:  # e.g. a task function that is not importable
            self.start_failures.append(f"the task cannot be sent to a worker process: "
                                       f"{type(exc).__name__}: {exc}")

    def launch(self) -> None:
        if self.job_bytes is None:
            return
        # Ctrl-C waits until the worker is known (and stopped with the others); a
        # forked worker ignores SIGINT before it can receive one.
        with _sigint_blocked():
            try:
                self.workers.append(_launch(self.job_bytes))
            except OSError as exc:
                self.start_failures.append(f"cannot start a worker process: {exc}")

    def run(self, pending: deque[int], size: int) -> None:
        """Process ``pending`` with up to ``size`` workers; files left in it had no worker."""
        # One replacement per file at most: workers that keep dying without a file
        # of their own (killed from outside) cannot make this loop forever.
        self.replacements = len(pending)
        for _ in range(size):
            self.launch()
            self._dispatch(pending)  # a worker starts on its file while the next one forks
        while self.workers:
            self._dispatch(pending)
            if not pending and all(w.index is None for w in self.workers):
                return
            starting = [w.deadline for w in self.workers if not w.ready]
            timeout = max(0.0, min(starting) - time.monotonic()) if starting else None
            ready = wait([w.conn for w in self.workers], timeout)
            if not ready:  # a worker did not start in time: it is stopped and ends below
                for worker in self.workers:
                    if not worker.ready and time.monotonic() >= worker.deadline:
                        worker.unusable = f"not ready after {START_TIMEOUT:g} s"
                        worker.stop(kill=True)
                continue
            for worker in [w for w in self.workers if w.conn in ready]:
                self._receive(worker, pending)

    def _dispatch(self, pending: deque[int]) -> None:
        """Give every idle worker a file; once none is left, let idle workers exit.

        An idle worker is told to exit as soon as no file is waiting and every
        worker is ready (a worker that dies before it is ready gives its file back
        to ``pending``, for the others), so its exit overlaps the last files.
        """
        all_ready = all(w.ready for w in self.workers)
        for worker in self.workers:
            if worker.index is not None or worker.unusable or worker.leaving:
                continue
            if pending:
                index = pending.popleft()
                try:
                    worker.conn.send((index, self.inputs[index]))
                except OSError:  # it died: seen as an end of file below
                    pending.appendleft(index)
                else:
                    worker.index = index
            elif all_ready:
                with contextlib.suppress(OSError):  # if it died, seen as an end of file
                    worker.conn.send(None)
                worker.leaving = True

    def _receive(self, worker: _Worker, pending: deque[int]) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._ended(worker, pending)
            return
        kind = message[0]
        if kind == "ready":
            worker.ready = True
        elif kind == "log":
            record: logging.LogRecord = message[1]
            logging.getLogger(record.name).handle(record)
        elif kind == "unusable":
            error = message[1]
            worker.unusable = error if isinstance(error, str) else _case().reason(error)
        else:
            index, payload = message[1], message[2]
            worker.index = None
            if kind == "done":
                self.on_done(index, payload)
            else:
                reason = payload if isinstance(payload, str) else _case().reason(payload)
                self.on_done(index, _case().failed_result(
                    self.inputs[index], self.job.output_dir, self.job.settings,
                    f"worker error: {reason}"))

    def _ended(self, worker: _Worker, pending: deque[int]) -> None:
        """A worker's pipe closed: it has exited (or is about to)."""
        self.workers.remove(worker)
        worker.conn.close()
        code = worker.exit_code(timeout=10.0)
        if code is None:
            worker.stop(kill=True)
            code = worker.exit_code()
        if not worker.ready:
            self.start_failures.append(_start_failure(worker, code))
            if worker.index is not None:
                pending.appendleft(worker.index)
            return
        if worker.index is not None:
            self.deaths[worker.index] = _death_reason(code)
            if not self.last_try:
                logger.warning("%s: %s; running it again alone once the other files are done",
                               self.inputs[worker.index].name, _death_reason(code))
        if pending and self.replacements > 0:
            self.replacements -= 1
            self.launch()

    def close(self, *, kill: bool) -> None:
        """Stop every worker (at once if ``kill``, else once its current file is done)."""
        for worker in self.workers:
            if kill:
                worker.stop()
            elif not worker.leaving:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
        for worker in self.workers:
            if worker.exit_code(timeout=None if kill else 30.0) is None:
                worker.stop(kill=True)
                worker.exit_code()
            worker.conn.close()
        self.workers.clear()


def _run_workers(job: _Job, inputs: Sequence[Case], pending: deque[int], size: int,
                 on_done: Callable[[int, FileResult], None], *, last_try: bool) -> _Pool:
    pool = _Pool(job, inputs, on_done, last_try=last_try)
    try:
        pool.run(pending, size)
        pool.close(kill=False)
    except BaseException:
        pool.close(kill=True)
        raise
    return pool


def run_pool(
    inputs: Sequence[Case],
    output_dir: Path,
    settings: MaskSettings,
    workers: int,
    on_done: Callable[[int, FileResult], None],
    *,
    skip_existing: bool = False,
) -> None:
    """Process ``inputs`` in ``workers`` processes; ``on_done`` gets every result.

    See the module's description for how workers start, die and are replaced.
    Every worker has exited when this returns or raises (``KeyboardInterrupt``
    included), and the temporaries of this run's workers are removed.
    """
    run = current_run()
    job = _Job(
        task=_case().process_file, output_dir=output_dir, settings=settings,
        kwargs={"skip_existing": skip_existing}, run_id=run.id,
        itk_threads=max(1, usable_cpus() // workers),
        log_level=logging.getLogger(__name__.split(".")[0]).getEffectiveLevel(),
    )
    pending = deque(range(len(inputs)))

    def _mask_folder(item: Case) -> Path:
        """The folder of a case's mask (a mirrored sub-folder for nested trees)."""
        return _case().mask_path(as_case(item), output_dir, settings).parent

    try:
        pool = _run_workers(job, inputs, pending, workers, on_done, last_try=False)
        if pending:  # no worker left to run them
            if pool.start_failures:
                why = f"worker processes could not be started ({pool.start_failures[-1]})"
            else:
                why = "worker processes kept dying without a file of their own"
            logger.warning("%s; processing the remaining %d file(s) in this process", why,
                           len(pending))
            with itk_threads(usable_cpus()):
                while pending:
                    index = pending.popleft()
                    on_done(index, _case().process_file(inputs[index], output_dir, settings,
                                                        skip_existing=skip_existing))
        elif pool.start_failures:
            logger.warning("%d worker process(es) could not be started (%s); the others went on",
                           len(pool.start_failures), pool.start_failures[-1])
        alone = replace(job, itk_threads=usable_cpus())
        for index, reason in sorted(pool.deaths.items()):
            cleanup_temporaries(_mask_folder(inputs[index]))  # the dead worker's temporary
            again = _run_workers(alone, inputs, deque([index]), 1, on_done, last_try=True)
            if index in again.deaths or again.start_failures:
                on_done(index, _case().failed_result(inputs[index], output_dir, settings,
                                                        again.deaths.get(index, reason)))
    finally:
        for folder in sorted({output_dir} | {_mask_folder(item) for item in inputs}):
            cleanup_temporaries(folder, run=run.id)
