"""Names and sidecars for the masks of DICOM series."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ..._version import __version__
from .model import DicomSeries

__all__ = ["series_output_stem", "series_sidecar", "unique_output_stems"]

_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]+")
#: Longest part taken from a header value (the description is cut there).
_PART_MAX = 64


def _safe(text: str, fallback: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = _UNSAFE.sub("_", ascii_text).strip("_.-")[:_PART_MAX].strip("_.-")
    return cleaned or fallback


def series_output_stem(series: DicomSeries) -> str:
    """``<PatientID>_<StudyDate>_<SeriesNumber>_<SeriesDescription>``, filesystem-safe.

    Each part keeps letters, digits, ``.``, ``+`` and ``-`` (accents dropped,
    every other run of characters becomes ``_``, at most 64 characters); an
    empty part becomes ``noid``, ``nodate``, ``nonumber``, or the Modality
    (else ``series``) for the description.  Stable: it depends on the headers only.

    Examples
    --------
    ``12343@hucheng``, ``20220711``, 6, ``anat-T1w_acq-tfl`` ->
    ``12343_hucheng_20220711_6_anat-T1w_acq-tfl``.
    """
    number = str(series.series_number) if series.series_number is not None else ""
    return "_".join((
        _safe(series.patient_id, "noid"),
        _safe(series.study_date, "nodate"),
        _safe(number, "nonumber"),
        _safe(series.series_description, _safe(series.modality, "series")),
    ))


def _uid_tag(uid: str) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()[:8]


def unique_output_stems(series: Sequence[DicomSeries]) -> list[str]:
    """:func:`series_output_stem` of each series, with clashes told apart.

    Stems equal without regard to case (as on macOS and Windows file systems)
    get ``_`` and 8 hexadecimal digits of the SHA-256 of their
    SeriesInstanceUID appended: the same series keeps the same name whatever
    order the series come in.  The same SeriesInstanceUID twice is an error.

    Raises
    ------
    ValueError
        A SeriesInstanceUID appears twice in ``series``.
    """
    uids = Counter(s.series_instance_uid for s in series)
    twice = [uid for uid, n in uids.items() if n > 1]
    if twice:
        raise ValueError(f"SeriesInstanceUID {twice[0]} appears more than once")
    stems = [series_output_stem(s) for s in series]
    counts = Counter(stem.lower() for stem in stems)
    return [
        f"{stem}_{_uid_tag(s.series_instance_uid)}" if counts[stem.lower()] > 1 else stem
        for stem, s in zip(stems, series, strict=True)
    ]


def series_sidecar(
    series: DicomSeries, parameters: Mapping[str, Any], *, notes: Sequence[str] = ()
) -> dict[str, Any]:
    """The JSON sidecar of a series' mask: where it comes from and how it was made.

    Parameters
    ----------
    series : DicomSeries
        The source series.
    parameters : mapping
        nimask's parameters for the mask (JSON-serialisable values).
    notes : sequence of str, keyword-only
        What reading did (e.g. the notes of :func:`~nimask.io.dicom.read_series`).

    Returns
    -------
    dict
        ``StudyInstanceUID``, ``SeriesInstanceUID``, ``SeriesDescription``,
        ``SeriesNumber``, ``Modality``, ``SourceFiles`` (count),
        ``SourceImages`` (2D images used), ``Parameters``, ``Notes`` and
        ``GeneratedBy`` (name and version).
    """
    check = series.check
    return {
        "StudyInstanceUID": series.study_instance_uid,
        "SeriesInstanceUID": series.series_instance_uid,
        "SeriesDescription": series.series_description,
        "SeriesNumber": series.series_number,
        "Modality": series.modality,
        "SourceFiles": len(series.files),
        "SourceImages": len(check.order) if check is not None else len(series.frames),
        "Parameters": dict(parameters),
        "Notes": list(notes),
        "GeneratedBy": {"Name": "nimask", "Version": __version__},
    }
