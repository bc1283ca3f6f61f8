"""The pure layer against the plain SimpleITK chain and hand-computed masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import OBLIQUE, ORIGIN, SPACING, box_volume, make_image

from nimask import brain_mask, compute_mask
from nimask.core.masking import OTSU_BINS, OTSU_RETURN_BIN_MIDPOINT, close_mask, threshold_mask
from nimask.data.phantoms import ct_head_phantom, mri_head_phantom
from nimask.exceptions import InvalidVolumeError, ParameterError


def plain_chain(
    image: sitk.Image, threshold: tuple[float, float] | None, radius: int
) -> sitk.Image:
    """The design-card chain written out with ITK filters: the reference."""
    if threshold is None:
        otsu = sitk.OtsuThresholdImageFilter()
        otsu.SetInsideValue(0)
        otsu.SetOutsideValue(1)
        otsu.SetNumberOfHistogramBins(128)
        otsu.SetReturnBinMidpoint(False)
        mask = otsu.Execute(image)
    else:
        mask = sitk.BinaryThreshold(image, threshold[0], threshold[1], 1, 0)
    if radius > 0:
        mask = sitk.BinaryMorphologicalClosing(mask, [radius] * 3, sitk.sitkBall, 1, True)
    return sitk.Cast(mask, sitk.sitkUInt8)


def arr(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def assert_same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    assert a.GetOrigin() == b.GetOrigin()
    assert a.GetSpacing() == b.GetSpacing()
    assert a.GetDirection() == b.GetDirection()


PHANTOMS = {
    "ct_int16": lambda: ct_head_phantom((48, 40, 24), SPACING, ORIGIN, OBLIQUE),
    "mri_float32": lambda: mri_head_phantom((40, 44, 20), SPACING, ORIGIN, OBLIQUE),
}


def test_pinned_otsu_settings_are_itk_defaults() -> None:
    default = sitk.OtsuThresholdImageFilter()
    assert default.GetNumberOfHistogramBins() == OTSU_BINS
    assert default.GetReturnBinMidpoint() == OTSU_RETURN_BIN_MIDPOINT


@pytest.mark.parametrize("radius", [0, 1, 3, 5])
@pytest.mark.parametrize("phantom", sorted(PHANTOMS))
@pytest.mark.parametrize("threshold", [None, "window"])
def test_equals_plain_itk_chain(phantom: str, radius: int, threshold: str | None) -> None:
    image = PHANTOMS[phantom]()
    window = None if threshold is None else ((0, 100) if phantom == "ct_int16" else (50.0, 95.5))
    mask = brain_mask(image, window, radius)
    reference = plain_chain(image, window, radius)
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert_same_geometry(mask, image)
    got, want = arr(mask), arr(reference)
    assert set(np.unique(got)) <= {0, 1}
    assert int(np.count_nonzero(got != want)) == 0
    assert 0 < got.sum() < got.size


def test_manual_window_hand_computed_counts() -> None:
    image = make_image(box_volume())
    assert arr(brain_mask(image, (50, 150), 0)).sum() == 6 * 10 * 14 - 1
    closed = arr(brain_mask(image, (50, 150), 1))
    assert closed.sum() == 6 * 10 * 14
    assert closed[3:9, 5:15, 8:22].all()
    # Both ends are inclusive.
    assert arr(brain_mask(image, (100, 100), 0)).sum() == 839
    assert arr(brain_mask(image, (0, 0), 0)).sum() == image.GetNumberOfPixels() - 839


def test_window_wider_than_pixel_type_just_works() -> None:
    # The spec's own (50, 300) on a uint8 volume makes plain BinaryThreshold raise.
    values = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    image = make_image(values)
    with pytest.raises(RuntimeError):
        sitk.BinaryThreshold(image, 50, 300, 1, 0)
    mask = arr(brain_mask(image, (50, 300), 0))
    np.testing.assert_array_equal(mask, (values >= 50).astype(np.uint8))
    # A window entirely outside the type's range gives an empty mask.
    outcome = threshold_mask(image, (300, 400))
    assert arr(outcome.mask).sum() == 0
    assert outcome.lower is None
    assert outcome.mask.GetPixelID() == sitk.sitkUInt8


def test_fractional_bounds_on_integer_image_are_not_truncated() -> None:
    values = np.arange(-60, 60, dtype=np.int16).reshape(2, 6, 10)
    image = make_image(values)
    mask = arr(brain_mask(image, (-3.5, 4.5), 0))
    np.testing.assert_array_equal(mask, ((values >= -3) & (values <= 4)).astype(np.uint8))
    assert arr(brain_mask(image, (2.2, 2.8), 0)).sum() == 0


def test_float32_bounds_compare_in_float32_like_itk() -> None:
    lo, hi = np.float32(0.1), np.float32(0.2)
    values = np.array(
        [np.nextafter(lo, np.float32(0)), lo, hi, np.nextafter(hi, np.float32(1))], np.float32
    ).reshape(1, 1, 4)
    image = make_image(values)
    mask = arr(brain_mask(image, (0.1, 0.2), 0)).ravel()
    assert mask.tolist() == [0, 1, 1, 0]
    np.testing.assert_array_equal(mask, arr(plain_chain(image, (0.1, 0.2), 0)).ravel())
    # Bounds beyond float32's range do not overflow to an empty or full mask.
    assert arr(brain_mask(image, (-1e300, 0.15), 0)).ravel().tolist() == [1, 1, 0, 0]


def test_otsu_two_valued_volume_keeps_the_higher_value() -> None:
    values = np.zeros((10, 12, 14), np.uint8)
    values[2:7, 3:9, 4:10] = 1
    image = make_image(values)
    # The plain filter puts the threshold at the maximum and returns an empty mask.
    assert arr(plain_chain(image, None, 0)).sum() == 0
    outcome = compute_mask(image, None, 0)
    np.testing.assert_array_equal(arr(outcome.mask), values)
    assert outcome.notes
    assert "maximum" in outcome.notes[0]


def test_otsu_negative_fractional_threshold_matches_itk_truncation() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [rng.normal(-700, 60, 3000), rng.normal(40, 30, 3000)]
    ).round().astype(np.int16).reshape(10, 20, 30)
    image = make_image(values)
    outcome = compute_mask(image, None, 0)
    assert outcome.otsu_threshold is not None
    np.testing.assert_array_equal(arr(outcome.mask), arr(plain_chain(image, None, 0)))


def test_nan_and_inf_never_foreground_and_do_not_move_otsu() -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(10, 2, 2000), rng.normal(80, 5, 2000)]).astype(np.float32)
    values = values.reshape(10, 20, 20)
    clean = compute_mask(make_image(values), None, 0)
    dirty_values = np.concatenate([values.ravel(), [np.nan] * 50, [np.inf] * 30, [-np.inf] * 20])
    dirty_values = dirty_values.astype(np.float32).reshape(41, 10, 10)
    dirty = compute_mask(make_image(dirty_values), None, 0)
    assert dirty.otsu_threshold == clean.otsu_threshold
    assert dirty.nonfinite_voxels == 100
    dirty_mask = arr(dirty.mask).ravel()
    assert dirty_mask[-100:].sum() == 0
    assert dirty_mask[:4000].sum() == arr(clean.mask).sum()
    manual = arr(brain_mask(make_image(dirty_values), (-1e30, 1e30), 0)).ravel()
    assert manual[-100:].sum() == 0
    assert manual[:4000].all()


def test_all_nan_volume_fails_clearly() -> None:
    image = make_image(np.full((4, 4, 4), np.nan, np.float32))
    with pytest.raises(InvalidVolumeError, match="no finite voxel"):
        brain_mask(image)


def test_constant_volume_otsu_fails_and_manual_works() -> None:
    image = make_image(np.full((4, 5, 6), 7, np.int16))
    with pytest.raises(InvalidVolumeError, match=r"constant volume .*7.*manual threshold"):
        brain_mask(image)
    assert arr(brain_mask(image, (0, 10), 2)).sum() == 120


@pytest.mark.parametrize(
    ("threshold", "message"),
    [
        ((1,), "exactly two values"),
        ((1, 2, 3), "exactly two values"),
        ("ab", "pair of numbers"),
        (5, "pair of numbers"),
        ((True, 2), "low must be a real number"),
        ((1, "2"), "high must be a real number"),
        ((float("nan"), 2), "low must be finite"),
        ((1, float("inf")), "high must be finite"),
        ((5, 1), r"low must be <= high, got \(5, 1\)"),
    ],
)
def test_bad_threshold_messages(threshold: object, message: str) -> None:
    image = make_image(box_volume())
    with pytest.raises(ParameterError, match=message):
        brain_mask(image, threshold)  # type: ignore[arg-type]


@pytest.mark.parametrize("radius", [-1, 1.5, True, "3", None])
def test_bad_closing_radius(radius: object) -> None:
    with pytest.raises(ParameterError, match="closing_radius must be"):
        brain_mask(make_image(box_volume()), None, radius)  # type: ignore[arg-type]


def test_parameter_error_is_value_error() -> None:
    with pytest.raises(ValueError, match="threshold"):
        brain_mask(make_image(box_volume()), (2, 1))


def test_numpy_scalars_accepted() -> None:
    image = make_image(box_volume())
    mask = brain_mask(image, (np.int64(50), np.float32(150)), np.int64(1))
    assert arr(mask).sum() == 840


@pytest.mark.parametrize(
    "image",
    [
        sitk.Image([5, 5], sitk.sitkInt16),
        sitk.Image([5, 5, 5], sitk.sitkVectorFloat32, 3),
        sitk.Image([3, 3, 3, 2], sitk.sitkInt16),
    ],
    ids=["2d", "vector", "4d"],
)
def test_rejects_non_scalar_3d(image: sitk.Image) -> None:
    with pytest.raises(InvalidVolumeError, match="expected"):
        brain_mask(image)


def test_close_mask_radius_zero_is_identity() -> None:
    mask = sitk.Cast(make_image(box_volume(np.uint8) // 100), sitk.sitkUInt8)
    assert close_mask(mask, 0) is mask


# --- 64-bit integers: windows and Otsu compared on the voxels' own integers ------------

_I64 = np.iinfo(np.int64)
_U64 = np.iinfo(np.uint64)


def _int64_volume(dtype: type) -> np.ndarray:
    """Values across the whole type, both extremes and their neighbours included."""
    info = np.iinfo(dtype)
    lo, hi = int(info.min), int(info.max)
    values = [lo, lo + 1, lo + 1023, hi - 1024, hi - 1, hi, 0, 1, 500, 2**53 + 1, 2**62 + 1,
              2**63 - 1]
    if dtype == np.int64:
        values += [-500, -501, -(2**62) - 1]
    else:
        values += [2**63, 2**64 - 2]
    array = np.array(values * 4, dtype=object).astype(dtype)
    return array[: (array.size // 6) * 6].reshape(2, 3, -1)


def _window_oracle(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """``low <= v <= high`` decided on Python integers (no double in between)."""
    flat = [math.ceil(low) <= int(v) <= math.floor(high) for v in array.ravel().tolist()]
    return np.array(flat, dtype=np.uint8).reshape(array.shape)


WIDE_WINDOWS = [(-500, 1e20), (-1e300, 1e300), (0.0, 2.0**63), (-(2.0**63), 10.0),
                (2.0**62, 2.0**64), (2.0**63 - 1024, 2.0**63 - 1024), (-0.5, 0.5)]


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
@pytest.mark.parametrize("window", WIDE_WINDOWS)
def test_64bit_windows_compare_native_integers(dtype: type,
                                               window: tuple[float, float]) -> None:
    array = _int64_volume(dtype)
    image = make_image(array)
    expected = _window_oracle(array, *window)
    for method in ("fast", "itk"):
        outcome = threshold_mask(image, window, method=method)
        np.testing.assert_array_equal(arr(outcome.mask), expected, err_msg=method)
    # where ITK's double bounds are exact in the type, the plain filter agrees
    low, high = max(math.ceil(window[0]), int(np.iinfo(dtype).min)), min(
        math.floor(window[1]), int(np.iinfo(dtype).max))
    if low <= high and all(float(b) == b and abs(b) < 2**63 for b in (low, high)):
        np.testing.assert_array_equal(expected, arr(sitk.BinaryThreshold(image, low, high, 1, 0)))


# Two values near the ends of the 64-bit types: Otsu separates them.  Where
# ITK's threshold casts into the type, its filter is the reference; at 2**63
# and 2**64 its cast is undefined (the filter then returns an empty or a full
# mask): the documented rule keeps the higher value.
TWO_VALUED_64 = [
    (np.int64, 2**63 - 1000, 2**63 - 1, False),
    (np.int64, -(2**63), -(2**63) + 1000, True),
    (np.int64, -(2**63), 2**63 - 1, True),
    (np.int64, 2**62, 2**62 + 1, True),  # one double, two integers: not a constant volume
    (np.int64, 2**62, 2**62 + 4096, True),
    (np.uint64, 2**64 - 1000, 2**64 - 1, False),
    (np.uint64, 0, 2**64 - 1, True),
]


@pytest.mark.parametrize(("dtype", "low", "high", "itk_defined"), TWO_VALUED_64)
def test_otsu_on_64bit_values_near_the_type_limits(dtype: type, low: int, high: int,
                                                    itk_defined: bool) -> None:
    array = np.full((6, 7, 8), low, dtype=dtype)
    array[1:4, 2:5, 3:7] = dtype(high)
    image = make_image(array)
    expected = (array == dtype(high)).astype(np.uint8)
    for method in ("fast", "itk") if itk_defined else ("fast",):
        outcome = threshold_mask(image, None, method=method)
        np.testing.assert_array_equal(arr(outcome.mask), expected, err_msg=method)
    closed = compute_mask(image, None, 1)
    assert arr(closed.mask).sum() >= expected.sum()
    if itk_defined:
        np.testing.assert_array_equal(expected, arr(plain_chain(image, None, 0)))
