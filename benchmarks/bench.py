"""Side-by-side benchmark of nimask against the I/O floor, the plain chain and nidataset.

Run from a checkout with nimask installed::

    python benchmarks/bench.py            # 256^3 head + real CT, 3 interleaved rounds
    python benchmarks/bench.py --quick    # 128^3 head + real CT, 2 rounds, small batches
    python benchmarks/bench.py --big-ct   # also a 512x512x300 CT-like volume

Every run of every variant is a fresh Python process, started after ``os.sync()``
(no write-back of an earlier run's files during it); the variants are
interleaved round by round (the three single-volume runs first, in an order that
rotates from round to round) and the medians are reported.  Seconds are measured
inside the process around the work (interpreter start-up excluded); peak RSS is
each process's ``VmHWM`` (read from ``/proc/<pid>/status`` while it runs, for
the process and for every worker it starts).

Variants per input volume:

a. ``floor``: what any masking tool must do for one volume: ``sitk.ReadImage`` of the
   input + ``sitk.WriteImage`` (compressed) of the uint8 mask (the plain chain's mask,
   made once before the rounds and loaded before the clock starts); every ratio is
   taken against it;
a2. ``io_floor`` (old definition, kept for comparison): ``sitk.ReadImage`` +
   ``sitk.WriteImage`` (compressed) of the input-sized image itself;
b. ``plain_chain``: SimpleITK read, ``OtsuThreshold``, ``BinaryMorphologicalClosing``
   (ball 3, safe border), compressed write - the design card;
c. ``nidataset``: ``nidataset.volume.generate_brain_mask_dataset`` 0.9.1 in its own
   virtual environment (made under the cache folder on first use; skipped with a
   note when it cannot be installed);
d. ``nimask 1 worker``: ``nimask.mask_dataset(..., workers=1)`` on a folder holding the
   volume (statistics included), and ``documented``: ``generate_brain_mask_dataset(folder,
   out)`` with every default;
e. ``nimask_batch``: ``nimask.mask_dataset`` with every usable CPU on a batch of
   copies (time per volume), and the throughput on a larger batch with N workers
   and with 1 worker restricted to one CPU (``taskset``): N workers against that
   one is the pool's scaling, compared with the machine's own (N independent
   CPU-bound processes against one).  A single worker with every CPU already runs
   some work in threads (Otsu's counts, the input's hash), so it is not that unit.
   Both are run twice: as the ``nimask mask`` command (its own process, which keeps
   freed volume buffers for the next volume, as the pool's workers do: like for
   like) and through the API in a caller's process, whose C heap nimask leaves
   alone (so its one in-process worker pays for fresh memory pages on every
   volume, and the pool's gain over it includes that).  The workload's own
   scaling: N ``nimask mask`` commands started at once, each on 1/N of the files
   (no pool; the kernel places them as it places the workers), against the one
   worker on one CPU; and the pool against them.
f. ``breakdown``: the stages of ``compute_mask`` (read, threshold, closing into the
   mask image) plus the statistics and the write, timed one by one in a fresh process,
   then once more on the same volume in that process (what every later volume of a
   batch costs).

nimask's mask is compared with the plain chain's: the number of differing
voxels must be 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NIDATASET_VERSION = "0.9.1"


# ---------------------------------------------------------------------------
# child side: one measured run in a fresh process, result as JSON on stdout
# ---------------------------------------------------------------------------

def _child(variant: str, src: str, out: str, workers: int) -> dict[str, Any]:
    import SimpleITK as sitk

    if variant == "floor":
        # what any masking tool must do: read the input, write the uint8 mask
        # (the plain chain's mask, loaded before the clock starts)
        mask = sitk.ReadImage(os.environ["NIMASK_BENCH_REF"])
        t0 = time.perf_counter()
        image = sitk.ReadImage(src)
        sitk.WriteImage(mask, str(Path(out) / "floor_mask.nii.gz"), True)
        seconds = time.perf_counter() - t0
        del image
        return {"seconds": seconds}
    if variant == "io_floor":
        t0 = time.perf_counter()
        image = sitk.ReadImage(src)
        sitk.WriteImage(image, str(Path(out) / "io.nii.gz"), True)
        return {"seconds": time.perf_counter() - t0}
    if variant == "plain_chain":
        t0 = time.perf_counter()
        image = sitk.ReadImage(src)
        mask = sitk.OtsuThreshold(image, 0, 1, 128)
        closed = sitk.BinaryMorphologicalClosing(mask, [3] * 3, sitk.sitkBall, 1, True)
        sitk.WriteImage(closed, str(Path(out) / "plain_mask.nii.gz"), True)
        return {"seconds": time.perf_counter() - t0}
    if variant == "nimask":
        import nimask

        t0 = time.perf_counter()
        results = nimask.mask_dataset(src, out, workers=workers, progress=False)
        seconds = time.perf_counter() - t0
        failed = [r.error for r in results if r.status != "written"]
        return {"seconds": seconds, "volumes": len(results), "failed": failed}
    if variant == "command":
        # the nimask command as a user runs it: its own process, which keeps freed
        # volume buffers for the next volume (nimask.batch.allocator)
        from nimask.cli import main as command

        t0 = time.perf_counter()
        command(["mask", src, out, "--workers", str(workers), "--quiet"],
                standalone_mode=False)
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "volumes": len(list(Path(out).glob("*_mask.nii.gz")))}
    if variant == "documented":
        # the documented function, default parameters, on a folder holding one volume
        from nimask import generate_brain_mask_dataset

        t0 = time.perf_counter()
        generate_brain_mask_dataset(src, out)
        return {"seconds": time.perf_counter() - t0, "volumes": 1}
    if variant == "baseline":
        import nimask  # the interpreter with nimask imported, no volume

        return {"seconds": 0.0}
    if variant == "breakdown":
        # the stages of nimask.core.pipeline.compute_mask, timed one by one
        import numpy as np

        from nimask.core import closing, masking
        from nimask.evidence import report
        from nimask.io import nifti as io

        def stages(name: str) -> list[float]:
            t = [time.perf_counter()]
            loaded = io.read_volume(src)
            t.append(time.perf_counter())
            binary, _ = masking._threshold(loaded.image, None, "fast")
            if not isinstance(binary, np.ndarray):  # the fast method gives an array
                raise SystemExit("breakdown: expected the threshold as an array")
            t.append(time.perf_counter())
            # the closing written into the mask image, as compute_mask does
            closed = masking._closed_image(binary, closing.ball_kernel(3), loaded.image)
            t.append(time.perf_counter())
            report.mask_statistics(closed)
            t.append(time.perf_counter())
            io.write_mask(closed, loaded.info, Path(out) / name, "benchmark")
            t.append(time.perf_counter())
            return t

        # a fresh process (a single volume), then the same volume again in it
        # (every later volume of a batch)
        t = stages("b_mask.nii.gz")
        warm = stages("b2_mask.nii.gz")
        names = ["read", "threshold", "closing", "statistics", "write"]
        result = {name: t[i + 1] - t[i] for i, name in enumerate(names)}
        result.update({f"warm {name}": warm[i + 1] - warm[i] for i, name in enumerate(names)})
        return result
    raise SystemExit(f"unknown variant {variant}")


_NIDATASET_CHILD = """
import json, logging, sys, time
logging.disable(logging.CRITICAL)
from nidataset.volume import generate_brain_mask_dataset
t0 = time.perf_counter()
generate_brain_mask_dataset(sys.argv[1], sys.argv[2], None, 3, False)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


