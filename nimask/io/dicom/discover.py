"""Finding DICOM series: walk a tree, read headers only, group images by SeriesInstanceUID."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from ...exceptions import InputFolderError, NimaskError
from ..nifti import TEMP_MARKER
from .checks import check_series
from .headers import FileHeader, import_pydicom, read_header
from .model import DicomScan, DicomSeries, SeriesCheck, SkippedSeries

__all__ = ["find_series"]

logger = logging.getLogger(__name__)


def _walk(root: Path) -> list[Path]:
    """Every regular file under ``root`` (recursively), hidden entries left out, sorted."""
    if root.is_file():
        return [root]
    found: list[Path] = []

    def on_error(exc: OSError) -> None:
        logger.warning("cannot list %s: %s", exc.filename, exc.strerror or exc)

    for folder, dirs, files in os.walk(root, onerror=on_error):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith(".") or TEMP_MARKER in name:
                continue
            path = Path(folder) / name
            if path.is_file():
                found.append(path)
    return sorted(found)


def find_series(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, check: bool = True
) -> DicomScan:
    """Find the DICOM image series under a folder (recursively), reading headers only.

    Every regular file is tried (DICOM files often have no extension); hidden
    files and folders (``.name``) are left out.  Images are grouped by
    SeriesInstanceUID, single-frame and enhanced multi-frame alike.
    Localizers/scouts (ImageType ``LOCALIZER``, or a SeriesDescription naming
    one) and non-image objects (SR, PR, SEG, RT, secondary captures, a DICOMDIR)
    are skipped with a note; files that are not DICOM are listed apart.

    Parameters
    ----------
    source : path or iterable of paths
        A folder, a single DICOM file, or several of them.
    check : bool, keyword-only
        Run :func:`~nimask.io.dicom.check_series` on each series (default) so
        that ``series.check`` holds its verdict.

    Returns
    -------
    DicomScan
        Series sorted by PatientID, StudyDate, SeriesNumber and UID.

    Raises
    ------
    InputFolderError
        A path does not exist.
    MissingDependencyError
        pydicom (a requirement of nimask) is missing from this install.
    """
    import_pydicom()
    roots = [Path(source)] if isinstance(source, str | os.PathLike) else [Path(s) for s in source]
    if not roots:
        raise InputFolderError("no DICOM folder or file given")
    files: list[Path] = []
    for root in roots:
        if not root.exists():
            raise InputFolderError(f"DICOM input does not exist: {root}")
        files.extend(_walk(root))
    files = sorted(set(files))
    scan = DicomScan(roots[0] if len(roots) == 1 else Path(os.path.commonpath(roots)))
    images: dict[str, list[FileHeader]] = {}
    skipped: dict[tuple[str, str], list[FileHeader]] = {}
    for path in files:
        header = read_header(path)
        if header.kind == "image":
            images.setdefault(header.series_instance_uid, []).append(header)
        elif header.kind == "skip":
            skipped.setdefault((header.series_instance_uid, header.reason), []).append(header)
        elif header.kind == "not_dicom":
            scan.not_dicom.append(path)
        else:
            scan.unreadable.append((path, header.reason))
    for (uid, reason), headers in skipped.items():
        scan.skipped.append(SkippedSeries(
            uid, headers[0].series_description, reason, tuple(h.path for h in headers)
        ))
    for uid, headers in images.items():
        first = headers[0]
        series = DicomSeries(
            series_instance_uid=uid,
            study_instance_uid=first.study_instance_uid,
            frame_of_reference_uid=first.frame_of_reference_uid,
            sop_class_uid=first.sop_class_uid,
            patient_id=first.patient_id,
            study_date=first.study_date,
            series_number=first.series_number,
            series_description=first.series_description,
            modality=first.modality,
            frames=tuple(frame for h in headers for frame in h.frames),
        )
        if check:
            try:
                verdict = check_series(series)
            except NimaskError as exc:  # pixels of duplicated positions unreadable
                verdict = SeriesCheck(action="refuse", reason=str(exc), flags=("unreadable",))
            series = replace(series, check=verdict)
        scan.series.append(series)
    scan.series.sort(key=lambda s: (
        s.patient_id, s.study_date,
        s.series_number if s.series_number is not None else -1, s.series_instance_uid,
    ))
    for note in scan.notes:
        logger.info("%s", note)
    return scan
