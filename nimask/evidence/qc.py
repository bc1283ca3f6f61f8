"""Quality control: one labelled picture per case and the batch's review page.

The picture (:mod:`nimask.evidence.qc_picture`) and the page
(:mod:`nimask.evidence.review_page`) live in their own modules; this module
gathers what the batch layer and users call.  Reviewers' verdicts exported
by the page are read by :mod:`nimask.evidence.ratings`.  User guide:
``docs/qc.md``.
"""

from __future__ import annotations

from .qc_picture import (
    CONTOUR_PX,
    CONTOUR_RGB,
    FILL_OPACITY,
    FILL_RGB,
    GAP_PX,
    HALO_RGB,
    HEADER_PX,
    HU_AIR_BELOW,
    HU_WINDOW,
    LAYOUTS,
    MAX_ANISOTROPY,
    MOSAIC_SLICES,
    PANEL_PX,
    TILE_PX,
    QcLabel,
    case_label,
    intensity_window,
    qc_png_name,
    relabel_png,
    render_case,
    update_picture_flags,
    validate_layout,
)
from .review_page import INDEX_NAME, write_index

__all__ = [
    "CONTOUR_PX",
    "CONTOUR_RGB",
    "FILL_OPACITY",
    "FILL_RGB",
    "GAP_PX",
    "HALO_RGB",
    "HEADER_PX",
    "HU_AIR_BELOW",
    "HU_WINDOW",
    "INDEX_NAME",
    "LAYOUTS",
    "MAX_ANISOTROPY",
    "MOSAIC_SLICES",
    "PANEL_PX",
    "TILE_PX",
    "QcLabel",
    "case_label",
    "intensity_window",
    "qc_png_name",
    "relabel_png",
    "render_case",
    "update_picture_flags",
    "validate_layout",
    "write_index",
]
