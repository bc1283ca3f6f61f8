"""Otsu's threshold computed in numpy, exactly as ``sitk.OtsuThresholdImageFilter``.

:func:`itk_otsu_threshold` returns the value that ITK 5.4's
``OtsuThresholdImageFilter`` (``NumberOfHistogramBins=128``,
``ReturnBinMidpoint=False``, optionally with a mask) reports through
``GetThreshold()``, or ``None`` when it cannot guarantee that (the caller then
runs the ITK filter itself).  The tests keep the ITK filter as the reference.

What ITK computes (ITK 5.4, read from its source)
-------------------------------------------------
``HistogramThresholdImageFilter`` builds a 1D histogram with
``ImageToHistogramFilter`` (``MaskedImageToHistogramFilter`` with a mask),
measurements in ``double``:

* bin range: for ``uint8``/``int8`` images ``AutoMinimumMaximum`` is off and the
  range is ``[type min - 0.5, type max + 0.5]``; for every other type it is
  ``[min, max + margin]`` over the (masked) voxels, with the marginal scale
  ``margin = ((max - min) / bins) / 100`` (double) added to the maximum;
* ``Histogram::Initialize`` computes the bin width in *single* precision,
  ``w = (float(upper) - float(lower)) / float(bins)``, bin ``j`` spans
  ``[lower + double(float(j) * w), lower + double(float(j + 1) * w))`` and the
  last bin ends at ``upper``;
* ``Histogram::GetIndex`` finds a voxel's bin by binary search over the bin
  minima (the upper end goes into the last bin); per-thread histograms are
  merged by looking up each bin's centre ``(min + max) / 2``.

``OtsuThresholdCalculator`` runs ``OtsuMultipleThresholdsCalculator`` with one
threshold: class frequencies and means are updated bin by bin in ``double``,
the "between-class variance" ``sum(freq_k * mean_k**2) / N`` replaces the
running maximum only when it is larger and not within 1 ulp of it
(``Math::FloatAlmostEqual``), and the threshold is the upper edge (bin max) of
the best bin, cast to the pixel type (``static_cast``: truncation toward zero
for integers, round-to-nearest for ``float``).

How it is replicated
--------------------
The bin edges and the calculator are evaluated with the same operations in the
same order (``numpy.float32`` where ITK uses ``float``, Python floats for
``double``).  Voxels are binned through exact "cut points" in their own type
(the smallest value of the pixel type at or above each bin minimum): for
integer images with a small range by a per-value count, otherwise by an
approximate bin index corrected by one comparison with each neighbouring cut
point, after checking on the cut points themselves that the approximation is
never off by more than one bin.

When it falls back (returns ``None``)
-------------------------------------
* the bin edges are not strictly increasing, the last bin is empty, or a bin's
  centre does not fall back into that bin (ranges that are tiny relative to the
  magnitude of the values, e.g. 1000.0 to 1000.0001: ITK's single-precision
  width collapses) or they are not finite (ranges beyond ``float``);
* 64-bit integer voxels or thresholds beyond ``2**53`` in magnitude (``double``
  no longer holds every integer);
* the approximate bin index could be off by more than one bin.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["OTSU_CHUNK", "itk_otsu_threshold"]

#: Voxels per block when binning (keeps temporaries small and in cache).
OTSU_CHUNK = 1 << 18
_EXACT_INT = 1 << 53
_SMALL_INT_RANGE = 1 << 20
_DOUBLE_MAX = float(np.finfo(np.float64).max)


def _ulp_bits(x: float) -> int:
    """``Detail::FloatIEEE<double>::AsULP``: the bits as a monotone signed integer."""
    bits: int = struct.unpack("<q", struct.pack("<d", x))[0]
    return (-(1 << 63) - bits) if bits < 0 else bits


def _float_almost_equal(x1: float, x2: float, max_ulps: int = 1) -> bool:
    """``itk::Math::FloatAlmostEqual<double>(x1, x2, max_ulps, 0.1 * eps)``."""
    if abs(x1 - x2) <= 0.1 * 2.220446049250313e-16:
        return True
    if math.copysign(1.0, x1) != math.copysign(1.0, x2):
        return False
    return abs(_ulp_bits(x1) - _ulp_bits(x2)) <= max_ulps


def histogram_edges(lower: float, upper: float, bins: int) -> tuple[list[float], list[float]]:
    """Bin minima and maxima as ``Histogram::Initialize`` computes them (doubles)."""
    f32 = np.float32
    with np.errstate(over="ignore", invalid="ignore"):
        interval = (f32(upper) - f32(lower)) / f32(bins)
        mins = []
        maxs = []
        for j in range(bins - 1):
            mins.append(lower + float(f32(j) * interval))
            maxs.append(lower + float((f32(j) + f32(1)) * interval))
        mins.append(lower + float((f32(bins) - f32(1)) * interval))
    maxs.append(upper)
    return mins, maxs


def otsu_from_histogram(freq: list[int], mins: list[float], maxs: list[float]) -> float:
    """``OtsuMultipleThresholdsCalculator`` with one threshold: the chosen bin's max."""
    n_bins = len(freq)
    centres = [(mins[j] + maxs[j]) / 2.0 for j in range(n_bins)]
    total = sum(freq)
    total_f = float(total)
    global_mean = 0.0
    for j in range(n_bins):
        global_mean += centres[j] * float(freq[j])
    global_mean /= total_f
    idx = 0
    freq0 = freq[0]
    freq1 = total - freq0
    mean0 = centres[0] if freq0 > 0 else 0.0
    mean_sum = mean0 * float(freq0)
    mean1 = (global_mean * total_f - mean_sum) / float(freq1) if freq1 > 0 else 0.0
    max_var = 0.0
    max_var += float(freq0) * (mean0 * mean0)
    max_var += float(freq1) * (mean1 * mean1)
    max_var /= total_f
    best = idx
    while idx < n_bins - 2:
        idx += 1
        mean_old = mean0
        freq_old = freq0
        freq0 += freq[idx]
        if freq0 > 0:
            mean0 = (mean_old * float(freq_old) + centres[idx] * float(freq[idx])) / float(freq0)
        else:
            mean0 = 0.0
        freq1 = total
        mean1 = global_mean * total_f
        freq1 -= freq0
        mean1 -= mean0 * float(freq0)
        if freq1 > 0:
            mean1 /= float(freq1)
        else:
            mean1 = 0.0
        var = 0.0
        var += float(freq0) * (mean0 * mean0)
        var += float(freq1) * (mean1 * mean1)
        var /= total_f
        if var > max_var and not _float_almost_equal(max_var, var, 1):
            max_var = var
            best = idx
    return maxs[best]


