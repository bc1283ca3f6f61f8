"""Record types shared by the batch and evidence layers: one :class:`FileResult` per input."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["FileResult"]


@dataclass
class FileResult:
    """What happened to one input file (one row of the report)."""

    input: str
    output: str
    status: str  # "written", "skipped" or "failed"
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
        """True unless the file failed."""
        return self.status != "failed"

    def as_dict(self) -> dict[str, Any]:
        """Plain-data view (for CSV/JSON reports)."""
        return asdict(self)