# ---------------------------------------------------------------------------
# parent side
# ---------------------------------------------------------------------------

def _vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return found


class _PeakWatcher:
    """Polls VmHWM of a process and of all its descendants until it exits."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            pending = [self.pid]
            while pending:
                pid = pending.pop()
                hwm = _vm_hwm_kib(pid)
                if hwm is not None:
                    self.peaks[pid] = max(hwm, self.peaks.get(pid, 0))
                pending.extend(_children(pid))
            time.sleep(self.interval)

    def stop(self) -> tuple[float, float | None]:
        """(main process peak MB, largest descendant peak MB or None)."""
        self._stop.set()
        self._thread.join()
        main = self.peaks.get(self.pid, 0) / 1024
        others = [v for p, v in self.peaks.items() if p != self.pid]
        return main, (max(others) / 1024 if others else None)


def _run_measured(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    # the previous run's written files reach the disk first: their write-back must not
    # run during this measurement (the old io_floor writes hundreds of MB)
    os.sync()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    watcher = _PeakWatcher(proc.pid)
    # read VmHWM once more right before the child exits: the child waits on stdin
    stdout, stderr = proc.communicate()
    main_mb, worker_mb = watcher.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed:\n{stderr[-2000:]}")
    lines = stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"no result from {cmd}:\n{stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    # the child reports its own final VmHWM too (the poller may miss the last growth)
    main_mb = max(main_mb, result.pop("self_hwm_mb", 0.0))
    result["rss_mb"] = main_mb
    result["worker_rss_mb"] = worker_mb
    return result


def _run_together(cmds: list[list[str]]) -> dict[str, Any]:
    """Independent processes started at the same moment: the slowest one's time.

    Each reports the seconds of its own work (interpreter start excluded, as for
    every other row); the batch took as long as the slowest of them.
    """
    os.sync()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in cmds]
    results = []
    for proc, cmd in zip(procs, cmds, strict=True):
        stdout, stderr = proc.communicate()
        if proc.returncode != 0 or not stdout.strip():
            raise RuntimeError(f"{' '.join(cmd[:4])} failed:\n{stderr[-2000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return {"seconds": max(r["seconds"] for r in results),
            "volumes": sum(int(r["volumes"]) for r in results),
            "rss_mb": max(r.get("self_hwm_mb", 0.0) for r in results), "worker_rss_mb": None}


def _nimask_child_cmd(variant: str, src: Path, out: Path, workers: int = 1) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", variant,
            str(src), str(out), str(workers)]


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# --- inputs ---------------------------------------------------------------------

def _shared_data_dir() -> Path | None:
    env = os.environ.get("NIMASK_SHARED_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    for candidate in (HERE.parent.parent / "shared" / "data",):
        if candidate.is_dir():
            return candidate
    return None


def _write_synthetic(path: Path, array: Any, spacing: tuple[float, float, float]) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), True)


def prepare_inputs(cache: Path, quick: bool, big: bool) -> dict[str, Path]:
    sys.path.insert(0, str(HERE))
    from phantoms import ct_like, synthetic_head

    inputs: dict[str, Path] = {}
    n = 128 if quick else 256
    head = cache / f"synthetic_head_{n}.nii.gz"
    if not head.exists():
        _write_synthetic(head, synthetic_head(n), (1.0, 1.0, 1.0))
    inputs[f"head {n}^3 f32"] = head
    data = _shared_data_dir()
    if data is not None and (data / "invesalius_ct_head_hu.nii.gz").exists():
        inputs["real CT 256x256x108 i16"] = data / "invesalius_ct_head_hu.nii.gz"
    else:
        print("note: shared data not found (NIMASK_SHARED_DATA); real CT skipped")
    if big:
        ct = cache / "ct_like_512x512x300.nii.gz"
        if not ct.exists():
            _write_synthetic(ct, ct_like(), (0.45, 0.45, 0.8))
        inputs["CT-like 512x512x300 i16"] = ct
    return inputs


# --- nidataset ------------------------------------------------------------------

def nidataset_python(cache: Path) -> tuple[str | None, str]:
    """Python of a venv holding nidataset 0.9.1 (created on first use)."""
    venv = cache / f"nidataset-{NIDATASET_VERSION}"
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import nidataset.volume"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(python), "installed"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                       capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q",
                        f"nidataset=={NIDATASET_VERSION}"], check=True, capture_output=True,
                       timeout=900)
        subprocess.run(check, check=True, capture_output=True)
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"nidataset {NIDATASET_VERSION} could not be installed ({exc}); skipped"
    return str(python), "installed now"


# --- machine scaling ------------------------------------------------------------

_CPU_PROBE = """
import time, zlib
data = zlib.compress(bytes(range(256)) * 40000, 6)
t0 = time.perf_counter()
for _ in range(60):
    zlib.decompress(data)
