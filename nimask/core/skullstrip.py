"""A brain mask (not a head mask) on T1-weighted MRI with skull: pure ``sitk.Image -> sitk.Image``.

This is the method of the ``mri-brain`` preset.  It uses nothing but ITK
filters (Otsu, recursive Gaussian, exact Euclidean distance maps, connected
components, hole filling, bin shrinking) and numpy for voxel-wise comparisons
and boolean algebra on their outputs.  It is deterministic and keeps the
input's origin, spacing and direction.  See ``docs/mri_brain.md`` for the
measurements behind the constants below and for where it fails.

Method (all distances in millimetres, round balls via distance maps, so
anisotropic voxels and oblique directions need no special case)::

    1 smooth        SmoothingRecursiveGaussian, sigma SMOOTH_MM
    2 head          Otsu of the volume, 3D hole filling, largest component
    3 coarse grid   BinShrink to voxels of about COARSE_MM (mean of each block);
                    the head is also filled slice by slice along each axis there
    4 white matter  voxels deeper than DEEP_FRACTION of the head's largest
                    depth; Otsu of their intensities, median of the upper class
    5 tissue window (bg + K_LOW (wm - bg), bg + K_HIGH (wm - bg)) where bg is
                    the median outside the head: grey and white matter, not
                    CSF, bone, air nor the brightest fat
    6 core          tissue eroded by ERODE_MM, largest component: the brain
                    without the thin bridges (optic nerves, vessels, dura,
                    temporal muscle contacts) that join it to the scalp
    6a lower core   the core's part more than BELOW_MM below its centroid
                    (skull base, temporal muscles, neck) keeps only what
                    survives the same erosion of the *strict* tissue (above
                    bg + K_BELOW (wm - bg): grey and white matter, not the
                    blurred bone between brain and muscle) and what lies
                    within REACH_MM of that; largest component
    7 envelope      core dilated by ERODE_MM + GROW_MM (back on the full grid)
    8 brain tissue  tissue inside the envelope, largest component
    9 CSF rim       dark voxels (below the window) nearer to the brain than
                    ALPHA times their distance to other tissue, and at most
                    CSF_MM from the brain: the CSF between brain and skull,
                    never the scalp
   10 closing       ball of CLOSE_MM (sulci, fissures), 3D hole filling
                    (ventricles), largest component

A volume whose head mask is smaller than :data:`STRIPPED_HEAD_ML` is taken as
already skull-stripped: its head mask is the brain mask (steps 3-10 would
only eat into the brain).

The result also measures how much of the head's *bright rim* (voxels within
:data:`RIM_MM` of the head's surface and above the tissue window's lower
bound: skin, fat, marrow, muscle) lies inside the mask; a brain mask should
hold almost none of it (see :func:`nimask.evidence.report.flag_cohort`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..exceptions import InvalidVolumeError
from .masking import OTSU_BINS

__all__ = [
    "ALPHA",
    "BELOW_MM",
    "CLOSE_MM",
    "COARSE_MM",
    "CSF_MM",
    "DEEP_FRACTION",
    "ERODE_MM",
    "GROW_MM",
    "K_BELOW",
    "K_HIGH",
    "K_LOW",
    "REACH_MM",
    "RIM_MM",
    "SMOOTH_MM",
    "STRIPPED_HEAD_ML",
    "SkullStrip",
    "bright_rim",
    "skull_strip",
]

logger = logging.getLogger(__name__)

#: Sigma (mm) of the Gaussian smoothing before any threshold.
SMOOTH_MM = 1.0
#: Voxel size (mm) of the coarse grid used for the statistics and the core.
COARSE_MM = 2.0
#: Voxels deeper in the head than this fraction of its largest depth give
#: the white-matter estimate (the middle of the brain on any adult T1).
DEEP_FRACTION = 0.5
#: Lower bound of the tissue window, as a fraction of the way from the
#: background level to white matter (grey matter sits near 0.6-0.8 on T1,
#: CSF and bone near 0.3).
K_LOW = 0.45
#: Upper bound of the tissue window (fat and marrow above it).
K_HIGH = 1.4
#: Erosion radius (mm) that cuts the brain from the scalp.
ERODE_MM = 8.0
#: Extra growth (mm) beyond the erosion radius when the core is dilated back.
GROW_MM = 1.0
#: Dark voxels join the brain where ``d_brain <= ALPHA * d_other_tissue``.
ALPHA = 0.15
#: Largest distance (mm) from the brain tissue at which dark voxels (CSF) join.
CSF_MM = 2.0
#: Radius (mm) of the final closing.
CLOSE_MM = 4.0
#: A head mask smaller than this (mL) is taken as an already skull-stripped brain.
STRIPPED_HEAD_ML = 2400.0
#: The core's lower part (skull base, temporal muscles, neck) starts this far
#: (mm) below the core's centroid along the physical superior axis.
BELOW_MM = 20.0
#: Lower bound of the strict tissue the lower part is eroded from (same scale
#: as :data:`K_LOW`; grey matter sits near 0.7-0.85 on T1, the blurred bone
#: between brain and skull-base muscles near 0.45-0.55).
K_BELOW = 0.575
#: In the lower part, the core keeps what lies within this distance (mm) of
#: what survives the erosion of the strict tissue.
REACH_MM = 3.0
#: Depth (mm) of the head's outer layer whose bright voxels form the rim.
RIM_MM = 5.0

_SUPPORTED = (
    sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32,
    sitk.sitkInt32, sitk.sitkUInt64, sitk.sitkInt64, sitk.sitkFloat32, sitk.sitkFloat64,
)


@dataclass(frozen=True)
class SkullStrip:
    """A brain mask and how it was made.

    Attributes
    ----------
    mask : SimpleITK.Image
        ``sitkUInt8`` 0/1 brain mask on the input's grid.
    head : SimpleITK.Image
        ``sitkUInt8`` 0/1 head mask (step 2).
    steps : tuple of str
        What ran, with the values found (for the report's ``steps`` column).
    already_stripped : bool
        The head mask was small enough to be a brain: it was returned as is.
    head_otsu : float
        Otsu threshold that gave the head mask.
    background, white_matter : float
        Intensity levels found (steps 4-5); ``nan`` when already stripped.
    tissue_low, tissue_high : float
        The tissue window; ``nan`` when already stripped.
    rim_percent : float or None
        Share (%) of the head's bright rim (:func:`bright_rim`) inside the
        mask; ``None`` when already stripped (there is no scalp).
    nonfinite_voxels : int
        NaN/Inf voxels (never brain).
    """

    mask: sitk.Image
    head: sitk.Image
    steps: tuple[str, ...]
    already_stripped: bool
    head_otsu: float
    background: float
    white_matter: float
    tissue_low: float
    tissue_high: float
    rim_percent: float | None
    nonfinite_voxels: int


# ----------------------------------------------------------------------- helpers


def _image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(array.view(np.uint8) if array.dtype == np.bool_ else array)
    out.SetOrigin(reference.GetOrigin())
    out.SetSpacing(reference.GetSpacing())
    out.SetDirection(reference.GetDirection())
    return out


def _distance_to(array: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """Exact Euclidean distance (mm) of every voxel to the nearest True voxel (0 on them).

    ``SignedMaurerDistanceMapImageFilter`` in physical units; outside the
    grid counts as neither (a mask cut by the field of view has no surface
    there).  ``inf`` everywhere when ``array`` is empty.
    """
    if not array.any():
        return np.full(array.shape, np.inf, dtype=np.float32)
    distance = sitk.SignedMaurerDistanceMap(
        _image(array, reference), insideIsPositive=False, squaredDistance=False,
        useImageSpacing=True, backgroundValue=0,
    )
    out = sitk.GetArrayFromImage(distance)
    np.maximum(out, 0, out=out)
    return out


def _dilate(array: np.ndarray, radius_mm: float, reference: sitk.Image) -> np.ndarray:
    """Dilation by a ball of ``radius_mm`` (voxel centres within that distance)."""
    return _distance_to(array, reference) <= radius_mm


def _erode(array: np.ndarray, radius_mm: float, reference: sitk.Image) -> np.ndarray:
    """Erosion by a ball of ``radius_mm``: voxels farther than that from any False voxel."""
    return _distance_to(~array, reference) > radius_mm


def _largest_component(array: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """Largest face-connected component (``ConnectedComponent``, ties: lowest label)."""
    if not array.any():
        return array
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(_image(array, reference), False))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _fill_holes(array: np.ndarray, reference: sitk.Image) -> np.ndarray:
    filled = sitk.BinaryFillhole(_image(array, reference), fullyConnected=False,
                                 foregroundValue=1)
    return sitk.GetArrayFromImage(filled).astype(bool)


def _fill_head(array: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """3D hole filling, then 2D filling of every slice along each of the three axes.

    A head cut by the field of view at the neck has no closed 3D hole: the
    dark CSF and bone between brain and scalp reach the border through the
    foramen magnum.  In the slices across the neck they are closed rings;
    filling along all three axes finds them whatever the direction matrix.
    """
    out = _fill_holes(array, reference)
    for axis in range(3):
        for index in range(out.shape[axis]):
            selector: list[slice | int] = [slice(None)] * 3
            selector[axis] = index
            plane = out[tuple(selector)]
            if not plane.any():
                continue
            filled = sitk.BinaryFillhole(
                sitk.GetImageFromArray(np.ascontiguousarray(plane).view(np.uint8)),
                fullyConnected=False, foregroundValue=1)
            out[tuple(selector)] = sitk.GetArrayViewFromImage(filled).astype(bool)
    return out


def _superior_mm(shape: tuple[int, ...], reference: sitk.Image) -> np.ndarray:
    """Physical z (mm, superior in ITK's LPS frame) of every voxel centre, as float32."""
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    spacing = reference.GetSpacing()
    row = direction[2] * np.array(spacing)  # dz per index step along x, y, z
    out = np.full(shape, reference.GetOrigin()[2], dtype=np.float32)
    for axis, step in enumerate(reversed(row)):  # numpy axes are (z, y, x)
        ramp = (np.arange(shape[axis], dtype=np.float32) * np.float32(step))
        out += ramp.reshape([-1 if a == axis else 1 for a in range(3)])
    return out


def _otsu(values: np.ndarray) -> float:
    """``OtsuThresholdImageFilter``'s threshold (128 bins) of a set of values."""
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    otsu.SetNumberOfHistogramBins(OTSU_BINS)
    otsu.Execute(sitk.GetImageFromArray(
        np.ascontiguousarray(values, dtype=np.float32).reshape(1, 1, -1)))
    return float(otsu.GetThreshold())


def _otsu_upper(values: np.ndarray) -> float:
    """Upper threshold of ``OtsuMultipleThresholdsImageFilter`` with three classes."""
    otsu = sitk.OtsuMultipleThresholdsImageFilter()
    otsu.SetNumberOfThresholds(2)
    otsu.SetNumberOfHistogramBins(OTSU_BINS)
    otsu.Execute(sitk.GetImageFromArray(
        np.ascontiguousarray(values, dtype=np.float32).reshape(1, 1, -1)))
    return float(otsu.GetThresholds()[-1])


def _bbox(array: np.ndarray, margin: tuple[int, int, int]) -> tuple[slice, slice, slice]:
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(array.any(axis=other))
        lo = max(0, int(hit[0]) - margin[axis])
        hi = min(array.shape[axis], int(hit[-1]) + 1 + margin[axis])
        box.append(slice(lo, hi))
    return box[0], box[1], box[2]


def _check(image: object) -> sitk.Image:
    if not isinstance(image, sitk.Image):
        raise InvalidVolumeError(f"expected a SimpleITK.Image, got {type(image).__name__}")
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidVolumeError(
            f"skull stripping needs a 3D scalar image, got {image.GetDimension()}D "
            f"{image.GetPixelIDTypeAsString()}")
    if image.GetPixelID() not in _SUPPORTED:
        raise InvalidVolumeError(f"unsupported pixel type {image.GetPixelIDTypeAsString()}")
    if not all(math.isfinite(s) and s > 0 for s in image.GetSpacing()):
        raise InvalidVolumeError(f"voxel spacing {image.GetSpacing()} is not finite and > 0")
    return image


def bright_rim(image: sitk.Image, head: sitk.Image, lower: float,
               depth_mm: float = RIM_MM) -> np.ndarray:
    """Boolean array (z, y, x) of the head's bright rim.

    Voxels of ``head`` within ``depth_mm`` of its surface (exact Euclidean
    distance, physical units) whose intensity, smoothed with
    :data:`SMOOTH_MM`, is above ``lower``: skin, subcutaneous fat, muscle and
    marrow on a T1 with skull.
    """
    smooth = sitk.GetArrayFromImage(
        sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), SMOOTH_MM))
    inside = sitk.GetArrayViewFromImage(head).astype(bool)
    depth = _distance_to(~inside, head)
    return inside & (depth <= depth_mm) & (smooth > lower)


