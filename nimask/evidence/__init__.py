"""Evidence about the masks: per-file statistics, cohort flags, the CSV/JSON report and QC.

Exports what the batch layer and the fronts use.
"""

from .qc import render_case, write_index
from .report import flag_cohort, mask_statistics, report_format, write_report

__all__ = [
    "flag_cohort",
    "mask_statistics",
    "render_case",
    "report_format",
    "write_index",
    "write_report",
]
