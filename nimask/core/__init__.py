"""The pure layer: ``SimpleITK.Image -> SimpleITK.Image``, no file is read or written.

Thresholds (with the exact Otsu), the exact fast closing, opt-in refinement steps and presets.
"""

from .masking import MaskOutcome, close_mask, otsu_threshold, threshold_mask
from .pipeline import brain_mask, compute_mask
from .presets import preset_names

__all__ = [
    "MaskOutcome",
    "brain_mask",
    "close_mask",
    "compute_mask",
    "otsu_threshold",
    "preset_names",
    "threshold_mask",
]
