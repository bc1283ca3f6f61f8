"""The batch run: find the inputs, mask each one, report, return the results.

:func:`mask_dataset` runs :func:`nimask.batch.case.process_file` over a folder
(or files, lists of both, nested trees: :func:`nimask.io.discovery.discover`),
in-process, in local worker processes (:mod:`nimask.batch.pool`) or on any
executor (:mod:`nimask.batch.cluster`), and returns the results in input
order (then one ``"ignored"`` record per entry set aside), with cohort flags,
the report and the QC index (:mod:`nimask.evidence`).  Parameters and provenance:
:mod:`nimask.batch.settings`.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import replace
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..evidence.qc import update_picture_flags, validate_layout, write_index
from ..evidence.ratings import Rating, read_ratings
from ..evidence.report import flag_cohort, report_format, write_report
from ..exceptions import NimaskError, OutputError, ParameterError, ReportError
from ..io.discovery import (
    DEFAULT_PATTERN,
    Discovery,
    discover,
    ignored_label,
    mask_relpath,
    output_problems,
)
from ..io.formats import (
    image_information,
    import_seg_writer,
    read_seg_provenance,
    seg_path,
    validate_output_format,
)
from ..io.nifti import TEMP_MARKER, as_path, cleanup_temporaries, inspect_nifti, safe_text
from ..io.tempfiles import Run, enter_run, leave_run, new_run_id, owner_tag
from ..records import Case, FileResult
from . import case
from .cluster import run_on_executor
from .pool import itk_threads, run_pool, usable_cpus
from .settings import MaskSettings

__all__ = ["InputSpec", "count_written", "mask_dataset"]

logger = logging.getLogger(__name__)

#: What ``mask_dataset`` takes as its inputs: a folder, a volume file, or several.
InputSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


class _Bar(tqdm):
    """tqdm without its monitor thread: with no other thread running, worker
    processes can be forked (milliseconds) instead of started afresh (~0.3 s).
    Its lock is a thread lock: tqdm's default also makes a multiprocessing lock,
    which under the spawn and forkserver start methods starts a resource tracker
    process (workers never draw bars)."""

    monitor_interval = 0
    _lock = threading.RLock()


#: How every failed file's log line starts after its name.
FAILED_LINE = "failed, no mask written:"


def _log_ignored(found: Discovery) -> None:
    """Every entry set aside, as a warning (shown at Python's default log level)."""
    for path, why in found.ignored:
        logger.warning("ignoring %s: %s", safe_text(ignored_label(path, found.roots)),
                       safe_text(why))


def _log_result(res: FileResult, name: str | None = None) -> None:
    """One line per note (warning), then the outcome: ``<name>: failed, no mask written: <why>``."""
    name = safe_text(name or Path(res.input).name)
    for note in res.notes:
        logger.warning("%s: %s", name, safe_text(note))
    if res.status == "failed":
        logger.error("%s: %s %s", name, FAILED_LINE, safe_text(res.error))
    elif res.status == "skipped":
        logger.info("%s: up-to-date mask %s kept", name, safe_text(Path(res.output).name))
    else:
        logger.info("%s -> %s (%s)", name, safe_text(Path(res.output).name), res.status)


def mask_dataset(
    nii_folder: InputSpec,
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
    qc_layout: str = "mid",
    only: Iterable[str | os.PathLike[str]] | None = None,
    ratings: str | os.PathLike[str] | Mapping[str, Rating] | None = None,
    pattern: str = DEFAULT_PATTERN,
    recursive: bool = False,
    output_format: str = "nii.gz",
    cases: Sequence[Case] | None = None,
    dicom: bool = False,
) -> list[FileResult]:
    """Mask every ``.nii.gz`` volume of a folder and return one result per file.

    This is the richer counterpart of
    :func:`nimask.generate_brain_mask_dataset`: same parameters and outputs,
    plus per-file :class:`FileResult` records.  It also takes single files,
    lists, nested trees and every volume format of :mod:`nimask.io.formats`
    (``pattern``, ``recursive``, ``output_format``; guide: ``docs/cohorts.md``).

    Parameters
    ----------
    nii_folder : str, os.PathLike, or a sequence of them
        Folder whose ``.nii.gz`` files (not sub-folders) are masked; or a volume
        file; or a list of folders and files (each folder's tree is mirrored
        directly into ``output_path``, each file's mask goes to its top).
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
        Columns and flags: :mod:`nimask.evidence.report`.
    qc_dir : str, os.PathLike or None, default None
        Write one QC picture per case (``<prefix>_qc.png``, rendered in the
        worker from the volume already in memory) and ``index.html`` into this
        folder.  See :mod:`nimask.evidence.qc`.
    skip_existing : bool, default False
        Keep masks that are complete, were made by this nimask version with
        the same parameters (read from their NIfTI ``descrip``) and from the
        same input content (size and SHA-256 hash of the input's files,
        recorded in the mask), reporting them as ``"skipped"`` with statistics,
        flags and QC picture made from the kept mask; other masks are made
        again (the default, like nidataset, overwrites every mask).

    closing_radius_mm : float or None, default None
        When given, replaces ``closing_radius``: closing with a ball that is
        round in millimetres (per-axis radius ``closing_radius_mm / spacing``
        voxels, ITK's half-voxel rule; see :func:`nimask.core.masking.close_mask`).
    preset : str or None, default None
        A recipe of :mod:`nimask.core.presets` (``"ct-brain"``, ``"ct-head"``,
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
        :mod:`nimask.batch.cluster`).  Inputs and ``output_path`` must be on
        storage every worker sees; a worker that does not see them fails the
        file with the reason.  The executor's own workers set the parallelism:
        ``workers`` must then stay at its default.  The executor is not shut down.
    qc_layout : {"mid", "mosaic"}, default "mid"
        QC pictures with three mid-slices, or three rows of slices spread over
        the mask's extent (:mod:`nimask.evidence.qc_picture`).
    only : iterable of str or os.PathLike, or None, default None
        Run only these inputs of ``nii_folder``, given by path or file name,
        e.g. the cases a reviewer rated ``bad``
        (:func:`nimask.evidence.ratings.rated_inputs`).  ``None`` runs them all.
        An entry names the input shown in the report, or the input whose path
        relative to its input folder ends the entry (so a ratings file still
        applies after the data moved), or, only when that is unambiguous, the
        input with its file name; an entry naming two inputs (``scan.nii.gz`` in
        two sub-folders) is refused.
    ratings : str, os.PathLike, mapping or None, default None
        Earlier verdicts on these cases: a ``ratings.csv`` exported by the QC
        page, or ``{input: Rating}``
        (:func:`nimask.evidence.ratings.read_ratings`), matched to the cases as
        ``only`` entries are (a rating naming several cases is shown on none;
        the last row wins for a case rated twice).  Each result gets its
        case's ``earlier_rating``, ``earlier_note`` and ``earlier_reviewer``,
        shown in the report and on the QC page.
    pattern : str, default ``"*.nii.gz"``
        Glob selecting the inputs in folders, matched case-insensitively against
        file names, or against relative paths when it holds ``/`` or ``**``
        (which also recurses).  See :func:`nimask.io.discovery.discover`.
    recursive : bool, default False
        Search sub-folders too; the output tree mirrors the input's relative
        paths (``in/a/scan.nii.gz`` -> ``out/a/scan_mask.nii.gz``).
    output_format : {"nii.gz", "same", "nrrd", "mha", "nii", "dicom-seg"}, default "nii.gz"
        Format of the masks: ``"same"`` writes each mask in its input's format
        (``.nhdr``/``.mhd`` inputs give attached ``.nrrd``/``.mha`` masks).
        ``"dicom-seg"`` (DICOM series only, needs ``nimask[dicom]``): each series'
        NIfTI mask and JSON sidecar as usual, plus ``<stem>_seg.dcm``, a DICOM
        Segmentation over the series' images (segment "Brain" for the ``ct-brain``
        and ``mri-brain`` presets, else "Head"); a non-DICOM input fails with a
        reason, and a run with no DICOM input at all is refused (docs/dicom.md).
    cases : sequence of Case or None, default None
        Already discovered cases (e.g. of a BIDS dataset, :mod:`nimask.io.bids`);
        ``nii_folder`` then only names the input folders (files there that nimask
        did not write are never replaced) and ``pattern``/``recursive`` are unused.
    dicom : bool, default False
        The input folders hold DICOM exports: each image series (searched
        recursively, :func:`nimask.io.discovery.discover_dicom`) is one case, read
        by :mod:`nimask.io.dicom`; its mask is
        ``<PatientID>_<StudyDate>_<SeriesNumber>_<SeriesDescription>_mask.nii.gz``
        with a JSON sidecar (study and series UIDs, description, file count,
        parameters).  A refused series fails with its check's reason.

    Returns
    -------
    list of FileResult
        In the sorted order of the inputs, with statistics and cohort
        ``flags`` (:func:`nimask.evidence.report.flag_cohort`), then one record
        with ``status="ignored"`` and the reason in ``notes`` per entry set
        aside (:func:`nimask.io.discovery.discover`; each is also logged as a
        warning).

    Notes
    -----
    Before any mask is computed: every case's header is read to check the
    closing/opening ball against the volume
    (:meth:`nimask.batch.settings.MaskSettings.radius_problem`); the report's
    folder, the QC folder and the output folder are checked (in that order,
    each created if missing); and the cases of
    :func:`nimask.io.discovery.output_problems` fail with their reason.  Every
    failure is logged as ``<name>: failed, no mask written: <reason>``.

    Every mask is written to a temporary file in ``output_path`` and renamed:
    a mask file is either complete or absent.  Temporaries left by a killed
    run are removed when the next run starts.  Files in ``nii_folder`` are
    only read.  Files whose ``descrip`` starts with ``"nimask "`` are masks
    written by nimask and are never inputs.

    On Ctrl-C (``KeyboardInterrupt``) the workers are stopped, temporaries are
    removed, what was done is logged and ``KeyboardInterrupt`` is raised again.
    The logged count of masks written agrees with the output folder, also for
    a mask whose worker was stopped after writing it but before reporting it.

    Each worker holds one volume at a time.  Its peak RSS is the interpreter
    with nimask imported (about 157 MB) plus about 5 to 7.5 bytes per voxel for
    float32 or int16 inputs (measured from ``VmHWM`` with
    ``benchmarks/bench.py``: 7.3 B/voxel on a 256^3 float32 volume, 6.1 on a
    256x256x108 int16 CT, 4.9 on a 512x512x300 int16 CT): the input image,
    the threshold and closed masks, and temporaries bounded to blocks of
    1 Mi voxels (per thread).

    Raises
    ------
    ParameterError
        Invalid ``threshold``, ``closing_radius``, ``closing_radius_mm``,
        ``workers``, ``executor``, ``report`` suffix, preset or refinement
        values, ``qc_layout``, an ``only`` that names no input or a file that
        is not among the inputs, an unreadable ``ratings`` file, a path that
        is not a str or os.PathLike[str] (e.g. bytes), or a closing/opening
        ball larger than every input volume (before any work).
    InputFolderError
        ``nii_folder`` missing, not a folder, or without ``.nii.gz`` files
        (without volumes matching ``pattern``).
    OutputError
        ``output_path``, ``qc_dir`` or the report's folder cannot be created
        or written (e.g. it is an existing file, or a read-only folder), or
        the report path is an existing folder (before any work).
    ReportError
        An :class:`OutputError` raised after every mask was written: the
        report or the QC page could not be written (e.g. disk full); its
        ``results`` holds the records.
    KeyboardInterrupt
        Re-raised after cleaning up when the run is interrupted.
    """
    nii_folder = _input_paths(nii_folder)
    output_path = as_path(output_path, "output_path")
    if report is not None:
        report = as_path(report, "report")
    if qc_dir is not None:
        qc_dir = as_path(qc_dir, "qc_dir")
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
    settings = replace(settings, qc_layout=validate_layout(qc_layout))
    earlier = _earlier_ratings(ratings)
    fmt = validate_output_format(output_format)
    settings = replace(settings, output_format=fmt)
    skip = [Path(output_path)] + ([Path(qc_dir)] if qc_dir is not None else [])
    if cases is None:
        found = discover(nii_folder, pattern=pattern, recursive=recursive, exclude=skip,
                         dicom=dicom)
    else:
        roots = [Path(nii_folder)] if isinstance(nii_folder, (str, os.PathLike)) else [
            Path(p) for p in nii_folder]
        found = Discovery(list(cases), roots=roots)
    inputs = found.cases
    if only is not None:
        inputs = _select_inputs(inputs, only, nii_folder)
    if fmt == "dicom-seg":
        _check_seg_inputs(inputs)
    too_large = _radius_problems(inputs, settings)
    if report is not None and Path(report).is_dir():
        raise OutputError(f"report path is an existing folder: {report}")
    # Every folder is checked (and created) before any mask is computed; the
    # report's and the QC pictures' first, so that a bad one creates nothing else.
    if report is not None:
        _prepare_output(Path(report).parent, "report folder")
    if qc_dir is not None:
        settings = replace(settings, qc_dir=str(_prepare_output(qc_dir, "QC folder")))
    out_dir = _prepare_output(output_path)
    removed = cleanup_temporaries(out_dir)
    if removed:
        logger.warning("removed %d temporary file(s) left in %s by an interrupted run",
                       removed, out_dir)
    _log_ignored(found)
    results: list[FileResult | None] = [None] * len(inputs)
    labels = [c.label or c.name for c in inputs]
    problems = output_problems(inputs, out_dir, fmt, roots=found.roots)
    if fmt == "dicom-seg":
        problems = {**_seg_problems(inputs, out_dir), **problems}
    for i, why in {**too_large, **problems}.items():
        results[i] = case.failed_result(inputs[i], out_dir, settings, why)
        _log_result(results[i], labels[i])  # type: ignore[arg-type]
    todo = [i for i, res in enumerate(results) if res is None]
    todo_cases = [inputs[i] for i in todo]
    # What each output was before the batch: on Ctrl-C, a mask whose result was
    # never reported is told apart from one left by an earlier run.
    outputs = [out_dir / mask_relpath(c, fmt) for c in inputs]
    before = [_file_identity(path) for path in outputs]
    folders = sorted({p.parent for p in outputs} - {out_dir})
    for folder in folders:
        cleanup_temporaries(folder)
    bar = _Bar(
        total=len(todo), desc="nimask", unit="vol", file=sys.stderr,
        disable=None if progress is None else not progress, dynamic_ncols=True,
    )

    def on_done(index: int, res: FileResult) -> None:
        results[todo[index]] = res
        _log_result(res, labels[todo[index]])
        bar.update(1)

    # Temporaries of this run carry its id; worker processes and tasks work for it.
    run = Run(new_run_id())
    run_token = enter_run(run)
    try:
        if not todo_cases:
            pass
        elif executor is not None:
            run_on_executor(executor, todo_cases, out_dir, settings, on_done,
                            skip_existing=skip_existing)
        elif n_workers == 1 or len(todo_cases) == 1:
            with itk_threads(usable_cpus()):
                for i, item in enumerate(todo_cases):
                    on_done(i, case.process_file(item, out_dir, settings,
                                                  skip_existing=skip_existing))
        else:
            run_pool(todo_cases, out_dir, settings, min(n_workers, len(todo_cases)), on_done,
                     skip_existing=skip_existing)
    except KeyboardInterrupt:
        bar.close()
        for folder in [out_dir, *folders]:
            cleanup_temporaries(folder, run=run.id)
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
                        safe_text(labels[i]), safe_text(outputs[i].name))
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
        leave_run(run_token)
    done = [r for r in results if r is not None]
    flag_cohort(done)
    _attach_ratings(inputs, results, earlier)
    if qc_dir is not None:
        update_picture_flags(done)
    ignored = [_ignored_result(path, why) for path, why in found.ignored]
    rows = [*done, *ignored]
    if report is not None:
        try:
            write_report(rows, report)
        except (OutputError, OSError) as exc:
            raise ReportError(_late_failure(rows, "report", exc), rows) from exc
    if qc_dir is not None:
        try:
            write_index(rows, qc_dir,
                        labels=[labels[i] for i, r in enumerate(results) if r is not None]
                        + [ignored_label(path, found.roots) for path, _ in found.ignored])
        except (OutputError, OSError) as exc:
            raise ReportError(_late_failure(rows, "QC page", exc), rows) from exc
    return rows


