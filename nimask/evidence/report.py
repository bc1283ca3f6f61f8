"""Per-file mask statistics, cohort flags and the CSV/JSON report.

:func:`mask_statistics` measures one mask already in memory (it is run by
:func:`nimask.batch.case.process_file`, next to the volume); :func:`flag_cohort`
looks at the whole batch afterwards and marks the files a person should look
at; :func:`write_report` writes one record per input file.

Flags
-----
``empty``
    The mask has no voxel.
``almost_empty``
    Fewer than :data:`ALMOST_EMPTY_PERCENT` % of the volume's voxels, but not 0.
``almost_full``
    More than :data:`ALMOST_FULL_PERCENT` % of the volume's voxels.
``coverage_outlier``
    Robust z-score of the coverage above :data:`OUTLIER_Z` in absolute value,
    computed only when at least :data:`MIN_COHORT` files have statistics:
    ``z = 0.6745 * (c - median) / MAD`` (MAD: median absolute deviation); when
    the MAD is 0, ``z = (c - median) / (1.2533 * MeanAD)`` (mean absolute
    deviation); when both are 0 no file is an outlier.
``touches_border``
    A mask voxel lies on one of the six faces of the volume (the head or the
    brain may be cut by the field of view).
``multiple_large_components``
    Two or more *large* connected components (face connectivity, as ITK's
    ``ConnectedComponentImageFilter`` with ``fullyConnected=False``), a
    component being large when it holds at least
    :data:`LARGE_COMPONENT_FRACTION` of the mask's voxels (1 %): a split mask,
    or an object outside the head (e.g. a CT head holder) in the mask.
``implausible_brain_volume``
    Preset ``mri-brain`` only: the mask's volume is outside
    :data:`BRAIN_ML_RANGE` (an adult brain with its CSF; a child's, a
    resected or an atrophic brain may fall outside too, so look, do not drop).
``bright_rim_in_mask``
    Preset ``mri-brain`` only: more than :data:`BRIGHT_RIM_PERCENT` % of the
    head's bright rim (voxels within a few mm of the head's surface brighter
    than the tissue window's lower bound: skin, fat, marrow, muscle) is inside
    the mask, i.e. the mask took scalp (``brain_rim_percent`` column).

With ``mri-brain`` the generic ``touches_border`` and
``multiple_large_components`` flags read as "the brain is cut by the field of
view" and "the brain mask fell apart or took something else".
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import SimpleITK as sitk

from ..exceptions import ParameterError
from ..io.nifti import atomic_write, safe_text
from .runs import component_sizes, mask_runs

if TYPE_CHECKING:
    from ..records import FileResult

__all__ = [
    "ALMOST_EMPTY_PERCENT",
    "ALMOST_FULL_PERCENT",
    "BRAIN_ML_RANGE",
    "BRAIN_PRESET",
    "BRIGHT_RIM_PERCENT",
    "FLAGS",
    "LARGE_COMPONENT_FRACTION",
    "MIN_COHORT",
    "OUTLIER_Z",
    "REPORT_COLUMNS",
    "REPORT_DECIMALS",
    "MaskStats",
    "case_flags",
    "flag_cohort",
    "mask_statistics",
    "report_format",
    "robust_z",
    "write_report",
]

#: Coverage (% of the volume's voxels) under which a non-empty mask is ``almost_empty``.
ALMOST_EMPTY_PERCENT = 1.0
#: Coverage (% of the volume's voxels) above which a mask is ``almost_full``.
ALMOST_FULL_PERCENT = 95.0
#: Share of the mask's voxels from which a connected component counts as large.
LARGE_COMPONENT_FRACTION = 0.01
#: Absolute robust z-score of the coverage above which a file is ``coverage_outlier``.
OUTLIER_Z = 3.0
#: Files with statistics needed before ``coverage_outlier`` is computed.
MIN_COHORT = 5
#: Plausible volume (mL, inclusive) of an adult brain mask from ``mri-brain``.
BRAIN_ML_RANGE = (800.0, 2000.0)
#: Share (%) of the head's bright rim inside an ``mri-brain`` mask above which
#: the file is ``bright_rim_in_mask``.
BRIGHT_RIM_PERCENT = 10.0
#: The preset whose masks get the brain-plausibility flags.
BRAIN_PRESET = "mri-brain"

#: Every flag, in the order they are listed.
FLAGS = (
    "empty",
    "almost_empty",
    "almost_full",
    "coverage_outlier",
    "touches_border",
    "multiple_large_components",
    "implausible_brain_volume",
    "bright_rim_in_mask",
)

#: Every report column, in order: one per field of ``FileResult`` (a test checks that
#: they agree, and that the table of ``docs/guide/reports-and-flags.md`` lists them in order).
REPORT_COLUMNS = (
    "input",
    "output",
    "status",
    "error",
    "flags",
    "threshold_mode",
    "threshold_low",
    "threshold_high",
    "otsu_threshold",
    "closing_radius",
    "mask_voxels",
    "total_voxels",
    "coverage_percent",
    "coverage_z",
    "volume_ml",
    "components",
    "largest_component_share",
    "large_components",
    "touches_border",
    "border_faces",
    "qc_png",
    "seconds",
    "notes",
    "closing_radius_mm",
    "preset",
    "fill_holes",
    "largest_component",
    "exclude_above_window",
    "opening_radius",
    "components_dropped",
    "steps",
    "hu_warning",
    "earlier_rating",
    "earlier_note",
    "earlier_reviewer",
    "brain_rim_percent",
)

#: Decimals kept in the report for measured floats (thresholds are never rounded).
REPORT_DECIMALS = {
    "seconds": 3,
    "coverage_percent": 4,
    "coverage_z": 3,
    "volume_ml": 3,
    "largest_component_share": 4,
    "brain_rim_percent": 3,
}

# Faces of the volume in ITK index order: (axis, low side?) -> name.
_FACE_NAMES = ("x-", "x+", "y-", "y+", "z-", "z+")


@dataclass(frozen=True)
class MaskStats:
    """Statistics of one mask (see the module docstring for the definitions).

    Attributes
    ----------
    mask_voxels, total_voxels : int
        Foreground voxels and all voxels of the grid.
    coverage_percent : float
        ``100 * mask_voxels / total_voxels``.
    volume_ml : float
        ``mask_voxels`` times the voxel volume (product of the spacing, mm^3) / 1000.
    components : int
        Connected components of the foreground (face connectivity).
    largest_component_share : float or None
        Voxels of the largest component / ``mask_voxels`` (``None`` when empty).
    large_components : int
        Components holding at least :data:`LARGE_COMPONENT_FRACTION` of the mask.
    border_faces : tuple of str
        Faces of the grid the mask touches, in ITK index axes: ``"x-"`` is the
        face ``i = 0``, ``"z+"`` the face ``k = size_z - 1``, etc.
    centroid_index : (float, float, float)
        Centroid of the mask in continuous ITK index order (x, y, z); the
        centre of the grid when the mask is empty.
    """

    mask_voxels: int
    total_voxels: int
    coverage_percent: float
    volume_ml: float
    components: int
    largest_component_share: float | None
    large_components: int
    border_faces: tuple[str, ...]
    centroid_index: tuple[float, float, float]

    @property
    def touches_border(self) -> bool:
        """True when the mask touches at least one face of the grid."""
        return bool(self.border_faces)


def mask_statistics(mask: sitk.Image) -> MaskStats:
    """Measure a 3D 0/1 mask: size, coverage, volume, components, border contact.

    Parameters
    ----------
    mask : SimpleITK.Image
        3D integer image; voxels != 0 are foreground.

    Returns
    -------
    MaskStats

    Notes
    -----
    Everything is derived from the mask's runs along x (:mod:`nimask.evidence.runs`),
    found in one pass over the voxels: the per-axis counts, and the
    face-connected components with their sizes, which equal those of
    ``sitk.ConnectedComponent(mask, fullyConnected=False)`` followed by
    ``RelabelComponentImageFilter`` (6-neighbourhood; tested on random masks
    and on the real volumes).
    """
    if mask.GetDimension() != 3:
        raise ParameterError(f"mask_statistics needs a 3D mask, got {mask.GetDimension()}D")
    view = sitk.GetArrayViewFromImage(mask)  # (z, y, x)
    runs = mask_runs(view)
    per_x, per_y, per_z = runs.per_axis_counts()
    n = int(per_z.sum())
    total = int(view.size)
    size_xyz = mask.GetSize()
    faces = []
    for counts in (per_x, per_y, per_z):
        faces.extend([counts[0] > 0, counts[-1] > 0])
    border = tuple(name for name, hit in zip(_FACE_NAMES, faces, strict=True) if hit)
    if n:
        centre = [float(np.dot(np.arange(c.size), c)) / n for c in (per_x, per_y, per_z)]
    else:
        centre = [(s - 1) / 2.0 for s in size_xyz]
    voxel_mm3 = math.prod(mask.GetSpacing())
    components = 0
    largest: float | None = None
    large = 0
    if n:
        sizes = component_sizes(runs)
        components = len(sizes)
        largest = sizes[0] / n
        large = sum(1 for s in sizes if s >= LARGE_COMPONENT_FRACTION * n)
    return MaskStats(
        mask_voxels=n,
        total_voxels=total,
        coverage_percent=100.0 * n / total,
        volume_ml=n * voxel_mm3 / 1000.0,
        components=components,
        largest_component_share=largest,
        large_components=large,
        border_faces=border,
        centroid_index=(centre[0], centre[1], centre[2]),
    )


def robust_z(values: Sequence[float]) -> list[float]:
    """Robust z-scores: ``0.6745 (x - median) / MAD`` (MeanAD fallback, see module doc).

    Returns zeros when the values do not spread at all.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return []
    # statistics.median: the same value as np.median (mean of the two middle values),
    # without the import of numpy.ma that np.median makes on its first call
    med = statistics.median(x.tolist())
    dev = np.abs(x - med)
    mad = statistics.median(dev.tolist())
    if mad > 0:
        z = 0.6745 * (x - med) / mad
    else:
        mean_ad = float(dev.mean())
        if mean_ad == 0:
            return [0.0] * int(x.size)
        z = (x - med) / (1.2533 * mean_ad)
    return [float(v) for v in z]


