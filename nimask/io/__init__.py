"""Files <-> images: reading and writing volumes (NIfTI with its header checks, every ITK
format), and finding inputs (folders, trees, files, lists; BIDS datasets).

Exports what the batch layer uses: reading, mask writing, atomic writes, discovery and naming.
"""

from .discovery import (
    PROVENANCE_PREFIX,
    Discovery,
    FolderInput,
    FolderScan,
    as_case,
    discover,
    find_inputs,
    mask_relpath,
    output_name,
    output_problems,
    scan_folder,
)
from .formats import (
    OUTPUT_FORMATS,
    VOLUME_FORMATS,
    CaseVolume,
    read_case,
    volume_format,
    write_case_mask,
)
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
    "OUTPUT_FORMATS",
    "PROVENANCE_PREFIX",
    "TEMP_MARKER",
    "VOLUME_FORMATS",
    "CaseVolume",
    "Discovery",
    "FolderInput",
    "FolderScan",
    "LoadedVolume",
    "NiftiInfo",
    "as_case",
    "atomic_write",
    "cleanup_temporaries",
    "discover",
    "find_inputs",
    "mask_relpath",
    "output_name",
    "output_problems",
    "read_case",
    "read_volume",
    "scan_folder",
    "volume_format",
    "write_case_mask",
    "write_mask",
]