def _cast_threshold(value: float, dtype: np.dtype[Any]) -> float | None:
    """``static_cast<PixelType>(value)`` as a float; ``None`` when C++ leaves it undefined."""
    if not math.isfinite(value):
        return None
    if dtype.kind == "f":
        return float(dtype.type(value))
    truncated = math.trunc(value)
    info = np.iinfo(dtype)
    if not int(info.min) <= truncated <= int(info.max) or abs(truncated) > _EXACT_INT:
        return None
    return float(truncated)


def _cut_points(mins: list[float], dtype: np.dtype[Any], vmin: float,
                vmax: float) -> np.ndarray:
    """Smallest value of ``dtype`` at or above each bin minimum 1..n-1.

    A voxel ``v`` lies in bin ``j`` iff ``j`` cut points are ``<= v``.  For
    integers the cut points are clipped to ``[vmin, vmax + 1]``, which changes
    no voxel's bin.
    """
    cuts = mins[1:]
    if dtype.kind == "f":
        values = np.array(cuts, dtype=np.float64).astype(dtype)
        below = values.astype(np.float64) < np.array(cuts, dtype=np.float64)
        values[below] = np.nextafter(values[below], dtype.type(np.inf))
        return values
    ints = [min(max(math.ceil(c), int(vmin)), int(vmax) + 1) for c in cuts]
    return np.array(ints, dtype=np.int64)


def _blocks(array: np.ndarray, mask: np.ndarray | None) -> Iterator[np.ndarray]:
    flat = array.reshape(-1)
    flat_mask = None if mask is None else mask.reshape(-1)
    for start in range(0, flat.size, OTSU_CHUNK):
        block = flat[start : start + OTSU_CHUNK]
        if flat_mask is not None:
            block = block[flat_mask[start : start + OTSU_CHUNK]]
        yield block


def _count_small_ints(array: np.ndarray, mask: np.ndarray | None, vmin: int, vmax: int,
                      cuts: np.ndarray) -> list[int]:
    """Per-bin counts from a per-value count (integer voxels, small range)."""
    span = vmax - vmin + 1
    per_value = np.zeros(span, dtype=np.int64)
    for block in _blocks(array, mask):
        offsets = block.astype(np.intp)
        offsets -= vmin
        per_value += np.bincount(offsets, minlength=span)
    cumulative = np.concatenate(([0], np.cumsum(per_value)))
    below = [0, *(int(cumulative[c - vmin]) for c in cuts.tolist()), int(cumulative[-1])]
    return [below[j + 1] - below[j] for j in range(len(below) - 1)]


def _approx_index(values: np.ndarray, origin: Any, scale: Any, n_bins: int) -> np.ndarray:
    """A monotone guess of the bin of each value (exact up to one bin when checked)."""
    work = values - origin
    work *= scale
    index = work.astype(np.intp)
    np.clip(index, 0, n_bins - 1, out=index)
    return index


