"""The pure masking layer: ``sitk.Image -> sitk.Image``, no I/O.

The pipeline is the one nidataset documents, run as ITK filters so that origin,
spacing and direction pass through unchanged:

1. threshold: ``BinaryThresholdImageFilter`` with both ends inclusive for a
   manual ``(low, high)`` window, or ``OtsuThresholdImageFilter`` (voxels
   *above* Otsu's threshold are foreground) when ``threshold is None``;
2. ``BinaryMorphologicalClosingImageFilter`` with a ball of ``closing_radius``
   voxels, foreground 1, safe border on (``closing_radius=0``: no closing),
   computed voxel-exactly and much faster by :mod:`nimask.core.closing`;
3. the result is a ``sitkUInt8`` image holding only 0 and 1.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from numbers import Integral, Real
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..exceptions import InvalidVolumeError, ParameterError
from . import closing
from .images import new_image
from .otsu import otsu
from .threads import run_parallel, split

__all__ = [
    "MAX_RADIUS_VOXELS",
    "OTSU_BINS",
    "OTSU_RETURN_BIN_MIDPOINT",
    "MaskOutcome",
    "close_mask",
    "mm_ball_radii",
    "otsu_threshold",
    "threshold_mask",
    "validate_closing_radius",
    "validate_closing_radius_mm",
    "validate_threshold",
]

#: Histogram bins of the Otsu filter, pinned (ITK's default) so that results do
#: not shift if a later ITK changes its default.
OTSU_BINS = 128
#: ``ReturnBinMidpoint`` of the Otsu filter, pinned (ITK's default).
OTSU_RETURN_BIN_MIDPOINT = False

_INTEGER_TYPES: dict[int, type[np.integer[Any]]] = {
    sitk.sitkUInt8: np.uint8,
    sitk.sitkInt8: np.int8,
    sitk.sitkUInt16: np.uint16,
    sitk.sitkInt16: np.int16,
    sitk.sitkUInt32: np.uint32,
    sitk.sitkInt32: np.int32,
    sitk.sitkUInt64: np.uint64,
    sitk.sitkInt64: np.int64,
}
logger = logging.getLogger(__name__)

_FLOAT_TYPES: dict[int, type[np.floating[Any]]] = {
    sitk.sitkFloat32: np.float32,
    sitk.sitkFloat64: np.float64,
}


# Stands in for the mask until the caller builds it (see ``_threshold``).
_PLACEHOLDER = sitk.Image()


@dataclass(frozen=True)
class MaskOutcome:
    """A mask and how it was made.

    Attributes
    ----------
    mask : SimpleITK.Image
        ``sitkUInt8`` image with values in {0, 1}, on the input's grid.
    mode : str
        ``"manual"`` or ``"otsu"``.
    lower, upper : float or None
        The inclusive intensity window that became foreground, expressed in the
        image's own pixel type (``None`` when no voxel can be foreground).
    otsu_threshold : float or None
        The value ``OtsuThresholdImageFilter`` computed (automatic mode only).
    nonfinite_voxels : int
        Number of NaN/Inf voxels; they are never foreground and take no part in
        Otsu's histogram.
    notes : tuple of str
        Remarks worth logging (e.g. the Otsu fallback for two-valued images).
    steps : tuple of str
        The opt-in refinement pipeline's steps in the order they ran (empty
        for the documented threshold + closing pipeline).
    hu_warning : str or None
        Set by the ``ct-*`` presets when the volume does not look like HU.
    components_dropped : int or None
        Components removed by the largest-component step (``None``: not run).
    brain_rim_percent : float or None
        ``mri-brain`` only: share (%) of the head's bright rim (skin, fat,
        marrow within a few mm of the head's surface) inside the mask
        (:func:`nimask.core.skullstrip.skull_strip`); ``None`` otherwise, and
        when the input was already skull-stripped.
    """

    mask: sitk.Image
    mode: str
    lower: float | None
    upper: float | None
    otsu_threshold: float | None
    nonfinite_voxels: int
    notes: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    hu_warning: str | None = None
    components_dropped: int | None = None
    brain_rim_percent: float | None = None


def validate_threshold(threshold: object) -> tuple[float, float] | None:
    """Check a ``threshold`` argument and return it as ``(low, high)`` floats or ``None``.

    Parameters
    ----------
    threshold : None or pair of real numbers
        ``None`` selects Otsu; otherwise an inclusive ``(low, high)`` window.

    Returns
    -------
    tuple of float or None

    Raises
    ------
    ParameterError
        If ``threshold`` is not ``None`` and not a pair of finite real numbers
        with ``low <= high`` (booleans and strings are rejected).
    """
    if threshold is None:
        return None
    if isinstance(threshold, (str, bytes)) or not isinstance(threshold, Sequence):
        raise ParameterError(
            f"threshold must be None or a (low, high) pair of numbers, got {threshold!r}"
        )
    if len(threshold) != 2:
        raise ParameterError(
            f"threshold must have exactly two values (low, high), got {len(threshold)}: "
            f"{threshold!r}"
        )
    values = []
    for name, value in zip(("low", "high"), threshold, strict=True):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
            raise ParameterError(f"threshold {name} must be a real number, got {value!r}")
        as_float = float(value)
        if not math.isfinite(as_float):
            raise ParameterError(f"threshold {name} must be finite, got {value!r}")
        values.append(as_float)
    low, high = values
    if low > high:
        raise ParameterError(f"threshold low must be <= high, got ({low:g}, {high:g})")
    return low, high


#: Largest ball radius in voxels: a NIfTI-1 volume has at most 32767 voxels along
#: an axis (``dim`` is int16), and a batch rejects a radius larger than a volume's
#: largest size (:meth:`nimask.batch.settings.MaskSettings.radius_problem`).
MAX_RADIUS_VOXELS = 32767


def validate_closing_radius(closing_radius: object, name: str = "closing_radius") -> int:
    """Check a ``closing_radius`` argument and return it as an ``int``.

    Raises
    ------
    ParameterError
        If it is not an integer in ``0 .. MAX_RADIUS_VOXELS`` (booleans and
        floats are rejected).
    """
    if isinstance(closing_radius, (bool, np.bool_)) or not isinstance(closing_radius, Integral):
        raise ParameterError(
            f"{name} must be an integer >= 0 (voxels), got {closing_radius!r}"
        )
    radius = int(closing_radius)
    if radius < 0:
        raise ParameterError(f"{name} must be >= 0, got {radius}")
    if radius > MAX_RADIUS_VOXELS:
        raise ParameterError(
            f"{name} must be at most {MAX_RADIUS_VOXELS} voxels (the largest size of a "
            f"NIfTI-1 volume: a larger ball fits no volume), got {radius}"
        )
    return radius


def _check_image(image: object) -> sitk.Image:
    if not isinstance(image, sitk.Image):
        raise InvalidVolumeError(f"expected a SimpleITK.Image, got {type(image).__name__}")
    if image.GetDimension() != 3:
        raise InvalidVolumeError(f"expected a 3D image, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidVolumeError(
            f"expected scalar voxels, got {image.GetNumberOfComponentsPerPixel()} components "
            f"per voxel ({image.GetPixelIDTypeAsString()})"
        )
    pixel_id = image.GetPixelID()
    if pixel_id not in _INTEGER_TYPES and pixel_id not in _FLOAT_TYPES:
        raise InvalidVolumeError(f"unsupported pixel type {image.GetPixelIDTypeAsString()}")
    return image


def _window_in_pixel_type(
    pixel_id: int, low: float, high: float
) -> tuple[int, int] | tuple[float, float] | None:
    """The inclusive window ``[low, high]`` expressed exactly in a pixel type.

    ``BinaryThresholdImageFilter`` casts its bounds to the pixel type, which
    would truncate ``49.5`` to ``49`` on an integer image and raises when a
    bound lies outside the type's range.  Here integer bounds are rounded
    inwards (``ceil(low)``, ``floor(high)``) and clipped to the type's range,
    as exact Python integers (a 64-bit bound such as ``2**63 - 1`` has no
    ``double``); float bounds keep ITK's float comparison.  ``None`` means no
    value of the type lies in the window.
    """
    if pixel_id in _INTEGER_TYPES:
        info = np.iinfo(_INTEGER_TYPES[pixel_id])
        lo = max(math.ceil(low), int(info.min))
        hi = min(math.floor(high), int(info.max))
        return (lo, hi) if lo <= hi else None
    if pixel_id == sitk.sitkFloat32:
        # ITK compares in float32 against the bounds rounded to nearest, as a
        # user typing 0.2 expects for a voxel stored as float32(0.2); only
        # clip bounds that float32 cannot hold (they would overflow to inf).
        big = float(np.finfo(np.float32).max)
        return max(low, -big), min(high, big)
    return low, high


def _above_in_pixel_type(pixel_id: int, value: int | float) -> int | float:
    """Smallest value of the pixel type strictly above ``value`` (a value of that type).

    ITK's Otsu filter labels ``v <= static_cast<PixelType>(t)`` as background;
    ``value`` is that cast (:class:`nimask.core.otsu.OtsuResult`), an exact ``int``
    for integer types.
    """
    if pixel_id in _INTEGER_TYPES:
        return int(value) + 1
    if pixel_id == sitk.sitkFloat32:
        return float(np.nextafter(np.float32(value), np.float32(np.inf)))
    return float(np.nextafter(float(value), np.inf))


#: Fewest voxels per thread for the passes of :func:`_min_max` and :func:`_in_window`.
_MIN_PART = 1 << 21


def _ends(part: np.ndarray) -> tuple[Any, Any]:
    return part.min(), part.max()


def _min_max(array: np.ndarray) -> tuple[Any, Any]:
    """``(array.min(), array.max())`` as numpy scalars (NaN if any voxel is), in threads."""
    flat = array.reshape(-1)
    found = run_parallel([functools.partial(_ends, flat[lo:hi])
                          for lo, hi in split(flat.size, _WINDOW_BLOCK, _MIN_PART)],
                         "nimask-range")
    lows = np.array([f[0] for f in found], dtype=array.dtype)
    highs = np.array([f[1] for f in found], dtype=array.dtype)
    return lows.min(), highs.max()  # NaN propagates as in one pass


def _finite_range(array: np.ndarray) -> tuple[float, float, np.ndarray | None]:
    """Min and max of the finite voxels, and a finite-voxel mask when any is not finite."""
    lo, hi = _min_max(array)
    if np.isfinite(lo) and np.isfinite(hi):
        return float(lo), float(hi), None
    finite = np.isfinite(array)
    if not finite.any():
        raise InvalidVolumeError("volume holds no finite voxel (all NaN/Inf)")
    values = array[finite]
    return float(values.min()), float(values.max()), finite


def _itk_otsu(image: sitk.Image, finite_mask: np.ndarray | None) -> float:
    """``OtsuThresholdImageFilter``'s threshold (the reference; 128 bins, bin max).

    For 64-bit integer images the filter runs on the image cast to ``float64``:
    ITK bins such voxels as doubles anyway, and ``GetThreshold()`` then returns
    the bin edge itself instead of its cast to a 64-bit integer rounded back to
    a ``double`` (inexact beyond 2**53, undefined beyond the type's range).
    """
    if image.GetPixelID() in (sitk.sitkInt64, sitk.sitkUInt64):
        image = sitk.Cast(image, sitk.sitkFloat64)
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    otsu.SetNumberOfHistogramBins(OTSU_BINS)
    otsu.SetReturnBinMidpoint(OTSU_RETURN_BIN_MIDPOINT)
    if finite_mask is None:
        otsu.Execute(image)
    else:
        otsu.SetMaskValue(1)
        mask_image = sitk.GetImageFromArray(finite_mask.view(np.uint8))
        mask_image.CopyInformation(image)
        otsu.Execute(image, mask_image)
    return float(otsu.GetThreshold())


def otsu_threshold(image: sitk.Image, *, method: str = "fast") -> float:
    """The threshold of ``sitk.OtsuThresholdImageFilter`` (128 bins) on ``image``.

    NaN/Inf voxels take no part (ITK's mask input).  ``method="fast"`` computes
    it in numpy (:func:`nimask.core.otsu.otsu`): the same value as ITK's filter
    wherever ITK's histogram is well defined, and a documented deterministic
    rule where it is degenerate (see :mod:`nimask.core.otsu`).  ``method="itk"``
    always runs ITK's filter.

    Raises
    ------
    ParameterError
        Unknown ``method``.
    InvalidVolumeError
        Not a 3D scalar image of a supported type, or no finite voxel.
    """
    _check_method(method)
    image = _check_image(image)
    view = sitk.GetArrayViewFromImage(image)
    finite_mask = None
    if image.GetPixelID() in _FLOAT_TYPES:
        vmin, vmax, finite_mask = _finite_range(view)
        value_range: tuple[int | float, int | float] = (vmin, vmax)
    else:
        low, high = _min_max(view)
        value_range = (low.item(), high.item())
    return float(_otsu_value(image, view, finite_mask, value_range, method))


def _otsu_value(image: sitk.Image, view: np.ndarray, finite_mask: np.ndarray | None,
                value_range: tuple[int | float, int | float], method: str) -> int | float:
    """Otsu's threshold cast to the pixel type (an exact ``int`` for integer types)."""
    if method == "fast":
        if value_range[0] == value_range[1]:
            return value_range[0]
        result = otsu(view, finite_mask, bins=OTSU_BINS, value_range=value_range)
        if result.rule != "itk":
            logger.debug("Otsu threshold: ITK's histogram is degenerate, exact rule used")
        return result.value
    t = _itk_otsu(image, finite_mask)
    if image.GetPixelID() in _INTEGER_TYPES and math.isfinite(t):
        return math.trunc(t)  # the filter's cast (exact from a float64 bin edge)
    return t


def _check_method(method: object) -> None:
    if method not in ("fast", "itk"):
        raise ParameterError(f"method must be 'fast' or 'itk', got {method!r}")


#: Voxels compared at a time by :func:`_in_window` (bounds its temporary arrays).
_WINDOW_BLOCK = 1 << 20


def _in_window(view: np.ndarray, pixel_id: int, low: int | float, high: int | float,
               check_high: bool = True) -> np.ndarray:
    """``low <= v <= high`` as a boolean array, compared exactly in the pixel type.

    The bounds are values of the pixel type: Python integers for integer
    types (compared with the voxels' own integers, also beyond 2**53), or
    floats exact in the image's float type.  This is what
    ``BinaryThreshold(image, low, high)`` gives wherever its ``double`` bounds
    can express them.
    """
    dtype = view.dtype
    if pixel_id in _INTEGER_TYPES:
        info = np.iinfo(dtype)
        lo = np.asarray(int(low), dtype=dtype)
        hi = np.asarray(int(high), dtype=dtype)
        check_low = int(low) > int(info.min)
        check_high = check_high and int(high) < int(info.max)
    else:
        lo = np.asarray(low, dtype=dtype)
        hi = np.asarray(high, dtype=dtype)
        check_low = True
    if not (check_low or check_high):
        return np.ones(view.shape, dtype=bool)
    inside = np.empty(view.shape, dtype=bool)
    flat_in, flat_out = view.reshape(-1), inside.reshape(-1)

    def compare(begin: int, end: int) -> None:
        for start in range(begin, end, _WINDOW_BLOCK):  # bounded temporaries
            stop = min(start + _WINDOW_BLOCK, end)
            block, out = flat_in[start:stop], flat_out[start:stop]
            if check_low:
                np.greater_equal(block, lo, out=out)
                if check_high:
                    out &= np.less_equal(block, hi)
            else:
                np.less_equal(block, hi, out=out)

    run_parallel([functools.partial(compare, lo_, hi_)
                  for lo_, hi_ in split(flat_in.size, _WINDOW_BLOCK, _MIN_PART)],
                 "nimask-window")
    return inside


def _itk_window(image: sitk.Image, view: np.ndarray, low: int | float,
                high: int | float) -> np.ndarray | sitk.Image:
    """``BinaryThreshold(image, low, high)`` where its ``double`` bounds are exact.

    ITK takes the bounds as ``double`` and casts them to the pixel type: a
    64-bit bound such as ``2**63 - 1`` becomes ``2**63``, whose cast is
    undefined.  Such windows are compared in numpy on the exact integers.
    """
    pixel_id = image.GetPixelID()
    if pixel_id in _INTEGER_TYPES:
        info = np.iinfo(_INTEGER_TYPES[pixel_id])
        exact = all(
            int(float(b)) == b and int(info.min) <= int(float(b)) <= int(info.max)
            for b in (int(low), int(high))
        )
        if not exact:
            return _in_window(view, pixel_id, low, high)
    return sitk.BinaryThreshold(image, float(low), float(high), 1, 0)


def _threshold(
    image: sitk.Image, threshold: tuple[float, float] | None, method: str
) -> tuple[np.ndarray | sitk.Image, MaskOutcome]:
    """Threshold into a 0/1 ``uint8``/bool array (or an ITK image with ``method="itk"``).

    The outcome's ``mask`` is a placeholder; the caller builds the image.
    """
    window = validate_threshold(threshold)
    _check_method(method)
    image = _check_image(image)
    pixel_id = image.GetPixelID()
    view = sitk.GetArrayViewFromImage(image)
    nonfinite = 0
    finite_mask: np.ndarray | None = None
    vmin: int | float = 0
    vmax: int | float = 0
    if pixel_id in _FLOAT_TYPES:
        if window is None:
            vmin, vmax, finite_mask = _finite_range(view)
        elif not all(np.isfinite(_min_max(view))):
            finite_mask = np.isfinite(view)
        if finite_mask is not None:
            nonfinite = int(finite_mask.size - np.count_nonzero(finite_mask))

    placeholder = _PLACEHOLDER
    if window is not None:
        bounds = _window_in_pixel_type(pixel_id, *window)
        if bounds is None:
            return (np.zeros(view.shape, dtype=bool),
                    MaskOutcome(placeholder, "manual", None, None, None, nonfinite))
        # NaN compares false and the bounds are finite, so NaN/Inf never pass.
        mask: np.ndarray | sitk.Image = (
            _in_window(view, pixel_id, *bounds) if method == "fast"
            else _itk_window(image, view, *bounds)
        )
        return mask, MaskOutcome(placeholder, "manual", float(bounds[0]), float(bounds[1]),
                                 None, nonfinite)

    if pixel_id in _INTEGER_TYPES:
        # the voxels' own integers: 2**62 and 2**62 + 1 are one double but two values
        low, high = _min_max(view)
        vmin, vmax = low.item(), high.item()
    if vmin == vmax:
        raise InvalidVolumeError(
            f"constant volume (every finite voxel is {vmin:g}): Otsu's threshold is "
            "undefined; give a manual threshold"
        )
    t = _otsu_value(image, view, finite_mask, (vmin, vmax), method)
    if not math.isfinite(t):
        # ITK's filter (method="itk") on a histogram it cannot build
        raise InvalidVolumeError(f"ITK's Otsu threshold is {t}: its histogram is degenerate")
    lower = _above_in_pixel_type(pixel_id, t)
    notes: tuple[str, ...] = ()
    if lower > vmax:
        # Few-valued images (e.g. a 0/1 volume): ITK's histogram puts the
        # threshold at the maximum, which would give an empty mask.  The
        # separation Otsu found is below the top value, so keep that value.
        lower = vmax
        notes = (f"Otsu threshold {t:g} is not below the maximum; voxels equal to the "
                 f"maximum {vmax:g} are foreground",)
    # Foreground = (t, finite max]: same voxels as the Otsu filter's own output
    # on finite images, and NaN/Inf are excluded by construction.  Without
    # NaN/Inf every voxel is <= the maximum: only the lower bound is compared.
    if method == "fast":
        mask = _in_window(view, pixel_id, lower, vmax, check_high=finite_mask is not None)
    else:
        mask = _itk_window(image, view, lower, vmax)
    return mask, MaskOutcome(placeholder, "otsu", float(lower), float(vmax), float(t),
                             nonfinite, notes)


def _as_image(mask: np.ndarray | sitk.Image, reference: sitk.Image) -> sitk.Image:
    if isinstance(mask, sitk.Image):
        return mask
    image = sitk.GetImageFromArray(mask.view(np.uint8))
    image.CopyInformation(reference)
    return image


def threshold_mask(
    image: sitk.Image, threshold: tuple[float, float] | None = None, *, method: str = "fast"
) -> MaskOutcome:
    """Threshold a 3D scalar image into a 0/1 ``sitkUInt8`` mask (no closing).

    Parameters
    ----------
    image : SimpleITK.Image
        3D scalar image; intensities as read (after ``scl_slope``/``scl_inter``).
    threshold : (low, high) or None
        Inclusive window, or ``None`` for Otsu (voxels above the threshold).
    method : {"fast", "itk"}
        Keyword-only.  ``"itk"`` runs ITK's ``OtsuThresholdImageFilter`` and
        ``BinaryThresholdImageFilter``; ``"fast"`` (default) computes the same
        threshold and voxels in numpy (see :func:`otsu_threshold`).

    Returns
    -------
    MaskOutcome

    Raises
    ------
    ParameterError
        Invalid ``threshold`` or ``method``.
    InvalidVolumeError
        Not a 3D scalar image; no finite voxel; constant image with Otsu.
    """
    mask, outcome = _threshold(image, threshold, method)
    return replace(outcome, mask=_as_image(mask, image))


def validate_closing_radius_mm(closing_radius_mm: object) -> float | None:
    """Check a ``closing_radius_mm`` argument: ``None`` or a finite real >= 0.

    Raises
    ------
    ParameterError
        If it is not ``None`` and not a finite real number >= 0 (booleans and
        strings are rejected).
    """
    if closing_radius_mm is None:
        return None
    if isinstance(closing_radius_mm, (bool, np.bool_)) or not isinstance(closing_radius_mm, Real):
        raise ParameterError(
            f"closing_radius_mm must be None or a number >= 0 (millimetres), "
            f"got {closing_radius_mm!r}"
        )
    value = float(closing_radius_mm)
    if not math.isfinite(value) or value < 0:
        raise ParameterError(
            f"closing_radius_mm must be finite and >= 0, got {closing_radius_mm!r}"
        )
    return value


def mm_ball_radii(spacing_xyz: Sequence[float], closing_radius_mm: float) -> tuple[float, ...]:
    """Per-axis ball radii in voxels, array order (z, y, x): ``R / spacing``.

    Each quotient is rounded to ``double``; :func:`nimask.core.closing.ellipsoid_kernel`
    then decides every offset exactly on these values (the tie rule of
    :func:`close_mask`).

    Raises
    ------
    InvalidVolumeError
        A spacing that is not finite and > 0.
    """
    radii = []
    for s in spacing_xyz:
        if not (math.isfinite(s) and s > 0):
            raise InvalidVolumeError(
                f"voxel spacing {tuple(spacing_xyz)} is not finite and > 0: "
                "closing_radius_mm needs it"
            )
        radii.append(closing_radius_mm / s)
    return tuple(reversed(radii))


def _close_itk(mask: sitk.Image, radius: int) -> sitk.Image:
    """The plain ITK chain: ``BinaryMorphologicalClosing`` with a ball, safe border on."""
    return sitk.BinaryMorphologicalClosing(mask, [radius] * 3, sitk.sitkBall, 1, True)


def close_mask(
    mask: sitk.Image,
    closing_radius: int = 3,
    *,
    closing_radius_mm: float | None = None,
    method: str = "fast",
) -> sitk.Image:
    """Binary closing of a 0/1 mask with a ball of ``closing_radius`` voxels.

    The result is, voxel for voxel, that of ITK's
    ``BinaryMorphologicalClosingImageFilter`` with kernel ``sitkBall`` of
    radius ``closing_radius``, foreground 1 and safe border on (the ball holds
    the offsets with ``dx**2 + dy**2 + dz**2 <= (r + 1/2)**2``).  It is
    computed by :mod:`nimask.core.closing` (bit-packed numpy, bounding box only);
    ``method="itk"`` runs the ITK filter itself.  ``closing_radius=0`` returns
    the mask as is.

    Parameters
    ----------
    mask : SimpleITK.Image
        3D ``sitkUInt8`` image with values in {0, 1}.
    closing_radius : int
        Ball radius in voxels (>= 0).
    closing_radius_mm : float or None
        Keyword-only.  When given, replaces ``closing_radius``: the ball is
        round in millimetres, with per-axis radius ``r_i = R / spacing_i``
        voxels and ITK's half-voxel rule, i.e. it holds the offsets ``d`` (in
        voxels) with ``sum((d_i / (r_i + 1/2))**2) <= 1``.  Tie rule: ``r_i``
        is the quotient rounded to ``double`` (Python's ``R / s``), the
        inequality is then decided exactly (rational arithmetic), and offsets
        exactly on the ellipsoid are inside (``R = 2``, ``s = 0.8``:
        ``r = 2.5``, ``d = 3`` is inside, although ``3 * 0.8 / (2 + 0.8 / 2)``
        evaluated in floating point exceeds 1).  On isotropic voxels of size
        ``s``, ``closing_radius_mm = r * s`` is ``closing_radius = r``; when
        every ``r_i`` is an integer it is ITK's ball with that radius vector
        (no offset then lies exactly on the ellipsoid).  ``0`` disables
        closing.
    method : {"fast", "itk"}
        Keyword-only.  ``"itk"`` runs ``sitk.BinaryMorphologicalClosing``
        (voxel radius only); both give the same voxels.

    Returns
    -------
    SimpleITK.Image
    """
    _check_method(method)
    radius_mm = validate_closing_radius_mm(closing_radius_mm)
    if radius_mm is None:
        radius = validate_closing_radius(closing_radius)
        if radius == 0:
            return mask
        if method == "itk":
            return _close_itk(mask, radius)
        kernel = closing.ball_kernel(radius)
    else:
        if method == "itk":
            raise ParameterError("method='itk' supports closing_radius (voxels) only")
        if radius_mm == 0:
            return mask
        kernel = closing.ellipsoid_kernel(mm_ball_radii(mask.GetSpacing(), radius_mm))
        if kernel.size == 1:
            return mask
    if mask.GetPixelID() != sitk.sitkUInt8 or mask.GetDimension() != 3:
        if radius_mm is None:
            return _close_itk(mask, radius)
        raise InvalidVolumeError("closing_radius_mm needs a 3D sitkUInt8 mask")
    view = sitk.GetArrayViewFromImage(mask)
    if view.size and int(view.max()) > 1:
        if radius_mm is None:
            return _close_itk(mask, radius)
        raise InvalidVolumeError("closing_radius_mm needs a mask with values in {0, 1}")
    return _closed_image(view, kernel, mask)


def _closed_image(mask: np.ndarray, kernel: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """The closing of a ``(z, y, x)`` mask array, written straight into a new image's buffer.

    The image takes ``reference``'s geometry.
    """
    closed, buffer = new_image(mask.shape, np.dtype(np.uint8))
    closing.close_with_kernel(mask, kernel, out=buffer)
    del buffer  # the image owns the memory
    closed.CopyInformation(reference)
    return closed


def _closing_kernel(spacing: Sequence[float], radius: int,
                    radius_mm: float | None) -> np.ndarray | None:
    """The structuring element of :func:`close_mask`, ``None`` when it changes nothing."""
    if radius_mm is None:
        return closing.ball_kernel(radius) if radius else None
    if radius_mm == 0:
        return None
    kernel = closing.ellipsoid_kernel(mm_ball_radii(spacing, radius_mm))
    return kernel if kernel.size > 1 else None
