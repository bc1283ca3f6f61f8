"""One case, one result: read, mask and write one volume (:func:`process_file`).

:func:`process_file` is a top-level function that never raises for a bad
volume: it returns a :class:`~nimask.records.FileResult` whose ``status`` is
``"written"``, ``"skipped"`` (``skip_existing``: an up-to-date mask of the same
input content exists; its statistics are measured on it) or ``"failed"``.
It runs in-process, in local workers (:mod:`nimask.batch.pool`) or on any
executor (:mod:`nimask.batch.cluster`).  Its input is a
:class:`~nimask.records.Case` (any kind: a volume file in any format, a DICOM
series) or the path of a volume file.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .._version import __version__
from ..core.masking import MaskOutcome
from ..core.pipeline import compute_mask
from ..core.refine import refine_mask
from ..evidence.qc import case_label, render_case
from ..evidence.report import MaskStats, mask_statistics
from ..exceptions import NimaskError, OutputError, VolumeReadError
from ..io.discovery import as_case, mask_relpath
from ..io.formats import (
    geometry_difference,
    image_information,
    read_case,
    read_mask_input_token,
    read_provenance,
    read_seg_provenance,
    seg_path,
    sidecar_path,
    verify_mask_file,
    volume_format,
    write_case_mask,
    write_case_seg,
    write_sidecar,
)
from ..io.nifti import (
    IdentityJob,
    InputIdentity,
    input_identity,
    inspect_nifti,
    read_descrip,
    safe_text,
    unchanged_since,
    verify_payload,
)
from ..records import Case, FileResult
from .settings import MaskSettings, parse_provenance

__all__ = [
    "existing_mask_problem",
    "failed_result",
    "mask_path",
    "process_file",
    "qc_png_path",
    "reason",
    "seg_problem",
    "sidecar_fields",
]

_NIFTI = ("nii.gz", "nii")

logger = logging.getLogger(__name__)


def mask_path(case: Case, output_dir: str | os.PathLike[str], settings: MaskSettings) -> Path:
    """Where the mask of ``case`` goes: ``output_dir/<stem>_mask<extension>``."""
    return Path(output_dir) / mask_relpath(case, settings.output_format)


def sidecar_fields(case: Case, settings: MaskSettings,
                   input_token: str | None = None) -> dict[str, Any] | None:
    """The JSON sidecar of a case's mask, ``None`` when it gets none.

    A case with ``sidecar`` fields (BIDS, DICOM) and every MINC mask (MINC has no room
    for nimask's provenance) get one: the case's fields, then ``"nimask"``: version,
    provenance and parameters (only what the settings say, so a re-run writes the same
    bytes).  A MINC mask's block also holds ``"input"``: ``input_token``, the input's
    identity (other formats keep it in the mask itself).
    """
    minc = volume_format(mask_relpath(case, settings.output_format)) == "mnc"
    if case.sidecar is None and not minc:
        return None
    ref = settings.refinements
    block: dict[str, Any] = {
        "version": __version__,
        "provenance": settings.provenance(),
        "threshold_mode": settings.mode,
        "threshold": None if settings.threshold is None else list(settings.threshold),
        "closing_radius": settings.voxel_radius,
        "closing_radius_mm": settings.closing_radius_mm,
    }
    if ref.active:
        block.update(preset=ref.preset or None, fill_holes=ref.fill_holes,
                     largest_component=ref.largest_component,
                     opening_radius=ref.opening_text or None,
                     exclude_above_window=ref.exclude_above_window)
    if minc and input_token is not None:
        block["input"] = input_token
    return {**(case.sidecar or {}), "nimask": block}


def _provenance_problem(text: str, settings: MaskSettings, shown: str) -> str | None:
    """Why a mask's stored provenance ``text`` is not what ``settings`` make now, if so."""
    provenance = parse_provenance(text)
    if provenance is None:
        return f"existing file has no nimask provenance ({shown})"
    mismatch = settings.matches(provenance)
    return None if mismatch is None else f"existing mask {mismatch}"


def _newer_input(case: Case, out_path: Path) -> str | None:
    """Why ``out_path`` is older than one of the input's files (the DICOM SEG check), if so."""
    try:
        made = out_path.stat().st_mtime
        for path in case.files or (case.source,):
            if path.stat().st_mtime > made:
                return "input is newer than the existing mask"
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    return None


def _input_files(case: Case) -> tuple[Path, ...]:
    return tuple(case.files) or (case.source,)


def _identity_problem(case: Case, out_path: Path,
                      identity: InputIdentity | None) -> str | None:
    """Why the mask at ``out_path`` was not made from the input's current content, if so."""
    recorded = read_mask_input_token(out_path)
    if recorded is None:
        return ("existing mask does not record which input content it was made from "
                "(made by an older nimask)")
    try:
        current = identity or input_identity(_input_files(case))
    except NimaskError as exc:
        return f"input unreadable ({exc})"
    if recorded != current.token():
        return ("existing mask was made from another input content (size or SHA-256 "
                "hash differ: input renamed, swapped or changed)")
    return None


def existing_mask_problem(
    input_path: Path | Case, out_path: Path, settings: MaskSettings,
    identity: InputIdentity | None = None,
) -> str | None:
    """``None`` if ``out_path`` is an up-to-date mask of the input, else why not.

    Up to date means: a complete file (NIfTI: header valid, every voxel byte
    present; other formats: the whole file reads), uint8, on the input's grid
    (NIfTI of NIfTI: shape and affine; otherwise shape, origin, spacing and
    direction as SimpleITK reads them), with nimask provenance matching
    ``settings`` and the current version, made from an input with the same
    content: the size and SHA-256 hash of the input's files recorded in the mask
    (:func:`nimask.io.formats.read_mask_input_token`) equal those of the input now
    (``identity``, computed when not given).  So an input renamed, swapped or
    restored with its old modification time (``mv``, ``cp -p``, ``rsync -t``)
    gets its mask made again, and so does a mask made by an older nimask that
    did not record its input.
    """
    if not out_path.exists():
        return "no mask yet"
    case = as_case(input_path)
    if case.format not in _NIFTI or volume_format(out_path) not in _NIFTI:
        return _other_mask_problem(case, out_path, settings, identity)
    input_path = case.source
    try:
        mask_info = inspect_nifti(out_path)
        verify_payload(mask_info)
    except NimaskError as exc:
        return f"existing mask is not a complete NIfTI file ({exc})"
    descrip = read_descrip(out_path) or ""
    problem = _provenance_problem(descrip, settings, f"descrip {descrip!r}")
    if problem is not None:
        return problem
    if mask_info.header.get_data_dtype() != np.uint8:
        return f"existing mask has voxel type {mask_info.header.get_data_dtype()}, not uint8"
    try:
        input_info = inspect_nifti(input_path)
    except NimaskError as exc:
        return f"input header unreadable ({exc})"
    if mask_info.shape[:3] != input_info.shape[:3]:
        return f"existing mask has shape {list(mask_info.shape[:3])}, input has " \
               f"{list(input_info.shape[:3])}"
    if not np.allclose(mask_info.header.get_best_affine(),
                       input_info.header.get_best_affine(), rtol=0, atol=1e-6):
        return "existing mask has another affine than the input"
    return _identity_problem(case, out_path, identity)


def _other_mask_problem(case: Case, out_path: Path, settings: MaskSettings,
                        identity: InputIdentity | None) -> str | None:
    """:func:`existing_mask_problem` for a mask or an input that is not NIfTI."""
    text = read_provenance(out_path) or ""
    problem = _provenance_problem(text, settings, repr(text))
    if problem is not None:
        return problem
    try:
        if volume_format(out_path) in _NIFTI:
            info = inspect_nifti(out_path)
            verify_payload(info)
        else:
            verify_mask_file(out_path)
        mask = image_information(out_path)
    except NimaskError as exc:
        return f"existing mask is not a complete file ({exc})"
    if mask.pixel_id != sitk.sitkUInt8 or mask.components != 1:
        return "existing mask is not a uint8 volume"
    if case.kind == "file":
        try:
            volume = image_information(case.source)
        except NimaskError as exc:
            return f"input header unreadable ({exc})"
        problem = geometry_difference(
            mask, volume, float32=volume_format(out_path) in _NIFTI)
        if problem is not None:
            return f"existing mask has {problem}"
    return _identity_problem(case, out_path, identity)


def seg_problem(case: Case, out_path: Path, settings: MaskSettings) -> str | None:
    """``None`` if the DICOM SEG beside the mask ``out_path`` is up to date, else why not.

    Up to date: a SEG (headers read) referencing the case's series, with nimask's
    provenance (its algorithm parameter ``provenance``) matching ``settings`` and the
    current version, not older than any of the series' files.
    """
    path = seg_path(out_path)
    if not path.exists():
        return f"no DICOM SEG yet ({path.name})"
    text, series_uid = read_seg_provenance(path)
    if text is None:
        return f"existing {path.name} is not a DICOM SEG written by nimask"
    payload = case.payload
    expected = getattr(payload, "series_instance_uid", None)
    if expected is not None and series_uid != expected:
        return f"existing {path.name} references another series ({series_uid})"
    problem = _provenance_problem(text, settings, repr(text))
    if problem is not None:
        return problem.replace("existing mask", f"existing {path.name}", 1)
    return _newer_input(case, path)


def process_file(
    input_path: Path | Case,
    output_dir: Path,
    settings: MaskSettings,
    *,
    skip_existing: bool = False,
) -> FileResult:
    """Read, mask and write one volume; never raises for a bad volume.

    Parameters
    ----------
    input_path : Path or Case
        A :class:`~nimask.records.Case`, or the path of a volume file (its mask
        goes directly into ``output_dir``).
    output_dir : Path
        The mask goes to ``output_dir / mask_relpath(case, settings.output_format)``;
        its folder is created when the case's stem has one.
    settings : MaskSettings
    skip_existing : bool, default False
        Keep an up-to-date mask (see :func:`existing_mask_problem`) instead of
        computing it again: the result is then ``status="skipped"``, with the
        statistics measured on the kept mask (and its QC picture rendered from
        the mask and the input when ``settings.qc_dir`` is set).

    Returns
    -------
    FileResult
        ``status="written"`` with the threshold actually used,
        ``status="skipped"``, or ``status="failed"`` with a one-line reason;
        no output file is left for a failed volume (an existing mask of the
        same name is left as it was).  Any ``Exception`` raised while reading,
        masking or writing this file fails this file only (its type is named
        in the reason unless it is a :class:`~nimask.exceptions.NimaskError`);
        ``KeyboardInterrupt`` and ``SystemExit`` propagate.

    Notes
    -----
    The input's size and SHA-256 hash (of its files' bytes, read once before the
    volume) are recorded in the mask (a NIfTI extension, a NRRD/MetaImage key, or a
    MINC mask's sidecar) for ``skip_existing``.  A file changed while it is read
    fails the case.
    """
    start = time.perf_counter()
    case = as_case(input_path)
    out_path = mask_path(case, output_dir, settings)
    result = failed_result(case, output_dir, settings)
    seg = settings.output_format == "dicom-seg"
    if seg and case.kind != "dicom-series":
        result.error = (f"output_format 'dicom-seg' needs a DICOM series; this input is a "
                        f"{case.format} file (use another output_format for it)")
        result.seconds = time.perf_counter() - start
        return result
    seg_written: Path | None = None
    files = _input_files(case)
    hashing: IdentityJob | None = None
    try:
        hashing = IdentityJob(files)  # hashed beside the read, on another core
        if skip_existing:
            identity = hashing.result()
            problem = existing_mask_problem(case, out_path, settings, identity)
            if problem is None and seg:
                problem = seg_problem(case, out_path, settings)
            if problem is None:
                _keep_existing(result, case, out_path, settings,
                               sidecar_fields(case, settings, identity.token()))
                result.seconds = time.perf_counter() - start
                return result
            if problem != "no mask yet":
                result.notes.append(f"mask made again: {problem}")
        _make_folder(out_path.parent, Path(output_dir))
        loaded = read_case(case)
        result.notes.extend(loaded.notes)
        outcome = _compute(loaded.image, settings)
        result.notes.extend(outcome.notes)
        if outcome.nonfinite_voxels:
            result.notes.append(
                f"{outcome.nonfinite_voxels} NaN/Inf voxels set to background"
            )
        stats = mask_statistics(outcome.mask)
        identity = hashing.result()
        sidecar = sidecar_fields(case, settings, identity.token())
        if not unchanged_since(files, identity):
            raise VolumeReadError("the input file changed while it was being read (replaced "
                                  "or rewritten during the run)")
        if seg:
            # before the NIfTI mask: a complete mask means its SEG was written
            seg_written = write_case_seg(outcome.mask, case, seg_path(out_path),
                                         kind=settings.segment_kind,
                                         provenance=settings.provenance())
            logger.info("%s -> %s (DICOM SEG, %s)", case.display, seg_written.name,
                        settings.segment_kind)
        result.notes.extend(write_case_mask(outcome.mask, loaded, out_path,
                                            settings.provenance(), identity.token()))
        if sidecar is not None:
            write_sidecar(sidecar_path(out_path), sidecar)
        result.status = "written"
        result.output = str(out_path)
        result.threshold_low = outcome.lower
        result.threshold_high = outcome.upper
        result.otsu_threshold = outcome.otsu_threshold
        if settings.refinements.active:
            result.steps = "; ".join(outcome.steps)
            result.components_dropped = outcome.components_dropped
        if settings.refinements.skull_strip:
            result.brain_rim_percent = outcome.brain_rim_percent
        if settings.refinements.hu_check:
            result.hu_warning = outcome.hu_warning is not None
        _set_statistics(result, stats)
        if settings.qc_dir is not None:
            _render_qc(result, case, loaded.image, outcome.mask, stats.centroid_index,
                       settings)
    except Exception as exc:  # whatever goes wrong with one file fails that file only
        if not isinstance(exc, NimaskError):
            logger.debug("%s: unexpected error", result.input, exc_info=True)
        result.status = "failed"
        result.output = ""  # no mask was written for it (an existing one is left as it was)
        result.error = reason(exc)
        if seg_written is not None:
            seg_written.unlink(missing_ok=True)  # no SEG left for a failed case
    finally:
        if hashing is not None:
            hashing.join()  # no thread outlives the case
    result.seconds = time.perf_counter() - start
    return result


def _set_statistics(result: FileResult, stats: MaskStats) -> None:
    result.mask_voxels = stats.mask_voxels
    result.total_voxels = stats.total_voxels
    result.coverage_percent = stats.coverage_percent
    result.volume_ml = stats.volume_ml
    result.components = stats.components
    result.largest_component_share = stats.largest_component_share
    result.large_components = stats.large_components
    result.touches_border = stats.touches_border
    result.border_faces = list(stats.border_faces)


def _keep_existing(result: FileResult, case: Case, out_path: Path, settings: MaskSettings,
                   sidecar: dict[str, Any] | None) -> None:
    """Report an up-to-date mask as kept, with its statistics measured on the mask itself.

    The QC picture (when asked for) is rendered from the kept mask and the input.
    A failure here is a note: the mask is kept whatever happens.
    """
    result.status = "skipped"
    result.output = str(out_path)
    if settings.threshold is not None:
        result.threshold_low, result.threshold_high = settings.threshold
    if sidecar is not None:
        try:
            write_sidecar(sidecar_path(out_path), sidecar)
        except (NimaskError, OSError, ValueError) as exc:
            result.notes.append(f"sidecar not written: {reason(exc)}")
    try:
        mask = read_case(as_case(out_path)).image
        stats = mask_statistics(mask)
    except (NimaskError, RuntimeError, OSError, ValueError, MemoryError) as exc:
        result.notes.append(f"statistics of the kept mask not measured: {reason(exc)}")
        return
    _set_statistics(result, stats)
    if settings.qc_dir is None:
        return
    try:
        image = read_case(case).image
        mask.CopyInformation(image)
    except (NimaskError, RuntimeError, OSError, ValueError, MemoryError) as exc:
        result.notes.append(f"QC picture not written: input unreadable: {reason(exc)}")
        return
    _render_qc(result, case, image, mask, stats.centroid_index, settings)


def _make_folder(folder: Path, output_dir: Path) -> None:
    """Create a mirrored sub-folder of the output folder (nothing for a flat case)."""
    if folder == output_dir:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {folder}: {exc.strerror or exc}") from exc


def qc_png_path(case: Case, qc_dir: str | os.PathLike[str]) -> Path:
    """``<qc_dir>/<stem>_qc.png`` (``scan.nii.gz`` -> ``scan_qc.png``; trees mirrored)."""
    return Path(qc_dir) / (case.stem + "_qc.png")


def _render_qc(result: FileResult, case: Case, image: sitk.Image, mask: sitk.Image,
               centre: tuple[float, float, float] | None, settings: MaskSettings) -> None:
    """Write the case's QC picture; a failure is a note, never a failed mask."""
    qc_dir = Path(settings.qc_dir or ".")
    png = qc_png_path(case, qc_dir)
    provenance = settings.provenance()
    name = case.label or case.name
    caption = (f"{safe_text(name)}: coverage {result.coverage_percent:.2f} %, "
               f"{result.volume_ml:.1f} mL; {provenance}")
    settings_text = provenance.split(" ", 2)[-1]  # without "nimask <version>"
    label = replace(case_label(result, settings_text), name=safe_text(name))
    try:
        _make_folder(png.parent, qc_dir)
        render_case(image, mask, png, centroid_index=centre, caption=caption,
                    layout=settings.qc_layout, label=label)
    except (NimaskError, RuntimeError, OSError, ValueError, MemoryError) as exc:
        result.notes.append(f"QC picture not written: {reason(exc)}")
    else:
        result.qc_png = str(png)


def failed_result(
    input_path: Path | Case, output_dir: Path, settings: MaskSettings, error: str = ""
) -> FileResult:
    """The record of a case that failed (or has not succeeded yet) with ``settings``.

    ``output`` is empty: no mask is written for a failed case.  ``output_dir`` is
    kept in the signature for callers that pass it.
    """
    case = as_case(input_path)
    return FileResult(
        input=case.display,
        output="",
        status="failed",
        error=error,
        threshold_mode=settings.mode,
        closing_radius=settings.voxel_radius,
        closing_radius_mm=settings.closing_radius_mm,
        **_refinement_fields(settings),
    )


def _compute(image: sitk.Image, settings: MaskSettings) -> MaskOutcome:
    if settings.refinements.active:
        return refine_mask(image, settings.threshold, settings.closing_radius,
                           settings.refinements, closing_radius_mm=settings.closing_radius_mm)
    return compute_mask(image, settings.threshold, settings.closing_radius,
                        closing_radius_mm=settings.closing_radius_mm)


def _refinement_fields(settings: MaskSettings) -> dict[str, Any]:
    """Report fields describing the opt-in steps (empty for the default pipeline)."""
    ref = settings.refinements
    if not ref.active:
        return {}
    return {
        "preset": ref.preset,
        "fill_holes": ref.fill_holes,
        "largest_component": ref.largest_component,
        "exclude_above_window": ref.exclude_above_window,
        "opening_radius": ref.opening_text or "0",
    }


def reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, NimaskError):
        return text
    return f"{type(exc).__name__}: {text}"
