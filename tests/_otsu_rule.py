"""An independent implementation of nimask's exact Otsu rule (degenerate ITK histograms).

Written from the rule as documented in :mod:`nimask.otsu`, with plain Python
``Fraction`` arithmetic per distinct value; only ITK's calculator
(``otsu_from_histogram``, checked against ITK separately) is shared.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from nimask.core.otsu import otsu_from_histogram

BINS = 128


def exact_rule_threshold(array: np.ndarray, mask: np.ndarray | None = None) -> int | float:
    """The documented rule's threshold, cast to the pixel type (``int`` for integers)."""
    values = array if mask is None else array[mask]
    distinct, counts = np.unique(values, return_counts=True)
    exact = [Fraction(v.item()) for v in distinct]
    dtype = array.dtype
    if dtype.kind in "iu" and dtype.itemsize == 1:
        info = np.iinfo(dtype)
        lower = Fraction(int(info.min)) - Fraction(1, 2)
        upper = Fraction(int(info.max)) + Fraction(1, 2)
    else:
        lower, top = exact[0], exact[-1]
        upper = top + (top - lower) / (100 * BINS)
    width = (upper - lower) / BINS
    freq = [0] * BINS
    for value, count in zip(exact, counts.tolist(), strict=True):
        freq[math.floor((value - lower) / width)] += count
    best = int(otsu_from_histogram(freq, [float(j) for j in range(BINS)],
                                   [float(j + 1) for j in range(BINS)])) - 1
    t = lower + (best + 1) * width
    if dtype.kind in "iu":
        return math.trunc(t)
    if dtype == np.float64:
        return float(t)
    # nearest float32: the two float32 values around float(t), compared exactly
    candidates = {np.float32(float(t))}
    for c in list(candidates):
        candidates |= {np.nextafter(c, np.float32(np.inf)), np.nextafter(c, np.float32(-np.inf))}
    return float(min(candidates, key=lambda c: (abs(Fraction(float(c)) - t),
                                                 int(np.asarray(c).view(np.uint32)) % 2)))
