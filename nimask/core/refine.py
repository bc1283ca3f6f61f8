"""Opt-in refinements of a threshold mask: pure ``sitk.Image -> sitk.Image`` steps.

The documented pipeline (threshold, closing) stays the default.  The steps
here are only run when asked for, through keyword-only arguments or a preset
(:mod:`nimask.core.presets`):

``fill_holes``
    ``"3d"``: ``BinaryFillholeImageFilter`` (background face-connected, so a
    hole is background that cannot reach the image border through faces);
    ``"slices"``: the same filter in 2D on every slice perpendicular to the
    patient's superior-inferior axis (the voxel axis whose direction cosine
    has the largest S-I component), for heads cut open at the neck where a 3D
    fill finds no closed hole; ``"both"``: 3D, then slice-wise.
``largest_component``
    ``ConnectedComponentImageFilter`` (face connectivity) and
    ``RelabelComponentImageFilter``; only the largest component is kept.
``exclude_above_window``
    After the closing, voxels brighter than the threshold window's upper
    bound are removed again (``BinaryThresholdImageFilter`` and
    ``AndImageFilter``): the closing may fill darker gaps (CSF) but not bridge
    over brighter structures (on CT, bone at the skull base).
``opening_radius``
    ``BinaryErodeImageFilter`` before and ``BinaryDilateImageFilter`` after
    the largest-component step (ball kernel, in voxels, or ``"<R>mm"`` for a
    per-axis radius of ``round(R / spacing)`` voxels).  Cuts thin bridges,
    e.g. between brain and scalp through the skull's foramina on CT.

Order of the steps (see :func:`refine_mask`)::

    threshold -> [erode -> largest component -> dilate] -> closing
              -> exclude above window -> fill holes -> largest component

Each bracketed or named step runs only when enabled; the largest-component
step runs inside the opening (when there is one) *and* last, so the result is
always a single face-connected component.  The ``nidataset`` compatibility
flavour instead follows nidataset 0.9.1's own code: threshold (its Otsu band),
3D fill, closing with scikit-image's ball and border rule, largest component
(the exclusion, when asked for, still follows the closing).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..exceptions import InvalidVolumeError, ParameterError
from .masking import (
    MaskOutcome,
    close_mask,
    threshold_mask,
    validate_closing_radius,
    validate_closing_radius_mm,
)
from .skullstrip import CLOSE_MM, skull_strip

__all__ = [
    "DEFAULT_CLOSING_RADIUS",
    "FILL_HOLES_MODES",
    "NIDATASET_OTSU_BINS",
    "Refinements",
    "axial_axis",
    "check_skull_strip_closing",
    "close_mask_skimage_ball",
    "dilate_mask",
    "erode_mask",
    "exclude_above",
    "fill_holes",
    "hu_check",
    "keep_largest_component",
    "nidataset_otsu_threshold",
    "refine_mask",
    "validate_fill_holes",
    "validate_opening_radius",
]

logger = logging.getLogger(__name__)

#: The closing radius (voxels) of every entry point when none is given.
DEFAULT_CLOSING_RADIUS = 3

#: Accepted ``fill_holes`` values once normalised (``True`` means ``"3d"``,
#: ``False`` means ``"off"``).
FILL_HOLES_MODES = ("off", "3d", "slices", "both")
#: Histogram bins of nidataset's Otsu (``skimage.filters.threshold_otsu`` default).
NIDATASET_OTSU_BINS = 256
#: Compatibility flavours.
COMPAT_NIDATASET = "nidataset"

#: HU sanity limits of the ``ct-*`` presets: a head CT in HU has air below the
#: first value and bone above the second.
HU_AIR_BELOW = -500.0
HU_BONE_ABOVE = 300.0

_MM_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*mm\s*$", re.IGNORECASE)
_INT_RE = re.compile(r"^\s*\d+\s*$")


@dataclass(frozen=True)
class Refinements:
    """Resolved opt-in steps (all off by default).

    Attributes
    ----------
    fill_holes : str
        One of :data:`FILL_HOLES_MODES`.
    largest_component : bool
        Keep only the largest face-connected component.
    exclude_above_window : bool
        After the closing, drop voxels above the window's upper bound.
    opening_radius : float
        Radius of the erosion/dilation pair around the largest-component
        step; 0 = none.  Voxels (an integer) when ``opening_unit == "vox"``.
    opening_unit : str
        ``"vox"`` or ``"mm"``.
    compat : str
        ``""`` or ``"nidataset"`` (nidataset 0.9.1's Otsu band, step order,
        closing ball and border rule).
    hu_check : bool
        Warn when the volume does not look like CT in Hounsfield units.
    preset : str
        Name of the preset these values came from (``""``: none).
    skull_strip : bool
        Replace the threshold pipeline by the MRI brain extraction of
        :func:`nimask.core.skullstrip.skull_strip` (preset ``mri-brain``).
    """

    fill_holes: str = "off"
    largest_component: bool = False
    exclude_above_window: bool = False
    opening_radius: float = 0
    opening_unit: str = "vox"
    compat: str = ""
    hu_check: bool = False
    preset: str = ""
    skull_strip: bool = False

    @property
    def active(self) -> bool:
        """True when anything differs from the documented pipeline."""
        return self != Refinements()

    @property
    def opening_text(self) -> str:
        """``"2"`` (voxels), ``"2.5mm"`` or ``""`` when there is no opening."""
        if not self.opening_radius:
            return ""
        if self.opening_unit == "mm":
            return f"{self.opening_radius:g}mm"
        return f"{int(self.opening_radius)}"

    def provenance_tokens(self) -> list[str]:
        """Compact ``key=value`` tokens for the NIfTI ``descrip`` (empty when inactive)."""
        tokens = []
        if self.compat:
            tokens.append(f"compat={self.compat}")
        if self.opening_radius:
            tokens.append(f"open={self.opening_text}")
        if self.fill_holes != "off":
            tokens.append(f"fill={self.fill_holes}")
        if self.largest_component:
            tokens.append("lcc")
        if self.exclude_above_window:
            tokens.append("xab")
        if self.skull_strip:
            tokens.append("strip")
        if self.preset:
            tokens.append(f"preset={self.preset}")
        return tokens


def validate_fill_holes(value: object) -> str:
    """Normalise a ``fill_holes`` argument to one of :data:`FILL_HOLES_MODES`.

    ``False`` -> ``"off"``, ``True`` -> ``"3d"``; strings are matched
    case-insensitively (``"none"`` is accepted for ``"off"``).

    Raises
    ------
    ParameterError
        Any other value.
    """
    if isinstance(value, (bool, np.bool_)):
        return "3d" if value else "off"
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "none":
            text = "off"
        if text in FILL_HOLES_MODES:
            return text
    raise ParameterError(
        f"fill_holes must be False, True or one of {', '.join(FILL_HOLES_MODES)}, got {value!r}"
    )


def validate_flag(name: str, value: object) -> bool:
    """Check a boolean step argument such as ``largest_component``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ParameterError(f"{name} must be True or False, got {value!r}")


