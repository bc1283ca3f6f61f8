"""How worker processes start, checked on the real path: scripts run with ``python``.

The README's quick start, saved as a script without ``if __name__ == "__main__":``
and run in a terminal (a pseudo-terminal here, so the progress bar is on), must
write every mask whatever the interpreter's start method: ``fork``,
``forkserver`` (Linux's default from Python 3.14; set here by a real
``sitecustomize``), ``spawn``, or the default with another thread running.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_parallel import _make_inputs

from nimask import mask_dataset
from nimask.batch.pool import usable_cpus

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"),
                           reason="fork is used on Linux only")
HANG_GUARD = 180  # seconds; only against a hung child, never a speed check

QUICK_START = """\
from nimask import generate_brain_mask_dataset
generate_brain_mask_dataset("scans", "masks", debug=True)
"""

#: What a script may do before the quick start, by case.
PRELUDES = {
    "default": "",
    "fork": "import multiprocessing\nmultiprocessing.set_start_method('fork')\n",
    "spawn": "import multiprocessing\nmultiprocessing.set_start_method('spawn')\n",
    "forkserver (sitecustomize)": "",
    "default, another thread running": (
        "import threading\n"
        "threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
    ),
    "user's progress bar running": (
        "from tqdm import tqdm\n"
        "outer = tqdm(total=1)  # its monitor thread runs while nimask works\n"
    ),
}


def _run_in_terminal(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run ``command`` with stdout and stderr on a pseudo-terminal; return status and output."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + HANG_GUARD
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the script did not end")
        returncode = proc.wait(timeout=HANG_GUARD)
    finally:
        os.close(master)
    return returncode, b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A folder of three volumes (and one broken file) and its masks made in-process."""
    root = tmp_path_factory.mktemp("quick_start")
    _make_inputs(root / "scans", 3)
    mask_dataset(root / "scans", root / "ref", workers=1, progress=False)
    return root / "scans", {p.name: p.read_bytes() for p in (root / "ref").iterdir()}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(PRELUDES))
