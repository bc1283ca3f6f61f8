"""Time of one QC picture per layout, side by side with masking the same volume.

    python benchmarks/qc_pictures.py [volume.nii.gz ...]

Default: the bundled sample, and the real CT and MNI152 when NIMASK_SHARED_DATA is set.
Prints, per volume, the median of 5 runs of compute_mask and of render_case per layout,
and their ratio (pictures as a share of the masking time).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nimask import sample_path
from nimask.core.pipeline import compute_mask
from nimask.evidence.qc import LAYOUTS, render_case
from nimask.io.nifti import read_volume


def _median(fn, runs: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(paths: list[str]) -> None:
    if not paths:
        paths = [str(sample_path())]
        shared = os.environ.get("NIMASK_SHARED_DATA")
        if shared:
            paths += [str(Path(shared) / n) for n in
                      ("invesalius_ct_head_hu.nii.gz", "mni152_t1_brain_1mm.nii.gz")]
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            image = read_volume(path).image
            outcome = compute_mask(image, None, 3)
            t_mask = _median(lambda: compute_mask(image, None, 3))  # noqa: B023
            line = [f"{Path(path).name:40s} mask {t_mask * 1000:7.1f} ms"]
            for layout in LAYOUTS:
                png = Path(tmp) / f"{layout}.png"
                t = _median(lambda: render_case(image, outcome.mask, png,  # noqa: B023
                                                layout=layout))  # noqa: B023
                line.append(f"{layout} {t * 1000:6.1f} ms ({t / t_mask:4.2f}x mask, "
                            f"{png.stat().st_size // 1024} KiB)")
            print(" | ".join(line))


if __name__ == "__main__":
    main(sys.argv[1:])
