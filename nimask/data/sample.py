"""The sample volume bundled with nimask (no download needed).

``sample_t1.nii.gz`` is the T1-weighted head MRI with skull of ITK's examples
(``KmeansTest_T1UCharRaw``; 128x128x62, 2x2x3 mm, Apache-2.0, from the
Insight Toolkit), and ``sample_t1_brainmask.nii.gz`` its reference brain mask
(labels 4-6 of ITK's skull-strip example map).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["sample_brain_mask_path", "sample_folder", "sample_path"]


def _data() -> Path:
    return Path(str(files("nimask.data")))


def sample_folder() -> Path:
    """Input folder holding the bundled sample volume (ready for ``mask_dataset``)."""
    return _data() / "sample"


def sample_path() -> Path:
    """Path of the bundled T1 sample (``sample_t1.nii.gz``)."""
    return sample_folder() / "sample_t1.nii.gz"


def sample_brain_mask_path() -> Path:
    """Path of the sample's reference brain mask (not an input: a reference)."""
    return _data() / "reference" / "sample_t1_brainmask.nii.gz"