def _coverage_flags(res: FileResult) -> list[str]:
    flags = []
    if res.mask_voxels is not None and res.coverage_percent is not None:
        if res.mask_voxels == 0:
            flags.append("empty")
        elif res.coverage_percent < ALMOST_EMPTY_PERCENT:
            flags.append("almost_empty")
        if res.coverage_percent > ALMOST_FULL_PERCENT:
            flags.append("almost_full")
    return flags


def _shape_flags(res: FileResult) -> list[str]:
    flags = []
    if res.touches_border:
        flags.append("touches_border")
    if res.large_components is not None and res.large_components >= 2:
        flags.append("multiple_large_components")
    return flags


def case_flags(res: FileResult) -> list[str]:
    """The flags of one file that do not depend on the cohort (all but ``coverage_outlier``).

    What a worker can draw on the file's QC picture before the batch is done;
    :func:`flag_cohort` gives the same flags plus ``coverage_outlier``.
    """
    if res.status == "failed" or res.coverage_percent is None:
        return []
    return _coverage_flags(res) + _shape_flags(res) + _brain_flags(res)


def _brain_flags(res: FileResult) -> list[str]:
    """The ``mri-brain`` plausibility flags (see the module docstring)."""
    if res.preset != BRAIN_PRESET:
        return []
    flags = []
    low, high = BRAIN_ML_RANGE
    if res.volume_ml is not None and not low <= res.volume_ml <= high:
        flags.append("implausible_brain_volume")
    if res.brain_rim_percent is not None and res.brain_rim_percent > BRIGHT_RIM_PERCENT:
        flags.append("bright_rim_in_mask")
    return flags


