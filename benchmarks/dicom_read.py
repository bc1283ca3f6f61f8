"""DICOM reading: nimask (find_series + read_series) side by side with SimpleITK's series reader.

Run from a checkout (pydicom is a requirement of nimask)::

    python benchmarks/dicom_read.py                  # real series + generated ones, 5 rounds
    python benchmarks/dicom_read.py --rounds 9 --files 5000

Inputs: each folder of ``$NIMASK_SHARED_DATA/dicom`` (the real series; skipped
when absent) and series generated from the real head CT with SimpleITK in a
temporary folder: ``ct_axial`` (256x256x108, regular) and ``ct_tilted`` (the
same head sampled on planes tilted by 20 deg, table steps along z: a gantry-tilt
series that nimask resamples).

Variants, interleaved round by round in this one process (files in the page
cache for both), medians reported:

* ``sitk``: ``ImageSeriesReader.GetGDCMSeriesIDs`` on the folder, then
  ``GetGDCMSeriesFileNames`` and ``sitk.ReadImage(files)`` for every series;
* ``nimask``: ``find_series(folder)`` (headers, checks) then ``read_series``
  for every series (resampling included).

The ratio nimask / sitk is the number to watch (target: at most ~1.5).  Note that
on the tilted series SimpleITK returns a sheared volume; nimask's includes the
resampling that puts each slice where its header says.

``--files N`` also times discovery alone on a generated tree of N small files (100
per series, one series per folder): ``find_series`` on the tree against GDCM's
scanner (``GetGDCMSeriesIDs`` + ``GetGDCMSeriesFileNames`` on each folder), in ms per
file.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nimask.io.dicom import find_series, read_series

sitk.ProcessObject.SetGlobalWarningDisplay(False)


def _shared() -> Path | None:
    env = os.environ.get("NIMASK_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for path in candidates:
        if (path / "MANIFEST.tsv").is_file():
            return path
    return None


def _write_planes(folder: Path, volume: sitk.Image, positions: list[np.ndarray],
                  orientation: tuple[float, ...], size: tuple[int, int],
                  spacing: tuple[float, float], tags: dict[str, str]) -> None:
    folder.mkdir(parents=True)
    o = np.asarray(orientation)
    row, col = o[:3], o[3:]
    normal = np.cross(row, col)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.KeepOriginalImageUIDOn()
    series_uid = f"1.2.826.0.1.3680043.10.1234.{time.time_ns()}"
    ref = sitk.Image(size[0], size[1], 1, sitk.sitkFloat32)
    ref.SetSpacing((spacing[0], spacing[1], 1.0))
    ref.SetDirection(tuple(float(v) for v in np.column_stack((row, col, normal)).ravel()))
    for i, p in enumerate(positions):
        ref.SetOrigin(tuple(float(v) for v in p))
        plane = sitk.Resample(volume, ref, sitk.Transform(), sitk.sitkLinear, -1024.0)
        image = sitk.Cast(plane[:, :, 0], sitk.sitkInt16)
        values = {
            "0008|0060": "CT", "0008|0018": f"{series_uid}.{i + 1}", "0020|000e": series_uid,
            "0020|000d": series_uid + ".9", "0020|0013": str(i + 1),
            "0020|0032": "\\".join(repr(float(v)) for v in p),
            "0020|0037": "\\".join(repr(float(v)) for v in orientation),
            "0010|0020": "BENCH", "0008|103e": folder.name, "0028|1052": "-1024",
            "0028|1053": "1",
        }
        values.update(tags)
        for key, value in values.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{i + 1:04d}.dcm"))
        writer.Execute(image)


def _generated(shared: Path, root: Path) -> dict[str, Path]:
    ct = sitk.ReadImage(str(shared / "invesalius_ct_head_hu.nii.gz"), sitk.sitkFloat32)
    nx, ny, nz = ct.GetSize()
    sx, sy, sz = ct.GetSpacing()
    ox, oy, oz = ct.GetOrigin()
    axial = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    # the NIfTI's y axis points to -y (anterior): start the rows at its far end
    y0 = oy - (ny - 1) * sy
    _write_planes(root / "ct_axial", ct, [np.array([ox, y0, oz + k * sz]) for k in range(nz)],
                  axial, (nx, ny), (sx, sy), {})
    t = math.radians(20)
    tilted = (1.0, 0.0, 0.0, 0.0, math.cos(t), -math.sin(t))
    step = 2.0
    n = int((nz - 1) * sz / step)
    _write_planes(root / "ct_tilted", ct,
                  [np.array([ox, y0 + 20.0, oz + k * step]) for k in range(n)],
                  tilted, (nx, ny), (sx, sy), {"0018|1120": "20"})
    return {"ct_axial (generated)": root / "ct_axial",
            "ct_tilted (generated)": root / "ct_tilted"}


def _sitk_read(folder: Path) -> None:
    reader = sitk.ImageSeriesReader()
    for uid in reader.GetGDCMSeriesIDs(str(folder)):
        files = reader.GetGDCMSeriesFileNames(str(folder), uid)
        sitk.ReadImage(files[0] if len(files) == 1 else files)


def _nimask_read(folder: Path) -> None:
    for series in find_series(folder).series:
        if series.check is not None and series.check.ok:
            read_series(series)


def _time(fn: Callable[[Path], None], folder: Path) -> float:
    start = time.perf_counter()
    fn(folder)
    return time.perf_counter() - start


def _discovery_tree(root: Path, n_files: int) -> None:
    """``n_files`` 32x32 images: 100 per series, one series per folder."""
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.KeepOriginalImageUIDOn()
    image = sitk.Image(32, 32, sitk.sitkInt16)
    for k in range(n_files):
        series, slice_ = divmod(k, 100)
        folder = root / f"patient{series // 10:03d}" / f"series{series:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        uid = f"1.2.826.0.1.3680043.10.1234.7.{series}"
        for key, value in {"0008|0060": "MR", "0020|000e": uid, "0020|000d": uid + ".1",
                           "0008|0018": f"{uid}.{slice_ + 1}", "0020|0013": str(slice_ + 1),
                           "0020|0032": f"0\\0\\{slice_ * 2.0}",
                           "0020|0037": "1\\0\\0\\0\\1\\0"}.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{slice_:04d}"))
        writer.Execute(image)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=0,
                        help="also time discovery on a generated tree of this many files")
    args = parser.parse_args(argv)
    shared = _shared()
    inputs: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="nimask-dicom-bench-") as tmp:
        if shared is not None:
            dicom = shared / "dicom"
            for folder in sorted(p for p in dicom.iterdir() if p.is_dir()):
                inputs[folder.name] = folder
            inputs.update(_generated(shared, Path(tmp)))
        else:
            print("shared data not found (NIMASK_SHARED_DATA): only --files is measured")
        times: dict[str, dict[str, list[float]]] = {k: {"sitk": [], "nimask": []} for k in inputs}
        for folder in inputs.values():  # warm-up: page cache, imports
            _sitk_read(folder)
            _nimask_read(folder)
        for _ in range(args.rounds):
            for name, folder in inputs.items():
                times[name]["sitk"].append(_time(_sitk_read, folder))
                times[name]["nimask"].append(_time(_nimask_read, folder))
        if inputs:
            print(f"{'input':34s} {'files':>6s} {'sitk s':>8s} {'nimask s':>9s} {'ratio':>6s}")
            total_sitk = total_nimask = 0.0
            for name, folder in inputs.items():
                s = statistics.median(times[name]["sitk"])
                m = statistics.median(times[name]["nimask"])
                total_sitk += s
                total_nimask += m
                n_files = sum(1 for p in folder.rglob("*") if p.is_file())
                print(f"{name:34s} {n_files:6d} {s:8.3f} {m:9.3f} {m / s:6.2f}")
            print(f"{'all (sum of medians)':34s} {'':6s} {total_sitk:8.3f} {total_nimask:9.3f} "
                  f"{total_nimask / total_sitk:6.2f}")
        if args.files:
            tree = Path(tmp) / "tree"
            _discovery_tree(tree, args.files)
            find_series(tree)  # warm-up (page cache)
            start = time.perf_counter()
            scan = find_series(tree)
            seconds = time.perf_counter() - start
            start = time.perf_counter()
            reader = sitk.ImageSeriesReader()
            folders = sorted({p.parent for p in tree.rglob("*") if p.is_file()})
            uids = []
            for folder in folders:
                for uid in reader.GetGDCMSeriesIDs(str(folder)):
                    reader.GetGDCMSeriesFileNames(str(folder), uid)
                    uids.append(uid)
            gdcm = time.perf_counter() - start
            print(f"discovery: {args.files} files, {len(scan.series)} series: find_series "
                  f"{seconds:.2f} s = {1000 * seconds / args.files:.2f} ms per file "
                  f"(recursive, checks included); GDCM per folder (GetGDCMSeriesIDs + "
                  f"GetGDCMSeriesFileNames, {len(uids)} series) {gdcm:.2f} s = "
                  f"{1000 * gdcm / args.files:.2f} ms per file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
