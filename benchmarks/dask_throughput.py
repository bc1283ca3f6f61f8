"""Throughput of a batch on a local Dask cluster: 1 vs 2 worker processes.

Writes N deterministic CT head phantoms, starts two ``LocalCluster``s in this
process (1 and 2 worker processes of one thread each, loopback, no dashboard),
then masks the folder on each in interleaved repetitions (the order alternates)
and prints the median wall time, the throughput and the ratio.  Every run's
masks must be byte-identical to the first run's.

    python benchmarks/dask_throughput.py                 # 16 volumes of 160x160x128
    python benchmarks/dask_throughput.py --repeats 5 --volumes 16 --shape 160 160 128

The machine may be shared: the load average before and after is printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
from distributed import Client, LocalCluster

from nimask import mask_dataset
from nimask.data.phantoms import ct_head_phantom


def _write_inputs(folder: Path, volumes: int, shape: tuple[int, int, int]) -> None:
    folder.mkdir()
    for seed in range(volumes):
        sitk.WriteImage(ct_head_phantom(shape, seed=seed), str(folder / f"ct_{seed:02d}.nii.gz"))


def _masks(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=16)
    parser.add_argument("--shape", type=int, nargs=3, default=(160, 160, 128), metavar="N")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shape = (args.shape[0], args.shape[1], args.shape[2])
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="nimask-dask-bench-"))
    try:
        inputs = work / "in"
        _write_inputs(inputs, args.volumes, shape)
        size_mb = sum(p.stat().st_size for p in inputs.iterdir()) / 1e6
        print(f"{args.volumes} volumes of {shape[0]}x{shape[1]}x{shape[2]} int16 "
              f"({size_mb:.0f} MB gzip), Otsu, closing radius 3; {os.cpu_count()} CPUs")
        print(f"load average before: {os.getloadavg()}")
        clusters = {
            n: LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                            host="127.0.0.1", dashboard_address=None)
            for n in (1, 2)
        }
        clients = {n: Client(c, set_as_default=False) for n, c in clusters.items()}
        executors = {n: clients[n].get_executor() for n in clusters}
        times: dict[int, list[float]] = {1: [], 2: []}
        reference: dict[str, bytes] | None = None
        try:
            for rep in range(args.repeats + 1):  # repetition 0 warms the workers up
                for n in ((1, 2) if rep % 2 else (2, 1)):
                    out = work / f"out_{n}_{rep}"
                    start = time.perf_counter()
                    results = mask_dataset(inputs, out, executor=executors[n], progress=False)
                    elapsed = time.perf_counter() - start
                    if any(r.status != "written" for r in results):
                        raise SystemExit(f"a file failed: {[r.error for r in results if r.error]}")
                    masks = _masks(out)
                    if reference is None:
                        reference = masks
                    elif masks != reference:
                        raise SystemExit("masks differ between runs")
                    shutil.rmtree(out)
                    label = "warm-up" if rep == 0 else f"rep {rep}"
                    print(f"{label:8s} {n} worker(s): {elapsed:6.2f} s")
                    if rep:
                        times[n].append(elapsed)
        finally:
            for n in clusters:
                clients[n].close()
                clusters[n].close()
        print(f"load average after: {os.getloadavg()}")
        for n in (1, 2):
            med = statistics.median(times[n])
            print(f"{n} worker(s): median {med:.2f} s, {args.volumes / med:.2f} volumes/s "
                  f"(runs: {', '.join(f'{t:.2f}' for t in times[n])})")
        ratio = statistics.median(times[1]) / statistics.median(times[2])
        print(f"throughput ratio 2 workers / 1 worker: {ratio:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