def flag_cohort(results: Sequence[FileResult]) -> int:
    """Set ``flags`` and ``coverage_z`` on every result; return how many files are flagged.

    Files without statistics (failed, or skipped without measurements) get no
    flag.  See the module docstring for the definitions.
    """
    measured = [r for r in results if r.status != "failed" and r.coverage_percent is not None]
    zs: dict[int, float] = {}
    if len(measured) >= MIN_COHORT:
        scores = robust_z([float(r.coverage_percent or 0.0) for r in measured])
        zs = {id(r): z for r, z in zip(measured, scores, strict=True)}
    flagged = 0
    for res in results:
        if res.status == "failed" or res.coverage_percent is None:
            res.flags = []
            res.coverage_z = None
            continue
        flags = _coverage_flags(res)
        z = zs.get(id(res))
        res.coverage_z = z
        if z is not None and abs(z) > OUTLIER_Z:
            flags.append("coverage_outlier")
        res.flags = flags + _shape_flags(res) + _brain_flags(res)
        flagged += bool(res.flags)
    return flagged


def report_format(path: str | os.PathLike[str]) -> str:
    """``"csv"`` or ``"json"`` from the report path's suffix (case-insensitive).

    Raises
    ------
    ParameterError
        Any other suffix.
    """
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".json"):
        return suffix[1:]
    raise ParameterError(
        f"report must end in .csv or .json, got {os.fspath(path)!r}"
    )


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    columns = list(REPORT_COLUMNS)
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    return columns


