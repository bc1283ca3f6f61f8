"""Threads for numpy work that releases the GIL, within ITK's thread budget."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import SimpleITK as sitk

__all__ = ["run_parallel", "split", "work_threads"]

T = TypeVar("T")


def work_threads() -> int:
    """Threads nimask's numpy steps may use: ITK's global default number of threads.

    nimask's batch runs set that number to ``usable CPUs // workers`` in each
    worker, so these threads never oversubscribe the machine; a caller of the
    core functions controls it as for ITK's own filters
    (``sitk.ProcessObject.SetGlobalDefaultNumberOfThreads``).
    """
    return max(1, int(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()))


def split(size: int, block: int, min_part: int) -> list[tuple[int, int]]:
    """Contiguous ``[begin, end)`` ranges covering ``range(size)``, one per work thread.

    Each range holds whole ``block``-sized pieces (the last one excepted) and at
    least ``min_part`` items: below ``2 * min_part`` items there is one range.
    An empty ``size`` gives the one range ``(0, 0)``.
    """
    parts = max(1, min(work_threads(), size // min_part))
    step = max(block, -(-size // parts // block) * block)
    return [(lo, min(lo + step, size)) for lo in range(0, size, step)] or [(0, 0)]


def run_parallel(tasks: Sequence[Callable[[], T]], name: str = "nimask-work") -> list[T]:
    """Results of ``tasks``: the first runs in this thread, each other one in a thread.

    Every thread is joined before returning (none outlives the call); the
    first exception raised by a task is raised here.  Meant for tasks that
    spend their time in numpy calls that release the GIL.
    """
    results: list[T | None] = [None] * len(tasks)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = tasks[i]()
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), name=name, daemon=True)
               for i in range(1, len(tasks))]
    for thread in threads:
        thread.start()
    try:
        if tasks:
            work(0)
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]  # every task set its result