def _ignored_result(path: Path, why: str) -> FileResult:
    """The record of an entry set aside (``status="ignored"``, the reason in ``notes``)."""
    return FileResult(input=str(path), output="", status="ignored", notes=[why])


def _late_failure(rows: Sequence[FileResult], what: str, exc: BaseException) -> str:
    written = count_written(rows)
    return (f"{written} mask{'' if written == 1 else 's'} written, but the {what} could "
            f"not be written: {case.reason(exc)}")


def _case_grid(item: Case) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
    """A case's grid size and spacing from its header only; ``None`` when unknown."""
    try:
        if item.kind == "dicom-series":
            frames: Sequence[Any] = getattr(item.payload, "frames", ())
            check = getattr(item.payload, "check", None)
            first = frames[0]
            rows, cols = first.pixel_spacing or (1.0, 1.0)
            step = getattr(check, "step", 0.0) or first.slice_thickness or 1.0
            return (first.columns, first.rows, len(frames)), (cols, rows, abs(step))
        if item.format in ("nii.gz", "nii"):
            info = inspect_nifti(item.source)
            return info.shape[:3], tuple(float(z) for z in info.header.get_zooms()[:3])
        grid = image_information(item.source)
        return grid.size, grid.spacing
    except (NimaskError, OSError, ValueError, IndexError, AttributeError, TypeError):
        return None  # the case fails later with its own reason


