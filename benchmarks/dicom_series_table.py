"""Per real DICOM series: what nimask read, the checks that fired, the mask's coverage.

Run from a checkout::

    python benchmarks/dicom_series_table.py            # $NIMASK_SHARED_DATA/dicom
    python benchmarks/dicom_series_table.py EXPORT/    # any DICOM export

The export goes through the batch exactly as ``nimask mask EXPORT OUT --dicom`` with the
default settings (Otsu threshold, closing radius 3) takes it, into a temporary folder;
each series is also read with :func:`nimask.io.dicom.read_series` for its grid and
intensity range (HU for CT).  Prints a Markdown table (docs/dicom.md shows one run) and
the series set aside by discovery.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nimask import mask_dataset
from nimask.io.dicom import find_series, read_series


def _fmt_spacing(spacing: tuple[float, ...]) -> str:
    return " x ".join(f"{v:.4g}" for v in spacing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("export", nargs="?", type=Path,
                        default=Path(os.environ.get("NIMASK_SHARED_DATA", "../shared/data"))
                        / "dicom")
    args = parser.parse_args(argv)
    if not args.export.is_dir():
        print(f"no DICOM folder at {args.export}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        results = {r.input: r for r in mask_dataset(args.export, Path(tmp) / "masks",
                                                    dicom=True, workers=1, progress=False)}
    scan = find_series(args.export)
    print("| folder | series | files | size | spacing (mm) | range | action | checks fired "
          "| mask coverage | cohort flags |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for series in scan.series:
        folder = Path(os.path.commonpath([str(f) for f in series.files])).relative_to(
            args.export)
        top = folder.parts[0] if folder.parts else "."
        check = series.check
        name = (f"{series.series_description or series.modality} (#{series.series_number}, "
                f"{series.modality}, UID ...{series.series_instance_uid[-12:]})")
        fired = "; ".join(check.findings) if check is not None and check.findings else "none"
        action = check.action if check is not None else "?"
        result = results.get(series.label)
        try:
            image, _ = read_series(series)
        except (ValueError, OSError, RuntimeError) as exc:
            print(f"| {top} | {name} | {len(series.files)} | - | - | - | {action} | {fired} "
                  f"| failed: {exc} | |")
            continue
        values = sitk.GetArrayViewFromImage(image)
        unit = " HU" if series.modality == "CT" else ""
        value_range = f"{float(np.min(values)):.0f} .. {float(np.max(values)):.0f}{unit}"
        if result is None:
            coverage, flags = "not in the batch", ""
        elif result.status != "written":
            coverage, flags = f"{result.status}: {result.error}", ""
        else:
            coverage = (f"{result.coverage_percent:.2f} % ({result.volume_ml:.0f} mL, "
                        f"Otsu {result.otsu_threshold:.4g})")
            flags = ", ".join(result.flags) or "none"
        size = "x".join(str(v) for v in image.GetSize())
        print(f"| {top} | {name} | {len(series.files)} | {size} | "
              f"{_fmt_spacing(image.GetSpacing())} | {value_range} | {action} | {fired} | "
              f"{coverage} | {flags} |")
    for skipped in scan.skipped:
        print(f"\nset aside: {skipped.note}")
    for path, why in scan.unreadable:
        print(f"\nunreadable: {path}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
