"""Drop-in for ``nidataset.volume``: ``from nimask.volume import generate_brain_mask_dataset``."""

from __future__ import annotations

import os
from concurrent.futures import Executor
from pathlib import Path

from .batch import count_written, mask_dataset
from .io import FolderInput

__all__ = ["generate_brain_mask_dataset"]


def generate_brain_mask_dataset(
    nii_folder: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    threshold: tuple[float, float] | None = None,
    closing_radius: int = 3,
    debug: bool = False,
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
    pattern: str = "*.nii.gz",
    recursive: bool = False,
    output_format: str = "nii.gz",
) -> None:
    """Batch generate brain tissue masks for every ``.nii.gz`` volume of a folder.

    Each ``<prefix>.nii.gz`` directly inside ``nii_folder`` gives
    ``<prefix>_mask.nii.gz`` in ``output_path``: uint8, values 0/1, same
    grid and the same header geometry (qform, sform, codes, units) as the input.
    The mask is an intensity threshold (manual window or Otsu) followed by a
    morphological closing with a ball, all run as ITK filters.

    Parameters
    ----------
    nii_folder : str or os.PathLike
        Directory containing the ``.nii.gz`` volumes.
    output_path : str or os.PathLike
        Directory where masks are saved; created (with parents) if missing.
    threshold : tuple (low, high) or None, default None
        Inclusive intensity range (after ``scl_slope``/``scl_inter``, so HU on
        CT); ``None`` uses automatic Otsu thresholding per volume.
    closing_radius : int, default 3
        Radius in voxels of the ball used for morphological closing; 0 = none.
    debug : bool, default False
        Print ``Total brain masks generated: N`` when done.
    workers : int or None, default None
        Keyword-only.  Worker processes: ``None`` uses every usable CPU (CPU
        affinity and cgroup quota respected), ``1`` runs in-process.  The
        outputs do not depend on it.
    progress : bool or None, default None
        Keyword-only.  Progress bar on stderr (``None``: only on a terminal).
    report : str, os.PathLike or None, default None
        Keyword-only.  Per-file report, ``.csv`` or ``.json`` by suffix
        (see :func:`nimask.mask_dataset`).
    qc_dir : str, os.PathLike or None, default None
        Keyword-only.  Folder for one QC picture per case and ``index.html``.
    skip_existing : bool, default False
        Keyword-only.  Keep masks that are complete and were made by this
        nimask version with the same ``threshold`` and ``closing_radius``
        (checked from the provenance in their NIfTI ``descrip``); the default
        overwrites every mask, like nidataset.
    closing_radius_mm : float or None, default None
        Keyword-only.  When given, replaces ``closing_radius``: the closing
        ball is round in millimetres, with per-axis radius
        ``closing_radius_mm / spacing`` voxels and ITK's half-voxel rule
        (offsets ``d`` with ``sum((d_i * s_i / (R + s_i / 2))**2) <= 1``).
        For thick-slice CT.  ``0`` disables closing.
    preset : str or None, default None
        Keyword-only.  ``"ct-brain"``, ``"ct-head"``, ``"mri-head"`` or
        ``"nidataset"`` (:mod:`nimask.core.presets`); explicit arguments override
        the preset (``threshold=None`` keeps the preset's threshold).
    fill_holes : bool or {"off", "3d", "slices", "both"} or None, default None
        Keyword-only.  Opt-in hole filling (``True`` = ``"3d"``).
    largest_component : bool or None, default None
        Keyword-only.  Opt-in: keep the largest face-connected component.
    opening_radius : int or str or None, default None
        Keyword-only.  Opt-in erosion/dilation pair (voxels or ``"<R>mm"``)
        around the largest-component step.
    exclude_above_window : bool or None, default None
        Keyword-only.  Opt-in: after the closing, remove voxels above the
        threshold window's upper bound (bone on CT).
    executor : concurrent.futures.Executor or None, default None
        Keyword-only.  Run the files on this executor, e.g. a Dask client's
        ``client.get_executor()``; inputs and outputs must then be on storage
        every worker sees (see :func:`nimask.mask_dataset`).
    qc_layout : {"mid", "mosaic"}, default "mid"
        Keyword-only.  QC pictures (``qc_dir``) with three mid-slices, or a
        mosaic of slices over the mask's extent (see ``docs/qc.md``).
    pattern : str, default ``"*.nii.gz"``
        Keyword-only.  Glob selecting the volumes (case-insensitive; any format of
        ``docs/cohorts.md``); ``/`` or ``**`` match relative paths.
    recursive : bool, default False
        Keyword-only.  Search sub-folders; the masks mirror the input tree.
    output_format : {"nii.gz", "same", "nrrd", "mha", "nii"}, default "nii.gz"
        Keyword-only.  Format of the masks (``"same"``: each input's own).

    Returns
    -------
    None

    Raises
    ------
    FileNotFoundError
        ``nii_folder`` does not exist, is not a folder, or holds no ``.nii.gz``
        (:class:`nimask.exceptions.InputFolderError`).
    ValueError
        Invalid ``threshold``, ``closing_radius``, ``closing_radius_mm`` or
        ``report`` suffix, before any work
        (:class:`nimask.exceptions.ParameterError`).

    Notes
    -----
    A file that cannot be read or masked is logged as an error,
    ``<name>: failed, no mask written: <reason>`` (logger ``nimask.batch``);
    the batch goes on and no output is left for that file.  Entries named
    ``.nii.gz`` that are not inputs (folders, FIFOs, macOS ``._*`` files,
    nimask's temporaries and masks) are logged as warnings.
    :func:`nimask.mask_dataset` returns the per-file results instead of
    ``None``, and also takes single files and lists of them; this function
    requires a folder.
    """
    results = mask_dataset(
        FolderInput(Path(nii_folder)), output_path, threshold, closing_radius,
        workers=workers, progress=progress, report=report, qc_dir=qc_dir,
        skip_existing=skip_existing, closing_radius_mm=closing_radius_mm,
preset=preset, fill_holes=fill_holes,
        largest_component=largest_component, opening_radius=opening_radius,
        exclude_above_window=exclude_above_window,
        executor=executor, qc_layout=qc_layout, pattern=pattern, recursive=recursive,
        output_format=output_format,
    )
    if debug:
        print(f"Total brain masks generated: {count_written(results)}")