def _radius_problems(inputs: Sequence[Case], settings: MaskSettings) -> dict[int, str]:
    """Cases whose header shows a volume too small for the ball (before any work).

    Raises :class:`ParameterError` when no case can take the radius; returns the
    cases that cannot (they fail alone) otherwise.  See
    :meth:`nimask.batch.settings.MaskSettings.radius_problem` for the bound.
    """
    problems: dict[int, str] = {}
    checked = 0
    for i, item in enumerate(inputs):
        grid = _case_grid(item)
        if grid is None:
            continue
        checked += 1
        problem = settings.radius_problem(*grid)
        if problem is not None:
            problems[i] = problem
    if problems and len(problems) == checked:
        first = next(iter(problems))
        name = inputs[first].label or inputs[first].name
        raise ParameterError(
            f"{problems[first]} (every input is too small for it; first: {safe_text(name)})")
    return problems


def _parts(text: str) -> tuple[str, ...]:
    # a path written on Windows still gives its parts
    return tuple(p for p in text.replace("\\", "/").split("/") if p not in ("", "."))


class _InputMatcher:
    """Which cases an ``only=`` entry or a rating's ``input`` names.

    In order: the input exactly as the report shows it (:attr:`Case.display`) or the same
    file; else the cases whose path relative to their input folder (:attr:`Case.label`)
    ends the entry (``/old/mount/a/scan.nii.gz`` names ``a/scan.nii.gz``; the longest
    such path wins); else, only as a fallback, the cases with the entry's file name.  In
    a nested tree two ``scan.nii.gz`` are thus told apart by their relative paths, and a
    bare ``scan.nii.gz`` names both (ambiguous).
    """

    def __init__(self, cases: Sequence[Case]) -> None:
        self.cases = cases
        self.display: dict[str, list[int]] = {}
        self.path: dict[str, list[int]] = {}
        self.name: dict[str, list[int]] = {}
        for i, c in enumerate(cases):
            self.display.setdefault(c.display, []).append(i)
            if c.kind == "file":
                self.path.setdefault(self._key(c.source), []).append(i)
            self.name.setdefault(c.name, []).append(i)
        self.labels = [_parts(c.label or c.name) for c in cases]

    @staticmethod
    def _key(path: str | os.PathLike[str]) -> str:
        return os.path.normcase(os.path.abspath(path))

    def match(self, entry: str) -> list[int]:
        """Indices of the cases ``entry`` names: none, one, or several (ambiguous)."""
        if entry in self.display:
            return self.display[entry]
        if "\\" not in entry and self._key(entry) in self.path:
            return self.path[self._key(entry)]
        parts = _parts(entry)
        best: list[int] = []
        longest = 0
        for i, label in enumerate(self.labels):
            n = len(label)
            if 0 < n <= len(parts) and parts[-n:] == label:
                if n > longest:
                    best, longest = [i], n
                elif n == longest:
                    best.append(i)
        if best:
            return best
        return self.name.get(parts[-1], []) if parts else []


