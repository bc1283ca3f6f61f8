"""The local worker pool: start-up time per start method, and 1 vs 2 workers throughput.

Run from a checkout with nimask installed::

    python benchmarks/pool.py                 # real CT from $NIMASK_SHARED_DATA if present
    python benchmarks/pool.py --volumes 8 --rounds 2

1. Pool start: seconds from the first worker launched to every worker ready
   (job received, nimask imported), for forked workers and for fresh
   interpreters (what a caller with other threads, or with the spawn/forkserver
   start method, gets).  Median of ``--rounds`` pools of 2 workers.
2. Throughput: ``mask_dataset`` on ``--volumes`` copies of one volume with 1
   and with 2 workers, interleaved round by round (medians), beside the
   machine's own scaling (two independent CPU-bound processes against one, from
   ``bench.py``) measured in the same run.  The caller runs no other thread, so
   the 2-worker runs fork their workers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import cpu_scaling  # noqa: E402

from nimask import mask_dataset  # noqa: E402
from nimask.batch import pool  # noqa: E402
from nimask.batch.settings import MaskSettings  # noqa: E402


def _source(work: Path) -> Path:
    data = os.environ.get("NIMASK_SHARED_DATA")
    ct = Path(data) / "invesalius_ct_head_hu.nii.gz" if data else None
    if ct is not None and ct.is_file():
        return ct
    import SimpleITK as sitk

    from nimask.data.phantoms import ct_head_phantom

    path = work / "phantom_ct.nii.gz"
    sitk.WriteImage(ct_head_phantom((256, 256, 108), seed=1), str(path))
    return path


def pool_start_seconds(workers: int) -> float:
    """Seconds until ``workers`` workers of the current start method are all ready."""
    job = pool._Job(task=pool.usable_cpus, output_dir=Path("."),  # any importable function
                    settings=MaskSettings.create(None, 3), kwargs={}, run_id="00000000",
                    itk_threads=1, log_level=30)
    runner = pool._Pool(job, [], lambda i, r: None, last_try=True)
    start = time.perf_counter()
    for _ in range(workers):
        runner.launch()
    waiting = list(runner.workers)
    while waiting:
        for worker in waiting:
            if worker.conn.poll(0.001) and worker.conn.recv()[0] == "ready":
                worker.ready = True
        waiting = [w for w in waiting if not w.ready]
    seconds = time.perf_counter() - start
    runner.close(kill=False)
    return seconds


def _with_thread(func: Callable[[], float]) -> float:
    """``func()`` while another thread runs (workers then start as fresh interpreters)."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        return func()
    finally:
        stop.set()
        thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nimask-pool-bench-"))
    try:
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
              f"{pool.usable_cpus()} usable, load {os.getloadavg()[0]:.2f}")
        fork, fresh = [], []
        for _ in range(args.rounds):
            assert pool.start_method() == "fork"
            fork.append(pool_start_seconds(2))
            fresh.append(_with_thread(lambda: pool_start_seconds(2)))
        print(f"pool start, 2 workers: forked {statistics.median(fork) * 1000:.0f} ms, "
              f"fresh interpreters {statistics.median(fresh) * 1000:.0f} ms "
              f"(medians of {args.rounds})")

        src = _source(work)
        folder = work / "in"
        folder.mkdir()
        for i in range(args.volumes):
            os.link(src, folder / f"v{i:02d}.nii.gz")
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for workers in (1, 2):
                out = work / f"out{workers}"
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                results = mask_dataset(folder, out, workers=workers, progress=False)
                times[workers].append(time.perf_counter() - start)
                assert all(r.status == "written" for r in results)
        one, two = statistics.median(times[1]), statistics.median(times[2])
        scaling = cpu_scaling(2)
        print(f"{args.volumes} x {src.name}: 1 worker {one:.2f} s, 2 workers {two:.2f} s "
              f"-> {one / two:.2f}x; machine's own 2-process scaling {scaling:.2f}x; "
              f"ratio {one / two / scaling:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
