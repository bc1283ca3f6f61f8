"""The documented pipeline as one call: threshold, closing, optional refinements.

:func:`brain_mask` is the pure counterpart of
:func:`nimask.generate_brain_mask_dataset` for a :class:`SimpleITK.Image` in
memory; :func:`compute_mask` also returns how the mask was made
(:class:`~nimask.core.masking.MaskOutcome`).  Presets are resolved here
(:mod:`nimask.core.presets`) and the opt-in steps run by
:func:`nimask.core.refine.refine_mask`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import SimpleITK as sitk

from .masking import (
    MaskOutcome,
    _as_image,
    _closed_image,
    _closing_kernel,
    _threshold,
    close_mask,
    validate_closing_radius,
    validate_closing_radius_mm,
)
from .presets import resolve
from .refine import refine_mask

__all__ = ["brain_mask", "compute_mask"]


def compute_mask(
    image: sitk.Image,
    threshold: tuple[float, float] | None = None,
    closing_radius: int = 3,
    *,
    closing_radius_mm: float | None = None,
    preset: str | None = None,
    fill_holes: bool | str | None = None,
    largest_component: bool | None = None,
    opening_radius: int | str | None = None,
    exclude_above_window: bool | None = None,
) -> MaskOutcome:
    """Threshold, close and return the mask with a record of how it was made.

    See :func:`brain_mask`; this variant also returns the threshold that was
    used (the Otsu value in automatic mode) for reports, and the steps run.
    """
    radius = validate_closing_radius(closing_radius)
    radius_mm = validate_closing_radius_mm(closing_radius_mm)
    requested = (preset, fill_holes, largest_component, opening_radius, exclude_above_window)
    if any(value is not None for value in requested):
        window, refinements = resolve(
            preset, threshold, fill_holes=fill_holes,
            largest_component=largest_component, opening_radius=opening_radius,
            exclude_above_window=exclude_above_window,
        )
        if refinements.active:
            return refine_mask(image, window, radius, refinements,
                               closing_radius_mm=radius_mm)
        threshold = window
    mask, outcome = _threshold(image, threshold, "fast")
    if isinstance(mask, sitk.Image):
        closed = close_mask(_as_image(mask, image), radius, closing_radius_mm=radius_mm)
    else:
        # the 0/1 array goes straight into the closing, no intermediate image
        kernel = _closing_kernel(image.GetSpacing(), radius, radius_mm)
        if kernel is None:
            closed = _as_image(mask.view(np.uint8), image)
        else:
            closed = _closed_image(mask, kernel, image)
    return replace(outcome, mask=closed)


def brain_mask(
    image: sitk.Image,
    threshold: tuple[float, float] | None = None,
    closing_radius: int = 3,
    *,
    closing_radius_mm: float | None = None,
    preset: str | None = None,
    fill_holes: bool | str | None = None,
    largest_component: bool | None = None,
    opening_radius: int | str | None = None,
    exclude_above_window: bool | None = None,
) -> sitk.Image:
    """Mask one volume: threshold, morphological closing, uint8 {0, 1}.

    The pure counterpart of :func:`nimask.generate_brain_mask_dataset`, for ITK
    users who already hold an image.  No file is read or written.

    Parameters
    ----------
    image : SimpleITK.Image
        3D scalar image.
    threshold : (low, high) or None, default None
        Inclusive intensity window (``BinaryThreshold``); ``None`` selects
        ``OtsuThresholdImageFilter`` with voxels above the threshold as
        foreground.  NaN/Inf voxels never become foreground.
    closing_radius : int, default 3
        Radius in voxels of the ball used by ``BinaryMorphologicalClosing``;
        0 disables closing.
    closing_radius_mm : float or None, default None
        Keyword-only.  When given, replaces ``closing_radius`` with a ball
        that is round in millimetres (see :func:`close_mask`).
    preset : {"ct-brain", "ct-head", "mri-head", "mri-brain", "nidataset"} or None
        Keyword-only.  A documented recipe (:mod:`nimask.core.presets`); explicit
        arguments override its values (a ``threshold`` window replaces the
        preset's; ``threshold=None`` keeps it).
    fill_holes : bool or {"off", "3d", "slices", "both"} or None
        Keyword-only.  ``BinaryFillhole`` in 3D and/or slice-wise
        (:func:`nimask.core.refine.fill_holes`); ``True`` means ``"3d"``; ``None``:
        the preset's value, else off.
    largest_component : bool or None
        Keyword-only.  Keep the largest face-connected component; ``None``:
        the preset's value, else off.
    opening_radius : int or str or None
        Keyword-only.  Erosion/dilation pair (ball, voxels, or ``"2.5mm"``)
        around the largest-component step; ``None``: the preset's value, else
        none.
    exclude_above_window : bool or None
        Keyword-only.  After the closing, remove voxels above the threshold
        window's upper bound (the closing may not bridge over bone on CT);
        ``None``: the preset's value, else off.

    Returns
    -------
    SimpleITK.Image
        ``sitkUInt8`` mask with values in {0, 1} and the input's origin,
        spacing and direction.

    Raises
    ------
    ParameterError
        Invalid ``threshold`` or ``closing_radius``.
    InvalidVolumeError
        Not a 3D scalar image, no finite voxel, or a constant image in Otsu mode.

    Examples
    --------
    >>> import SimpleITK as sitk
    >>> from nimask import brain_mask
    >>> image = sitk.ReadImage("scan.nii.gz")              # doctest: +SKIP
    >>> mask = brain_mask(image, threshold=(-500, 3000))   # doctest: +SKIP
    >>> brain = brain_mask(image, preset="ct-brain")       # doctest: +SKIP

    Notes
    -----
    The refinement steps run in a fixed order: threshold, erosion, largest
    component, dilation, closing, exclusion above the window, fill holes,
    largest component (each only when enabled; see
    :func:`nimask.core.refine.refine_mask`).
    """
    return compute_mask(
        image, threshold, closing_radius, closing_radius_mm=closing_radius_mm, preset=preset,
        fill_holes=fill_holes, largest_component=largest_component,
        opening_radius=opening_radius, exclude_above_window=exclude_above_window,
    ).mask
