"""Files <-> images: reading and writing NIfTI with its header checks, and finding inputs.

Exports what the batch layer uses: reading, mask writing, atomic writes, discovery and naming.
"""

from .discovery import PROVENANCE_PREFIX, FolderScan, find_inputs, output_name, scan_folder
from .nifti import (
    TEMP_MARKER,
    LoadedVolume,
    NiftiInfo,
    atomic_write,
    cleanup_temporaries,
    read_volume,
    write_mask,
)

__all__ = [
    "PROVENANCE_PREFIX",
    "TEMP_MARKER",
    "FolderScan",
    "LoadedVolume",
    "NiftiInfo",
    "atomic_write",
    "cleanup_temporaries",
    "find_inputs",
    "output_name",
    "read_volume",
    "scan_folder",
    "write_mask",
]
