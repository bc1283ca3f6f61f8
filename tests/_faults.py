"""Test-only faults injected into nimask's per-file task, chosen by file name.

``faulty_process_file`` replaces ``nimask.batch.case.process_file`` in a test
(``monkeypatch``) or in a child script.  It is pickled by reference, so spawned
worker processes import this module (they inherit ``sys.path``) and run it too;
nimask itself has no test hook.  Behaviour by input file name:

* ``*segv*``: the process kills itself with SIGSEGV (a crash in native code);
* ``*sigkill*``: SIGKILL (what the kernel's OOM killer sends);
* ``*exit*``: ``os._exit(3)``;
* ``*pause*``: half-writes the temporary mask file, creates ``paused-<pid>``
  next to the output folder, then sleeps (to be killed or interrupted);
* ``*unreported*``: writes the complete mask, creates ``unreported-<pid>`` next
  to the output folder, then sleeps before returning its result (a worker
  stopped between its mask's rename and the report of its result);
* ``*hold*``: creates ``held-<pid>`` next to the output folder, then waits
  (at most 120 s) until a file ``release`` appears there, and goes on;
* anything else: the real ``process_file``.

Crashes only happen in a worker process, never in the test process itself.
Each call appends ``start``/``end`` events with its pid to ``events.log`` next
to the output folder, and an ``overlap`` event when an earlier attempt at the
same file is still running (a file processed twice at once).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import nimask.batch.case
import nimask.batch.pool
import nimask.batch.run
import nimask.io.nifti

REAL_PROCESS_FILE = nimask.batch.case.process_file
REAL_ATOMIC_WRITE = nimask.io.nifti.atomic_write


def _event(log: Path, text: str) -> None:
    with open(log, "a") as fh:
        fh.write(text + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pausing_atomic_write(out_path: Path, write: Any) -> None:
    def half_write_then_sleep(tmp: Path) -> None:
        write(tmp)
        data = Path(tmp).read_bytes()
        Path(tmp).write_bytes(data[: len(data) // 2])
        Path(out_path).parent.parent.joinpath(f"paused-{os.getpid()}").write_text(str(tmp))
        time.sleep(120)

    REAL_ATOMIC_WRITE(out_path, half_write_then_sleep)


def faulty_process_file(input_path: Path, output_dir: Path, settings: Any,
                        **kwargs: Any) -> Any:
    name = Path(input_path).name
    log = Path(output_dir).parent / "events.log"
    if log.exists():
        for line in log.read_text().splitlines():
            kind, other, pid = line.split(" ")
            if kind == "start" and other == name and int(pid) != os.getpid() and _alive(int(pid)):
                _event(log, f"overlap {name} {pid}")
    _event(log, f"start {name} {os.getpid()}")
    in_worker = nimask.batch.pool._IN_WORKER
    if in_worker and "segv" in name:
        os.kill(os.getpid(), signal.SIGSEGV)
    if in_worker and "sigkill" in name:
        os.kill(os.getpid(), signal.SIGKILL)
    if in_worker and "exit" in name:
        os._exit(3)
    if "pause" in name:
        nimask.io.nifti.atomic_write = _pausing_atomic_write
    if "hold" in name:
        root = Path(output_dir).parent
        root.joinpath(f"held-{os.getpid()}").write_text(name)
        deadline = time.monotonic() + 120
        while not root.joinpath("release").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    try:
        result = REAL_PROCESS_FILE(input_path, output_dir, settings, **kwargs)
    finally:
        nimask.io.nifti.atomic_write = REAL_ATOMIC_WRITE
    _event(log, f"end {name} {os.getpid()}")
    if "unreported" in name:
        Path(output_dir).parent.joinpath(f"unreported-{os.getpid()}").write_text(result.output)
        time.sleep(120)
    return result


def raising_process_file(input_path: Path, output_dir: Path, settings: Any,
                         **kwargs: Any) -> Any:
    """Raise an unexpected exception for ``a.nii.gz``; the real task otherwise."""
    name = Path(input_path).name
    if name == "a.nii.gz":
        raise KeyError(f"injected for {name}")
    return REAL_PROCESS_FILE(input_path, output_dir, settings, **kwargs)
