"""Reviewers' verdicts: the ``ratings.csv`` exported by the QC page, read back.

The QC page (:mod:`nimask.evidence.review_page`) exports one row per case a
reviewer rated or annotated, with the columns :data:`RATING_COLUMNS`::

    input,output,rating,note,reviewer,time
    /data/scans/sub-07.nii.gz,/data/masks/sub-07_mask.nii.gz,bad,frontal sinus cut,ana,2025-...

``rating`` is one of :data:`RATINGS` (or empty when the row only carries a
note).  :func:`read_ratings` reads such a file (any CSV with at least the
``input`` and ``rating`` columns); :func:`rated_inputs` picks the inputs with
given verdicts, e.g. to run them again (``nimask mask ... --only-rated bad
ratings.csv``); :func:`read_input_list` reads the inputs of any CSV with an
``input`` column (a ratings file, a nimask report) or of a plain list, one
path or name a line.

Ratings are kept by the input as written; a run matches them to its cases by the
path relative to the input folder (``/old/mount/sub-07/anat/scan.nii.gz`` names
``sub-07/anat/scan.nii.gz``), so that a ratings file still applies when the data
moved or was mounted elsewhere, and by file name only when that names one case
(:func:`nimask.batch.run.mask_dataset`, ``only=`` and ``ratings=``).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import ParameterError

__all__ = [
    "RATINGS",
    "RATING_COLUMNS",
    "Rating",
    "is_ratings_file",
    "parse_rating_choice",
    "rated_inputs",
    "read_input_list",
    "read_ratings",
]

#: The verdicts a reviewer can give.
RATINGS = ("good", "bad", "unsure")
#: Columns of ``ratings.csv``, in order.
RATING_COLUMNS = ("input", "output", "rating", "note", "reviewer", "time")


@dataclass(frozen=True)
class Rating:
    """One reviewer's verdict on one case (a row of ``ratings.csv``)."""

    input: str
    output: str = ""
    rating: str = ""
    note: str = ""
    reviewer: str = ""
    time: str = ""

    @property
    def name(self) -> str:
        """File name of the input: the key the case is matched by."""
        return _name(self.input)


def _name(path: str) -> str:
    # a path written on Windows still gives its file name
    return Path(path.replace("\\", "/")).name


def _read_csv(path: str | os.PathLike[str]) -> tuple[list[str], list[dict[str, str]]]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError(f"cannot read {os.fspath(path)}: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
            for row in reader]
    return columns, rows


def read_ratings(path: str | os.PathLike[str]) -> dict[str, Rating]:
    """Read a ratings CSV into ``{input as written: Rating}``, in the file's order.

    An input rated twice keeps its last row (placed where that row is).  Rows
    whose ``input`` is empty are skipped.

    Raises
    ------
    ParameterError
        The file cannot be read, lacks the ``input`` or ``rating`` column, or
        holds a rating other than :data:`RATINGS` (or empty).
    """
    columns, rows = _read_csv(path)
    missing = [c for c in ("input", "rating") if c not in columns]
    if missing:
        raise ParameterError(
            f"{os.fspath(path)} is not a ratings file: no {' or '.join(missing)} column "
            f"(columns: {', '.join(columns) or 'none'}; expected {', '.join(RATING_COLUMNS)})"
        )
    table: dict[str, Rating] = {}
    for line, row in enumerate(rows, start=2):
        if not row.get("input"):
            continue
        rating = row.get("rating", "").lower()
        if rating and rating not in RATINGS:
            raise ParameterError(
                f"{os.fspath(path)} line {line}: rating {row.get('rating')!r} is not one of "
                f"{', '.join(RATINGS)}"
            )
        entry = Rating(**{c: row.get(c, "") for c in RATING_COLUMNS if c != "rating"},
                       rating=rating)
        table.pop(entry.input, None)  # the last row of an input comes last
        table[entry.input] = entry
    return table


def parse_rating_choice(text: str) -> tuple[str, ...]:
    """``"bad,unsure"`` -> ``("bad", "unsure")``; raises ``ParameterError`` for other words."""
    wanted = tuple(w.strip().lower() for w in text.split(",") if w.strip())
    unknown = [w for w in wanted if w not in RATINGS]
    if not wanted or unknown:
        raise ParameterError(
            f"ratings to select must be among {', '.join(RATINGS)} (comma-separated), "
            f"got {text!r}"
        )
    return wanted


def rated_inputs(ratings: dict[str, Rating], wanted: Iterable[str]) -> list[str]:
    """Inputs (as written) whose rating is one of ``wanted``, sorted."""
    keep = set(wanted)
    return sorted(name for name, r in ratings.items() if r.rating in keep)


def _header(path: str | os.PathLike[str]) -> list[str]:
    try:
        first = Path(path).read_text(encoding="utf-8-sig").splitlines()[:1]
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError(f"cannot read {os.fspath(path)}: {exc}") from exc
    return [h.strip() for h in next(csv.reader(first), [])] if first else []


def is_ratings_file(path: str | os.PathLike[str]) -> bool:
    """True when the file's first line names the ``input`` and ``rating`` columns."""
    header = _header(path)
    return "input" in header and "rating" in header


def read_input_list(path: str | os.PathLike[str]) -> list[str]:
    """Input paths or names listed in a file: the ``input`` column of a CSV, else one a line.

    A CSV is recognised by an ``input`` column in its first line (a ratings
    file, a nimask report); any other file is read as a plain list, one path or
    file name a line (blank lines and lines starting with ``#`` skipped).

    Raises
    ------
    ParameterError
        The file cannot be read.
    """
    if "input" in _header(path):
        _, rows = _read_csv(path)
        return [row["input"] for row in rows if row.get("input")]
    lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
