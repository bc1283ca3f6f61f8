"""One case, one result: read, mask and write one volume (:func:`process_file`).

:func:`process_file` is a top-level function that never raises for a bad
volume: it returns a :class:`~nimask.records.FileResult` whose ``status`` is
``"written"``, ``"skipped"`` (``skip_existing``: an up-to-date mask exists) or
``"failed"``.  It runs in-process, in local workers (:mod:`nimask.batch.pool`)
or on any executor (:mod:`nimask.batch.cluster`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..core.masking import MaskOutcome
from ..core.pipeline import compute_mask
from ..core.refine import refine_mask
from ..evidence.qc import case_label, qc_png_name, render_case
from ..evidence.report import mask_statistics
from ..exceptions import NimaskError
from ..io.discovery import output_name
from ..io.nifti import inspect_nifti, read_descrip, read_volume, verify_payload, write_mask
from ..records import FileResult
from .settings import MaskSettings, parse_provenance

__all__ = ["existing_mask_problem", "failed_result", "process_file", "reason"]


def existing_mask_problem(
    input_path: Path, out_path: Path, settings: MaskSettings
) -> str | None:
    """``None`` if ``out_path`` is an up-to-date mask of ``input_path``, else why not.

    Up to date means: a complete NIfTI-1 file (header valid, every voxel byte
    present), uint8, on the input's grid (shape and affine), with nimask
    provenance matching ``settings`` and the current version, and not older
    than the input.
    """
    if not out_path.exists():
        return "no mask yet"
    try:
        mask_info = inspect_nifti(out_path)
        verify_payload(mask_info)
    except NimaskError as exc:
        return f"existing mask is not a complete NIfTI file ({exc})"
    descrip = read_descrip(out_path) or ""
    provenance = parse_provenance(descrip)
    if provenance is None:
        return f"existing file has no nimask provenance (descrip {descrip!r})"
    mismatch = settings.matches(provenance)
    if mismatch is not None:
        return f"existing mask {mismatch}"
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
    try:
        if input_path.stat().st_mtime > out_path.stat().st_mtime:
            return "input is newer than the existing mask"
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    return None


def process_file(
    input_path: Path,
    output_dir: Path,
    settings: MaskSettings,
    *,
    skip_existing: bool = False,
) -> FileResult:
    """Read, mask and write one volume; never raises for a bad volume.

    Parameters
    ----------
    input_path : Path
    output_dir : Path
    settings : MaskSettings
    skip_existing : bool, default False
        Keep an up-to-date mask (see :func:`existing_mask_problem`) instead of
        computing it again: the result is then ``status="skipped"``.

    Returns
    -------
    FileResult
        ``status="written"`` with the threshold actually used,
        ``status="skipped"``, or ``status="failed"`` with a one-line reason;
        no output file is left for a failed volume (an existing mask of the
        same name is left as it was).
    """
    start = time.perf_counter()
    out_path = Path(output_dir) / output_name(input_path)
    result = failed_result(input_path, output_dir, settings)
    if skip_existing:
        problem = existing_mask_problem(Path(input_path), out_path, settings)
        if problem is None:
            result.status = "skipped"
            result.seconds = time.perf_counter() - start
            return result
        if problem != "no mask yet":
            result.notes.append(f"mask made again: {problem}")
    try:
        loaded = read_volume(input_path)
        result.notes.extend(loaded.notes)
        outcome = _compute(loaded.image, settings)
        result.notes.extend(outcome.notes)
        if outcome.nonfinite_voxels:
            result.notes.append(
                f"{outcome.nonfinite_voxels} NaN/Inf voxels set to background"
            )
        stats = mask_statistics(outcome.mask)
        write_mask(outcome.mask, loaded.info, out_path, settings.provenance())
        result.status = "written"
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
        result.mask_voxels = stats.mask_voxels
        result.total_voxels = stats.total_voxels
        result.coverage_percent = stats.coverage_percent
        result.volume_ml = stats.volume_ml
        result.components = stats.components
        result.largest_component_share = stats.largest_component_share
        result.large_components = stats.large_components
        result.touches_border = stats.touches_border
        result.border_faces = list(stats.border_faces)
        if settings.qc_dir is not None:
            _render_qc(result, loaded.image, outcome.mask, stats.centroid_index, settings)
    except (NimaskError, RuntimeError, OSError, ValueError, MemoryError) as exc:
        result.error = reason(exc)
    result.seconds = time.perf_counter() - start
    return result


def _render_qc(result: FileResult, image: sitk.Image, mask: sitk.Image,
               centre: tuple[float, float, float] | None, settings: MaskSettings) -> None:
    """Write the case's QC picture; a failure is a note, never a failed mask."""
    png = Path(settings.qc_dir or ".") / qc_png_name(result.input)
    provenance = settings.provenance()
    caption = (f"{Path(result.input).name}: coverage {result.coverage_percent:.2f} %, "
               f"{result.volume_ml:.1f} mL; {provenance}")
    settings_text = provenance.split(" ", 2)[-1]  # without "nimask <version>"
    try:
        render_case(image, mask, png, centroid_index=centre, caption=caption,
                    layout=settings.qc_layout, label=case_label(result, settings_text))
    except (NimaskError, RuntimeError, OSError, ValueError, MemoryError) as exc:
        result.notes.append(f"QC picture not written: {reason(exc)}")
    else:
        result.qc_png = str(png)


def failed_result(
    input_path: Path, output_dir: Path, settings: MaskSettings, error: str = ""
) -> FileResult:
    """The record of a file that failed (or has not succeeded yet) with ``settings``."""
    return FileResult(
        input=str(input_path),
        output=str(Path(output_dir) / output_name(input_path)),
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
