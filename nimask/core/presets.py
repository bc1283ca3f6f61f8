"""Named recipes of the opt-in refinements (``preset=`` / ``--preset NAME``).

A preset supplies values for ``threshold`` and the keyword-only steps
``fill_holes``, ``largest_component`` and ``opening_radius``.  The override
rule (see :func:`resolve`):

* a keyword-only step argument given as anything but ``None`` wins over the
  preset (``None``, their default, means "the preset's value, or off");
* ``threshold`` given as a ``(low, high)`` window wins; ``threshold=None``
  (the documented default) means "the preset's threshold", which is Otsu when
  the preset has none;
* no preset changes ``closing_radius``: it keeps its documented meaning and
  default (3) in every preset, so there is nothing to override;
* ``mri-brain`` is a method of its own (:mod:`nimask.core.skullstrip`), not a
  threshold recipe: it accepts none of the step arguments above nor a
  threshold window; its closing is part of the method (in millimetres), so a
  ``closing_radius`` other than the default 3 or any ``closing_radius_mm``
  raises :class:`~nimask.exceptions.ParameterError` with it.

Without a preset and with every step left at ``None``, the documented
pipeline (threshold, closing) runs unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..exceptions import ParameterError
from .masking import validate_threshold
from .refine import (
    COMPAT_NIDATASET,
    Refinements,
    validate_fill_holes,
    validate_flag,
    validate_opening_radius,
)

__all__ = ["PRESETS", "Preset", "preset_names", "resolve"]


@dataclass(frozen=True)
class Preset:
    """A documented recipe.

    Attributes
    ----------
    name, summary : str
    threshold : (low, high) or None
        ``None``: automatic (Otsu, or nidataset's Otsu band for ``compat``).
    fill_holes : str
    largest_component : bool
    exclude_above_window : bool
    opening_radius : int or str
        Voxels, or ``"<R>mm"``.
    compat : str
    hu_check : bool
    skull_strip : bool
        Run :func:`nimask.core.skullstrip.skull_strip` instead of the
        threshold pipeline (the other fields do not apply).
    """

    name: str
    summary: str
    threshold: tuple[float, float] | None = None
    fill_holes: str = "off"
    largest_component: bool = False
    exclude_above_window: bool = False
    opening_radius: int | str = 0
    compat: str = ""
    hu_check: bool = False
    skull_strip: bool = False


#: Upper end of the ``ct-head`` window: no upper limit in practice (extended
#: scale CT ends near 30 000 HU).
CT_HEAD_UPPER = 1e6

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "ct-brain",
            "CT in HU: brain window 0..100 HU (Muschelli et al. 2015), opening 2 mm cutting "
            "bridges through the skull base, largest component, closing that may not add "
            "bone (> 100 HU), 3D fill",
            threshold=(0.0, 100.0),
            fill_holes="3d",
            largest_component=True,
            exclude_above_window=True,
            opening_radius="2mm",
            hu_check=True,
        ),
        Preset(
            "ct-head",
            "CT in HU: everything above -500 HU, closing, 3D fill, largest component "
            "(drops a head holder or table that does not touch the head)",
            threshold=(-500.0, CT_HEAD_UPPER),
            fill_holes="3d",
            largest_component=True,
            hu_check=True,
        ),
        Preset(
            "mri-head",
            "MRI: Otsu, closing, fill holes in 3D and slice-wise (heads open at the neck), "
            "largest component",
            fill_holes="both",
            largest_component=True,
        ),
        Preset(
            "mri-brain",
            "T1-weighted MRI with skull: a brain mask, not a head mask (Gaussian smoothing, "
            "head, tissue window from the white-matter level, 8 mm erosion cutting the brain "
            "from the scalp, dilation back, CSF rim, 4 mm closing, fill); see docs/mri_brain.md",
            skull_strip=True,
        ),
        Preset(
            "nidataset",
            "what nidataset 0.9.1 computes: Otsu of voxels > 0 (256 bins) and the band "
            "[0.5 t, 2 t], 3D fill, closing with scikit-image's ball, largest component",
            fill_holes="3d",
            largest_component=True,
            compat=COMPAT_NIDATASET,
        ),
    )
}


def preset_names() -> list[str]:
    """Names accepted by ``preset=``."""
    return list(PRESETS)


def resolve(
    preset: str | None = None,
    threshold: object = None,
    *,
    fill_holes: object = None,
    largest_component: object = None,
    opening_radius: object = None,
    exclude_above_window: object = None,
) -> tuple[tuple[float, float] | None, Refinements]:
    """Combine a preset with explicit arguments (explicit ones win).

    Parameters
    ----------
    preset : str or None
        One of :func:`preset_names` (case-insensitive), or ``None``.
    threshold : (low, high) or None
        A window overrides the preset's; ``None`` keeps the preset's.
    fill_holes, largest_component, opening_radius, exclude_above_window : optional
        ``None`` keeps the preset's value (off without a preset).

    Returns
    -------
    (threshold, refinements)
        The validated window (``None``: automatic) and the steps.

    Raises
    ------
    ParameterError
        Unknown preset or invalid values.
    """
    window = validate_threshold(threshold)
    base = Preset("", "")
    if preset is not None:
        if not isinstance(preset, str) or preset.strip().lower() not in PRESETS:
            raise ParameterError(
                f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"
            )
        base = PRESETS[preset.strip().lower()]
    if base.skull_strip:
        given = [name for name, value in (
            ("threshold", window), ("fill_holes", fill_holes),
            ("largest_component", largest_component), ("opening_radius", opening_radius),
            ("exclude_above_window", exclude_above_window)) if value is not None]
        if given:
            raise ParameterError(
                f"preset {base.name!r} runs its own fixed steps; it takes no "
                f"{', '.join(given)}"
            )
        return None, Refinements(preset=base.name, skull_strip=True)
    fill = validate_fill_holes(base.fill_holes if fill_holes is None else fill_holes)
    lcc = validate_flag(
        "largest_component",
        base.largest_component if largest_component is None else largest_component,
    )
    exclude = validate_flag(
        "exclude_above_window",
        base.exclude_above_window if exclude_above_window is None else exclude_above_window,
    )
    radius, unit = validate_opening_radius(
        base.opening_radius if opening_radius is None else opening_radius
    )
    refinements = Refinements(
        fill_holes=fill,
        largest_component=lcc,
        exclude_above_window=exclude,
        opening_radius=radius,
        opening_unit=unit,
        compat=base.compat,
        hu_check=base.hu_check,
        preset=base.name,
    )
    return (base.threshold if window is None else window), refinements