def validate_opening_radius(value: object) -> tuple[float, str]:
    """Parse an ``opening_radius``: integer voxels, or ``"<R>mm"``.

    Returns
    -------
    (radius, unit)
        ``unit`` is ``"vox"`` (radius is an integer) or ``"mm"``.

    Raises
    ------
    ParameterError
        Negative, non-integer voxel counts, non-finite or malformed values.
    """
    if isinstance(value, str):
        match = _MM_RE.match(value)
        if match:
            radius = float(match.group(1))
            if not math.isfinite(radius):
                raise ParameterError(f"opening_radius must be finite, got {value!r}")
            return (radius, "mm") if radius > 0 else (0, "vox")
        if _INT_RE.match(value):
            return validate_closing_radius(int(value), "opening_radius"), "vox"
        raise ParameterError(
            f"opening_radius must be an integer (voxels) or a string like '2.5mm', got {value!r}"
        )
    try:
        radius = validate_closing_radius(value, "opening_radius")
    except ParameterError as exc:
        if "at most" in str(exc):
            raise
        raise ParameterError(
            f"opening_radius must be an integer >= 0 (voxels) or a string like '2.5mm', "
            f"got {value!r}"
        ) from None
    return radius, "vox"


# --------------------------------------------------------------------------- steps


def _check_mask(mask: object) -> sitk.Image:
    if not isinstance(mask, sitk.Image) or mask.GetPixelID() != sitk.sitkUInt8:
        raise InvalidVolumeError("expected a sitkUInt8 0/1 mask image")
    if mask.GetDimension() != 3:
        raise InvalidVolumeError(f"expected a 3D mask, got {mask.GetDimension()}D")
    return mask


