"""Batches on any ``concurrent.futures`` executor, and on Dask clusters.

:func:`nimask.mask_dataset` accepts ``executor=``: any
:class:`concurrent.futures.Executor`, for instance the one of a Dask client,
``distributed.Client(address).get_executor()``.  Each file is one task,
:func:`run_task`, which checks on the worker that the input and the output
folder are the ones this machine sees (inputs and outputs must be on storage
every worker shares), then calls :func:`nimask.batch.case.process_file`.

:func:`open_executor` opens such an executor from a scheduler address or
starts a local Dask cluster.  Dask is optional (``pip install "nimask[dask]"``)
and imported only inside :func:`open_executor`: importing this module does not
import Dask.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import (
    CancelledError,
    Executor,
    Future,
    ThreadPoolExecutor,
    as_completed,
)
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import SimpleITK as sitk

from .._version import __version__
from ..exceptions import MissingDependencyError, OutputError, ParameterError, SchedulerError
from ..io.discovery import as_case
from ..io.tempfiles import Run, cleanup_temporaries, current_run, probe_name, working_for
from ..records import Case, FileResult
from .case import failed_result, mask_path, process_file, reason
from .pool import usable_cpus
from .settings import MaskSettings

__all__ = [
    "CONNECT_TIMEOUT",
    "DASK_EXTRA_HINT",
    "RemoteTask",
    "open_executor",
    "run_on_executor",
    "run_task",
]

logger = logging.getLogger(__name__)

DASK_EXTRA_HINT = 'pip install "nimask[dask]"'

#: Identifies the process that submits tasks (a forked or remote worker differs).
_PROCESS_TOKEN = (uuid.uuid4().hex, os.getpid())

#: Seconds :func:`open_executor` waits for a scheduler by default.
CONNECT_TIMEOUT = 10.0

#: ITK threads per task on workers.  Dask's nanny already limits OpenMP/MKL/OpenBLAS
#: to one thread per worker thread; the executor's task slots give the parallelism.
WORKER_ITK_THREADS = 1


@dataclass(frozen=True)
class RemoteTask:
    """One file, with what the worker needs to check that it sees the same storage."""

    input_path: Path
    output_dir: Path
    settings: MaskSettings
    input_size: int | None
    probe_name: str
    nimask_version: str
    submitter: tuple[str, int]
    itk_threads: int = WORKER_ITK_THREADS
    skip_existing: bool = False
    run_id: str = ""
    #: The case (absolute paths); ``None``: the volume file ``input_path``, flat.
    case: Case | None = None


def _worker_name() -> str:
    """The host name, with the Dask worker's address when the task runs on one."""
    host = socket.gethostname()
    module = sys.modules.get("distributed")
    if module is not None:
        with contextlib.suppress(Exception):  # not running inside a Dask worker
            return f"{host} ({module.get_worker().address})"
    return host


def _failed(task: RemoteTask, error: str) -> FileResult:
    return failed_result(task.case or task.input_path, task.output_dir, task.settings, error)


def run_task(task: RemoteTask) -> FileResult:
    """Worker side of one file: check storage and version, then :func:`process_file`.

    Never raises for a bad volume or a storage problem: the file is reported as
    failed with a reason naming the worker's host.

    Parameters
    ----------
    task : RemoteTask
        Absolute paths, settings and the facts the submitting machine saw.

    Returns
    -------
    FileResult
    """
    if task.submitter != _PROCESS_TOKEN:
        # A worker process of its own: one ITK thread per task (the executor's
        # task slots give the parallelism).  Never changed in the caller's process.
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(task.itk_threads)
    if task.nimask_version != __version__:
        return _failed(
            task,
            f"nimask {__version__} on worker {_worker_name()} differs from nimask "
            f"{task.nimask_version} that submitted the batch: install the same version everywhere",
        )
    try:
        size = task.input_path.stat().st_size if task.input_path.is_file() else None
    except OSError:
        size = None
    if size is None:
        return _failed(task, f"input not visible on worker {_worker_name()}: {task.input_path}")
    if task.input_size is not None and size != task.input_size:
        return _failed(
            task,
            f"input differs on worker {_worker_name()}: {task.input_path} has {size} bytes "
            f"there and {task.input_size} bytes on the submitting machine "
            "(inputs must be on storage every worker shares)",
        )
    if not (task.output_dir / task.probe_name).exists():
        return _failed(
            task,
            f"output folder not shared with worker {_worker_name()}: {task.output_dir} "
            "(outputs must be on storage every worker shares)",
        )
    probe = task.output_dir / task.probe_name

    def batch_alive() -> str | None:
        # The batch removes its probe when it ends; a later run removes it once the
        # submitting process is gone (killed): either way, nobody wants this mask now.
        return None if probe.exists() else "the batch that submitted this task has ended"

    with working_for(Run(task.run_id or current_run().id, batch_alive)):
        return process_file(task.case or task.input_path, task.output_dir, task.settings,
                            skip_existing=task.skip_existing)