def _count_by_cuts(array: np.ndarray, mask: np.ndarray | None, cuts: np.ndarray,
                   value_range: tuple[float, float], lower: float, upper: float,
                   n_bins: int) -> list[int] | None:
    """Per-bin counts with bin(v) = number of cut points <= v, or ``None``.

    Works in the voxel type for floats and in float64 (exact below 2**53) for
    integers.  The approximate index is monotone in the value, and so is the
    true bin; their difference is at most one bin for every value iff it is at
    both ends of each bin's value interval (checked first on those values), and
    then one comparison with each neighbouring cut point corrects it.
    """
    work_type = array.dtype.type if array.dtype.kind == "f" else np.float64
    edges = cuts.astype(work_type)
    origin = work_type(lower)
    scale = work_type(n_bins / (upper - lower))
    if array.dtype.kind == "f":
        ends = np.concatenate((
            edges, np.nextafter(edges, work_type(-np.inf)),
            np.array(value_range, dtype=work_type),
        ))
    else:
        ends = np.concatenate((edges, edges - 1, np.array(value_range, dtype=work_type)))
    lo, hi = work_type(value_range[0]), work_type(value_range[1])
    ends = ends[(ends >= lo) & (ends <= hi)]
    guess = _approx_index(ends, origin, scale, n_bins)
    truth = np.searchsorted(edges, ends, side="right")
    if np.any(np.abs(guess - truth) > 1):
        return None
    low_edges = np.concatenate(([-np.inf], edges)).astype(work_type)
    high_edges = np.concatenate((edges, [np.inf])).astype(work_type)
    counts = np.zeros(n_bins, dtype=np.int64)
    for block in _blocks(array, mask):
        values = block.astype(work_type, copy=False)
        index = _approx_index(values, origin, scale, n_bins)
        index -= values < low_edges[index]
        index += values >= high_edges[index]
        counts += np.bincount(index, minlength=n_bins)
    return [int(c) for c in counts]


def itk_otsu_threshold(
    array: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    bins: int = 128,
    value_range: tuple[float, float] | None = None,
) -> float | None:
    """``OtsuThresholdImageFilter(...).GetThreshold()`` computed in numpy, or ``None``.

    Parameters
    ----------
    array : numpy.ndarray
        The voxels (any shape), of a pixel type nimask supports (8- to 64-bit
        integers, ``float32``, ``float64``).
    mask : numpy.ndarray of bool or None
        Voxels taking part (ITK's mask image with ``MaskValue`` = inside);
        ``None``: every voxel.  Must select at least one voxel.
    bins : int
        ``NumberOfHistogramBins``.
    value_range : (float, float) or None
        The (masked) minimum and maximum if already known.

    Returns
    -------
    float or None
        The threshold ITK returns (``ReturnBinMidpoint=False``), or ``None``
        when exactness cannot be guaranteed (see the module docstring): run
        the ITK filter then.
    """
    dtype = array.dtype
    if dtype.kind not in "iuf" or bins < 2:
        return None
    if value_range is None:
        selected = array if mask is None else array[mask]
        if selected.size == 0:
            return None
        value_range = (float(selected.min()), float(selected.max()))
    vmin, vmax = value_range
    if dtype.kind in "iu" and max(abs(vmin), abs(vmax)) >= _EXACT_INT:
        return None  # a double no longer holds every integer
    if dtype.itemsize == 1 and dtype.kind in "iu":
        # AutoMinimumMaximum is off for char types: the type's whole range
        info = np.iinfo(dtype)
        lower = float(int(info.min)) - 0.5
        upper = float(int(info.max)) + 0.5
    else:
        lower = vmin
        upper = vmax
        margin = ((upper - lower) / float(bins)) / 100.0
        if not math.isfinite(margin) or not (_DOUBLE_MAX - upper) > margin:
            return None
        upper = upper + margin
    mins, maxs = histogram_edges(lower, upper, bins)
    if not all(math.isfinite(v) for v in (*mins, *maxs)):
        return None
    if any(mins[j] >= mins[j + 1] for j in range(bins - 1)) or mins[-1] >= upper:
        return None
    for j in range(bins):
        centre = (mins[j] + maxs[j]) / 2.0
        if not mins[j] <= centre < maxs[j]:
            return None
    cuts = _cut_points(mins, dtype, vmin, vmax)
    freq: list[int] | None
    if dtype.kind in "iu" and vmax - vmin < _SMALL_INT_RANGE:
        freq = _count_small_ints(array, mask, int(vmin), int(vmax), cuts)
    else:
        freq = _count_by_cuts(array, mask, cuts, (vmin, vmax), lower, upper, bins)
    if freq is None:
        return None
    return _cast_threshold(otsu_from_histogram(freq, mins, maxs), dtype)
