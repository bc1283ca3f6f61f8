"""The dataset layer: discovery, naming, per-file results and batch execution.

One file is processed by :func:`process_file`, a top-level function that never
raises for a bad volume: it returns a :class:`FileResult` whose ``status`` is
``"written"`` or ``"failed"``.  :func:`mask_dataset` runs it over a folder,
in-process or in worker processes, and returns the results in input order.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from ._version import __version__
from .exceptions import InputFolderError, NimaskError, OutputError, ParameterError
from .io import TEMP_MARKER, read_volume, write_mask
from .masking import compute_mask, validate_closing_radius, validate_threshold

__all__ = [
    "FileResult",
    "MaskSettings",
    "find_inputs",
    "mask_dataset",
    "output_name",
    "process_file",
    "usable_cpus",
]

logger = logging.getLogger(__name__)

NII_GZ = ".nii.gz"
MASK_SUFFIX = "_mask"


@dataclass(frozen=True)
class MaskSettings:
    """Validated parameters shared by every file of a batch."""

    threshold: tuple[float, float] | None = None
    closing_radius: int = 3

    @classmethod
    def create(cls, threshold: object = None, closing_radius: object = 3) -> MaskSettings:
        """Validate raw arguments (raises :class:`~nimask.exceptions.ParameterError`)."""
        return cls(validate_threshold(threshold), validate_closing_radius(closing_radius))

    @property
    def mode(self) -> str:
        """``"otsu"`` or ``"manual"``."""
        return "otsu" if self.threshold is None else "manual"

    def provenance(self) -> str:
        """Short text stored in each mask's NIfTI ``descrip`` field (<= 79 chars)."""
        if self.threshold is None:
            how = "otsu"
        else:
            how = f"thr={self.threshold[0]:.9g}:{self.threshold[1]:.9g}"
        return f"nimask {__version__} {how} r={self.closing_radius}"


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


def find_inputs(nii_folder: str | os.PathLike[str]) -> list[Path]:
    """The ``.nii.gz`` files directly inside ``nii_folder``, sorted by name.

    The extension is matched case-insensitively.  Folders, ``.nii`` and other
    files are ignored, and so are nimask's own temporary files and macOS
    ``._*`` resource-fork files.

    Raises
    ------
    InputFolderError
        ``nii_folder`` does not exist, is not a folder, or holds no ``.nii.gz``.
    """
    folder = Path(nii_folder)
    if not folder.exists():
        raise InputFolderError(f"input folder does not exist: {folder}")
    if not folder.is_dir():
        raise InputFolderError(f"input path is not a folder: {folder}")
    found = []
    for entry in os.scandir(folder):
        name = entry.name
        if not name.lower().endswith(NII_GZ) or TEMP_MARKER in name:
            continue
        if name.startswith("._"):
            logger.info("ignoring macOS resource-fork file %s", name)
            continue
        if entry.is_dir():
            continue
        found.append(Path(entry.path))
    if not found:
        raise InputFolderError(f"no .nii.gz files in input folder: {folder}")
    return sorted(found, key=lambda p: p.name)


def process_file(input_path: Path, output_dir: Path, settings: MaskSettings) -> FileResult:
    """Read, mask and write one volume; never raises for a bad volume.

    Returns
    -------
    FileResult
        ``status="written"`` with the threshold actually used, or
        ``status="failed"`` with a one-line reason; no output file is left for
        a failed volume.
    """
    start = time.perf_counter()
    out_path = Path(output_dir) / output_name(input_path)
    result = FileResult(
        input=str(input_path),
        output=str(out_path),
        status="failed",
        threshold_mode=settings.mode,
        closing_radius=settings.closing_radius,
    )
    try:
        loaded = read_volume(input_path)
        result.notes.extend(loaded.notes)
        outcome = compute_mask(loaded.image, settings.threshold, settings.closing_radius)
        result.notes.extend(outcome.notes)
        if outcome.nonfinite_voxels:
            result.notes.append(
                f"{outcome.nonfinite_voxels} NaN/Inf voxels set to background"
            )
        write_mask(outcome.mask, loaded.info, out_path, settings.provenance())
        result.status = "written"
        result.threshold_low = outcome.lower
        result.threshold_high = outcome.upper
        result.otsu_threshold = outcome.otsu_threshold
        view = sitk.GetArrayViewFromImage(outcome.mask)
        result.mask_voxels = int(np.count_nonzero(view))
        result.total_voxels = int(view.size)
    except (NimaskError, RuntimeError, OSError, ValueError, MemoryError) as exc:
        result.error = _reason(exc)
    result.seconds = time.perf_counter() - start
    return result


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


def _init_worker(itk_threads: int) -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(itk_threads)


def _run_pool(
    inputs: Sequence[Path],
    output_dir: Path,
    settings: MaskSettings,
    workers: int,
    on_done: Callable[[int, FileResult], None],
) -> None:
    itk_threads = max(1, usable_cpus() // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker,
        initargs=(itk_threads,),
    ) as pool:
        futures: dict[Future[FileResult], int] = {
            pool.submit(process_file, path, output_dir, settings): i
            for i, path in enumerate(inputs)
        }
        for future in as_completed(futures):
            index = futures[future]
            try:
                res = future.result()
            except Exception as exc:  # the worker died or could not run the task
                res = FileResult(
                    input=str(inputs[index]),
                    output=str(output_dir / output_name(inputs[index])),
                    status="failed",
                    error=f"worker failed: {_reason(exc)}",
                    threshold_mode=settings.mode,
                    closing_radius=settings.closing_radius,
                )
            on_done(index, res)


def _log_result(res: FileResult) -> None:
    name = Path(res.input).name
    for note in res.notes:
        logger.warning("%s: %s", name, note)
    if res.status == "failed":
        logger.error("%s: %s", name, res.error)
    else:
        logger.info("%s -> %s (%s)", name, Path(res.output).name, res.status)


def mask_dataset(
    nii_folder: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    threshold: tuple[float, float] | None = None,
    closing_radius: int = 3,
    *,
    workers: int | None = 1,
    progress: bool | None = None,
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
    workers : int or None, default 1
        Worker processes; ``None`` uses every usable CPU, ``1`` runs in-process.
    progress : bool or None, default None
        Show a tqdm bar on stderr; ``None`` shows it only on a terminal.
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
        In the sorted order of the inputs.

    Raises
    ------
    ParameterError
        Invalid ``threshold``, ``closing_radius``, ``workers`` or ``executor``
        (before any work).
    InputFolderError
        ``nii_folder`` missing, not a folder, or without ``.nii.gz`` files.
    OutputError
        ``output_path`` cannot be created (e.g. it is an existing file).
    """
    settings = MaskSettings.create(threshold, closing_radius)
    n_workers = _validate_workers(workers)
    _validate_executor(executor, workers)
    inputs = find_inputs(nii_folder)
    out_dir = _prepare_output(output_path)
    results: list[FileResult | None] = [None] * len(inputs)
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

            run_on_executor(executor, inputs, out_dir, settings, on_done)
        elif n_workers == 1 or len(inputs) == 1:
            for i, path in enumerate(inputs):
                on_done(i, process_file(path, out_dir, settings))
        else:
            _run_pool(inputs, out_dir, settings, min(n_workers, len(inputs)), on_done)
    finally:
        bar.close()
    return [r for r in results if r is not None]


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
    return out_dir


def count_written(results: Iterable[FileResult]) -> int:
    """Number of masks written in a batch."""
    return sum(1 for r in results if r.status == "written")
