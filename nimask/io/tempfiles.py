"""Who owns nimask's temporary files, and whether a process may still publish a mask.

Every mask is written to a hidden temporary file in the output folder and then
renamed (:func:`nimask.io.atomic_write`).  Several runs may share one output
folder at once (two shells, a local run beside a Dask batch), so each temporary
file and each storage probe names its owner::

    .nimask-tmp-<run>-<host>-<pid>-<tag>-XXXXXXXX<suffix>     a file being written
    .nimask-tmp-<run>-<host>-<pid>-shared                      an executor batch's probe

``<run>`` identifies one :func:`nimask.mask_dataset` call (8 hex digits),
``<host>`` the machine that wrote the file (6 hex digits of a hash of its host
name), ``<pid>`` the writing process and ``<tag>`` the final file's name
(:func:`nimask.io.nifti.temporary_tag`, 8 hex digits: the temporary's name does
not grow with the final name's, so any name the file system takes can be written).
:func:`cleanup_temporaries` removes a file only when its owner is gone: its process
no longer runs on this machine, or
(at the end of a run) it belongs to that run.  A file written on another machine
is never judged by a process id of this one: it is left alone unless it has not
been modified for :data:`FOREIGN_STALE_SECONDS` (a probe of another machine is
always left alone; its own run removes it).

A process works for one run at a time (:func:`working_for`).  A run may carry a
check that :func:`nimask.io.atomic_write` calls right before the rename: a worker
process whose parent is gone, or a remote task whose batch removed its storage
probe, then removes its temporary instead of publishing a mask nobody asked for
any more.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FOREIGN_STALE_SECONDS",
    "HOST_TAG",
    "TEMP_MARKER",
    "Owner",
    "Run",
    "cleanup_temporaries",
    "current_run",
    "enter_run",
    "leave_run",
    "new_run_id",
    "owner_tag",
    "parse_owner",
    "probe_name",
    "process_alive",
    "publish_refusal",
    "working_for",
]

logger = logging.getLogger(__name__)

#: Marker in the names of nimask's temporary files and probes.
TEMP_MARKER = ".nimask-tmp-"

#: Suffix of an executor batch's storage probe (after the owner tag).
PROBE_SUFFIX = "shared"

#: A temporary written on another machine is removed once unmodified for this long.
FOREIGN_STALE_SECONDS = 24 * 3600.0


def _host_tag() -> str:
    return hashlib.blake2b(socket.gethostname().encode("utf-8", "surrogateescape"),
                           digest_size=3).hexdigest()


#: This machine, as written in temporary names (6 hex digits).
HOST_TAG = _host_tag()


def new_run_id() -> str:
    """A fresh run identifier: 8 random hex digits."""
    return secrets.token_hex(4)


@dataclass(frozen=True)
class Run:
    """The run a process (or thread) works for.

    Attributes
    ----------
    id : str
        The run identifier written in temporary names.
    check : callable or None
        Called right before a mask is renamed into place: ``None`` allows it,
        a string says why the mask must not be published.
    """

    id: str
    check: Callable[[], str | None] | None = None


_PROCESS_RUN: Run | None = None
_CURRENT: contextvars.ContextVar[Run | None] = contextvars.ContextVar("nimask_run", default=None)


def current_run() -> Run:
    """The run this thread works for (a per-process run outside any)."""
    run = _CURRENT.get()
    if run is not None:
        return run
    global _PROCESS_RUN
    if _PROCESS_RUN is None:
        _PROCESS_RUN = Run(new_run_id())
    return _PROCESS_RUN


def _forget_process_run() -> None:
    global _PROCESS_RUN
    _PROCESS_RUN = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_process_run)


@contextlib.contextmanager
def working_for(run: Run) -> Iterator[Run]:
    """Work for ``run`` in this thread (and its context) for the ``with`` block."""
    token = _CURRENT.set(run)
    try:
        yield run
    finally:
        _CURRENT.reset(token)


def enter_run(run: Run) -> contextvars.Token[Run | None]:
    """Start working for ``run`` in this thread; undo with :func:`leave_run`."""
    return _CURRENT.set(run)


def leave_run(token: contextvars.Token[Run | None]) -> None:
    """Stop working for the run entered with ``token``."""
    _CURRENT.reset(token)


def publish_refusal() -> str | None:
    """Why the current run must not publish a mask now, or ``None``."""
    check = current_run().check
    return None if check is None else check()


def owner_tag(run_id: str | None = None) -> str:
    """``<run>-<host>-<pid>-``: the owner part of a temporary name, after :data:`TEMP_MARKER`."""
    return f"{run_id or current_run().id}-{HOST_TAG}-{os.getpid()}-"


@dataclass(frozen=True)
class Owner:
    """The owner read from a temporary name (``run`` and ``host`` are ``None`` in older names)."""

    pid: int
    run: str | None = None
    host: str | None = None


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)


def parse_owner(name: str) -> Owner | None:
    """The owner in a temporary's name; ``None`` when it names none (a pre-0.1 name).

    Reads ``<run>-<host>-<pid>-...`` and the older ``<pid>-...`` after :data:`TEMP_MARKER`.
    """
    if TEMP_MARKER not in name:
        return None
    fields = name.rsplit(TEMP_MARKER, 1)[1].split("-")
    if len(fields) >= 3 and _is_hex(fields[0], 8) and _is_hex(fields[1], 6) \
            and fields[2].isdigit():
        return Owner(int(fields[2]), fields[0], fields[1])
    if fields[0].isdigit():
        return Owner(int(fields[0]))
    return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    try:  # a zombie (killed, not yet reaped) writes nothing any more
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def probe_name(run_id: str | None = None) -> str:
    """The name of an executor batch's storage probe, owned by this process."""
    return f"{TEMP_MARKER}{owner_tag(run_id)}{PROBE_SUFFIX}"


def _is_probe(name: str) -> bool:
    return name.startswith(TEMP_MARKER) and name.endswith("-" + PROBE_SUFFIX)


def _owner_gone(name: str, owner: Owner | None, mtime: float, run: str | None) -> bool:
    if owner is None:
        return True  # no owner in the name: written by an old version, nobody to wait for
    if run is not None and owner.run == run:
        return True  # the caller's run has ended: every process that wrote for it is done
    if owner.host is not None and owner.host != HOST_TAG:
        # Another machine's process: its pid means nothing here.
        return not _is_probe(name) and time.time() - mtime > FOREIGN_STALE_SECONDS
    if owner.pid == os.getpid():
        return False  # this process: still writing (or about to rename)
    return not process_alive(owner.pid)


def cleanup_temporaries(folder: str | os.PathLike[str], *, run: str | None = None) -> int:
    """Remove nimask temporaries and probes in ``folder`` whose owner is gone.

    Only regular files whose name starts with ``.`` and contains
    :data:`TEMP_MARKER` are considered.  One is removed when the process that
    wrote it no longer runs on this machine, when its name carries no owner (an
    older nimask), when it was written on another machine and not modified for
    :data:`FOREIGN_STALE_SECONDS` (never a probe of another machine), or when it
    belongs to ``run`` (pass the caller's own run once every process of it has
    ended).  Files of live owners (another run writing to the same folder, an
    executor batch's probe) are kept, and so are those of the calling process
    unless they belong to ``run``.

    Returns
    -------
    int
        Number of files removed.
    """
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        if not name.startswith(".") or TEMP_MARKER not in name:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if not _owner_gone(name, parse_owner(name), mtime, run):
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("cannot remove leftover temporary %s: %s", name, exc.strerror or exc)
            continue
        removed += 1
        logger.info("removed leftover temporary file %s", name)
    return removed