def axial_axis(image: sitk.Image) -> int:
    """Index (0=i, 1=j, 2=k) of the voxel axis closest to the patient's S-I axis.

    Taken from the direction cosines: the axis whose direction has the largest
    absolute superior-inferior (third LPS) component; ties go to the higher
    index (2 before 1 before 0), which is the slice axis of most scans.
    """
    direction = image.GetDirection()
    si = [abs(direction[6 + j]) for j in range(3)]
    return max(range(3), key=lambda j: (si[j], j))


def fill_holes(mask: sitk.Image, mode: str = "3d", axis: int | None = None) -> sitk.Image:
    """Fill holes of a 0/1 mask with ``BinaryFillholeImageFilter``.

    Parameters
    ----------
    mask : SimpleITK.Image
        3D ``sitkUInt8`` 0/1 mask.
    mode : {"3d", "slices", "both", "off"}
        ``"3d"``: background not face-connected to the border becomes
        foreground; ``"slices"``: the same in 2D on each slice perpendicular to
        ``axis`` (4-connected background in the slice); ``"both"``: 3D first,
        then slice-wise.
    axis : int or None
        Voxel axis (0, 1, 2) the slices are perpendicular to; ``None`` uses
        :func:`axial_axis`.

    Returns
    -------
    SimpleITK.Image
    """
    mode = validate_fill_holes(mode)
    mask = _check_mask(mask)
    if mode in ("3d", "both"):
        mask = sitk.BinaryFillhole(mask, fullyConnected=False, foregroundValue=1)
    if mode in ("slices", "both"):
        mask = _fill_holes_slices(mask, axial_axis(mask) if axis is None else axis)
    return mask


def _fill_holes_slices(mask: sitk.Image, axis: int) -> sitk.Image:
    if axis not in (0, 1, 2):
        raise ParameterError(f"slice axis must be 0, 1 or 2, got {axis!r}")
    array = sitk.GetArrayFromImage(mask)  # (k, j, i)
    np_axis = 2 - axis
    for index in range(array.shape[np_axis]):
        plane = np.take(array, index, axis=np_axis)
        if not plane.any():
            continue
        filled = sitk.BinaryFillhole(
            sitk.GetImageFromArray(np.ascontiguousarray(plane)),
            fullyConnected=False, foregroundValue=1,
        )
        selector: list[slice | int] = [slice(None)] * 3
        selector[np_axis] = index
        array[tuple(selector)] = sitk.GetArrayViewFromImage(filled)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(mask)
    return out


def keep_largest_component(
    mask: sitk.Image, *, tie_break: str = "itk"
) -> tuple[sitk.Image, int]:
    """Keep the largest face-connected component of a 0/1 mask.

    ``ConnectedComponentImageFilter`` (fully connected off) then
    ``RelabelComponentImageFilter`` (sorted by size); label 1 is kept.

    Parameters
    ----------
    mask : SimpleITK.Image
        3D ``sitkUInt8`` 0/1 mask.
    tie_break : {"itk", "nidataset"}
        Among equally large components, ``"itk"`` keeps the one ITK labels
        first (first reached in storage order, i fastest); ``"nidataset"``
        keeps the one ``scipy.ndimage.label`` labels first on nibabel's
        ``(i, j, k)`` array (smallest ``(i, j, k)`` lexicographically), as
        nidataset does.

    Returns
    -------
    (mask, dropped)
        The mask and the number of components removed.
    """
    mask = _check_mask(mask)
    labels = sitk.ConnectedComponent(mask, False)
    relabel = sitk.RelabelComponentImageFilter()
    relabel.SetSortByObjectSize(True)
    relabeled = relabel.Execute(labels)
    sizes = list(relabel.GetSizeOfObjectsInPixels())
    if not sizes:
        return mask, 0
    keep = 1
    if tie_break == "nidataset" and len(sizes) > 1 and sizes[1] == sizes[0]:
        tied = [i + 1 for i, size in enumerate(sizes) if size == sizes[0]]
        view = sitk.GetArrayViewFromImage(relabeled)  # (k, j, i)

        def first_voxel(label: int) -> tuple[int, int, int]:
            k, j, i = np.nonzero(view == label)
            order = np.lexsort((k, j, i))[0]
            return int(i[order]), int(j[order]), int(k[order])

        keep = min(tied, key=first_voxel)
    elif tie_break not in ("itk", "nidataset"):
        raise ParameterError(f"tie_break must be 'itk' or 'nidataset', got {tie_break!r}")
    out = sitk.BinaryThreshold(relabeled, keep, keep, 1, 0)
    return out, len(sizes) - 1


