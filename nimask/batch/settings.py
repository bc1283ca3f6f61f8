"""Validated batch parameters and the provenance nimask writes into each mask.

Masks carry their provenance in the NIfTI ``descrip`` field
(``nimask <version> otsu r=<radius>`` or
``nimask <version> thr=<low>:<high> r=<radius>``, then the opt-in steps).  It
serves two purposes: ``skip_existing`` keeps a mask only when it was made by
the same nimask version with the same parameters, and a ``.nii.gz`` whose
``descrip`` starts with ``"nimask "`` is a mask nimask wrote, never an input (so
that ``output_path`` may equal ``nii_folder`` without masking the masks on a
re-run).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._version import __version__
from ..core.masking import validate_closing_radius, validate_closing_radius_mm
from ..core.presets import resolve
from ..core.refine import Refinements, check_skull_strip_closing
from ..exceptions import ParameterError
from ..io.discovery import PROVENANCE_PREFIX

__all__ = ["BRAIN_PRESETS", "PROVENANCE_PREFIX", "MaskSettings", "Provenance", "parse_provenance"]

#: Start of the ``descrip`` field of every mask nimask writes.
_PROVENANCE_RE = re.compile(
    r"^nimask (?P<version>\S+) (?:otsu|nid-otsu|thr=(?P<low>[^:\s]+):(?P<high>\S+)) "
    r"r=(?:(?P<mm>[^\s]+)mm|(?P<radius>\d+))(?: \S+)*$"
)


@dataclass(frozen=True)
class Provenance:
    """How a mask was made, as parsed from its NIfTI ``descrip`` field."""

    version: str
    threshold: tuple[float, float] | None
    closing_radius: int | None
    closing_radius_mm: float | None = None
    #: The whole ``descrip`` text (steps and preset included).
    text: str = field(default="", compare=False)


#: Presets whose mask is a brain mask (skull removed); every other configuration makes a
#: head mask.
BRAIN_PRESETS = ("ct-brain", "mri-brain")


def parse_provenance(descrip: str) -> Provenance | None:
    """Parse a mask's ``descrip`` text; ``None`` if it is not nimask's full format.

    Examples
    --------
    >>> parse_provenance("nimask 0.1.0 thr=-500:3000 r=3")
    Provenance(version='0.1.0', threshold=(-500.0, 3000.0), closing_radius=3)
    >>> parse_provenance("FSL5.0") is None
    True
    """
    text = descrip.strip()
    match = _PROVENANCE_RE.match(text)
    if match is None:
        return None
    threshold = None
    if match["low"] is not None:
        try:
            threshold = (float(match["low"]), float(match["high"]))
        except ValueError:
            return None
        if not all(math.isfinite(v) for v in threshold):
            return None
    if match["mm"] is not None:
        try:
            radius_mm = float(match["mm"])
        except ValueError:
            return None
        if not math.isfinite(radius_mm):
            return None
        return Provenance(match["version"], threshold, None, radius_mm, text)
    return Provenance(match["version"], threshold, int(match["radius"]), None, text)


@dataclass(frozen=True)
class MaskSettings:
    """Validated parameters shared by every file of a batch.

    ``closing_radius_mm``, when not ``None``, replaces ``closing_radius`` (a
    ball round in millimetres, see :func:`nimask.core.masking.close_mask`).

    ``threshold`` is the resolved window (a preset's window when the caller
    gave none) and ``refinements`` the resolved opt-in steps
    (:class:`~nimask.core.refine.Refinements`; all off by default).
    """

    threshold: tuple[float, float] | None = None
    closing_radius: int = 3
    closing_radius_mm: float | None = None
    refinements: Refinements = field(default_factory=Refinements)
    #: Folder for QC pictures (``None``: no picture), rendered next to the volume.
    qc_dir: str | None = None
    #: Layout of the QC pictures: ``"mid"`` or ``"mosaic"`` (:mod:`nimask.evidence.qc`).
    qc_layout: str = "mid"
    #: Format of the masks (:data:`nimask.io.formats.OUTPUT_FORMATS`); not part of the
    #: provenance (a mask's format is its file name's).
    output_format: str = "nii.gz"

    @classmethod
    def create(
        cls,
        threshold: object = None,
        closing_radius: object = 3,
        closing_radius_mm: object = None,
        *,
        preset: str | None = None,
        fill_holes: object = None,
        largest_component: object = None,
        opening_radius: object = None,
        exclude_above_window: object = None,
    ) -> MaskSettings:
        """Validate raw arguments and apply a preset (explicit arguments win).

        Raises :class:`~nimask.exceptions.ParameterError`; see
        :func:`nimask.core.presets.resolve` for the override rule.
        """
        radius = validate_closing_radius(closing_radius)
        radius_mm = validate_closing_radius_mm(closing_radius_mm)
        window, refinements = resolve(
            preset, threshold, fill_holes=fill_holes,
            largest_component=largest_component, opening_radius=opening_radius,
            exclude_above_window=exclude_above_window,
        )
        if refinements.skull_strip:
            check_skull_strip_closing(radius, radius_mm)
        if radius_mm is not None and refinements.compat == "nidataset":
            raise ParameterError(
                "closing_radius_mm is not available with preset='nidataset', whose closing "
                "uses nidataset's own ball in voxels"
            )
        return cls(window, radius, radius_mm, refinements)

    def radius_problem(self, shape_xyz: Sequence[int],
                       spacing_xyz: Sequence[float]) -> str | None:
        """Why the closing (or opening) ball is too large for a volume; ``None`` if it is not.

        The bound: along every axis, the ball's radius in voxels
        (``closing_radius``, or ``closing_radius_mm / spacing``; the same for
        ``opening_radius``) may not exceed the volume's largest size in voxels,
        ``max(shape)``.  From every voxel, a larger ball reaches past the whole
        volume, while its cost grows with the radius (the closing of a 128^3
        mask takes about 4 s with a radius of 60 voxels, minutes with 200).
        :func:`nimask.mask_dataset` checks every input's header against it
        before any work.
        """
        shape = [int(n) for n in shape_xyz[:3]]
        largest = max(shape)
        size = "x".join(str(n) for n in shape)
        checks: list[tuple[str, float, str]] = []
        if self.closing_radius_mm is None:
            checks.append(("closing_radius", self.closing_radius, "vox"))
        else:
            checks.append(("closing_radius_mm", self.closing_radius_mm, "mm"))
        ref = self.refinements
        if ref.opening_radius:
            checks.append(("opening_radius", ref.opening_radius, ref.opening_unit))
        bound = (f"larger than the volume's largest size, {largest} voxels (shape {size}): "
                 "a ball's radius may not exceed the volume's largest size")
        for name, value, unit in checks:
            if unit == "vox":
                if value > largest:
                    return f"{name}={int(value)} voxels is {bound}"
                continue
            spacing = [float(v) for v in spacing_xyz[:3]]
            if not all(math.isfinite(v) and v > 0 for v in spacing):
                continue  # the volume fails on reading, with its own reason
            voxels = [value / v for v in spacing]
            worst = max(range(3), key=lambda i: voxels[i])
            if voxels[worst] > largest:
                return (f"{name}={value:g} mm is {voxels[worst]:.4g} voxels along "
                        f"{'xyz'[worst]} (spacing {spacing[worst]:g} mm), {bound}")
        return None

    @property
    def segment_kind(self) -> str:
        """What a mask is, for a DICOM SEG's segment: ``"brain"`` for the presets that
        remove the skull (``ct-brain``, ``mri-brain``), ``"head"`` otherwise."""
        return "brain" if self.refinements.preset in BRAIN_PRESETS else "head"

    @property
    def voxel_radius(self) -> int | None:
        """The closing radius in voxels, or ``None`` when it is given in mm."""
        return self.closing_radius if self.closing_radius_mm is None else None

    @property
    def mode(self) -> str:
        """``"otsu"``, ``"manual"``, ``"nidataset-otsu"`` or ``"skull-strip"`` (``mri-brain``)."""
        if self.refinements.skull_strip:
            return "skull-strip"
        if self.threshold is not None:
            return "manual"
        return "nidataset-otsu" if self.refinements.compat == "nidataset" else "otsu"

    def provenance(self) -> str:
        """Text stored in each mask's NIfTI ``descrip`` field (80 bytes with the NUL).

        ``nimask <version> <threshold> r=<closing>`` where the threshold is
        ``otsu``, ``nid-otsu`` or ``thr=<low>:<high>`` (each bound with 9
        significant digits when that gives back the exact float, else all the
        digits, so that :func:`parse_provenance` returns the exact floats) and
        the closing ``<voxels>`` or ``<R>mm``; then, for the opt-in steps,
        space-separated tokens in a fixed order: ``compat=nidataset``,
        ``open=<voxels>|<R>mm``, ``fill=3d|slices|both``, ``lcc``, ``xab``
        (exclude above window), ``preset=<name>``.  Tokens that do not fit in
        79 characters are dropped from the end (the preset name first); such a
        mask is still recognised as nimask's but never counts as up to date
        (:meth:`matches`).
        """
        tokens = self._provenance_tokens()
        text = " ".join(tokens[:3])[:79]
        for token in tokens[3:]:
            if len(text) + 1 + len(token) > 79:
                break
            text += " " + token
        return text

    def _full_provenance(self) -> str:
        return " ".join(self._provenance_tokens())

    def _provenance_tokens(self) -> list[str]:
        if self.threshold is not None:
            low, high = self.threshold
            how = f"thr={_exact(low)}:{_exact(high)}"
        elif self.refinements.compat == "nidataset":
            how = "nid-otsu"
        else:
            how = "otsu"
        if self.closing_radius_mm is None:
            radius = f"r={self.closing_radius}"
        else:
            radius = f"r={_exact(self.closing_radius_mm)}mm"
        return [f"{PROVENANCE_PREFIX}{__version__}", how, radius,
                *self.refinements.provenance_tokens()]

    def matches(self, provenance: Provenance) -> str | None:
        """``None`` if a mask with this provenance is what these settings make now.

        Otherwise a short reason.  The version must be the same: another
        nimask version may compute a different mask.
        """
        if provenance.version != __version__:
            return f"made by nimask {provenance.version}, this is {__version__}"
        if provenance.threshold != self.threshold:
            return (f"made with {_describe(provenance.threshold)}, "
                    f"now {_describe(self.threshold)}")
        if (provenance.closing_radius, provenance.closing_radius_mm) != (
            self.voxel_radius, self.closing_radius_mm
        ):
            made = _describe_radius(provenance.closing_radius, provenance.closing_radius_mm)
            now = _describe_radius(self.voxel_radius, self.closing_radius_mm)
            if made.split("=")[0] == now.split("=")[0]:
                now = now.split("=")[1]
            return f"made with {made}, now {now}"
        full = self._full_provenance()
        if len(full) > 79:
            return "these parameters do not fit in the provenance field: cannot compare"
        if provenance.text and provenance.text != full:
            return f"made with '{provenance.text}', now '{full}'"
        return None


def _exact(value: float) -> str:
    """Short text for ``value`` that ``float()`` reads back exactly."""
    text = f"{value:.9g}"
    return text if float(text) == value else repr(value)


def _describe(threshold: tuple[float, float] | None) -> str:
    return "otsu" if threshold is None else f"threshold {threshold[0]:g}:{threshold[1]:g}"


def _describe_radius(voxels: int | None, mm: float | None) -> str:
    return f"closing_radius_mm={mm:g}" if mm is not None else f"closing_radius={voxels}"
