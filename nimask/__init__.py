"""nimask: brain/head threshold masks for folders of NIfTI volumes, on SimpleITK."""

from ._version import __version__
from .batch import MaskSettings, mask_bids, mask_dataset
from .core import MaskOutcome, brain_mask, compute_mask
from .data import sample_brain_mask_path, sample_folder, sample_path
from .io import discover, find_inputs, output_name
from .records import Case, FileResult
from .volume import generate_brain_mask_dataset

__all__ = [
    "Case",
    "FileResult",
    "MaskOutcome",
    "MaskSettings",
    "__version__",
    "brain_mask",
    "compute_mask",
    "discover",
    "find_inputs",
    "generate_brain_mask_dataset",
    "mask_bids",
    "mask_dataset",
    "output_name",
    "sample_brain_mask_path",
    "sample_folder",
    "sample_path",
]