def _select_inputs(inputs: list[Case], only: Iterable[str | os.PathLike[str]],
                   nii_folder: object) -> list[Case]:
    """The inputs named in ``only`` (see :class:`_InputMatcher`), in input order."""
    if isinstance(only, (str, os.PathLike)):
        raise ParameterError("only must be a list of inputs (paths or file names), "
                             f"not one {type(only).__name__}")
    entries = [os.fspath(x) for x in only]
    if not entries:
        raise ParameterError("only= selects no input: nothing to run")
    matcher = _InputMatcher(inputs)
    chosen: set[int] = set()
    missing: list[str] = []
    for entry in entries:
        found = matcher.match(entry)
        if not found:
            missing.append(_parts(entry)[-1] if _parts(entry) else entry)
        elif len(found) > 1:
            names = ", ".join(inputs[i].label or inputs[i].display for i in found[:5])
            raise ParameterError(
                f"only= entry {entry!r} names {len(found)} inputs ({names}): give its path "
                "relative to the input folder")
        else:
            chosen.update(found)
    missing = sorted(set(missing))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")
        raise ParameterError(
            f"{len(missing)} selected input(s) not among the inputs of {nii_folder}: "
            f"{shown}"
        )
    selected = [c for i, c in enumerate(inputs) if i in chosen]
    logger.info("running %d of the %d inputs (only=)", len(selected), len(inputs))
    return selected


