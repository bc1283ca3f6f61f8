"""The dataset layer: discovery, naming, per-file results and batch execution.

One file is processed by :func:`process_file`, a top-level function that never
raises for a bad volume: it returns a :class:`FileResult` whose ``status`` is
``"written"``, ``"skipped"`` (``skip_existing``: an up-to-date mask exists) or
``"failed"``.  :func:`mask_dataset` runs it over a folder, in-process or in
worker processes, and returns the results in input order.

Masks carry their provenance in the NIfTI ``descrip`` field
(``nimask <version> otsu r=<radius>`` or
``nimask <version> thr=<low>:<high> r=<radius>``).  It serves two purposes:
``skip_existing`` keeps a mask only when it was made by the same nimask version
with the same parameters, and a ``.nii.gz`` whose ``descrip`` starts with
``"nimask "`` is a mask nimask wrote, never an input (so that ``output_path``
may equal ``nii_folder`` without masking the masks on a re-run).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from ._version import __version__
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
from .masking import (
    MaskOutcome,
    compute_mask,
    validate_closing_radius,
    validate_closing_radius_mm,
)
from .presets import resolve
from .qc import qc_png_name, render_case, write_index
from .refine import Refinements, refine_mask
from .report import flag_cohort, mask_statistics, report_format, write_report

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
#: Start of the ``descrip`` field of every mask nimask writes.
PROVENANCE_PREFIX = "nimask "
_PROVENANCE_RE = re.compile(
    r"^nimask (?P<version>\S+) (?:otsu|nid-otsu|thr=(?P<low>[^:\s]+):(?P<high>\S+)) "
    r"r=(?:(?P<mm>[^\s]+)mm|(?P<radius>\d+))(?: \S+)*$"
)


@dataclass(frozen=True)
class Provenance:
    """How a mask was made, as parsed from its NIfTI ``descrip`` field."""

    version: str
    threshold: tuple[float, float] | None
    closing_radius: int | None
    closing_radius_mm: float | None = None
    #: The whole ``descrip`` text (steps and preset included).
    text: str = field(default="", compare=False)


def parse_provenance(descrip: str) -> Provenance | None:
    """Parse a mask's ``descrip`` text; ``None`` if it is not nimask's full format.

    Examples
    --------
    >>> parse_provenance("nimask 0.1.0 thr=-500:3000 r=3")
    Provenance(version='0.1.0', threshold=(-500.0, 3000.0), closing_radius=3)
    >>> parse_provenance("FSL5.0") is None
    True
    """
    text = descrip.strip()
    match = _PROVENANCE_RE.match(text)
    if match is None:
        return None
    threshold = None
    if match["low"] is not None:
        try:
            threshold = (float(match["low"]), float(match["high"]))
        except ValueError:
            return None
        if not all(math.isfinite(v) for v in threshold):
            return None
    if match["mm"] is not None:
        try:
            radius_mm = float(match["mm"])
        except ValueError:
            return None
        if not math.isfinite(radius_mm):
            return None
        return Provenance(match["version"], threshold, None, radius_mm, text)
    return Provenance(match["version"], threshold, int(match["radius"]), None, text)


@dataclass(frozen=True)
class MaskSettings:
    """Validated parameters shared by every file of a batch.

    ``closing_radius_mm``, when not ``None``, replaces ``closing_radius`` (a
    ball round in millimetres, see :func:`nimask.masking.close_mask`).

    ``threshold`` is the resolved window (a preset's window when the caller
    gave none) and ``refinements`` the resolved opt-in steps
    (:class:`~nimask.refine.Refinements`; all off by default).
    """

    threshold: tuple[float, float] | None = None
    closing_radius: int = 3
    closing_radius_mm: float | None = None
    refinements: Refinements = field(default_factory=Refinements)
    #: Folder for QC pictures (``None``: no picture), rendered next to the volume.
    qc_dir: str | None = None

    @classmethod
    def create(
        cls,
        threshold: object = None,
        closing_radius: object = 3,
        closing_radius_mm: object = None,
        *,
        preset: str | None = None,
        fill_holes: object = None,
        largest_component: object = None,
        opening_radius: object = None,
        exclude_above_window: object = None,
    ) -> MaskSettings:
        """Validate raw arguments and apply a preset (explicit arguments win).

        Raises :class:`~nimask.exceptions.ParameterError`; see
        :func:`nimask.presets.resolve` for the override rule.
        """
        radius = validate_closing_radius(closing_radius)
        radius_mm = validate_closing_radius_mm(closing_radius_mm)
        window, refinements = resolve(
            preset, threshold, fill_holes=fill_holes,
            largest_component=largest_component, opening_radius=opening_radius,
            exclude_above_window=exclude_above_window,
        )
        if radius_mm is not None and refinements.compat == "nidataset":
            raise ParameterError(
                "closing_radius_mm is not available with preset='nidataset', whose closing "
                "uses nidataset's own ball in voxels"
            )
        return cls(window, radius, radius_mm, refinements)

    @property
    def voxel_radius(self) -> int | None:
        """The closing radius in voxels, or ``None`` when it is given in mm."""
        return self.closing_radius if self.closing_radius_mm is None else None

    @property
    def mode(self) -> str:
        """``"otsu"``, ``"manual"`` or ``"nidataset-otsu"``."""
        if self.threshold is not None:
            return "manual"
        return "nidataset-otsu" if self.refinements.compat == "nidataset" else "otsu"

    def provenance(self) -> str:
        """Text stored in each mask's NIfTI ``descrip`` field (80 bytes with the NUL).

        ``nimask <version> <threshold> r=<closing>`` where the threshold is
        ``otsu``, ``nid-otsu`` or ``thr=<low>:<high>`` (each bound with 9
        significant digits when that gives back the exact float, else all the
        digits, so that :func:`parse_provenance` returns the exact floats) and
        the closing ``<voxels>`` or ``<R>mm``; then, for the opt-in steps,
        space-separated tokens in a fixed order: ``compat=nidataset``,
        ``open=<voxels>|<R>mm``, ``fill=3d|slices|both``, ``lcc``, ``xab``
        (exclude above window), ``preset=<name>``.  Tokens that do not fit in
        79 characters are dropped from the end (the preset name first); such a
        mask is still recognised as nimask's but never counts as up to date
        (:meth:`matches`).
        """
        tokens = self._provenance_tokens()
        text = " ".join(tokens[:3])[:79]
        for token in tokens[3:]:
            if len(text) + 1 + len(token) > 79:
                break
            text += " " + token
        return text

    def _full_provenance(self) -> str:
        return " ".join(self._provenance_tokens())

    def _provenance_tokens(self) -> list[str]:
        if self.threshold is not None:
            low, high = self.threshold
            how = f"thr={_exact(low)}:{_exact(high)}"
        elif self.refinements.compat == "nidataset":
            how = "nid-otsu"
        else:
            how = "otsu"
        if self.closing_radius_mm is None:
            radius = f"r={self.closing_radius}"
        else:
            radius = f"r={_exact(self.closing_radius_mm)}mm"
        return [f"{PROVENANCE_PREFIX}{__version__}", how, radius,
                *self.refinements.provenance_tokens()]

    def matches(self, provenance: Provenance) -> str | None:
        """``None`` if a mask with this provenance is what these settings make now.

        Otherwise a short reason.  The version must be the same: another
        nimask version may compute a different mask.
        """
        if provenance.version != __version__:
            return f"made by nimask {provenance.version}, this is {__version__}"
        if provenance.threshold != self.threshold:
            return (f"made with {_describe(provenance.threshold)}, "
                    f"now {_describe(self.threshold)}")
        if (provenance.closing_radius, provenance.closing_radius_mm) != (
            self.voxel_radius, self.closing_radius_mm
        ):
            made = _describe_radius(provenance.closing_radius, provenance.closing_radius_mm)
            now = _describe_radius(self.voxel_radius, self.closing_radius_mm)
            if made.split("=")[0] == now.split("=")[0]:
                now = now.split("=")[1]
            return f"made with {made}, now {now}"
        full = self._full_provenance()
        if len(full) > 79:
            return "these parameters do not fit in the provenance field: cannot compare"
        if provenance.text and provenance.text != full:
            return f"made with '{provenance.text}', now '{full}'"
        return None


def _exact(value: float) -> str:
    """Short text for ``value`` that ``float()`` reads back exactly."""
    text = f"{value:.9g}"
    return text if float(text) == value else repr(value)


def _describe(threshold: tuple[float, float] | None) -> str:
    return "otsu" if threshold is None else f"threshold {threshold[0]:g}:{threshold[1]:g}"


def _describe_radius(voxels: int | None, mm: float | None) -> str:
    return f"closing_radius_mm={mm:g}" if mm is not None else f"closing_radius={voxels}"


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


def usable_cpus() -> int:
    """CPUs this process may use (CPU affinity and cgroup quota respected)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


