"""The dataset layer: discovery, naming, per-file results and batch execution.

One file is processed by :func:`process_file`, a top-level function that never
raises for a bad volume: it returns a :class:`FileResult` whose ``status`` is
``"written"``, ``"skipped"`` (``skip_existing``: an up-to-date mask exists) or
``"failed"``.  :func:`mask_dataset` runs it over a folder, in-process, in local
worker processes (:mod:`nimask.parallel`) or on any executor
(:mod:`nimask.distributed`), and returns the results in input order.
Parameters and provenance: :mod:`nimask.settings`.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from .exceptions import InputFolderError, NimaskError, OutputError, ParameterError
from .io import (
    TEMP_MARKER,
    cleanup_temporaries,
    inspect_nifti,
    read_descrip,
    read_volume,
    verify_payload,
    write_mask,
)
from .masking import MaskOutcome, compute_mask
from .parallel import itk_threads, run_pool, usable_cpus
from .qc import qc_png_name, render_case, write_index
from .refine import refine_mask
from .report import flag_cohort, mask_statistics, report_format, write_report
from .settings import PROVENANCE_PREFIX, MaskSettings, Provenance, parse_provenance

__all__ = [
    "PROVENANCE_PREFIX",
    "FileResult",
    "FolderScan",
    "MaskSettings",
    "Provenance",
    "find_inputs",
    "mask_dataset",
    "output_name",
    "parse_provenance",
    "process_file",
    "scan_folder",
    "usable_cpus",
]

logger = logging.getLogger(__name__)

NII_GZ = ".nii.gz"
MASK_SUFFIX = "_mask"
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

    @property
    def ok(self) -> bool:
        """True unless the file failed."""
        return self.status != "failed"

    def as_dict(self) -> dict[str, Any]:
        """Plain-data view (for CSV/JSON reports)."""
        return asdict(self)


def output_name(input_path: str | os.PathLike[str]) -> str:
    """``scan_001.nii.gz`` -> ``scan_001_mask.nii.gz`` (extension matched case-insensitively)."""
    name = Path(input_path).name
    if not name.lower().endswith(NII_GZ):
        raise ValueError(f"not a .nii.gz file name: {name!r}")
    return name[: -len(NII_GZ)] + MASK_SUFFIX + NII_GZ


@dataclass
class FolderScan:
    """The ``.nii.gz`` entries of an input folder: inputs, and those set aside.

    Attributes
    ----------
    inputs : list of Path
        Files to mask, sorted by name.
    ignored : list of (Path, str)
        Entries named ``*.nii.gz`` that are not inputs, with the reason:
        a directory, a macOS ``._*`` resource-fork file, or a mask written by
        nimask (``descrip`` starting with ``"nimask "``).  nimask's own
        temporary files are left out silently.
    """

    inputs: list[Path]
    ignored: list[tuple[Path, str]] = field(default_factory=list)


def scan_folder(nii_folder: str | os.PathLike[str]) -> FolderScan:
    """Sort the ``.nii.gz`` entries of ``nii_folder`` into inputs and ignored entries.

    The extension is matched case-insensitively.  Sub-folders are not entered;
    a broken symbolic link is kept as an input (it fails with a clear reason).

    Raises
    ------
    InputFolderError
        ``nii_folder`` does not exist, is not a folder, or cannot be listed.
    """
    folder = Path(nii_folder)
    if not folder.exists():
        raise InputFolderError(f"input folder does not exist: {folder}")
    if not folder.is_dir():
        raise InputFolderError(f"input path is not a folder: {folder}")
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise InputFolderError(
            f"cannot list input folder {folder}: {exc.strerror or exc}"
        ) from exc
    scan = FolderScan([])
    for entry in sorted(entries, key=lambda e: e.name):
        name = entry.name
        if not name.lower().endswith(NII_GZ) or TEMP_MARKER in name:
            continue
        path = Path(entry.path)
        if name.startswith("._"):
            scan.ignored.append((path, "macOS resource-fork file, not a volume"))
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            scan.ignored.append((path, "a directory, not a file"))
            continue
        descrip = read_descrip(path)
        if descrip is not None and descrip.startswith(PROVENANCE_PREFIX):
            scan.ignored.append((path, f"a mask written by nimask ({descrip!r}), not an input"))
            continue
        scan.inputs.append(path)
    return scan


def find_inputs(nii_folder: str | os.PathLike[str]) -> list[Path]:
    """The ``.nii.gz`` files directly inside ``nii_folder`` to mask, sorted by name.

    See :func:`scan_folder` for what is set aside (sub-folders, macOS ``._*``
    files, masks written by nimask, nimask's temporary files); each ignored
    entry is logged.

    Raises
    ------
    InputFolderError
        ``nii_folder`` does not exist, is not a folder, or holds no ``.nii.gz``
        input.
    """
    scan = scan_folder(nii_folder)
    for path, why in scan.ignored:
        level = logging.WARNING if "directory" in why else logging.INFO
        logger.log(level, "ignoring %s: %s", path.name, why)
    if not scan.inputs:
        extra = f" ({len(scan.ignored)} .nii.gz entries ignored)" if scan.ignored else ""
        raise InputFolderError(f"no .nii.gz files in input folder: {nii_folder}{extra}")
    return scan.inputs


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
        result.error = _reason(exc)
    result.seconds = time.perf_counter() - start
    return result


def _render_qc(result: FileResult, image: sitk.Image, mask: sitk.Image,
               centre: tuple[float, float, float], settings: MaskSettings) -> None:
    """Write the case's QC picture; a failure is a note, never a failed mask."""
    png = Path(settings.qc_dir or ".") / qc_png_name(result.input)
    caption = (f"{Path(result.input).name}: coverage {result.coverage_percent:.2f} %, "
               f"{result.volume_ml:.1f} mL; {settings.provenance()}")
    try:
        render_case(image, mask, png, centroid_index=centre, caption=caption)
    except (NimaskError, RuntimeError, OSError, ValueError, MemoryError) as exc:
        result.notes.append(f"QC picture not written: {_reason(exc)}")
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


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, NimaskError):
        return text
    return f"{type(exc).__name__}: {text}"