x = 0
for i in range(3_000_000):
    x += i * i
print(time.perf_counter() - t0)
"""


def cpu_scaling(n: int, repeats: int = 3) -> float:
    """Throughput of ``n`` concurrent CPU-bound processes relative to one (median)."""
    ratios = []
    for _ in range(repeats):
        one = float(subprocess.run([sys.executable, "-c", _CPU_PROBE], capture_output=True,
                                   text=True, check=True).stdout)
        procs = [subprocess.Popen([sys.executable, "-c", _CPU_PROBE], stdout=subprocess.PIPE,
                                  text=True) for _ in range(n)]
        times = [float(p.communicate()[0]) for p in procs]
        ratios.append(n * one / max(times))
    return statistics.median(ratios)


# --- comparison -----------------------------------------------------------------

def count_differences(a: Path, b: Path) -> int:
    import SimpleITK as sitk

    x = sitk.GetArrayFromImage(sitk.ReadImage(str(a)))
    y = sitk.GetArrayFromImage(sitk.ReadImage(str(b)))
    if x.shape != y.shape:
        return int(x.size)
    return int((x != y).sum())


def _record(samples: dict[tuple[str, str], list[dict[str, Any]]], round_no: int, label: str,
            name: str, res: dict[str, Any]) -> None:
    """Keep one measured run and print its line."""
    samples.setdefault((label, name), []).append(res)
    print(f"  round {round_no + 1} {label:26s} {name:32s} {res['seconds']:7.3f} s", flush=True)


def _link(src: Path, target: Path) -> None:
    """``target`` as a hard link to ``src`` (a copy where links are refused)."""
    try:
        os.link(src, target)
    except OSError:
        shutil.copyfile(src, target)


def _batch_folder(work: Path, src: Path, count: int, tag: str) -> Path:
    folder = _fresh(work / f"batch_{tag}_{count}")
    for i in range(count):
        _link(src, folder / f"vol_{i:02d}.nii.gz")
    return folder


def _split_folder(work: Path, folder: Path, parts: int) -> list[Path]:
    """The files of ``folder`` dealt into ``parts`` folders (links), in turn."""
    shares = [_fresh(work / f"{folder.name}_share_{i}") for i in range(parts)]
    for i, path in enumerate(sorted(folder.iterdir())):
        _link(path, shares[i % parts] / path.name)
    return shares


def _single_folder(work: Path, src: Path, tag: str) -> Path:
    return _batch_folder(work, src, 1, tag)


def run(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(HERE.parent))
    from nimask.batch.pool import usable_cpus

    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nimask-bench-"))
    cpus = usable_cpus()
    rounds = args.rounds or (2 if args.quick else 3)
    batch_n = 4 if args.quick else 8
    tput_n = 4 if args.quick else 16
    print(f"machine: {platform.node()} {platform.machine()} {platform.system()} "
          f"{platform.release()}, usable CPUs {cpus}, "
          f"load average {os.getloadavg()[0]:.2f}, python {platform.python_version()}")
    import numpy
    import SimpleITK as sitk
    print(f"SimpleITK {sitk.Version.VersionString()}, numpy {numpy.__version__}")
    scaling = cpu_scaling(cpus) if cpus > 1 else 1.0
    if cpus > 1:
        print(f"machine scaling: {cpus} independent CPU-bound processes (zlib + Python loop) "
              f"give {scaling:.2f}x the throughput of one (the ceiling for "
              "the N-worker rows)")

    nid_python, nid_note = (None, "skipped (--no-nidataset)")
    if not args.no_nidataset:
        nid_python, nid_note = nidataset_python(cache)
    print(f"nidataset {NIDATASET_VERSION}: {nid_note}")
    inputs = prepare_inputs(cache, args.quick, args.big_ct)
    if args.only:
        inputs = {k: v for k, v in inputs.items() if args.only in k}

    baseline = _run_measured(_nimask_child_cmd("baseline", work, work))["rss_mb"]
    print(f"interpreter with nimask imported: peak RSS {baseline:.0f} MB")
    voxels = {label: _voxel_count(src) for label, src in inputs.items()}
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    diffs: dict[str, int] = {}
    breakdowns: dict[str, list[dict[str, float]]] = {}
    # The plain chain's mask of every input, made once (not measured): the floor writes
    # it, and nimask's masks are compared with it.
    references: dict[str, Path] = {}
    for i, (label, src) in enumerate(inputs.items()):
        out = _fresh(work / f"ref_{i}")
        _run_measured(_nimask_child_cmd("plain_chain", src, out))
        references[label] = out / "plain_mask.nii.gz"
    for round_no in range(rounds):
        for label, src in inputs.items():
            single = _single_folder(work, src, "single")
            ref_env = {**os.environ, "NIMASK_BENCH_REF": str(references[label])}
            # the short single-volume runs first, then the long ones (a long run
            # before a short one slowed it measurably on this VM)
            plan: list[tuple[str, list[str], Path, dict[str, str] | None]] = []
            together: list[tuple[str, list[list[str]]]] = []
            out = _fresh(work / "out_floor")
            plan.append(("a floor", _nimask_child_cmd("floor", src, out), out, ref_env))
            out = _fresh(work / "out_nimask")
            plan.append(("d nimask 1 worker", _nimask_child_cmd("nimask", single, out, 1), out,
                         None))
            out = _fresh(work / "out_documented")
            plan.append(("d2 documented function", _nimask_child_cmd("documented", single, out),
                         out, None))
            # the three short runs in a rotating order: the first run after the previous
            # input's long ones was measurably slower on this VM, so none always comes first
            shift = round_no % len(plan)
            plan = plan[shift:] + plan[:shift]
            out = _fresh(work / "out_plain")
            plan.append(("b plain_chain", _nimask_child_cmd("plain_chain", src, out), out, None))
            out = _fresh(work / "out_io")
            plan.append(("a2 io_floor (old)", _nimask_child_cmd("io_floor", src, out), out,
                         None))
            if nid_python:
                out = _fresh(work / "out_nid")
                plan.append(("c nidataset", [nid_python, "-c", _NIDATASET_CHILD, str(single),
                                             str(out)], out, None))
            batch = _batch_folder(work, src, batch_n, "b")
            out = _fresh(work / "out_batch")
            plan.append((f"e nimask {cpus} workers, {batch_n} vols",
                         _nimask_child_cmd("nimask", batch, out, cpus), out, None))
            if not args.no_throughput and cpus > 1:
                tput = _batch_folder(work, src, tput_n, "t")
                one_cpu = ["taskset", "-c", str(min(os.sched_getaffinity(0)))]
                # one worker on one CPU: the unit the machine's scaling is measured in;
                # the nimask command (its own process) and the API in a caller's process
                for kind, variant in (("command", "command"), ("API", "nimask")):
                    out = _fresh(work / f"out_tput_1cpu_{variant}")
                    plan.append((f"f {tput_n} vols, {kind}, 1 worker on 1 CPU",
                                 [*one_cpu, *_nimask_child_cmd(variant, tput, out, 1)], out,
                                 None))
                    out = _fresh(work / f"out_tput_{variant}")
                    plan.append((f"f {tput_n} vols, {kind}, {cpus} workers",
                                 _nimask_child_cmd(variant, tput, out, cpus), out, None))
                # the workload's own scaling: N nimask commands started by hand at once,
                # each on its share of the files, placed by the kernel like the workers
                shares = _split_folder(work, tput, cpus)
                outs = [_fresh(work / f"out_tput_alone_{i}") for i in range(cpus)]
                together.append((f"f {tput_n} vols, {cpus} separate commands",
                                 [_nimask_child_cmd("command", share, o, 1)
                                  for share, o in zip(shares, outs, strict=True)]))
            for name, cmd, out, env in plan:
                res = _run_measured(cmd, env)
                if res.get("failed"):
                    raise RuntimeError(f"{name}: nimask failed: {res['failed']}")
                _record(samples, round_no, label, name, res)
                if name.startswith("d "):
                    mine = out / "vol_00_mask.nii.gz"
                    diffs[label] = max(diffs.get(label, 0),
                                       count_differences(references[label], mine))
            for name, cmds in together:
                _record(samples, round_no, label, name, _run_together(cmds))
            out = _fresh(work / "out_breakdown")
            bd = _run_measured(_nimask_child_cmd("breakdown", src, out))
            breakdowns.setdefault(label, []).append(bd)
            shutil.rmtree(work / "batch_t_16", ignore_errors=True)
    _report(samples, diffs, breakdowns, inputs, cpus, batch_n, tput_n, scaling)
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (other jobs share the machine "
          "when it is above 0)")
    print()
    print("| input | voxels | nimask 1 worker: peak RSS, bytes/voxel above the interpreter "
          "| pool worker peak RSS MB |")
    print("|---|---:|---:|---:|")
    for label in inputs:
        one = samples.get((label, "d nimask 1 worker"), [])
        pool = [r["worker_rss_mb"] for (lab, name), runs in samples.items()
                if lab == label and name.startswith("e ") for r in runs
                if r["worker_rss_mb"] is not None]
        per_voxel = (_med([r["rss_mb"] for r in one]) - baseline) * 2**20 / voxels[label]
        pool_text = f"{_med(pool):.0f}" if pool else "n/a"
        print(f"| {label} | {voxels[label]} | {per_voxel:.1f} | {pool_text} |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(v == 0 for v in diffs.values()) else 1


def _voxel_count(path: Path) -> int:
    import nibabel as nib

    shape = nib.load(str(path)).shape  # type: ignore[attr-defined]
    count = 1
    for s in shape:
        count *= int(s)
    return count


def _med(values: list[float]) -> float:
    return statistics.median(values)


def _report(samples: dict[tuple[str, str], list[dict[str, Any]]], diffs: dict[str, int],
            breakdowns: dict[str, list[dict[str, float]]], inputs: dict[str, Path],
            cpus: int, batch_n: int, tput_n: int, scaling: float) -> None:
    print()
    print("| input | variant | s / volume | x floor | nimask speed-up | peak RSS MB "
          "(main / worker) |")
    print("|---|---|---:|---:|---:|---|")
    for label in inputs:
        rows = {name: runs for (lab, name), runs in samples.items() if lab == label}
        per_vol: dict[str, float] = {}
        for name, runs in rows.items():
            count = int(runs[0].get("volumes", 1))
            per_vol[name] = _med([r["seconds"] for r in runs]) / count
        floor = per_vol["a floor"]
        mine = per_vol["d nimask 1 worker"]
        for name, runs in rows.items():
            main = _med([r["rss_mb"] for r in runs])
            workers = [r["worker_rss_mb"] for r in runs if r["worker_rss_mb"] is not None]
            rss = f"{main:.0f}" + (f" / {_med(workers):.0f}" if workers else "")
            speed = ""
            if name in ("b plain_chain", "c nidataset"):
                speed = f"nimask {per_vol[name] / mine:.1f}x faster"
            print(f"| {label} | {name} | {per_vol[name]:.3f} | {per_vol[name] / floor:.2f} | "
                  f"{speed} | {rss} |")
        for kind in ("command", "API"):
            one = f"f {tput_n} vols, {kind}, 1 worker on 1 CPU"
            many = f"f {tput_n} vols, {kind}, {cpus} workers"
            if one in per_vol and many in per_vol:
                gain = per_vol[one] / per_vol[many]
                print(f"| {label} | throughput, {kind}: {cpus} workers vs 1 worker on 1 CPU, "
                      f"{tput_n} vols | | | {gain:.2f}x = {gain / scaling:.2f} of the machine's "
                      f"{scaling:.2f}x | |")
        one = f"f {tput_n} vols, command, 1 worker on 1 CPU"
        alone = f"f {tput_n} vols, {cpus} separate commands"
        pool = f"f {tput_n} vols, command, {cpus} workers"
        if one in per_vol and alone in per_vol and pool in per_vol:
            own = per_vol[one] / per_vol[alone]
            print(f"| {label} | throughput, {cpus} separate commands (no pool) vs 1 worker on "
                  f"1 CPU | | | {own:.2f}x = {own / scaling:.2f} of the machine's "
                  f"{scaling:.2f}x | |")
            print(f"| {label} | the pool against {cpus} separate commands | | | "
                  f"{per_vol[alone] / per_vol[pool]:.2f} of their throughput | |")
        bd = breakdowns.get(label)
        if bd:
            stages = ("read", "threshold", "closing", "statistics", "write")
            parts = ", ".join(f"{k} {_med([b[k] for b in bd]):.3f}" for k in stages)
            total = sum(_med([b[k] for b in bd]) for k in stages)
            share = _med([b["statistics"] for b in bd]) / total if total else 0.0
            print(f"| {label} | nimask breakdown (s) | {parts} | | statistics "
                  f"{100 * share:.0f} % of the volume's time | |")
            warm_parts = ", ".join(f"{k} {_med([b['warm ' + k] for b in bd]):.3f}"
                                   for k in stages)
            warm_total = sum(_med([b["warm " + k] for b in bd]) for k in stages)
            warm_share = (_med([b["warm statistics"] for b in bd]) / warm_total
                          if warm_total else 0.0)
            print(f"| {label} | breakdown, second volume in the process (s) | {warm_parts} | | "
                  f"statistics {100 * warm_share:.0f} % of the volume's time | |")
        print(f"| {label} | voxels differing nimask vs plain chain | {diffs.get(label, 'n/a')} "
              "| | | |")
    print()
    print("x floor: seconds per volume / seconds of SimpleITK read of the input + compressed "
          "write of its uint8 mask (a floor); a2 is the older floor that writes the input-sized "
          "image.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="128^3 head, 2 rounds, small batches")
    parser.add_argument("--big-ct", action="store_true", help="add a 512x512x300 CT-like volume")
    parser.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 3)")
    parser.add_argument("--no-nidataset", action="store_true", help="skip nidataset")
    parser.add_argument("--no-throughput", action="store_true",
                        help="skip the 1-vs-N workers throughput batch")
    parser.add_argument("--cache", default=os.environ.get(
        "NIMASK_BENCH_CACHE", str(Path.home() / ".cache" / "nimask-bench")),
        help="folder for the nidataset venv and the synthetic volumes")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--only", default="", help="only the inputs whose label holds this text")
    parser.add_argument("--child", nargs=4, metavar=("VARIANT", "SRC", "OUT", "WORKERS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, src, out, workers = args.child
        result = _child(variant, src, out, int(workers))
        result["self_hwm_mb"] = (_vm_hwm_kib(os.getpid()) or 0) / 1024
        print(json.dumps(result))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
