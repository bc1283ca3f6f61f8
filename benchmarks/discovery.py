"""Time the discovery of a large nested cohort (``nimask.discover``).

Builds a BIDS-like tree of ``--files`` small volume files (default 10,000:
``sub-XXXX/ses-Y/anat/sub-XXXX_ses-Y_run-Z_T1w.nii.gz``, one in ten a ``.nrrd``) with a
JSON sidecar beside each, then times, on the same tree in one process:

* ``discover(root, recursive=True)`` (default pattern ``*.nii.gz``);
* ``discover(root, pattern="*", recursive=True)`` (every volume format; sidecars
  counted as other files);
* ``discover(root, pattern="sub-*/ses-*/anat/*_T1w.nii.gz")`` (a path pattern);

each ``--repeat`` times (the page cache is warm after the first build).  Discovery opens
every matching file once to read its header (a mask written by nimask is never an input),
so the time is dominated by that; the figure reported is seconds per 1000 files found.

Usage: ``python benchmarks/discovery.py [--files 10000] [--repeat 5] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import gzip
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from nimask import discover


def _tiny_nifti() -> bytes:
    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4))
    buffer = io.BytesIO()
    image.to_file_map(image.make_file_map({"image": buffer, "header": buffer}))
    return gzip.compress(buffer.getvalue(), mtime=0)


_NRRD = (b"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
         b"sizes: 2 2 2\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nkinds: domain domain "
         b"domain\nendian: little\nencoding: raw\nspace origin: (0,0,0)\n\n" + b"\0" * 16)


def build_tree(root: Path, files: int) -> tuple[int, int]:
    """Write ``files`` volumes (and as many sidecars); returns (nii.gz count, nrrd count)."""
    nifti = _tiny_nifti()
    per_session, sessions = 5, 2
    n_gz = n_nrrd = 0
    index = 0
    subject = 0
    while index < files:
        subject += 1
        for ses in range(1, sessions + 1):
            anat = root / f"sub-{subject:04d}" / f"ses-{ses}" / "anat"
            anat.mkdir(parents=True, exist_ok=True)
            for run in range(1, per_session + 1):
                if index >= files:
                    break
                stem = f"sub-{subject:04d}_ses-{ses}_run-{run}_T1w"
                if index % 10 == 9:
                    (anat / f"{stem}.nrrd").write_bytes(_NRRD)
                    n_nrrd += 1
                else:
                    (anat / f"{stem}.nii.gz").write_bytes(nifti)
                    n_gz += 1
                (anat / f"{stem}.json").write_text('{"EchoTime": 0.003}\n')
                index += 1
    return n_gz, n_nrrd


def _time(label: str, repeat: int, call: object) -> tuple[str, int, list[float]]:
    times = []
    found = 0
    for _ in range(repeat):
        start = time.perf_counter()
        found = len(call().cases)  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return label, found, times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the tree here and keep it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nimask-discovery-") as tmp:
        root = args.keep or Path(tmp) / "cohort"
        start = time.perf_counter()
        n_gz, n_nrrd = build_tree(root, args.files)
        print(f"tree: {n_gz} .nii.gz + {n_nrrd} .nrrd + {n_gz + n_nrrd} .json in "
              f"{time.perf_counter() - start:.1f} s ({root})")
        runs = [
            _time("recursive, *.nii.gz", args.repeat,
                  lambda: discover(root, recursive=True)),
            _time("recursive, * (every format)", args.repeat,
                  lambda: discover(root, pattern="*", recursive=True)),
            _time("sub-*/ses-*/anat/*_T1w.nii.gz", args.repeat,
                  lambda: discover(root, pattern="sub-*/ses-*/anat/*_T1w.nii.gz")),
        ]
        print(f"{'discovery':34} {'found':>6} {'best s':>8} {'median s':>9} {'s/1000 files':>13}")
        for label, found, times in runs:
            best, median = min(times), statistics.median(times)
            print(f"{label:34} {found:6d} {best:8.3f} {median:9.3f} "
                  f"{1000 * median / max(found, 1):13.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