def _check_seg_inputs(inputs: Sequence[Case]) -> None:
    """Refuse ``output_format="dicom-seg"`` before any work when it cannot give a SEG.

    Non-DICOM inputs among DICOM series fail one by one (:func:`case.process_file`).
    """
    if inputs and not any(c.kind == "dicom-series" for c in inputs):
        raise ParameterError(
            "output_format 'dicom-seg' writes a DICOM SEG over a DICOM series, and no input "
            "is one (DICOM exports need dicom=True / --dicom)")
    import_seg_writer()


def _seg_problems(inputs: Sequence[Case], out_dir: Path) -> dict[int, str]:
    """DICOM series whose SEG would replace a file nimask did not write (e.g. a file of
    the export itself, when the output folder is the export): they fail before any work."""
    problems: dict[int, str] = {}
    files = {os.path.abspath(f) for c in inputs for f in c.files}
    for i, item in enumerate(inputs):
        if item.kind != "dicom-series":
            continue
        target = seg_path(out_dir / mask_relpath(item, "dicom-seg"))
        if not os.path.lexists(target):
            continue
        if os.path.abspath(target) in files or read_seg_provenance(target)[0] is None:
            problems[i] = (f"{target.name} already exists and is not a DICOM SEG written by "
                           "nimask: it is never replaced; move it, or write the masks to "
                           "another folder")
    return problems


