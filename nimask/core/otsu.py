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
approximate bin index that is never above the true bin and at most one below
(checked on the cut points themselves), corrected by one comparison with the
next cut point (else by a two-sided correction, else by a binary search over
the cut points).  The counts are integers: they are taken in several threads
(:func:`nimask.core.threads.work_threads`, ITK's global default number of threads) over
contiguous parts of the volume and added, with the same result.

Where ITK's histogram is degenerate: the exact rule
---------------------------------------------------
ITK's bin width is computed in single precision.  When the range of the
values is tiny relative to their magnitude (``int32`` values 2147483548 to
2147483598, ``float32`` 1000.0 to 1000.0001) or lies beyond ``float``'s range
(``float64`` values beyond 3.4e38), that histogram is degenerate: bin minima
that do not increase, a last bin that is empty, a bin whose centre falls in
another bin, or edges that are not finite.  ITK's threshold is then NaN, or
depends on how its histogram filter splits the image (measured: an ``int32``
volume of 51 values near 2**31 gave two different thresholds in 100 runs of
the filter, also with a single thread).  nimask does not use ITK there but a
deterministic rule (``rule="exact"``): the same 128 bins over
``[min, max + (max - min) / 12800]``, with the bin minima
``min + j * width`` computed exactly (rational arithmetic on the voxel
values, no rounding) and each voxel binned exactly; the same calculator run
on the bin indices (Otsu's criterion does not change under an affine map of
the values); the threshold is the upper edge of the best bin (exact, then
cast to the pixel type as ITK casts).  For these volumes ITK has no defined
result to compare with; the tests compare the rule with an independent
implementation and check that it is deterministic.

64-bit integers
---------------
ITK bins 64-bit integer voxels as ``double`` (its measurement type), which
rounds values beyond 2**53; they are binned here the same way (converted to
``float64``, round to nearest).  The threshold is cast to the pixel type
exactly (a Python ``int``): the foreground is compared with the voxels'
native integers, never with a rounded ``double``.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from .threads import run_parallel, split

__all__ = ["OTSU_CHUNK", "OtsuResult", "itk_otsu_threshold", "otsu"]

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


@dataclass(frozen=True)
class OtsuResult:
    """Otsu's threshold of a volume, as :func:`otsu` computes it.

    Attributes
    ----------
    value : int or float
        The threshold cast to the pixel type (``static_cast``: truncation toward
        zero for integers, an exact Python ``int``; round-to-nearest for floats).
        Voxels ``> value`` are foreground.
    bin_max : float
        The upper edge of the best bin before the cast (rounded to ``double``
        under the exact rule).
    rule : {"itk", "exact"}
        ``"itk"``: ITK's own histogram (``value`` is what ITK computes);
        ``"exact"``: ITK's histogram is degenerate, the exact rule was used.
    """

    value: int | float
    bin_max: float
    rule: str


def _cast_threshold(value: float, dtype: np.dtype[Any]) -> float | None:
    """``static_cast<PixelType>(value)`` as a float; ``None`` when C++ leaves it undefined."""
    if not math.isfinite(value):
        return None
    if dtype.kind == "f":
        return float(dtype.type(value))
    truncated = math.trunc(value)
    info = np.iinfo(dtype)
    if not int(info.min) <= truncated <= int(info.max):
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


#: Fewest voxels per thread: below ``2 * _MIN_PART`` voxels the counting runs in one thread.
_MIN_PART = 1 << 20

#: Counts of one block of voxels (a closure owning scratch buffers: one per thread).
Counter = Callable[[np.ndarray], np.ndarray]
#: Makes a :data:`Counter` (each thread calls it once).
CounterFactory = Callable[[], Counter]


def _blocks(array: np.ndarray, mask: np.ndarray | None) -> Iterator[np.ndarray]:
    flat = array.reshape(-1)
    flat_mask = None if mask is None else mask.reshape(-1)
    for start in range(0, flat.size, OTSU_CHUNK):
        block = flat[start : start + OTSU_CHUNK]
        if flat_mask is not None:
            block = block[flat_mask[start : start + OTSU_CHUNK]]
        yield block


def _sum_blocks(make: CounterFactory, array: np.ndarray, mask: np.ndarray | None,
                length: int) -> np.ndarray:
    count = make()
    total = np.zeros(length, dtype=np.int64)
    for block in _blocks(array, mask):
        total += count(block)
    return total


def _count(make: CounterFactory, array: np.ndarray, mask: np.ndarray | None,
           length: int) -> np.ndarray:
    """The sum of the counts of every block of (masked) voxels, in ``work_threads()`` threads.

    The voxels are split into contiguous parts, one per thread, each counted by
    its own counter from ``make()`` (numpy releases the GIL in the work of each
    block); the counts are integers, so their sum does not depend on the split.
    The threads are joined before returning.
    """
    flat = array.reshape(-1)
    flat_mask = None if mask is None else mask.reshape(-1)
    parts = split(flat.size, OTSU_CHUNK, _MIN_PART)  # whole blocks per part
    if len(parts) == 1:
        return _sum_blocks(make, flat, flat_mask, length)
    tasks = [
        functools.partial(_sum_blocks, make, flat[lo:hi],
                          None if flat_mask is None else flat_mask[lo:hi], length)
        for lo, hi in parts
    ]
    return np.sum(run_parallel(tasks, "nimask-otsu"), axis=0)


def _count_small_ints(array: np.ndarray, mask: np.ndarray | None, vmin: int, vmax: int,
                      cuts: list[int]) -> list[int]:
    """Per-bin counts from a per-value count (integer voxels, small range).

    ``cuts`` are integers clipped to ``[vmin, vmax + 1]``.
    """
    span = vmax - vmin + 1
    wide = array.dtype.itemsize == 8
    offset = array.dtype.type(vmin)

    def make() -> Counter:
        # v - vmin: in the voxels' own 64-bit type (exact, 0 <= v - vmin < span,
        # the same bits as an intp), else computed in intp
        scratch = np.empty(OTSU_CHUNK, dtype=array.dtype if wide else np.intp)

        def count(block: np.ndarray) -> np.ndarray:
            out = scratch[: block.size]
            if wide:
                np.subtract(block, offset, out=out)
                return np.bincount(out.view(np.intp), minlength=span)
            np.subtract(block, vmin, out=out, dtype=np.intp)
            return np.bincount(out, minlength=span)

        return count

    per_value = _count(make, array, mask, span)
    cumulative = np.concatenate(([0], np.cumsum(per_value)))
    below = [0, *(int(cumulative[c - vmin]) for c in cuts), int(cumulative[-1])]
    return [below[j + 1] - below[j] for j in range(len(below) - 1)]


def _count_by_search(array: np.ndarray, mask: np.ndarray | None, cuts: np.ndarray,
                     n_bins: int) -> list[int]:
    """Per-bin counts with bin(v) = number of cut points <= v, by binary search.

    ``cuts`` must be of the array's own type (exact comparisons).
    """
    def make() -> Counter:
        return lambda block: np.bincount(np.searchsorted(cuts, block, side="right"),
                                         minlength=n_bins)

    return [int(c) for c in _count(make, array, mask, n_bins)]


def _approx_index(values: np.ndarray, origin: Any, scale: Any, n_bins: int) -> np.ndarray:
    """A monotone guess of the bin of each value (exact up to one bin when checked)."""
    work = values - origin
    work *= scale
    index = work.astype(np.intp)
    np.clip(index, 0, n_bins - 1, out=index)
    return index


#: Relative shrink of the guess's scale that makes it never exceed the true bin
#: (checked; about 0.002 bins at the top of 128 bins).
_SHRINK = 2.0 ** -16


def _cut_counter(cuts: np.ndarray, dtype: np.dtype[Any], value_range: tuple[float, float],
                 lower: float, upper: float, n_bins: int, *,
                 one_sided: bool = True) -> CounterFactory | None:
    """Makes per-block counters with bin(v) = number of cut points <= v, or ``None``.

    Works in the voxel type for floats and in float64 (exact below 2**53) for
    integers.  A guess of each voxel's bin, ``int((v - lower) * scale)``, is
    monotone in the value, and so is the true bin; the difference of the two
    is in a set ``S`` for every value iff it is at both ends of each bin's
    value interval (checked first on those values).  With the scale shrunk a
    little (``one_sided``), ``S`` is ``{0, 1}`` and one comparison with the
    next cut point corrects the guess; failing that, ``S`` is ``{-1, 0, 1}``
    with the plain scale and two comparisons do; failing both: ``None``.
    """
    work_type = dtype.type if dtype.kind == "f" else np.float64
    edges = cuts.astype(work_type)
    origin = work_type(lower)
    if dtype.kind == "f":
        ends = np.concatenate((
            edges, np.nextafter(edges, work_type(-np.inf)),
            np.array(value_range, dtype=work_type),
        ))
    else:
        ends = np.concatenate((edges, edges - 1, np.array(value_range, dtype=work_type)))
    lo, hi = work_type(value_range[0]), work_type(value_range[1])
    ends = ends[(ends >= lo) & (ends <= hi)]
    truth = np.searchsorted(edges, ends, side="right")
    high_edges = np.concatenate((edges, [np.inf])).astype(work_type)
    with np.errstate(over="ignore", invalid="ignore"):
        scale = work_type(n_bins / (upper - lower))
        shrunk = work_type(n_bins / (upper - lower) * (1.0 - _SHRINK))
        below = truth - _approx_index(ends, origin, shrunk, n_bins)
        off = truth - _approx_index(ends, origin, scale, n_bins)
    if one_sided and np.all((below >= 0) & (below <= 1)):

        def make_one_sided() -> Counter:
            work = np.empty(OTSU_CHUNK, dtype=work_type)
            index = np.empty(OTSU_CHUNK, dtype=np.intp)
            above = np.empty(OTSU_CHUNK, dtype=bool)
            converted = None if dtype.type is work_type else np.empty(OTSU_CHUNK, work_type)

            def count(block: np.ndarray) -> np.ndarray:
                n = block.size
                values = block
                if converted is not None:  # integers, exact in float64
                    values = converted[:n]
                    np.copyto(values, block, casting="unsafe")
                w, i, a = work[:n], index[:n], above[:n]
                np.subtract(values, origin, out=w)
                np.multiply(w, shrunk, out=w)
                np.copyto(i, w, casting="unsafe")  # truncation: 0 <= i < n_bins (checked)
                np.take(high_edges, i, mode="wrap", out=w)  # each voxel's next cut point
                np.greater_equal(values, w, out=a)
                np.add(i, a, out=i)
                return np.bincount(i, minlength=n_bins)

            return count

        return make_one_sided
    if np.all(np.abs(off) <= 1):
        low_edges = np.concatenate(([-np.inf], edges)).astype(work_type)

        def count_both(block: np.ndarray) -> np.ndarray:
            values = block.astype(work_type, copy=False)
            index = _approx_index(values, origin, scale, n_bins)
            index -= values < low_edges[index]
            index += values >= high_edges[index]
            return np.bincount(index, minlength=n_bins)

        return lambda: count_both
    return None


def _itk_range(dtype: np.dtype[Any], vmin: float, vmax: float,
               bins: int) -> tuple[float, float] | None:
    """ITK's histogram range ``(lower, upper)`` in ``double``; ``None`` if it overflows."""
    if dtype.itemsize == 1 and dtype.kind in "iu":
        # AutoMinimumMaximum is off for char types: the type's whole range
        info = np.iinfo(dtype)
        return float(int(info.min)) - 0.5, float(int(info.max)) + 0.5
    margin = ((vmax - vmin) / float(bins)) / 100.0
    if not math.isfinite(margin) or not (_DOUBLE_MAX - vmax) > margin:
        return None
    return vmin, vmax + margin


def _itk_histogram(array: np.ndarray, mask: np.ndarray | None, bins: int,
                   vmin: float, vmax: float) -> float | None:
    """The bin max ITK's calculator returns, or ``None`` when ITK's histogram is degenerate."""
    dtype = array.dtype
    bounds = _itk_range(dtype, vmin, vmax, bins)
    if bounds is None:
        return None
    lower, upper = bounds
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
    freq: list[int]
    if dtype.kind in "iu" and vmax - vmin < _SMALL_INT_RANGE:
        freq = _count_small_ints(array, mask, int(vmin), int(vmax), cuts.tolist())
    else:
        counter = _cut_counter(cuts, dtype, (vmin, vmax), lower, upper, bins)
        if counter is not None:
            freq = [int(c) for c in _count(counter, array, mask, bins)]
        else:
            freq = _count_by_search(array, mask, cuts.astype(dtype), bins)
    return otsu_from_histogram(freq, mins, maxs)


def _smallest_at_or_above(x: Fraction, dtype: np.dtype[Any]) -> Any:
    """The smallest value of the float type ``dtype`` that is ``>= x`` (exactly)."""
    value = dtype.type(float(x)) if abs(x) < Fraction(_DOUBLE_MAX) else dtype.type(
        math.copysign(math.inf, x))
    inf = dtype.type(np.inf)
    while math.isfinite(value) and Fraction(float(value)) < x:
        value = np.nextafter(value, inf)
    while True:
        below = np.nextafter(value, -inf)
        if not math.isfinite(below) or Fraction(float(below)) < x:
            return value
        value = below


def _nearest_float(x: Fraction, dtype: np.dtype[Any]) -> float:
    """``x`` rounded to the nearest value of the float type ``dtype`` (ties to even)."""
    if dtype == np.float64:
        return float(x)  # int / int true division: correctly rounded
    above = _smallest_at_or_above(x, dtype)
    below = np.nextafter(above, dtype.type(-np.inf))
    if not math.isfinite(above) or Fraction(float(above)) == x:
        return float(above)
    d_above = Fraction(float(above)) - x
    d_below = x - Fraction(float(below))
    if d_below < d_above:
        return float(below)
    if d_above < d_below:
        return float(above)
    bits = int(np.asarray(above).view(np.uint32))
    return float(above) if bits % 2 == 0 else float(below)


def _exact_rule(array: np.ndarray, mask: np.ndarray | None, bins: int,
                vmin: int | float, vmax: int | float) -> tuple[int | float, float]:
    """The deterministic rule for degenerate ITK histograms: ``(value, bin_max)``.

    Bins of equal width over ITK's range, edges and binning exact; the
    calculator on bin indices; the best bin's upper edge cast to the pixel type.
    """
    dtype = array.dtype
    if dtype.itemsize == 1 and dtype.kind in "iu":
        info = np.iinfo(dtype)
        lower = Fraction(int(info.min)) - Fraction(1, 2)
        upper = Fraction(int(info.max)) + Fraction(1, 2)
    else:
        lower = Fraction(vmin)
        upper = Fraction(vmax) + (Fraction(vmax) - Fraction(vmin)) / (100 * bins)
    width = (upper - lower) / bins
    minima = [lower + j * width for j in range(1, bins)]
    if dtype.kind in "iu":
        top = int(vmax) + 1
        cut_ints = [min(max(math.ceil(m), int(vmin)), top) for m in minima]
        if int(vmax) - int(vmin) < _SMALL_INT_RANGE:
            freq = _count_small_ints(array, mask, int(vmin), int(vmax), cut_ints)
        else:
            # cut points above the maximum bin nothing: leave them out
            reachable = np.array([c for c in cut_ints if c < top], dtype=dtype)
            freq = _count_by_search(array, mask, reachable, bins)
    else:
        cuts = np.array([_smallest_at_or_above(m, dtype) for m in minima], dtype=dtype)
        freq = _count_by_search(array, mask, cuts, bins)
    best = int(otsu_from_histogram(freq, [float(j) for j in range(bins)],
                                   [float(j + 1) for j in range(bins)])) - 1
    t = lower + (best + 1) * width
    value: int | float = math.trunc(t) if dtype.kind in "iu" else _nearest_float(t, dtype)
    return value, float(t)


def otsu(
    array: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    bins: int = 128,
    value_range: tuple[int | float, int | float] | None = None,
) -> OtsuResult:
    """Otsu's threshold as ``OtsuThresholdImageFilter``, with the exact rule where ITK's is not.

    Parameters
    ----------
    array : numpy.ndarray
        The voxels (any shape) of a pixel type nimask supports (8- to 64-bit
        integers, ``float32``, ``float64``); finite where ``mask`` selects.
    mask : numpy.ndarray of bool or None
        Voxels taking part (ITK's mask image); ``None``: every voxel.
    bins : int
        ``NumberOfHistogramBins`` (>= 2).
    value_range : (min, max) or None
        The (masked) minimum and maximum if already known (Python ``int`` for
        integer arrays); they must differ.

    Returns
    -------
    OtsuResult
    """
    dtype = array.dtype
    if dtype.kind not in "iuf" or bins < 2:
        raise ValueError(f"unsupported array type {dtype} or bins {bins}")
    if value_range is None:
        selected = array if mask is None else array[mask]
        if selected.size == 0:
            raise ValueError("no voxel selected")
        value_range = (selected.min().item(), selected.max().item())
    vmin, vmax = value_range
    if dtype.kind in "iu":
        vmin, vmax = int(vmin), int(vmax)
        if max(abs(vmin), abs(vmax)) >= _EXACT_INT:
            # ITK bins 64-bit integers as doubles: so does the replica
            work = array.astype(np.float64)
            t = _itk_histogram(work, mask, bins, float(vmin), float(vmax))
        else:
            t = _itk_histogram(array, mask, bins, vmin, vmax)
        if t is not None:
            return OtsuResult(math.trunc(t), t, "itk")
    else:
        t = _itk_histogram(array, mask, bins, float(vmin), float(vmax))
        if t is not None:
            return OtsuResult(float(dtype.type(t)), t, "itk")
    value, bin_max = _exact_rule(array, mask, bins, vmin, vmax)
    return OtsuResult(value, bin_max, "exact")


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
        where ITK's result is not defined: its histogram is degenerate (see the
        module docstring), or the threshold lies outside the pixel type's range
        (``static_cast`` is undefined in C++).
    """
    if array.dtype.kind not in "iuf" or bins < 2:
        return None
    if value_range is not None and array.dtype.kind in "iu":
        value_range = (int(value_range[0]), int(value_range[1]))
    result = otsu(array, mask, bins=bins, value_range=value_range)
    if result.rule != "itk":
        return None
    return _cast_threshold(result.bin_max, array.dtype)