def _log_result(res: FileResult) -> None:
    name = Path(res.input).name
    for note in res.notes:
        logger.warning("%s: %s", name, note)
    if res.status == "failed":
        logger.error("%s: %s", name, res.error)
    elif res.status == "skipped":
        logger.info("%s: up-to-date mask %s kept", name, Path(res.output).name)
    else:
        logger.info("%s -> %s (%s)", name, Path(res.output).name, res.status)


def mask_dataset(
    nii_folder: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    threshold: tuple[float, float] | None = None,
    closing_radius: int = 3,
    *,
    workers: int | None = None,
    progress: bool | None = None,
    report: str | os.PathLike[str] | None = None,
    qc_dir: str | os.PathLike[str] | None = None,
    skip_existing: bool = False,
    closing_radius_mm: float | None = None,
    preset: str | None = None,
    fill_holes: bool | str | None = None,
    largest_component: bool | None = None,
    opening_radius: int | str | None = None,
    exclude_above_window: bool | None = None,
    executor: Executor | None = None,
) -> list[FileResult]:
    """Mask every ``.nii.gz`` volume of a folder and return one result per file.

    This is the richer counterpart of
    :func:`nimask.generate_brain_mask_dataset`: same parameters and outputs,
    plus per-file :class:`FileResult` records.

    Parameters
    ----------
    nii_folder : str or os.PathLike
        Folder whose ``.nii.gz`` files (not sub-folders) are masked.
    output_path : str or os.PathLike
        Folder for ``<prefix>_mask.nii.gz``; created with its parents if missing.
    threshold : (low, high) or None, default None
        Inclusive intensity window, or ``None`` for Otsu.
    closing_radius : int, default 3
        Ball radius (voxels) of the morphological closing; 0 disables it.
    workers : int or None, default None
        Worker processes; ``None`` uses every usable CPU (CPU affinity and
        cgroup quota respected), ``1`` runs in-process.  Each worker holds one
        volume at a time and runs ITK with ``usable CPUs // workers`` threads.
        Outputs, result order and progress do not depend on it.
    progress : bool or None, default None
        Show a tqdm bar on stderr; ``None`` shows it only on a terminal.
    report : str, os.PathLike or None, default None
        Write one record per file to this ``.csv`` or ``.json`` file (format
        chosen by the suffix; written atomically, parent folders created).
        Columns and flags: :mod:`nimask.report`.
    qc_dir : str, os.PathLike or None, default None
        Write one QC picture per case (``<prefix>_qc.png``, rendered in the
        worker from the volume already in memory) and ``index.html`` into this
        folder.  See :mod:`nimask.qc`.
    skip_existing : bool, default False
        Keep masks that are complete and were made by this nimask version with
        the same ``threshold`` and ``closing_radius`` (read from their NIfTI
        ``descrip``), reporting them as ``"skipped"``; other masks are
        overwritten (the default, like nidataset, overwrites every mask).

    closing_radius_mm : float or None, default None
        When given, replaces ``closing_radius``: closing with a ball that is
        round in millimetres (per-axis radius ``closing_radius_mm / spacing``
        voxels, ITK's half-voxel rule; see :func:`nimask.masking.close_mask`).
    preset : str or None, default None
        A recipe of :mod:`nimask.presets` (``"ct-brain"``, ``"ct-head"``,
        ``"mri-head"``, ``"nidataset"``); explicit arguments override it.
    fill_holes : bool or {"off", "3d", "slices", "both"} or None, default None
        Hole filling (``True`` = ``"3d"``); ``None``: the preset's, else off.
    largest_component : bool or None, default None
        Keep the largest face-connected component; ``None``: the preset's, else off.
    opening_radius : int or str or None, default None
        Erosion/dilation pair around the largest-component step, voxels or
        ``"<R>mm"``; ``None``: the preset's, else none.
    exclude_above_window : bool or None, default None
        After the closing, remove voxels above the window's upper bound;
        ``None``: the preset's, else off.
    executor : concurrent.futures.Executor or None, default None
        Run one task per file on this executor instead of local processes, e.g.
        ``distributed.Client(address).get_executor()`` (see
        :mod:`nimask.distributed`).  Inputs and ``output_path`` must be on
        storage every worker sees; a worker that does not see them fails the
        file with the reason.  The executor's own workers set the parallelism:
        ``workers`` must then stay at its default.  The executor is not shut down.

    Returns
    -------
    list of FileResult
        In the sorted order of the inputs, with statistics and cohort
        ``flags`` (:func:`nimask.report.flag_cohort`).

    Notes
    -----
    Every mask is written to a temporary file in ``output_path`` and renamed:
    a mask file is either complete or absent.  Temporaries left by a killed
    run are removed when the next run starts.  Files in ``nii_folder`` are
    only read.  Files whose ``descrip`` starts with ``"nimask "`` are masks
    written by nimask and are never inputs.

    On Ctrl-C (``KeyboardInterrupt``) the workers are stopped, temporaries are
    removed, what was done is logged and ``KeyboardInterrupt`` is raised again.
    The logged count of masks written agrees with the output folder, also for
    a mask whose worker was stopped after writing it but before reporting it.

    Notes
    -----
    Each worker holds one volume at a time.  Its peak RSS is the interpreter
    with nimask imported (about 138 MB) plus about 7 to 11 bytes per voxel for
    float32 or int16 inputs (measured from ``VmHWM`` with
    ``benchmarks/bench.py``: 9.9 B/voxel on a 256^3 float32 volume, 10.7 on a
    256x256x108 int16 CT, 7.0 on a 512x512x300 int16 CT): the input image,
    the threshold and closed masks, the transient read buffer, and the
    connected-component labels of the report statistics.

    Raises
    ------
    ParameterError
        Invalid ``threshold``, ``closing_radius``, ``closing_radius_mm``,
        ``workers``, ``executor``, ``report`` suffix, preset or refinement
        values (before any work).
    InputFolderError
        ``nii_folder`` missing, not a folder, or without ``.nii.gz`` files.
    OutputError
        ``output_path``, ``qc_dir`` or the report's folder cannot be created
        or written (e.g. it is an existing file, or a read-only folder), or the
        report cannot be written.
    KeyboardInterrupt
        Re-raised after cleaning up when the run is interrupted.
    """
    settings = MaskSettings.create(
        threshold, closing_radius, closing_radius_mm, preset=preset, fill_holes=fill_holes,
        largest_component=largest_component, opening_radius=opening_radius,
        exclude_above_window=exclude_above_window,
    )
    n_workers = _validate_workers(workers)
    if not isinstance(skip_existing, bool):
        raise ParameterError(f"skip_existing must be True or False, got {skip_existing!r}")
    if report is not None:
        report_format(report)
    _validate_executor(executor, workers)
    inputs = find_inputs(nii_folder)
    out_dir = _prepare_output(output_path)
    removed = cleanup_temporaries(out_dir)
    if removed:
        logger.warning("removed %d temporary file(s) left in %s by an interrupted run",
                       removed, out_dir)
    if report is not None:
        _prepare_output(Path(report).parent)
    if qc_dir is not None:
        settings = replace(settings, qc_dir=str(_prepare_output(qc_dir)))
    results: list[FileResult | None] = [None] * len(inputs)
    # What each output was before the batch: on Ctrl-C, a mask whose result was
    # never reported is told apart from one left by an earlier run.
    outputs = [out_dir / output_name(path) for path in inputs]
    before = [_file_identity(path) for path in outputs]
    bar = tqdm(
        total=len(inputs), desc="nimask", unit="vol", file=sys.stderr,
        disable=None if progress is None else not progress, dynamic_ncols=True,
    )

    def on_done(index: int, res: FileResult) -> None:
        results[index] = res
        _log_result(res)
        bar.update(1)

    try:
        if executor is not None:
            from .distributed import run_on_executor  # imports this module

            run_on_executor(executor, inputs, out_dir, settings, on_done,
                            skip_existing=skip_existing)
        elif n_workers == 1 or len(inputs) == 1:
            with itk_threads(usable_cpus()):
                for i, path in enumerate(inputs):
                    on_done(i, process_file(path, out_dir, settings, skip_existing=skip_existing))
        else:
            run_pool(inputs, out_dir, settings, min(n_workers, len(inputs)), on_done,
                      skip_existing=skip_existing)
    except KeyboardInterrupt:
        bar.close()
        cleanup_temporaries(out_dir, include_own=True)
        done = [r for r in results if r is not None]
        # A worker stopped after renaming its mask into place but before its
        # result reached this process (or a result not handled yet) left a
        # complete mask: it counts as written.  Every worker has exited here.
        unreported = [
            i for i, res in enumerate(results)
            if res is None and _file_identity(outputs[i]) not in (None, before[i])
        ]
        for i in unreported:
            logger.info("%s -> %s (written; interrupted before its result was reported)",
                        inputs[i].name, outputs[i].name)
        logger.warning(
            "interrupted: %d written before interruption, %d skipped, %d failed, "
            "%d not processed; no partial mask left in %s",
            count_written(done) + len(unreported), sum(r.status == "skipped" for r in done),
            sum(r.status == "failed" for r in done),
            len(inputs) - len(done) - len(unreported), out_dir,
        )
        raise
    finally:
        bar.close()
    done = [r for r in results if r is not None]
    flag_cohort(done)
    if report is not None:
        write_report(done, report)
    if qc_dir is not None:
        write_index(done, qc_dir)
    return done


