"""nimask: brain/head threshold masks for folders of NIfTI volumes, on SimpleITK."""

from ._version import __version__
from .dataset import FileResult, MaskSettings, find_inputs, mask_dataset, output_name
from .masking import MaskOutcome, brain_mask, compute_mask
from .sample import sample_brain_mask_path, sample_folder, sample_path
from .volume import generate_brain_mask_dataset

__all__ = [
    "FileResult",
    "MaskOutcome",
    "MaskSettings",
    "__version__",
    "brain_mask",
    "compute_mask",
    "find_inputs",
    "generate_brain_mask_dataset",
    "mask_dataset",
    "output_name",
    "sample_brain_mask_path",
    "sample_folder",
    "sample_path",
]
