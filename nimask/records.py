"""Record types shared by the layers: one :class:`Case` per input, one :class:`FileResult` each.

A :class:`Case` is what discovery (:mod:`nimask.io.discovery`, :mod:`nimask.io.bids`) found: one
volume to mask, whatever it arrived as (a file in any ITK volume format, a file of a BIDS
dataset, and later a DICOM series), with the name its mask gets.  A :class:`FileResult` is what
happened to it (one row of the report).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CASE_KINDS", "STATUSES", "Case", "FileResult"]

#: Every ``Case.kind``: ``"file"`` (one volume file, any format of
#: :data:`nimask.io.formats.VOLUME_FORMATS`) and ``"dicom-series"`` (one DICOM series, read by
#: :mod:`nimask.io.dicom`).
CASE_KINDS = ("file", "dicom-series")


@dataclass(frozen=True)
class Case:
    """One volume to mask, as discovery found it.

    Attributes
    ----------
    kind : str
        ``"file"`` or ``"dicom-series"`` (:data:`CASE_KINDS`).
    source : Path
        The file read (for a DICOM series: its first file in slice order, or the folder the
        reader of :mod:`nimask.io.dicom` takes).  ``os.fspath(case)`` is this path.
    display : str
        The input as the user knows it: the path as given or found (``scans/sub/a.nrrd``),
        or, for a DICOM series, its description and ``SeriesInstanceUID``.  It is the
        report's ``input`` column.
    stem : str
        Where the mask goes, relative to the output folder, ``/``-separated, without the
        ``_mask`` suffix and extension (``sub-01/anat/scan``).
    format : str
        The input's format: a value of :data:`nimask.io.formats.VOLUME_FORMATS`
        (``"nii.gz"``, ``"nii"``, ``"nrrd"``, ``"nhdr"``, ``"mha"``, ``"mhd"``, ``"mnc"``) or
        ``"dicom"``.
    files : tuple of Path
        Every file the volume is read from (header and data files, DICOM slices): the
        files ``skip_existing`` compares in age with the mask, and that a batch never
        writes to.
    label : str
        Short unique name for logs and QC pages: the path relative to the folder it was
        found in (the file name for a flat folder).
    sidecar : mapping or None
        Fields of a JSON sidecar written beside the mask (``<mask stem>.json``) with
        nimask's parameters added; ``None``: no sidecar (unless the mask's format has no
        room for nimask's provenance, see :mod:`nimask.io.formats`).
    payload : object
        What the reader of this kind needs besides paths (a DICOM case: its
        :class:`nimask.io.dicom.DicomSeries`, checks included); picklable.
    """

    kind: str
    source: Path
    display: str
    stem: str
    format: str
    files: tuple[Path, ...] = ()
    label: str = ""
    sidecar: Mapping[str, Any] | None = None
    payload: Any = field(default=None, compare=False)

    def __fspath__(self) -> str:
        return os.fspath(self.source)

    @property
    def name(self) -> str:
        """The label's last part (``scan.nii.gz``): what a flat folder's logs show."""
        return (self.label or self.source.name).rsplit("/", 1)[-1]


#: Every ``FileResult.status``.
STATUSES = ("written", "skipped", "failed", "ignored")


@dataclass
class FileResult:
    """What happened to one input, or to one entry set aside (one row of the report).

    ``input`` is the input as the user knows it (:attr:`Case.display`).  ``status`` is
    ``"written"``, ``"skipped"`` (an up-to-date mask was kept), ``"failed"``
    (``error`` says why; no mask was written) or ``"ignored"`` (an entry matching the
    inputs that is not one: ``notes`` says why).  ``output`` is the mask's path, empty
    when no mask was written or kept.  Every field is a report column:
    ``docs/report-columns.md``.
    """

    input: str
    output: str
    status: str  # one of STATUSES
    error: str = ""
    threshold_mode: str = ""
    threshold_low: float | None = None
    threshold_high: float | None = None
    otsu_threshold: float | None = None
    closing_radius: int | None = None
    mask_voxels: int | None = None
    total_voxels: int | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    coverage_percent: float | None = None
    volume_ml: float | None = None
    components: int | None = None
    largest_component_share: float | None = None
    large_components: int | None = None
    touches_border: bool | None = None
    border_faces: list[str] = field(default_factory=list)
    coverage_z: float | None = None
    flags: list[str] = field(default_factory=list)
    qc_png: str = ""
    closing_radius_mm: float | None = None
    preset: str = ""
    fill_holes: str = ""
    largest_component: bool | None = None
    exclude_above_window: bool | None = None
    opening_radius: str = ""
    components_dropped: int | None = None
    steps: str = ""
    hu_warning: bool | None = None
    #: A reviewer's verdict on this case from an earlier run's ratings file.
    earlier_rating: str = ""
    earlier_note: str = ""
    earlier_reviewer: str = ""
    brain_rim_percent: float | None = None

    @property
    def ok(self) -> bool:
        """True unless the file failed (an ignored entry is not a failure)."""
        return self.status != "failed"

    def as_dict(self) -> dict[str, Any]:
        """Plain-data view (for CSV/JSON reports)."""
        return asdict(self)
