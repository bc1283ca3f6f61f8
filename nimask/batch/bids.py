"""BIDS-App run: mask the anatomical images of a BIDS dataset into a derivatives dataset.

:func:`mask_bids` is ``nimask bids BIDS_DIR OUTPUT_DIR participant``: it finds the images
(:func:`nimask.io.bids.find_bids_anat`), writes ``OUTPUT_DIR/dataset_description.json``
(``DatasetType: "derivative"``, ``GeneratedBy``: nimask, its version and the command), runs
:func:`nimask.batch.run.mask_dataset` on the cases (masks
``sub-XX/[ses-YY/]anat/..._desc-<brain|head>_mask.nii.gz`` with a JSON sidecar each:
``Type``, ``Sources``, ``RawSources`` and nimask's parameters), and lists a report or QC
folder written inside ``OUTPUT_DIR`` in its ``.bidsignore``.

``desc-brain`` or ``desc-head``: a threshold mask of a head with skull is a head mask, so
every configuration is ``head`` except the presets that remove the skull: ``ct-brain``
(window 0..100 HU, opening, largest component, bone excluded) and ``mri-brain`` (classical
brain extraction, :mod:`nimask.core.skullstrip`) -- the same rule as the DICOM SEG's segment
(:attr:`MaskSettings.segment_kind`).  ``desc=`` overrides it (e.g. ``desc="brain"`` for
skull-stripped inputs).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._version import __version__
from ..exceptions import OutputError, ParameterError
from ..io.bids import BIDS_SUFFIXES, find_bids_anat
from ..io.discovery import ignored_label
from ..io.nifti import atomic_write
from ..records import FileResult
from .run import _prepare_output, mask_dataset
from .settings import MaskSettings

__all__ = ["BIDS_VERSION", "default_desc", "mask_bids"]

logger = logging.getLogger(__name__)

#: BIDS version the derivative dataset follows.
BIDS_VERSION = "1.10.0"
_PIPELINE = "nimask"


def default_desc(settings: MaskSettings) -> str:
    """``"brain"`` for the presets that remove the skull (``ct-brain``, ``mri-brain``),
    ``"head"`` for every other configuration."""
    return settings.segment_kind


def _description(bids_dir: Path, command: str | None) -> dict[str, Any]:
    text = "Brain/head threshold masks (SimpleITK)"
    if command:
        text += f"; command: {command}"
    raw = Path(os.path.abspath(bids_dir)).as_uri()
    return {
        "Name": "nimask masks",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": _PIPELINE, "Version": __version__, "Description": text}],
        "SourceDatasets": [{"URL": raw}],
        "DatasetLinks": {"raw": raw},
    }


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _check_description(path: Path) -> None:
    """Refuse to replace a ``dataset_description.json`` that nimask did not write."""
    if not os.path.lexists(path):
        return
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        names = [g.get("Name") for g in doc.get("GeneratedBy", [])]
    except (OSError, ValueError, AttributeError, TypeError):
        names = []
    if _PIPELINE not in names:
        raise OutputError(
            f"{path} exists and was not written by nimask: the output folder belongs to "
            "another dataset; choose another OUTPUT_DIR (e.g. BIDS_DIR/derivatives/nimask)")


def _bidsignore(output_dir: Path, paths: Iterable[Path]) -> None:
    """Add the report / QC paths that lie inside ``output_dir`` to its ``.bidsignore``."""
    root = Path(os.path.abspath(output_dir))
    lines = []
    for path in paths:
        absolute = Path(os.path.abspath(path))
        try:
            rel = absolute.relative_to(root).as_posix()
        except ValueError:
            continue
        lines.append(rel + ("/" if absolute.is_dir() else ""))
    if not lines:
        return
    target = output_dir / ".bidsignore"
    try:
        existing = target.read_text(encoding="utf-8").splitlines()
    except OSError:
        existing = []
    new = [line for line in lines if line not in existing]
    if new:
        text = "\n".join([*existing, *new]) + "\n"
        atomic_write(target, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def mask_bids(
    bids_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    analysis_level: str = "participant",
    *,
    participant_label: str | Iterable[str] | None = None,
    session_label: str | Iterable[str] | None = None,
    desc: str | None = None,
    suffixes: Iterable[str] = BIDS_SUFFIXES,
    command: str | None = None,
    threshold: tuple[float, float] | None = None,
    closing_radius: int = 3,
    report: str | os.PathLike[str] | None = None,
    qc_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> list[FileResult]:
    """Mask the anatomical images of a BIDS dataset into a BIDS derivatives dataset.

    Parameters
    ----------
    bids_dir : path
        Raw BIDS dataset (with ``dataset_description.json``); only read.
    output_dir : path
        The derivatives dataset (e.g. ``bids_dir/derivatives/nimask``); created if
        missing.  Must not be ``bids_dir`` itself.
    analysis_level : {"participant"}
        BIDS-Apps analysis level; nimask has nothing to do at group level.
    participant_label, session_label : label(s) or None
        Only these participants / sessions (``"01"`` or ``"sub-01"``).
    desc : str or None
        ``desc`` label of the masks; ``None``: :func:`default_desc` (``"brain"`` for
        the ``ct-brain`` and ``mri-brain`` presets, else ``"head"``).
    suffixes : iterable of str
        Anatomical suffixes to mask (default ``T1w``, ``T2w``, ``FLAIR``, ``CT``).
    command : str or None
        The command line, recorded in ``GeneratedBy[0].Description``.
    threshold, closing_radius, report, qc_dir, **options
        As :func:`nimask.mask_dataset` (``preset=``, ``skip_existing=``, ``workers=``,
        ...); the masks are always ``.nii.gz``.

    Returns
    -------
    list of FileResult

    Raises
    ------
    ParameterError
        Bad analysis level, labels or mask parameters.
    InputFolderError
        Not a BIDS dataset, unknown labels, no anatomical image.
    OutputError
        ``output_dir`` is ``bids_dir``, or holds a ``dataset_description.json`` that
        nimask did not write, or cannot be written.
    """
    if analysis_level != "participant":
        raise ParameterError(
            f"analysis level must be 'participant', got {analysis_level!r} (nimask has no "
            "group-level step)")
    for key in ("pattern", "recursive", "output_format", "cases"):
        if key in options:
            raise ParameterError(f"{key} is not an option of a BIDS run")
    settings = MaskSettings.create(
        threshold, closing_radius, options.get("closing_radius_mm"),
        preset=options.get("preset"), fill_holes=options.get("fill_holes"),
        largest_component=options.get("largest_component"),
        opening_radius=options.get("opening_radius"),
        exclude_above_window=options.get("exclude_above_window"))
    raw, out = Path(bids_dir), Path(output_dir)
    if out.exists() and raw.exists() and os.path.samefile(raw, out):
        raise OutputError("OUTPUT_DIR must not be BIDS_DIR: masks go to a derivatives "
                          "dataset, e.g. BIDS_DIR/derivatives/nimask")
    scan = find_bids_anat(raw, participant_label=participant_label,
                          session_label=session_label, desc=desc or default_desc(settings),
                          suffixes=tuple(suffixes))
    for path, why in scan.ignored:
        logger.warning("ignoring %s: %s", ignored_label(path, [raw]), why)
    description = out / "dataset_description.json"
    _check_description(description)
    _prepare_output(out)
    wanted = _description(raw, command)
    try:
        current = json.loads(description.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = None
    if current != wanted:
        _write_json(description, wanted)
    results = mask_dataset(raw, out, threshold, closing_radius, report=report, qc_dir=qc_dir,
                           cases=scan.cases, **options)
    _bidsignore(out, [Path(p) for p in (report, qc_dir) if p is not None])
    return results