def test_unguarded_quick_start_script_writes_every_mask(
    tmp_path: Path, reference: tuple[Path, dict[str, bytes]], case: str
) -> None:
    scans, expected = reference
    (tmp_path / "scans").symlink_to(scans)
    (tmp_path / "script.py").write_text(PRELUDES[case] + QUICK_START)
    env = dict(os.environ)
    if case.startswith("forkserver"):
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(
            "import multiprocessing\nmultiprocessing.set_start_method('forkserver')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    returncode, output = _run_in_terminal([sys.executable, "script.py"], tmp_path, env)
    assert returncode == 0, output
    assert "Traceback" not in output, output
    assert "Total brain masks generated: 3" in output, output
    assert "vol_99.nii.gz" in output  # the broken file fails alone, with its line
    assert output.count("died") == 0, output
    assert {p.name: p.read_bytes() for p in (tmp_path / "masks").iterdir()} == expected


_PRINT_METHOD = """\
import sys, threading
from nimask.batch.pool import start_method
{prelude}
print(start_method())
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prelude", "method"),
    [
        ("", "fork"),
        ("import multiprocessing; multiprocessing.set_start_method('fork')", "fork"),
        ("import multiprocessing; multiprocessing.set_start_method('spawn')", "exec"),
        ("import multiprocessing; multiprocessing.set_start_method('forkserver')", "exec"),
        ("threading.Thread(target=threading.Event().wait, daemon=True).start()", "exec"),
        ("from tqdm import tqdm; bar = tqdm(total=1, disable=False)", "exec"),
        # nimask's own progress bar runs no monitor thread.
        ("from nimask.batch.run import _Bar; bar = _Bar(total=1, disable=False)", "fork"),
    ],
)
@LINUX
def test_workers_are_forked_only_from_a_single_threaded_caller(prelude: str, method: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _PRINT_METHOD.format(prelude=prelude)],
                          capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == method


_FALLBACK = """\
import logging, sys, threading
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
threading.Thread(target=threading.Event().wait, daemon=True).start()  # fresh interpreters
sys.executable = {executable!r}
from nimask import generate_brain_mask_dataset
generate_brain_mask_dataset("scans", "masks", debug=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("executable", "cause"),
    [
        ("/bin/false", "a worker process exited with status 1 at start-up"),
        ("/nonexistent/python", "cannot start a worker process: [Errno 2] No such file or "
                                "directory: '/nonexistent/python'"),
    ],
)
def test_a_pool_that_cannot_start_falls_back_to_this_process_with_one_warning(
    tmp_path: Path, reference: tuple[Path, dict[str, bytes]], executable: str, cause: str
) -> None:
    scans, expected = reference
    (tmp_path / "scans").symlink_to(scans)
    (tmp_path / "script.py").write_text(_FALLBACK.format(executable=executable))
    proc = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == [
        f"WARNING nimask.batch.pool: worker processes could not be started ({cause}); "
        "processing the remaining 4 file(s) in this process"
    ], proc.stderr
    assert "Total brain masks generated: 3" in proc.stdout
    assert {p.name: p.read_bytes() for p in (tmp_path / "masks").iterdir()} == expected


def _children(pid: int) -> set[int]:
    """The child processes of ``pid`` but a multiprocessing resource tracker."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found |= {int(c) for c in task.read_text().split()}
        except OSError:
            continue
    return {c for c in found if b"resource_tracker" not in _cmdline(c)}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


@pytest.mark.slow
@LINUX
@pytest.mark.parametrize("method", ["default", "spawn"])
def test_ctrl_c_while_the_workers_start_prints_no_traceback(
    tmp_path: Path, reference: tuple[Path, dict[str, bytes]], method: str
) -> None:
    scans, _ = reference
    env = dict(os.environ)
    if method != "default":  # workers are then fresh interpreters: ~0.3 s to start
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(
            f"import multiprocessing\nmultiprocessing.set_start_method({method!r})\n")
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nimask", "mask", str(scans), str(out), "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + HANG_GUARD
    children: set[int] = set()
    while not children and time.monotonic() < deadline and proc.poll() is None:
        children = _children(proc.pid)
        time.sleep(0.002)
    assert children, "no worker process was started"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, stderr = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.rstrip().endswith("nimask: interrupted (no partial mask left)"), stderr
    assert re.search(r"interrupted: \d+ written before interruption", stderr), stderr
    # Every worker was stopped and reaped.
    assert all(_gone(pid) for pid in children)
    assert not [p for p in out.iterdir() if ".nimask-tmp-" in p.name]


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
assert parallel.start_method() == "fork"
results = mask_dataset({str(tmp_path / 'in')!r}, {str(tmp_path / 'out')!r}, workers=2,
                       progress=False)
print([r.status for r in results])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stderr
    # The three volumes are written; the truncated vol_99 fails alone.
    assert proc.stdout.strip() == "['written', 'written', 'written', 'failed']"


_COUNT_STARTS = """\
import sys, threading
starts = []
sys.addaudithook(lambda event, args: starts.append(event)
                 if event in ("os.fork", "subprocess.Popen", "os.posix_spawn") else None)
if {thread}:
    threading.Thread(target=threading.Event().wait, daemon=True).start()
from nimask import mask_dataset
results = mask_dataset({folder!r}, {out!r}, progress=False)
print(len(results), len(starts))
"""


@pytest.mark.slow
@pytest.mark.parametrize("thread", [False, True])
def test_a_single_volume_starts_no_process(tmp_path: Path, thread: bool) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    _make_inputs(two, 2)
    (two / "vol_99.nii.gz").unlink()
    one.mkdir()
    (one / "vol_00.nii.gz").symlink_to(two / "vol_00.nii.gz")
    counts = []
    for folder in (one, two):
        script = _COUNT_STARTS.format(thread=thread, folder=str(folder),
                                      out=str(tmp_path / f"out_{folder.name}"))
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=HANG_GUARD)
        assert proc.returncode == 0, proc.stderr
        counts.append(proc.stdout.split())
    # One volume: masked in this process.  Two volumes, default workers (2 CPUs here
    # or more): one process per worker.
    workers = min(2, usable_cpus())
    assert counts == [["1", "0"], ["2", str(workers if workers > 1 else 0)]]


_THREADS_JOINED = """\
import sys, threading
import numpy as np, SimpleITK as sitk
started, forks = [], []
sys.addaudithook(lambda event, args: forks.append(event) if event == "os.fork" else None)
_start = threading.Thread.start
def start(self):  # observe the threads nimask starts (names), nothing else changes
    started.append(self.name)
    _start(self)
threading.Thread.start = start
from nimask import generate_brain_mask_dataset, mask_dataset
from nimask.batch.pool import start_method
rng = np.random.default_rng(0)
shape = (60, 200, 200)  # 2.4 M voxels: Otsu counts in parallel parts
head = rng.random(shape) < 0.4
image = sitk.GetImageFromArray(np.where(head, rng.normal(800, 90, shape),
                                        rng.normal(20, 5, shape)).astype(np.float32))
for name in ("a", "b"):
    sitk.WriteImage(image, f"{{sys.argv[1]}}/two/{{name}}.nii.gz")
sitk.WriteImage(image, f"{{sys.argv[1]}}/one/a.nii.gz")
generate_brain_mask_dataset(f"{{sys.argv[1]}}/one", f"{{sys.argv[1]}}/out_one")
print(sorted(set(started)), threading.active_count(), start_method(), len(forks))
mask_dataset(f"{{sys.argv[1]}}/two", f"{{sys.argv[1]}}/out_two", workers=2, progress=False)
print(len(forks))
"""


@LINUX
@pytest.mark.slow
def test_a_volume_masked_in_this_process_leaves_no_thread_and_workers_still_fork(
        tmp_path: Path) -> None:
    # The input's hash and Otsu's counts run in threads; they end with the
    # volume, so the next batch still forks its workers (no thread alive).
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    proc = subprocess.run([sys.executable, "-c", _THREADS_JOINED.format(), str(tmp_path)],
                          capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()[-2:]
    # a run in this process gives ITK (and the counting) every usable CPU
    names = "['nimask-hash', 'nimask-otsu']" if usable_cpus() > 1 else "['nimask-hash']"
    assert first == f"{names} 1 fork 0"
    assert second == "2"
    assert len(list((tmp_path / "out_two").glob("*_mask.nii.gz"))) == 2