def _radius_vector(mask: sitk.Image, radius: float, unit: str) -> list[int]:
    if unit == "mm":
        return [max(0, round(radius / s)) for s in mask.GetSpacing()]
    return [int(radius)] * 3


def erode_mask(mask: sitk.Image, radius: float, unit: str = "vox") -> sitk.Image:
    """``BinaryErodeImageFilter`` with a ball (per-axis radius for ``unit="mm"``).

    Outside the image counts as foreground (ITK's default boundary), as in
    ITK's binary opening filter.
    """
    vector = _radius_vector(_check_mask(mask), radius, unit)
    if not any(vector):
        return mask
    return sitk.BinaryErode(mask, vector, sitk.sitkBall, 0, 1, True)


def dilate_mask(mask: sitk.Image, radius: float, unit: str = "vox") -> sitk.Image:
    """``BinaryDilateImageFilter`` with a ball (per-axis radius for ``unit="mm"``)."""
    vector = _radius_vector(_check_mask(mask), radius, unit)
    if not any(vector):
        return mask
    return sitk.BinaryDilate(mask, vector, sitk.sitkBall, 0, 1, False)


def exclude_above(mask: sitk.Image, image: sitk.Image, upper: float) -> sitk.Image:
    """Remove from ``mask`` the voxels whose intensity is above ``upper`` (and NaN).

    ``BinaryThresholdImageFilter`` (from the pixel type's lowest value to
    ``upper``, inclusive) and ``AndImageFilter``.  ``upper`` must be
    representable in the image's pixel type, as the ``upper`` bound of a
    :class:`~nimask.core.masking.MaskOutcome` is.
    """
    mask = _check_mask(mask)
    pixel_id = image.GetPixelID()
    if pixel_id == sitk.sitkFloat32:
        lowest = float(np.finfo(np.float32).min)
    elif pixel_id == sitk.sitkFloat64:
        lowest = float(np.finfo(np.float64).min)
    else:
        lowest = float(np.iinfo(sitk.GetArrayViewFromImage(image).dtype).min)
    allowed = sitk.BinaryThreshold(image, lowest, upper, 1, 0)
    return sitk.And(mask, allowed)


def _squared_distance_to(mask: sitk.Image) -> np.ndarray:
    """Exact squared Euclidean distance (voxel units) of each voxel to the nearest 1."""
    distance = sitk.SignedMaurerDistanceMap(
        mask, insideIsPositive=False, squaredDistance=True, useImageSpacing=False,
        backgroundValue=0,
    )
    return sitk.GetArrayFromImage(distance)  # a copy: the image dies here


def close_mask_skimage_ball(mask: sitk.Image, closing_radius: int = 3) -> sitk.Image:
    """Closing as nidataset 0.9.1 computes it, from exact ITK distance maps.

    ``skimage.morphology.binary_closing(mask, ball(r))``: the ball holds the
    offsets with ``x² + y² + z² <= r²`` (voxel units, smaller than ITK's ball);
    the dilation treats outside the image as background and the erosion treats
    it as foreground (scikit-image's ``mode="ignore"``).  Both are computed
    here by thresholding the squared distance map of
    ``SignedMaurerDistanceMapImageFilter`` (exact Euclidean distances).
    """
    radius = validate_closing_radius(closing_radius)
    mask = _check_mask(mask)
    if radius == 0:
        return mask
    r2 = float(radius * radius)
    view = sitk.GetArrayViewFromImage(mask)
    if not view.any() or view.all():
        return mask  # nothing to close / a full image stays full
    dilated = (_squared_distance_to(mask) <= r2).astype(np.uint8)
    background = 1 - dilated
    if background.any():
        bg_image = sitk.GetImageFromArray(background)
        bg_image.CopyInformation(mask)
        closed = (dilated & (_squared_distance_to(bg_image) > r2)).astype(np.uint8)
    else:
        closed = dilated
    out = sitk.GetImageFromArray(closed)
    out.CopyInformation(mask)
    return out


