"""Batches: one case -> one result, settings and provenance, the local pool, Dask, the folder run.

Exports the folder run (:func:`mask_dataset`) and its parameter record.
"""

from .case import process_file
from .run import count_written, mask_dataset
from .settings import MaskSettings

__all__ = ["MaskSettings", "count_written", "mask_dataset", "process_file"]
