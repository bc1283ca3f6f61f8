"""Batches: one case -> one result, settings and provenance, the local pool, Dask, the folder run.

Exports the batch run (:func:`mask_dataset`), the BIDS-App run (:func:`mask_bids`) and the
parameter record.
"""

from .bids import mask_bids
from .case import process_file
from .run import count_written, mask_dataset
from .settings import MaskSettings

__all__ = ["MaskSettings", "count_written", "mask_bids", "mask_dataset", "process_file"]
