"""Voxel agreement of ``preset="nidataset"`` with nidataset 0.9.1 itself.

nidataset runs in its own virtual environment (it pulls scikit-image and
scipy), e.g.::

    python3 -m venv /tmp/nid && /tmp/nid/bin/pip install nidataset==0.9.1
    python benchmarks/nidataset_agreement.py --nidataset-python /tmp/nid/bin/python

Every volume of the shared data folder (``NIMASK_SHARED_DATA`` or
``../shared/data``) plus the bundled sample is copied into its own folder and
masked by nidataset's ``generate_brain_mask_dataset`` (Otsu mode and, with
``--manual``, a manual window) and by nimask; volumes nidataset rejects are
listed as such.  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from nimask import mask_dataset, sample_path

RUNNER = """
import sys, time
from nidataset.volume import generate_brain_mask_dataset
folder, out, low, high, radius = sys.argv[1:6]
threshold = None if low == "none" else (float(low), float(high))
t = time.perf_counter()
try:
    generate_brain_mask_dataset(folder, out, threshold, int(radius))
except Exception as exc:
    print(f"FAIL {type(exc).__name__}: {exc}"[:300])
    sys.exit(0)
print(f"OK {time.perf_counter() - t:.3f}")
"""


def shared_data() -> Path:
    env = os.environ.get("NIMASK_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def volumes() -> list[Path]:
    found = sorted(p for p in shared_data().iterdir() if p.name.endswith((".nii.gz", ".nii")))
    return [*found, sample_path()]


def run_case(nid_python: str, src: Path, threshold: tuple[float, float] | None,
             radius: int, work: Path) -> str:
    stem = src.name.split(".nii")[0]
    folder = work / "in" / stem
    folder.mkdir(parents=True)
    # nidataset reads .nii too; nimask reads .nii.gz only, so compress a .nii copy
    if src.name.endswith(".nii"):
        nib.save(nib.load(src), folder / f"{stem}.nii.gz")
    else:
        shutil.copy(src, folder / src.name)
    low, high = ("none", "none") if threshold is None else map(str, threshold)
    nid_out, our_out = work / "nid" / stem, work / "nimask" / stem
    proc = subprocess.run(
        [nid_python, "-c", RUNNER, str(folder), str(nid_out), low, high, str(radius)],
        capture_output=True, text=True, check=True,
    )
    status = proc.stdout.strip().splitlines()[-1]
    label = "Otsu" if threshold is None else f"{threshold[0]:g}..{threshold[1]:g}"
    if not status.startswith("OK"):
        return f"| {src.name} | {label} | nidataset fails: {status[5:]} | | | | |"
    nid_seconds = float(status.split()[1])
    t = time.perf_counter()
    [result] = mask_dataset(folder, our_out, threshold, radius, preset="nidataset",
                            progress=False)
    our_seconds = time.perf_counter() - t
    if result.status != "written":
        return f"| {src.name} | {label} | nimask fails: {result.error} | | | | |"
    ref = np.asarray(nib.load(nid_out / f"{stem}_mask.nii.gz").dataobj)
    ours = np.asarray(nib.load(our_out / f"{stem}_mask.nii.gz").dataobj)
    diff = int(np.count_nonzero(ref != ours))
    dice = 2 * np.count_nonzero(ref & ours) / max(1, np.count_nonzero(ref) + np.count_nonzero(ours))
    return (f"| {src.name} | {label} | {np.count_nonzero(ref)} | {diff} | {dice:.6f} "
            f"| {nid_seconds:.2f} | {our_seconds:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nidataset-python", required=True)
    parser.add_argument("--closing-radius", type=int, default=3)
    parser.add_argument("--manual", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="also compare a manual window")
    args = parser.parse_args()
    print("| volume | threshold | nidataset voxels | voxels differing | Dice "
          "| nidataset s | nimask s |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, src in enumerate(volumes()):
            cases: list[tuple[float, float] | None] = [None]
            if args.manual:
                cases.append((args.manual[0], args.manual[1]))
            for j, threshold in enumerate(cases):
                work = Path(tmp) / f"{i}_{j}"
                print(run_case(args.nidataset_python, src, threshold, args.closing_radius, work),
                      flush=True)


if __name__ == "__main__":
    main()