@contextlib.contextmanager
def _storage_probe(output_dir: Path, run_id: str) -> Iterator[str]:
    """A hidden empty file in ``output_dir`` that workers look for, removed afterwards.

    Its name carries the run and this process (:func:`nimask.io.tempfiles.probe_name`):
    other runs' clean-ups leave it alone while this process runs.
    """
    name = probe_name(run_id)
    probe = output_dir / name
    try:
        probe.touch(exist_ok=False)
    except OSError as exc:
        raise OutputError(f"cannot write in output folder {output_dir}: {reason(exc)}") from exc
    try:
        yield name
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _absolute(item: Case) -> Case:
    return replace(item, source=Path(os.path.abspath(item.source)),
                   files=tuple(Path(os.path.abspath(f)) for f in item.files))


def _task_failure(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"worker failed: {type(exc).__name__}" + (f": {text}" if text else "")


def run_on_executor(
    executor: Executor,
    inputs: Sequence[Case],
    output_dir: Path,
    settings: MaskSettings,
    on_done: Callable[[int, FileResult], None],
    *,
    skip_existing: bool = False,
) -> None:
    """Run one :func:`run_task` per input on ``executor``; ``on_done(index, result)`` as they end.

    A task that raises (worker died, ``KilledWorker``, cancelled, connection
    lost) fails only its file.  Results carry the paths as given (relative paths
    stay relative); the tasks get absolute paths.  Pending tasks are cancelled
    when the loop is left early (e.g. on ``KeyboardInterrupt``).
    """
    abs_out = Path(os.path.abspath(output_dir))
    run_id = current_run().id
    with _storage_probe(abs_out, run_id) as probe:
        futures: dict[Future[FileResult], int] = {}
        try:
            for i, item in enumerate(inputs):
                item = as_case(item)
                try:
                    size: int | None = item.source.stat().st_size
                except OSError:  # vanished since discovery: the worker reports it
                    size = None
                task = RemoteTask(
                    input_path=Path(os.path.abspath(item.source)),
                    output_dir=abs_out,
                    settings=settings,
                    input_size=size,
                    probe_name=probe,
                    nimask_version=__version__,
                    submitter=_PROCESS_TOKEN,
                    skip_existing=skip_existing,
                    run_id=run_id,
                    case=_absolute(item),
                )
                futures[executor.submit(run_task, task)] = i
            for future in as_completed(futures):
                index = futures[future]
                item = as_case(inputs[index])
                try:
                    res = future.result()
                except (Exception, CancelledError, asyncio.CancelledError) as exc:
                    res = failed_result(item, output_dir, settings, _task_failure(exc))
                res.input = item.display
                res.output = str(mask_path(item, output_dir, settings)) if res.output else ""
                on_done(index, res)
        finally:
            for future in futures:
                future.cancel()
            # Temporaries of this run's tasks whose worker was killed mid-write (in the
            # mirrored sub-folders too); those of other runs are left alone.
            for folder in sorted({mask_path(as_case(i), abs_out, settings).parent
                                  for i in inputs}):
                cleanup_temporaries(folder, run=run_id)


def _import_distributed() -> ModuleType:
    try:
        import distributed
    except ImportError as exc:
        raise MissingDependencyError(
            f"running on a Dask scheduler needs Dask: {DASK_EXTRA_HINT} ({exc})"
        ) from exc
    return distributed


async def _connect_and_close(module: ModuleType, address: str, timeout: float) -> None:
    args = module.Security().get_connection_args("client")  # TLS settings from Dask's config
    comm = await module.comm.connect(address, timeout=timeout, **args)
    await comm.close()


def _probe_scheduler(module: ModuleType, address: str, timeout: float) -> None:
    """Open and close one connection to ``address``; raises ``OSError`` when unreachable.

    Runs in a thread of its own, so it also works under a running event loop (Jupyter).
    """
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _connect_and_close(module, address, timeout)).result()


