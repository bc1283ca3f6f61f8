"""Data that needs no download: the bundled sample T1 and synthetic phantoms.

Exports the sample's paths; :mod:`nimask.data.phantoms` builds test volumes.
"""

from .sample import sample_brain_mask_path, sample_folder, sample_path

__all__ = ["sample_brain_mask_path", "sample_folder", "sample_path"]