def nidataset_otsu_threshold(image: sitk.Image) -> float:
    """Otsu's threshold as nidataset 0.9.1 computes it.

    ``skimage.filters.threshold_otsu(data[data > 0])`` with its default 256
    bins over the range of those voxels (``numpy.histogram``), bin centres as
    candidate thresholds and the same float32 counts; a constant set of
    voxels returns that value.  NaN/Inf voxels are left out (nidataset would
    fail on Inf).

    Raises
    ------
    InvalidVolumeError
        No finite voxel above 0.
    """
    data = sitk.GetArrayViewFromImage(image).astype(np.float64, copy=False)
    values = data[(data > 0) & np.isfinite(data)]
    if values.size == 0:
        raise InvalidVolumeError(
            "no voxel above 0: the nidataset-compatible Otsu threshold is undefined; "
            "give a manual threshold"
        )
    first = values[0]
    if np.all(values == first):
        return float(first)
    counts, edges = np.histogram(values, bins=NIDATASET_OTSU_BINS)
    centers = (edges[:-1] + edges[1:]) / 2.0
    counts = counts.astype(np.float32, copy=False)
    weight1 = np.cumsum(counts)
    weight2 = np.cumsum(counts[::-1])[::-1]
    mean1 = np.cumsum(counts * centers) / weight1
    mean2 = (np.cumsum((counts * centers)[::-1]) / weight2[::-1])[::-1]
    variance12 = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return float(centers[int(np.argmax(variance12))])


def hu_check(image: sitk.Image) -> str | None:
    """A warning text when ``image`` does not look like a head CT in HU, else ``None``.

    A head CT in Hounsfield units has air (below -500) around the head and
    bone (above 300).
    """
    stats = sitk.StatisticsImageFilter()
    stats.Execute(image)
    vmin, vmax = stats.GetMinimum(), stats.GetMaximum()
    problems = []
    if not vmin < HU_AIR_BELOW:
        problems.append(f"no voxel below {HU_AIR_BELOW:g} (no air)")
    if not vmax > HU_BONE_ABOVE:
        problems.append(f"no voxel above {HU_BONE_ABOVE:g} (no bone)")
    if not problems:
        return None
    return (
        f"volume does not look like CT in Hounsfield units: {' and '.join(problems)}; "
        f"intensity range {vmin:g}..{vmax:g}"
    )


# ------------------------------------------------------------------------ pipeline


def refine_mask(
    image: sitk.Image,
    threshold: tuple[float, float] | None,
    closing_radius: int,
    refinements: Refinements,
    *,
    closing_radius_mm: float | None = None,
) -> MaskOutcome:
    """Threshold and the enabled steps, in the documented order.

    ``closing_radius_mm``, when given, replaces ``closing_radius`` for the ITK
    ball closing (not available in the ``nidataset`` compatibility mode).

    Order (each step only when enabled)::

        1 threshold            window, Otsu, or (compat="nidataset", no window)
                               nidataset's band [0.5 t, 2 t] around its Otsu t
        2 erode                opening_radius
        3 largest component    only when an opening is requested
        4 dilate               opening_radius
        5 closing              ITK ball (close_mask), safe border
        6 exclude above window exclude_above_window (upper bound of step 1)
        7 fill holes           3d, then slice-wise
        8 largest component

    With ``compat="nidataset"`` the fill runs before the closing (7, 5, 6, 8),
    the closing is :func:`close_mask_skimage_ball` and ties in step 8 follow
    scipy's labelling.

    Returns
    -------
    MaskOutcome
        With ``steps`` describing what ran, ``hu_warning`` and the number of
        components dropped.
    """
    radius = validate_closing_radius(closing_radius)
    radius_mm = validate_closing_radius_mm(closing_radius_mm)
    if refinements.skull_strip:
        check_skull_strip_closing(radius, radius_mm)
        return _skull_strip_outcome(image)
    notes: list[str] = []
    hu_warning: str | None = None
    if refinements.hu_check:
        hu_warning = hu_check(image)
        if hu_warning:
            logger.warning("%s (preset %s)", hu_warning, refinements.preset or "-")
            notes.append(hu_warning)
    nidataset = refinements.compat == COMPAT_NIDATASET
    if nidataset and radius_mm is not None:
        raise ParameterError(
            "closing_radius_mm is not available with preset='nidataset', whose closing "
            "uses nidataset's own ball in voxels"
        )
    steps: list[str] = []
    otsu_t: float | None
    if nidataset and threshold is None:
        t = nidataset_otsu_threshold(image)
        outcome = threshold_mask(image, (0.5 * t, 2.0 * t))
        mode, otsu_t = "nidataset-otsu", t
        steps.append(f"threshold nidataset-otsu t={t:.9g} band=[{0.5 * t:.9g},{2.0 * t:.9g}]")
    else:
        outcome = threshold_mask(image, threshold)
        mode, otsu_t = outcome.mode, outcome.otsu_threshold
        steps.append(
            f"threshold otsu t={otsu_t:.9g}" if threshold is None
            else f"threshold [{threshold[0]:.9g},{threshold[1]:.9g}]"
        )
    notes.extend(outcome.notes)
    mask = outcome.mask
    tie_break = "nidataset" if nidataset else "itk"
    dropped = 0
    opening = refinements.opening_text
    if opening:
        mask = erode_mask(mask, refinements.opening_radius, refinements.opening_unit)
        steps.append(f"erode {opening}")
        if refinements.largest_component:
            mask, n = keep_largest_component(mask, tie_break=tie_break)
            dropped += n
            steps.append(f"largest-component dropped={n}")
        mask = dilate_mask(mask, refinements.opening_radius, refinements.opening_unit)
        steps.append(f"dilate {opening}")

    def fill(current: sitk.Image) -> sitk.Image:
        if refinements.fill_holes == "off":
            return current
        if refinements.fill_holes in ("3d", "both"):
            current = fill_holes(current, "3d")
            steps.append("fill-holes 3d")
        if refinements.fill_holes in ("slices", "both"):
            axis = axial_axis(current)
            current = fill_holes(current, "slices", axis)
            steps.append(f"fill-holes slices axis={'ijk'[axis]}")
        return current

    def exclude(current: sitk.Image) -> sitk.Image:
        if not refinements.exclude_above_window or outcome.upper is None:
            return current
        steps.append(f"exclude-above {outcome.upper:.9g}")
        return exclude_above(current, image, outcome.upper)

    if nidataset:
        mask = fill(mask)
        if radius:
            mask = close_mask_skimage_ball(mask, radius)
            steps.append(f"closing skimage-ball r={radius}")
        mask = exclude(mask)
    else:
        if radius_mm is not None:
            if radius_mm > 0:
                mask = close_mask(mask, radius, closing_radius_mm=radius_mm)
                steps.append(f"closing ball r={radius_mm:g}mm")
        elif radius:
            mask = close_mask(mask, radius)
            steps.append(f"closing ball r={radius}")
        mask = fill(exclude(mask))
    if refinements.largest_component:
        mask, n = keep_largest_component(mask, tie_break=tie_break)
        dropped += n
        steps.append(f"largest-component dropped={n}")
    return MaskOutcome(
        mask, mode, outcome.lower, outcome.upper, otsu_t, outcome.nonfinite_voxels,
        tuple(notes), steps=tuple(steps), hu_warning=hu_warning,
        components_dropped=dropped if refinements.largest_component else None,
    )