@contextlib.contextmanager
def _itk_threads(count: int) -> Iterator[None]:
    """Run ITK filters with ``count`` threads, then restore the global default."""
    old = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(count)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old)


def _pool_context() -> Any:
    """How worker processes start: ``fork`` when that is safe, else ``forkserver``/``spawn``.

    On Linux, when the calling process runs no other Python thread, workers
    are forked from it directly: nimask, numpy and SimpleITK are already
    imported, so a pool starts in milliseconds (ITK's thread pool stops its
    threads around ``fork`` itself).  With other threads running (a progress
    bar's monitor, a notebook kernel, the caller's threads), a fork could copy
    a lock held by one of them, so workers come from a ``forkserver`` with
    nimask preloaded (about 0.3-0.5 s once per pool: the server imports
    nimask), or are spawned where forkserver does not exist.
    """
    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _init_worker(itk_threads: int) -> None:
    # Ctrl-C reaches the whole process group: the parent alone handles it and
    # stops the workers, so that they do not print tracebacks or break the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(itk_threads)


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory, or killed)" if name == "SIGKILL" else ""
        return f"the worker process processing this file was killed by {name}{hint}"
    return f"the worker process processing this file died (exit code {exitcode})"


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Terminate the workers now (Ctrl-C, broken pool) and shut the pool down.

    Returns once every worker and the executor's manager thread have exited:
    every future the executor knows of is then settled, and nothing of the
    pool runs any more.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join()
    # With its workers gone the manager thread fails what they ran and exits.
    if manager is not None:
        manager.join()


