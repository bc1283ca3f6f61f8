"""Cost of recording each input's content (size + SHA-256 of the file's bytes).

Run from a checkout with nimask installed::

    python benchmarks/input_hash.py                 # bundled T1 + phantom CT (+ real data)
    NIMASK_SHARED_DATA=/path/to/data python benchmarks/input_hash.py

For each volume, in one process and interleaved round by round (medians of
``--rounds``):

* ``hash``: :func:`nimask.io.nifti.input_identity` (what every mask now records, and
  what ``skip_existing`` computes again to check a kept mask);
* ``process``: :func:`nimask.batch.case.process_file` with the default settings
  (Otsu, closing radius 3), which includes the hash;
* ``check``: :func:`nimask.batch.case.existing_mask_problem` on the mask just written
  (the ``skip_existing`` check of a kept mask, hash included).

Only ratios measured side by side in one run mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

from nimask.batch import MaskSettings, process_file
from nimask.batch.case import existing_mask_problem
from nimask.data.phantoms import ct_head_phantom
from nimask.data.sample import sample_path
from nimask.io.discovery import output_name
from nimask.io.nifti import input_identity


def _volumes(work: Path) -> list[Path]:
    paths = [Path(sample_path())]
    phantom = work / "phantom_ct_256x256x120.nii.gz"
    sitk.WriteImage(ct_head_phantom((256, 256, 120), spacing=(0.9, 0.9, 1.5), seed=1),
                    str(phantom), True)
    paths.append(phantom)
    shared = os.environ.get("NIMASK_SHARED_DATA")
    if shared:
        for name in ("invesalius_ct_head_hu.nii.gz", "mni152_t1_brain_1mm.nii.gz"):
            if (Path(shared) / name).is_file():
                paths.append(Path(shared) / name)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = MaskSettings.create()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        volumes = _volumes(work)
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for path in volumes:
                out = work / "out"
                out.mkdir(exist_ok=True)
                t0 = time.perf_counter()
                input_identity(path)
                t1 = time.perf_counter()
                res = process_file(path, out, settings)
                t2 = time.perf_counter()
                if res.status != "written":
                    raise SystemExit(f"{path.name}: {res.error}")
                problem = existing_mask_problem(path, out / output_name(path), settings)
                t3 = time.perf_counter()
                if problem is not None:
                    raise SystemExit(f"{path.name}: kept mask refused: {problem}")
                for key, value in (("hash", t1 - t0), ("process", t2 - t1),
                                   ("check", t3 - t2)):
                    times.setdefault((path.name, key), []).append(value)
        print(f"{'volume':38} {'MB':>6} {'hash ms':>8} {'MB/s':>6} {'process ms':>10} "
              f"{'hash/process':>12} {'check ms':>9}")
        for path in volumes:
            size = path.stat().st_size / 1e6
            med = {k: statistics.median(times[(path.name, k)]) for k in
                   ("hash", "process", "check")}
            print(f"{path.name:38} {size:6.2f} {med['hash'] * 1e3:8.1f} "
                  f"{size / med['hash']:6.0f} {med['process'] * 1e3:10.1f} "
                  f"{med['hash'] / med['process']:12.1%} {med['check'] * 1e3:9.1f}")


if __name__ == "__main__":
    main()
