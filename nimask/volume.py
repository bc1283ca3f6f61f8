"""Drop-in for ``nidataset.volume``: ``from nimask.volume import generate_brain_mask_dataset``."""

from __future__ import annotations

import os
from concurrent.futures import Executor

from .dataset import count_written, mask_dataset

__all__ = ["generate_brain_mask_dataset"]


def generate_brain_mask_dataset(
    nii_folder: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    threshold: tuple[float, float] | None = None,
    closing_radius: int = 3,
    debug: bool = False,
    *,
    workers: int | None = 1,
    progress: bool | None = None,
    executor: Executor | None = None,
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
    workers : int or None, default 1
        Keyword-only.  Worker processes (``None``: every usable CPU).
    progress : bool or None, default None
        Keyword-only.  Progress bar on stderr (``None``: only on a terminal).
    executor : concurrent.futures.Executor or None, default None
        Keyword-only.  Run the files on this executor, e.g. a Dask client's
        ``client.get_executor()``; inputs and outputs must then be on storage
        every worker sees (see :func:`nimask.mask_dataset`).

    Returns
    -------
    None

    Raises
    ------
    FileNotFoundError
        ``nii_folder`` does not exist, is not a folder, or holds no ``.nii.gz``
        (:class:`nimask.exceptions.InputFolderError`).
    ValueError
        Invalid ``threshold`` or ``closing_radius``, before any work
        (:class:`nimask.exceptions.ParameterError`).

    Notes
    -----
    A file that cannot be read or masked is logged as an error naming the file
    and the reason (logger ``nimask.dataset``); the batch goes on and no output
    is left for that file.  :func:`nimask.mask_dataset` returns the per-file
    results instead of ``None``.
    """
    results = mask_dataset(
        nii_folder, output_path, threshold, closing_radius,
        workers=workers, progress=progress, executor=executor,
    )
    if debug:
        print(f"Total brain masks generated: {count_written(results)}")
