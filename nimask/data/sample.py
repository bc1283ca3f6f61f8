"""The sample volume bundled with nimask (no download needed).

``sample_t1.nii.gz`` is the T1-weighted head MRI with skull of ITK's examples
(``KmeansTest_T1UCharRaw``; 128x128x62, 2x2x3 mm, Apache-2.0, from the
Insight Toolkit), and ``sample_t1_brainmask.nii.gz`` its reference brain mask
(labels 4-6 of ITK's skull-strip example map).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from importlib.resources import files
from pathlib import Path

import SimpleITK as sitk

__all__ = [
    "sample_brain_mask_path",
    "sample_folder",
    "sample_path",
    "write_sample_bids",
    "write_sample_dicom",
]


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


def write_sample_bids(folder: str | os.PathLike[str]) -> Path:
    """Write a one-subject BIDS dataset holding the sample T1, to try ``nimask bids``.

    ``folder/dataset_description.json`` and ``folder/sub-01/anat/sub-01_T1w.nii.gz`` (a
    copy of :func:`sample_path`); the folder is created.

    Returns
    -------
    Path
        ``folder``.
    """
    root = Path(folder)
    anat = root / "sub-01" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    description = {"Name": "nimask sample", "BIDSVersion": "1.10.0", "DatasetType": "raw",
                   "License": "Apache-2.0 (Insight Toolkit examples)"}
    (root / "dataset_description.json").write_text(json.dumps(description, indent=2) + "\n")
    shutil.copyfile(sample_path(), anat / "sub-01_T1w.nii.gz")
    return root


def write_sample_dicom(folder: str | os.PathLike[str]) -> Path:
    """Write the sample T1 as a DICOM MR series (one file per slice), to try ``--dicom``.

    Each slice carries its own position (ImagePositionPatient), the volume's
    orientation, pixel spacing and slice thickness, and fresh UIDs; written with
    SimpleITK's GDCM writer.  The folder is created.

    Returns
    -------
    Path
        ``folder``.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    image = sitk.ReadImage(str(sample_path()))
    size = image.GetSize()
    spacing = image.GetSpacing()
    direction = image.GetDirection()  # row-major 3x3: columns are the index axes
    orientation = [direction[0], direction[3], direction[6], direction[1], direction[4],
                   direction[7]]
    study_uid, series_uid = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}"
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.KeepOriginalImageUIDOn()
    for k in range(size[2]):
        plane = sitk.Cast(image[:, :, k], sitk.sitkInt16)
        plane.SetSpacing(spacing[:2])
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0008": "ORIGINAL\\PRIMARY\\OTHER",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
            "0008|0018": f"2.25.{uuid.uuid4().int}",
            "0008|0020": "20240101",
            "0008|0060": "MR",
            "0008|103e": "sample T1",
            "0010|0010": "Sample^T1",
            "0010|0020": "SAMPLE01",
            "0020|000d": study_uid,
            "0020|000e": series_uid,
            "0020|0011": "1",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(repr(float(v)) for v in position),
            "0020|0037": "\\".join(repr(float(v)) for v in orientation),
            "0018|0050": repr(float(spacing[2])),
        }
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        writer.SetFileName(str(root / f"IM{k + 1:04d}.dcm"))
        writer.Execute(plane)
    return root