def _run_window(
    pending: deque[int],
    inputs: Sequence[Path],
    output_dir: Path,
    settings: MaskSettings,
    workers: int,
    on_done: Callable[[int, FileResult], None],
    skip_existing: bool,
) -> list[int]:
    """Run ``pending`` files in one pool, at most ``workers`` tasks at a time.

    Returns the files in flight when a worker died (the pool is then broken
    and every running task lost), ``[]`` when all of ``pending`` is done.
    Keeping no more tasks queued than workers bounds these suspects.
    """
    itk_threads = max(1, usable_cpus() // workers)
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=_pool_context(),
        initializer=_init_worker, initargs=(itk_threads,),
    )
    in_flight: dict[Future[FileResult], int] = {}
    suspects: list[int] = []
    try:
        while pending or in_flight:
            while pending and len(in_flight) < workers and not suspects:
                index = pending[0]
                try:
                    future = pool.submit(process_file, inputs[index], output_dir, settings,
                                         skip_existing=skip_existing)
                except RuntimeError as refused:
                    # BrokenProcessPool, or "cannot schedule new futures after
                    # shutdown" when the pool broke (and shut itself down) between
                    # submit's two checks.
                    if isinstance(refused, BrokenProcessPool) or getattr(pool, "_broken", False):
                        break
                    raise
                pending.popleft()
                in_flight[future] = index
            if not in_flight:
                break
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                # Every other running task fails too.  Stop the pool (workers and
                # manager thread joined) instead of waiting for each future: a
                # task submitted while the pool was breaking may never be settled
                # by the executor (it never ran; it is run again below).
                _stop_pool(pool)
                done = set(in_flight)
            for future in sorted(done, key=lambda f: in_flight[f]):
                index = in_flight.pop(future)
                if not future.done() or future.cancelled():
                    suspects.append(index)
                    continue
                exc = future.exception()
                if isinstance(exc, BrokenProcessPool):
                    suspects.append(index)
                elif exc is not None:
                    on_done(index, failed_result(inputs[index], output_dir, settings,
                                           f"worker error: {_reason(exc)}"))
                else:
                    on_done(index, future.result())
            if suspects and not in_flight:
                break
    except BaseException:
        _stop_pool(pool)
        raise
    # Joins every worker: nothing of this pool runs once this returns.
    pool.shutdown(wait=True)
    return sorted(suspects)