def _report_value(key: str, value: Any) -> Any:
    """A field's value as reported: measured floats rounded, names printable."""
    if isinstance(value, float) and key in REPORT_DECIMALS and math.isfinite(value):
        return round(value, REPORT_DECIMALS[key])
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, (list, tuple)):
        return [safe_text(v) if isinstance(v, str) else v for v in value]
    return value


def _csv_cell(key: str, value: Any) -> Any:
    value = _report_value(key, value)
    if value is None:
        return ""
    if isinstance(value, list):
        if key == "notes":
            return json.dumps(value, ensure_ascii=False) if value else ""
        return ";".join(str(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return value


def _json_value(key: str, value: Any) -> Any:
    value = _report_value(key, value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf": JSON has no infinity
    return value


def write_report(results: Sequence[FileResult], path: str | os.PathLike[str]) -> Path:
    """Write one record per file as CSV or JSON (by suffix), atomically.

    CSV: one header line then one row per file, in :data:`REPORT_COLUMNS`
    order; empty cell for a missing value; ``flags`` and ``border_faces``
    joined with ``;`` (their words never hold one), ``notes`` as a JSON array
    (notes may hold any character).  JSON: ``{"nimask_version", "files":
    [records], "flags": {flag: [inputs]}}`` with ``null`` for missing values.
    Both: measured floats rounded (:data:`REPORT_DECIMALS`; thresholds never),
    file names that are not valid UTF-8 written with ``\\xNN`` escapes
    (:func:`nimask.io.nifti.safe_text`).

    Returns
    -------
    pathlib.Path
        The report path.

    Raises
    ------
    ParameterError
        Unknown suffix.
    OutputError
        The file cannot be written.
    """
    from .._version import __version__

    out = Path(path)
    fmt = report_format(out)
    rows = [r.as_dict() for r in results]
    columns = _columns(rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(k, row.get(k)) for k in columns})
        text = buf.getvalue()
    else:
        by_flag = {
            flag: [safe_text(r.input) for r in results if flag in r.flags] for flag in FLAGS
        }
        doc = {
            "nimask_version": __version__,
            "files": [{k: _json_value(k, row.get(k)) for k in columns} for row in rows],
            "flags": {k: v for k, v in by_flag.items() if v},
        }
        text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return out