def _earlier_ratings(
    ratings: str | os.PathLike[str] | Mapping[str, Rating] | None,
) -> Mapping[str, Rating]:
    if ratings is None:
        return {}
    if isinstance(ratings, (str, os.PathLike)):
        return read_ratings(ratings)
    if not isinstance(ratings, Mapping):
        raise ParameterError("ratings must be a ratings CSV path or a mapping of file name "
                             f"to Rating, got {type(ratings).__name__}")
    return ratings


def _attach_ratings(inputs: Sequence[Case], results: Sequence[FileResult | None],
                    earlier: Mapping[str, Rating]) -> None:
    """Give each result the earlier rating of its case (the last one, in the file's order).

    A rating is matched to its case as ``only=`` entries are (:class:`_InputMatcher`); one
    that names several cases (a bare file name in a nested tree) is given to none.
    """
    if not earlier:
        return
    matcher = _InputMatcher(inputs)
    for key, rating in earlier.items():
        found = matcher.match(rating.input or key)
        if len(found) > 1:
            logger.warning("earlier rating of %r not shown: it names %d inputs; rate by the "
                           "path relative to the input folder", rating.input or key, len(found))
            continue
        res = results[found[0]] if found else None
        if res is not None:
            res.earlier_rating = rating.rating
            res.earlier_note = rating.note
            res.earlier_reviewer = rating.reviewer