def _isolated_main(conn: Any, task: Callable[..., FileResult], args: tuple[Any, ...],
                   kwargs: dict[str, Any], itk_threads: int) -> None:
    _init_worker(itk_threads)
    conn.send(task(*args, **kwargs))
    conn.close()


def _run_isolated(
    path: Path, output_dir: Path, settings: MaskSettings, skip_existing: bool
) -> FileResult:
    """Run one file alone in a fresh process: a death there is this file's doing."""
    context = _pool_context()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_isolated_main,
        args=(sender, process_file, (path, output_dir, settings),
              {"skip_existing": skip_existing}, usable_cpus()),
        daemon=True,
    )
    try:
        process.start()
        sender.close()
        try:
            result: FileResult = receiver.recv()
        except EOFError:
            process.join()
            return failed_result(path, output_dir, settings, _death_reason(process.exitcode))
        process.join()
        return result
    finally:
        if process.is_alive():
            process.terminate()
            process.join()
        receiver.close()


def _run_pool(
    inputs: Sequence[Path],
    output_dir: Path,
    settings: MaskSettings,
    workers: int,
    on_done: Callable[[int, FileResult], None],
    *,
    skip_existing: bool = False,
) -> None:
    """Process ``inputs`` in ``workers`` processes; ``on_done`` gets every result.

    A worker that dies (segfault, ``os._exit``, SIGKILL from the OOM killer)
    breaks a ``ProcessPoolExecutor`` and fails every task it was running.
    Those files (at most ``workers``: no more tasks are queued) are then run
    one at a time, each in a fresh process, after every worker of the broken
    pool has been joined: a file whose own process dies fails with the cause,
    the others get their normal result; the files not started yet go on in a
    new pool.  So a worker death fails only its own file, and no file is ever
    processed by two processes at once.  Leftover temporaries of the killed
    workers are removed.
    """
    pending = deque(range(len(inputs)))
    while pending:
        suspects = _run_window(pending, inputs, output_dir, settings, workers, on_done,
                               skip_existing)
        if not suspects:
            continue
        cleanup_temporaries(output_dir)
        logger.warning("a worker process died; running %d file(s) again one at a time: %s",
                       len(suspects), ", ".join(inputs[i].name for i in suspects))
        for index in suspects:
            on_done(index, _run_isolated(inputs[index], output_dir, settings, skip_existing))
        cleanup_temporaries(output_dir)


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
            with _itk_threads(usable_cpus()):
                for i, path in enumerate(inputs):
                    on_done(i, process_file(path, out_dir, settings, skip_existing=skip_existing))
        else:
            _run_pool(inputs, out_dir, settings, min(n_workers, len(inputs)), on_done,
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