# ------------------------------------------------------------------------ method


def skull_strip(image: sitk.Image) -> SkullStrip:
    """Brain mask of a T1-weighted head MRI (see the module docstring for the method).

    Parameters
    ----------
    image : SimpleITK.Image
        3D scalar T1-weighted volume with skull (or already skull-stripped),
        any pixel type and intensity range, any spacing and direction.

    Returns
    -------
    SkullStrip
        The mask (``sitkUInt8`` 0/1, the input's geometry) with the steps and
        levels found.

    Raises
    ------
    InvalidVolumeError
        Not a 3D scalar image, constant, no finite voxel, or no brain-sized
        region found.
    """
    image = _check(image)
    as_float = sitk.Cast(image, sitk.sitkFloat32)
    raw = sitk.GetArrayFromImage(as_float)
    finite = np.isfinite(raw)
    nonfinite = int(raw.size - np.count_nonzero(finite))
    if nonfinite:
        if nonfinite == raw.size:
            raise InvalidVolumeError("volume holds no finite voxel (all NaN/Inf)")
        raw[~finite] = raw[finite].min()
        as_float = _image(raw, image)
    vmin, vmax = float(raw.min()), float(raw.max())
    if vmin == vmax:
        raise InvalidVolumeError(f"constant volume (every voxel is {vmin:g}): no brain to find")
    spacing = image.GetSpacing()
    voxel_ml = math.prod(spacing) / 1000.0
    steps: list[str] = []

    # 1-2: smoothing, head
    smooth_img = sitk.SmoothingRecursiveGaussian(as_float, SMOOTH_MM)
    smooth = sitk.GetArrayFromImage(smooth_img)
    head_t = _otsu(raw.ravel())
    head3d = _largest_component(_fill_holes(raw > head_t, image), image)
    if nonfinite:
        head3d &= finite
    # 3: coarse grid; the slice-wise filling of the head runs there (it only
    # matters deep inside the head: depth, CSF between brain and scalp)
    factors = [max(1, round(COARSE_MM / s)) for s in spacing]
    coarse_smooth = sitk.BinShrink(smooth_img, factors)
    coarse_head_img = sitk.BinShrink(sitk.Cast(_image(head3d, image), sitk.sitkFloat32), factors)
    coarse = sitk.GetArrayFromImage(coarse_smooth)
    coarse_head = _fill_head(sitk.GetArrayViewFromImage(coarse_head_img) >= 0.5, coarse_smooth)
    head = head3d | _upsample(coarse_head, factors, raw.shape)
    if nonfinite:
        head &= finite
    head_ml = float(np.count_nonzero(head)) * voxel_ml
    steps.append(f"smooth gaussian sigma={SMOOTH_MM:g}mm")
    steps.append(f"head otsu t={head_t:.6g} fill-holes 3d (and slices on a "
                 f"{factors[0]}x{factors[1]}x{factors[2]} bin-shrunk grid) {head_ml:.0f}mL")
    nan = float("nan")
    if head_ml < STRIPPED_HEAD_ML:
        steps.append(f"already skull-stripped (head {head_ml:.0f}mL < {STRIPPED_HEAD_ML:g}mL): "
                     "brain = head (3d fill)")
        head_img = _image(head3d, image)
        return SkullStrip(head_img, head_img, tuple(steps), True, head_t, nan, nan, nan, nan,
                          None, nonfinite)
    head_img = _image(head, image)

    # 4-5: levels and tissue window
    outside = ~head
    background = float(np.median(raw[outside])) if outside.any() else vmin
    depth = _distance_to(~coarse_head, coarse_smooth)
    deep = coarse_head & (depth > DEEP_FRACTION * float(depth[coarse_head].max()))
    deep_values = raw[_upsample(deep, factors, raw.shape) & head]
    upper_class = deep_values[deep_values > _otsu_upper(deep_values)]
    if upper_class.size == 0:
        raise InvalidVolumeError(
            "the middle of the head has no contrast (no white matter found): not a T1 with "
            "a brain")
    white = float(np.median(upper_class))
    if not white > background:
        raise InvalidVolumeError(
            f"the middle of the head ({white:g}) is not brighter than the background "
            f"({background:g}): not a T1-weighted head")
    low = background + K_LOW * (white - background)
    high = background + K_HIGH * (white - background)
    steps.append(f"levels background={background:.6g} white-matter={white:.6g} "
                 f"tissue=({low:.6g},{high:.6g})")

    # 6-7: core and envelope on the coarse grid
    coarse_tissue = coarse_head & (coarse > low) & (coarse < high)
    core = _largest_component(_erode(coarse_tissue, ERODE_MM, coarse_smooth), coarse_smooth)
    if not core.any():
        raise InvalidVolumeError(
            f"no brain-sized region: nothing of the tissue window survives a {ERODE_MM:g} mm "
            "erosion")
    steps.append(f"core erode {ERODE_MM:g}mm largest-component "
                 f"{np.count_nonzero(core) * voxel_ml * math.prod(factors):.0f}mL")
    # 6a: the core's lower part (skull base, temporal muscles, neck, along the
    # physical superior axis) keeps only what survives the same erosion of the
    # strict tissue (grey and white matter only), and its surroundings
    superior_c = _superior_mm(core.shape, coarse_smooth)
    low_part = superior_c < float(superior_c[core].mean()) - BELOW_MM
    strict_low = background + K_BELOW * (white - background)
    deep_core = core & _erode(coarse_tissue & (coarse > strict_low), ERODE_MM, coarse_smooth)
    reach = _dilate(deep_core | (core & ~low_part), REACH_MM, coarse_smooth)
    core = _largest_component(core & (reach | ~low_part), coarse_smooth)
    envelope_c = _dilate(core, ERODE_MM + GROW_MM, coarse_smooth)
    core_ml = np.count_nonzero(core) * voxel_ml * math.prod(factors)
    steps.append(f"lower core (>{BELOW_MM:g}mm below its centroid) erode {ERODE_MM:g}mm "
                 f"of tissue >{strict_low:.6g} reach {REACH_MM:g}mm {core_ml:.0f}mL, "
                 f"envelope dilate {ERODE_MM + GROW_MM:g}mm")
    envelope = _upsample(envelope_c, factors, raw.shape)

    # 8-10 on the full grid, inside the envelope's bounding box
    margin = tuple(math.ceil((CSF_MM + CLOSE_MM) / s) + 2 for s in reversed(spacing))
    box = _bbox(envelope, (margin[0], margin[1], margin[2]))
    sub_ref = sitk.GetImageFromArray(np.zeros((1, 1, 1), np.uint8))
    sub_ref.SetSpacing(spacing)
    sub_ref.SetDirection(image.GetDirection())
    s_smooth = smooth[box]
    s_head = head[box]
    tissue = s_head & (s_smooth > low) & (s_smooth < high)
    brain = _largest_component(tissue & envelope[box], sub_ref)
    steps.append("brain tissue in envelope, largest component")
    other = s_head & (s_smooth > low) & ~brain
    d_brain = _distance_to(brain, sub_ref)
    d_other = _distance_to(other, sub_ref)
    brain |= s_head & (s_smooth <= low) & (d_brain <= ALPHA * d_other) & (d_brain <= CSF_MM)
    del d_brain, d_other
    steps.append(f"csf rim alpha={ALPHA:g} max={CSF_MM:g}mm")
    brain = _erode(_dilate(brain, CLOSE_MM, sub_ref), CLOSE_MM, sub_ref)
    brain = _largest_component(_fill_holes(brain, sub_ref), sub_ref)
    steps.append(f"closing ball {CLOSE_MM:g}mm, fill-holes 3d, largest-component")
    full = np.zeros(raw.shape, dtype=bool)
    full[box] = brain
    if nonfinite:
        full &= finite
    mask = _image(full, image)

    rim = head & (_upsample(depth, factors, raw.shape) <= RIM_MM) & (smooth > low)
    rim_n = int(np.count_nonzero(rim))
    rim_percent = float(100.0 * np.count_nonzero(rim & full) / rim_n) if rim_n else 0.0
    steps.append(f"bright rim in mask {rim_percent:.2f}%")
    return SkullStrip(mask, head_img, tuple(steps), False, head_t, background, white, low,
                      high, rim_percent, nonfinite)


def _upsample(coarse: np.ndarray, factors: list[int], shape: tuple[int, ...]) -> np.ndarray:
    """Back from the ``BinShrink`` grid: each coarse voxel covers its block.

    ``BinShrink`` drops the last partial block of each axis; those voxels get
    the nearest block's value.
    """
    out = coarse
    for axis, f in enumerate(reversed(factors)):  # numpy axes are (z, y, x)
        out = np.repeat(out, f, axis=axis)
        missing = shape[axis] - out.shape[axis]
        if missing > 0:
            edge = np.take(out, [-1], axis=axis)
            out = np.concatenate([out, np.repeat(edge, missing, axis=axis)], axis=axis)
    return out
