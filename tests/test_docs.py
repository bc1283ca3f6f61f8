"""The documentation states what the code does: report columns, flags, presets."""

from __future__ import annotations

import re
from pathlib import Path

from nimask.core.presets import preset_names
from nimask.evidence.report import FLAGS, write_report
from nimask.records import FileResult

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _first_column(table_page: str, header: str) -> list[str]:
    """The backquoted names in the first column of the table whose header starts with ``header``."""
    lines = (DOCS / table_page).read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    names = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        names += re.findall(r"`([^`]+)`", line.split("|")[1])
    return names


def test_report_columns_page_lists_every_column_in_order(tmp_path: Path) -> None:
    report = write_report([FileResult("in.nii.gz", "in_mask.nii.gz", "written")],
                          tmp_path / "report.csv")
    columns = report.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert _first_column("guide/reports-and-flags.md", "Column") == columns
    page = (DOCS / "guide/reports-and-flags.md").read_text(encoding="utf-8")
    assert f"these {len(columns)} columns" in page


def test_flags_page_lists_every_flag() -> None:
    assert _first_column("guide/reports-and-flags.md", "Flag") == list(FLAGS)


def test_presets_page_lists_every_preset() -> None:
    assert _first_column("guide/thresholds-and-presets.md", "preset") == preset_names()