def _file_identity(path: Path) -> tuple[int, int, int, int] | None:
    """Device, inode, size and mtime of ``path``; ``None`` if it does not exist.

    A mask renamed into place has a new inode, so any write changes this.
    """
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _input_paths(value: Any) -> Any:
    """``nii_folder`` checked to be text paths (``ParameterError`` for bytes), else as given."""
    if isinstance(value, (str, bytes, os.PathLike)):
        as_path(value, "nii_folder")
        return value
    if isinstance(value, Iterable):
        items = list(value)
        for item in items:
            as_path(item, "each entry of nii_folder")
        return items
    as_path(value, "nii_folder")  # raises: not a path
    return value


def _validate_workers(workers: object) -> int:
    if workers is None:
        return usable_cpus()
    if isinstance(workers, (bool, np.bool_)) or not isinstance(workers, Integral) \
            or workers < 1:
        raise ParameterError(f"workers must be a positive integer or None, got {workers!r}")
    return int(workers)


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


def _prepare_output(output_path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create ``output_path`` if needed and check that a file can be written in it.

    ``what`` names the folder in the messages ("output folder", "report folder",
    "QC folder").
    """
    out_dir = Path(output_path)
    if out_dir.exists() and not out_dir.is_dir():
        path_word = what.replace(" folder", " path")
        raise OutputError(f"{path_word} exists and is not a folder: {out_dir}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {what} {out_dir}: {exc.strerror or exc}") from exc
    # Probe with a real file: os.access() is wrong for root, ACLs and read-only mounts.
    try:
        fd, probe = tempfile.mkstemp(prefix=f".probe{TEMP_MARKER}{owner_tag()}", dir=out_dir)
    except OSError as exc:
        raise OutputError(
            f"{what} is not writable: {out_dir}: {exc.strerror or exc}"
        ) from exc
    os.close(fd)
    os.unlink(probe)
    return out_dir


def count_written(results: Iterable[FileResult]) -> int:
    """Number of masks written in a batch."""
    return sum(1 for r in results if r.status == "written")