@contextlib.contextmanager
def open_executor(
    scheduler: str,
    *,
    connect_timeout: float | None = None,
    n_workers: int | None = None,
) -> Iterator[Executor]:
    """An executor on a Dask scheduler, or on a new local Dask cluster.

    Parameters
    ----------
    scheduler : str
        ``"local"`` starts a ``LocalCluster`` on this machine: ``n_workers``
        worker processes (default: every usable CPU) of one thread each, on the
        loopback interface, without dashboard.  Anything else is the address of
        a running Dask scheduler, e.g. ``"tcp://head-node:8786"``.
    connect_timeout : float or None, default None
        Seconds to wait for the scheduler before giving up (``None``:
        :data:`CONNECT_TIMEOUT`, 10 s).
    n_workers : int or None, default None
        Worker processes of the local cluster (``"local"`` only).

    Yields
    ------
    concurrent.futures.Executor
        ``client.get_executor()``; pass it to ``mask_dataset(..., executor=...)``.
        The client (and the local cluster) is closed on exit; on an exception,
        tasks still pending are cancelled.

    Raises
    ------
    MissingDependencyError
        Dask is not installed (``pip install "nimask[dask]"``).
    ParameterError
        ``scheduler`` is not ``"local"`` nor a scheduler address, or bad ``n_workers``.
    SchedulerError
        The scheduler cannot be reached within ``connect_timeout``, or the local
        cluster cannot start.
    """
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ParameterError(f"scheduler must be 'local' or an address, got {scheduler!r}")
    if connect_timeout is None:
        connect_timeout = CONNECT_TIMEOUT
    if (
        isinstance(connect_timeout, bool)
        or not isinstance(connect_timeout, (int, float))
        or not connect_timeout > 0
    ):
        raise ParameterError(f"connect_timeout must be a positive number, got {connect_timeout!r}")
    if n_workers is not None and (
        isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1
    ):
        raise ParameterError(f"n_workers must be a positive integer or None, got {n_workers!r}")
    module = _import_distributed()
    address = scheduler.strip()
    with contextlib.ExitStack() as stack:
        client: Any
        if address.lower() == "local":
            workers = n_workers or usable_cpus()
            try:
                cluster = module.LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                )
            except (OSError, RuntimeError) as exc:
                raise SchedulerError(f"cannot start a local Dask cluster: {reason(exc)}") from exc
            stack.callback(cluster.close)
            logger.info("local Dask cluster with %d worker processes", workers)
            client = module.Client(cluster, set_as_default=False)
        else:
            if n_workers is not None:
                raise ParameterError("n_workers applies only to scheduler='local'")
            try:
                _probe_scheduler(module, address, float(connect_timeout))
            except ValueError as exc:
                raise ParameterError(
                    f"not a Dask scheduler address: {address!r} ({exc}); "
                    "use 'local' or e.g. tcp://host:8786"
                ) from exc
            except OSError as exc:
                raise SchedulerError(
                    f"cannot reach the Dask scheduler at {address} within "
                    f"{connect_timeout:g} s ({reason(exc)}); check the address and that the "
                    "scheduler is running and reachable from this machine"
                ) from exc
            try:
                client = module.Client(address, timeout=connect_timeout, set_as_default=False)
            except OSError as exc:
                raise SchedulerError(
                    f"cannot connect to the Dask scheduler at {address}: {reason(exc)}"
                ) from exc
            logger.info("connected to the Dask scheduler at %s", address)
        stack.callback(client.close)
        executor = client.get_executor()
        try:
            yield executor
        except BaseException:
            executor.shutdown(wait=False)
            raise
