"""Data that needs no download: the bundled sample T1 and synthetic phantoms.

Exports the sample's paths and writers of a BIDS and a DICOM copy of it;
:mod:`nimask.data.phantoms` builds test volumes.
"""

from .sample import (
    sample_brain_mask_path,
    sample_folder,
    sample_path,
    write_sample_bids,
    write_sample_dicom,
)

__all__ = [
    "sample_brain_mask_path",
    "sample_folder",
    "sample_path",
    "write_sample_bids",
    "write_sample_dicom",
]