def check_skull_strip_closing(closing_radius: int, closing_radius_mm: float | None) -> None:
    """Reject a closing radius with the ``mri-brain`` preset.

    Its closing is part of the method (a ball of
    :data:`nimask.core.skullstrip.CLOSE_MM`), so ``closing_radius`` other than
    its default (:data:`DEFAULT_CLOSING_RADIUS`) and any ``closing_radius_mm``
    are refused rather than silently ignored.  (An explicit
    ``closing_radius=3`` cannot be told from the default and is accepted.)

    Raises
    ------
    ParameterError
        A closing radius was given.
    """
    given = []
    if closing_radius != DEFAULT_CLOSING_RADIUS:
        given.append(f"closing_radius={closing_radius}")
    if closing_radius_mm is not None:
        given.append(f"closing_radius_mm={closing_radius_mm:g}")
    if given:
        raise ParameterError(
            f"preset 'mri-brain' runs its own fixed steps (closing ball {CLOSE_MM:g} mm); "
            f"it takes no {', '.join(given)}"
        )


def _skull_strip_outcome(image: sitk.Image) -> MaskOutcome:
    """The ``mri-brain`` method as a :class:`MaskOutcome` (``mode="skull-strip"``).

    ``lower``/``upper`` are the tissue window found (``None`` for an input
    taken as already skull-stripped), ``otsu_threshold`` the head's Otsu
    threshold; the other refinements do not apply and a closing radius is
    rejected (:func:`check_skull_strip_closing`).
    """
    result = skull_strip(image)
    notes: tuple[str, ...] = ()
    if result.nonfinite_voxels:
        notes = (f"{result.nonfinite_voxels} NaN/Inf voxels are never brain",)
    if result.already_stripped:
        notes += ("looks already skull-stripped: the mask is the non-zero head region",)
        lower = upper = None
    else:
        lower, upper = result.tissue_low, result.tissue_high
    return MaskOutcome(
        result.mask, "skull-strip", lower, upper, result.head_otsu, result.nonfinite_voxels,
        notes, steps=result.steps, brain_rim_percent=result.rim_percent,
    )
