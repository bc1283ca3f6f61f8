"""Property tests of the pure layer on random small images.

Random shapes (1 and 2 along an axis included), spacings, origins, directions,
pixel types and value ranges (NaN/Inf in float images), manual and automatic
thresholds, closing radii 0-4.  Invariants: a uint8 0/1 image on the input's
grid; the closing only adds voxels to the thresholded mask and is idempotent;
the manual window selects exactly the finite voxels inside it (in a float32
image: inside the bounds rounded to float32, as documented); the Otsu mask
is a non-empty upper set of the finite values and, on finite images, equals
ITK's own Otsu filter (or the documented fallback); NaN/Inf voxels are never
thresholded in; nothing raises but ParameterError or InvalidVolumeError.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import SimpleITK as sitk
from _otsu_rule import exact_rule_threshold
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nimask.core.masking import OTSU_BINS, OTSU_RETURN_BIN_MIDPOINT, close_mask, threshold_mask
from nimask.core.otsu import otsu
from nimask.core.pipeline import compute_mask
from nimask.exceptions import InvalidVolumeError, ParameterError

DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64,
          np.float32, np.float64]
FUZZ = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def images(draw: st.DrawFn) -> tuple[sitk.Image, np.ndarray]:
    """A 3D image (ITK) and its (z, y, x) array."""
    shape = tuple(draw(st.lists(st.integers(1, 7), min_size=3, max_size=3)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if dtype.kind == "f":
        limit = draw(st.sampled_from([1.0, 1e3, 2.0**100]))
        elements = st.floats(-limit, limit, width=dtype.itemsize * 8) | st.sampled_from(
            [np.nan, np.inf, -np.inf])
    else:
        info = np.iinfo(dtype)
        span = draw(st.sampled_from([3, 300, 2**40, 2**64]))  # 2**64: 64-bit extremes
        elements = st.integers(max(int(info.min), -span), min(int(info.max), span))
    # Few distinct values are common in masks and label maps: draw from a small pool.
    pool = draw(st.lists(elements, min_size=2, max_size=6, unique=True))
    array = draw(arrays(dtype, shape[::-1], elements=st.sampled_from(pool)))
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(draw(st.tuples(*[st.floats(0.05, 10)] * 3)))
    image.SetOrigin(draw(st.tuples(*[st.floats(-500, 500)] * 3)))
    angles = draw(st.tuples(*[st.floats(-math.pi, math.pi)] * 3))
    flip = draw(st.sampled_from([1.0, -1.0]))
    image.SetDirection(_rotation(angles, flip))
    return image, array


def _rotation(angles: tuple[float, float, float], flip: float) -> tuple[float, ...]:
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    matrix = rz @ ry @ rx @ np.diag([1.0, 1.0, flip])
    return tuple(float(v) for v in matrix.ravel())


thresholds = st.none() | st.sampled_from([(-500.0, 1e20), (-1e300, 1e300)]) | st.tuples(
    st.floats(-1e12, 1e12), st.floats(-1e12, 1e12)
).map(lambda t: (min(t), max(t))) | st.tuples(st.integers(-300, 300), st.integers(0, 300)).map(
    lambda t: (float(t[0]), float(t[0] + t[1])))


def _same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    assert a.GetOrigin() == b.GetOrigin()
    assert a.GetSpacing() == b.GetSpacing()
    assert a.GetDirection() == b.GetDirection()


def _manual_oracle(array: np.ndarray, low: float, high: float) -> np.ndarray:
    if array.dtype == np.float32:
        # The documented float32 rule (nimask.core.masking._window_in_pixel_type): compare
        # in float32 against the bounds rounded to nearest (clipped to float32's range).
        big = float(np.finfo(np.float32).max)
        lo32, hi32 = np.float32(max(low, -big)), np.float32(min(high, big))
        with np.errstate(invalid="ignore"):
            return np.isfinite(array) & (array >= lo32) & (array <= hi32)
    if array.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            return np.isfinite(array) & (array.astype(np.float64) >= low) & (
                array.astype(np.float64) <= high)
    info = np.iinfo(array.dtype)
    lo, hi = max(math.ceil(low), int(info.min)), min(math.floor(high), int(info.max))
    if lo > hi:
        return np.zeros(array.shape, bool)
    return (array >= array.dtype.type(lo)) & (array <= array.dtype.type(hi))


_ZERO_F32 = np.zeros((1, 1, 1), np.float32)


@FUZZ
@given(images(), thresholds, st.integers(0, 4))
# A bound below float32's smallest subnormal rounds to -0.0, which a 0.0 voxel meets.
@example(case=(sitk.GetImageFromArray(_ZERO_F32), _ZERO_F32),
         threshold=(-1.0, -7.738993719100443e-204), radius=0)
def test_mask_invariants(case: tuple[sitk.Image, np.ndarray],
                         threshold: tuple[float, float] | None, radius: int) -> None:
    image, array = case
    try:
        outcome = compute_mask(image, threshold, radius)
    except (InvalidVolumeError, ParameterError):
        finite_values = array[np.isfinite(array)] if array.dtype.kind == "f" else array
        # The documented failures only: no finite voxel, or a constant image with Otsu.
        undefined = finite_values.size == 0 or finite_values.min() == finite_values.max()
        assert threshold is None
        assert undefined
        event("documented failure")
        return
    thresholded = threshold_mask(image, threshold)
    for result in (outcome.mask, thresholded.mask):
        assert result.GetPixelID() == sitk.sitkUInt8
        _same_grid(result, image)
    closed = sitk.GetArrayFromImage(outcome.mask)
    raw = sitk.GetArrayFromImage(thresholded.mask)
    assert set(np.unique(closed)) <= {0, 1}
    assert set(np.unique(raw)) <= {0, 1}
    # Closing only adds voxels, and closing twice changes nothing.
    assert np.all(closed[raw == 1] == 1)
    event(f"{outcome.mode}, closing {'added voxels' if closed.sum() > raw.sum() else 'no change'}")
    again = sitk.GetArrayFromImage(close_mask(outcome.mask, radius))
    np.testing.assert_array_equal(again, closed)
    finite = np.isfinite(array) if array.dtype.kind == "f" else np.ones(array.shape, bool)
    assert not np.any(raw[~finite])  # NaN/Inf never pass the threshold
    assert outcome.nonfinite_voxels == int((~finite).sum())
    if threshold is not None:
        np.testing.assert_array_equal(raw, _manual_oracle(array, *threshold).astype(np.uint8))
    else:
        values = array[finite].astype(np.float64)
        fg = raw[finite] == 1
        # Otsu: a non-empty upper set of the finite values...
        assert fg.any()
        if not fg.all():
            assert values[fg].min() > values[~fg].max()
        if finite.all():
            # ...equal to ITK's own Otsu filter, or, where that one is empty
            # (few-valued images), the documented fallback: the maximum only.
            # (ITK itself makes every voxel foreground for some int8 images.)
            # Where ITK's histogram is degenerate, the documented exact rule.
            if otsu(array).rule == "itk":
                reference = sitk.GetArrayFromImage(_itk_otsu(image))
            else:
                event("Otsu: exact rule (degenerate ITK histogram)")
                reference = (array > array.dtype.type(exact_rule_threshold(array))).astype(
                    np.uint8)
            if reference.any():
                np.testing.assert_array_equal(raw, reference)
            else:
                np.testing.assert_array_equal(raw, (array == array.max()).astype(np.uint8))


def _itk_otsu(image: sitk.Image) -> sitk.Image:
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    otsu.SetNumberOfHistogramBins(OTSU_BINS)
    otsu.SetReturnBinMidpoint(OTSU_RETURN_BIN_MIDPOINT)
    return otsu.Execute(image)


@FUZZ
@given(images(), st.one_of(
    st.just((1.0,)), st.just((2.0, 1.0)), st.just((math.nan, 1.0)), st.just((0.0, math.inf)),
    st.just("10"), st.just((True, 2)), st.just((1, 2, 3)),
), st.one_of(st.integers(-3, -1), st.just(1.5), st.just(True), st.just("3")))
def test_invalid_parameters_raise_parameter_error(
    case: tuple[sitk.Image, np.ndarray], threshold: Any, radius: Any
) -> None:
    image, _ = case
    for args in ((threshold, 1), ((0.0, 1.0), radius)):
        try:
            compute_mask(image, *args)
        except ParameterError:
            continue
        raise AssertionError(f"no ParameterError for {args!r}")