def _file_identity(path: Path) -> tuple[int, int, int, int] | None:
    """Device, inode, size and mtime of ``path``; ``None`` if it does not exist.

    A mask renamed into place has a new inode, so any write changes this.
    """
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _validate_workers(workers: object) -> int:
    if workers is None:
        return usable_cpus()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ParameterError(f"workers must be a positive integer or None, got {workers!r}")
    return workers


def _validate_executor(executor: object, workers: object) -> None:
    if executor is None:
        return
    if not isinstance(executor, Executor):
        raise ParameterError(
            f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}"
        )
    if workers not in (1, None):
        raise ParameterError(
            f"workers={workers!r} conflicts with executor: the executor's workers run the "
            "tasks; leave workers at its default"
        )


def _prepare_output(output_path: str | os.PathLike[str]) -> Path:
    out_dir = Path(output_path)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"output path exists and is not a folder: {out_dir}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from exc
    # Probe with a real file: os.access() is wrong for root, ACLs and read-only mounts.
    try:
        fd, probe = tempfile.mkstemp(prefix=f".probe{TEMP_MARKER}{os.getpid()}-", dir=out_dir)
    except OSError as exc:
        raise OutputError(
            f"output folder is not writable: {out_dir}: {exc.strerror or exc}"
        ) from exc
    os.close(fd)
    os.unlink(probe)
    return out_dir


def count_written(results: Iterable[FileResult]) -> int:
    """Number of masks written in a batch."""
    return sum(1 for r in results if r.status == "written")
