"""DICOM series written by SimpleITK (GDCM) for the DICOM tests, with a known geometry.

Each 2D image is written with ``sitk.ImageFileWriter`` (``KeepOriginalImageUIDOn``)
and the usual tags set in its metadata dictionary (UIDs, ImagePositionPatient,
ImageOrientationPatient, InstanceNumber, SliceThickness, rescale, ...): the
SimpleITK recipe for writing a series slice by slice, where each slice carries
its own position.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

_uid_counter = itertools.count(1)
UID_ROOT = "1.2.826.0.1.3680043.10.1234"  # a test root; never leaves the tests


def new_uid() -> str:
    """A fresh, valid UID for the tests."""
    return f"{UID_ROOT}.{next(_uid_counter)}"


def fmt(values: Sequence[float]) -> str:
    """Backslash-separated decimal strings, as DICOM DS values."""
    return "\\".join(repr(float(v)) for v in values)


@dataclass
class Slice:
    """One 2D image: its stored-value array (rows, cols) and its geometry."""

    array: np.ndarray
    position: Sequence[float]
    orientation: Sequence[float]
    spacing: tuple[float, float]  # (dx along rows' direction, dy along columns')
    thickness: float = 1.0
    tags: dict[str, str] = field(default_factory=dict)
    sop_uid: str = field(default_factory=new_uid)


def write_series(
    folder: Path,
    slices: Sequence[Slice],
    *,
    series_uid: str | None = None,
    study_uid: str = "1.2.826.0.1.3680043.10.1234.999",
    modality: str = "CT",
    description: str = "test series",
    series_number: int = 7,
    patient_id: str = "PAT01",
    study_date: str = "20240131",
    intercept: float = 0.0,
    tags: dict[str, str] | None = None,
    names: Sequence[str] | None = None,
    compressor: str | None = None,
) -> list[Path]:
    """Write ``slices`` as one series (one file per slice) into ``folder``.

    The arrays hold modality values (HU for CT); with ``intercept`` the files
    store ``value - intercept`` and carry RescaleIntercept (GDCM converts).
    ``compressor``: GDCM's compression (``"JPEG"`` lossless, ``"JPEG2000"``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or new_uid()
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")  # DICOM whatever the file name (often none)
    writer.KeepOriginalImageUIDOn()
    if compressor:
        writer.SetUseCompression(True)
        writer.SetCompressor(compressor)
    paths = []
    for i, sl in enumerate(slices):
        image = sitk.GetImageFromArray(np.asarray(sl.array, dtype=np.int16))
        image.SetSpacing(tuple(float(v) for v in sl.spacing))
        values = {
            "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
            "0008|0018": sl.sop_uid,
            "0008|0020": study_date,
            "0008|0060": modality,
            "0008|103e": description,
            "0010|0010": "Test^Patient",
            "0010|0020": patient_id,
            "0020|000d": study_uid,
            "0020|000e": series_uid,
            "0020|0011": str(series_number),
            "0020|0013": str(i + 1),
            "0020|0032": fmt(sl.position),
            "0020|0037": fmt(sl.orientation),
            "0020|0052": study_uid + ".1",
            "0018|0050": repr(float(sl.thickness)),
            "0028|1052": repr(float(intercept)),
            "0028|1053": "1",
        }
        values.update(tags or {})
        values.update(sl.tags)
        for key, value in values.items():
            image.SetMetaData(key, value)
        path = folder / (names[i] if names else f"IM{i + 1:04d}.dcm")
        writer.SetFileName(str(path))
        writer.Execute(image)
        paths.append(path)
    return paths


def axes(orientation: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction and normal of an ImageOrientationPatient."""
    o = np.asarray(orientation, dtype=np.float64)
    row, col = o[:3] / np.linalg.norm(o[:3]), o[3:] / np.linalg.norm(o[3:])
    return row, col, np.cross(row, col)


def sample_plane(
    volume: sitk.Image, position: Sequence[float], orientation: Sequence[float],
    size: tuple[int, int], spacing: tuple[float, float], default: float = -1024.0,
) -> np.ndarray:
    """``volume`` sampled (linear) on one image plane: a (rows, cols) int16 array."""
    row, col, normal = axes(orientation)
    ref = sitk.Image(size[0], size[1], 1, sitk.sitkFloat32)
    ref.SetOrigin(tuple(float(v) for v in position))
    ref.SetSpacing((spacing[0], spacing[1], 1.0))
    ref.SetDirection(tuple(float(v) for v in np.column_stack((row, col, normal)).ravel()))
    out = sitk.Resample(volume, ref, sitk.Transform(), sitk.sitkLinear, default, sitk.sitkFloat32)
    return np.rint(sitk.GetArrayFromImage(out)[0]).astype(np.int16)


def plane_slices(
    volume: sitk.Image,
    positions: Sequence[Sequence[float]],
    orientation: Sequence[float],
    size: tuple[int, int],
    spacing: tuple[float, float],
    thickness: float = 1.0,
) -> list[Slice]:
    """One :class:`Slice` per position: ``volume`` sampled on that plane."""
    return [
        Slice(sample_plane(volume, p, orientation, size, spacing), p, orientation, spacing,
              thickness)
        for p in positions
    ]


def ramp_slices(
    gradient: np.ndarray,
    offset: float,
    positions: Sequence[Sequence[float]],
    orientation: Sequence[float],
    size: tuple[int, int],
    spacing: tuple[float, float],
) -> list[Slice]:
    """Slices of the linear field ``value(p) = gradient . p + offset`` (rounded to int16)."""
    row, col, _ = axes(orientation)
    cols, rows = size
    jj, kk = np.meshgrid(np.arange(cols), np.arange(rows))
    out = []
    for p in positions:
        p0 = np.asarray(p, dtype=np.float64)
        values = (gradient @ p0 + offset + jj * spacing[0] * (gradient @ row)
                  + kk * spacing[1] * (gradient @ col))
        out.append(Slice(np.rint(values).astype(np.int16), p, orientation, spacing))
    return out


def ct_volume(shared_data: Path, shrink: int = 2) -> sitk.Image:
    """The real head CT (HU), shrunk ``shrink`` times in-plane for speed."""
    image = sitk.ReadImage(str(shared_data / "invesalius_ct_head_hu.nii.gz"), sitk.sitkFloat32)
    if shrink > 1:
        image = sitk.Shrink(image, (shrink, shrink, 1))
    return image


def write_oblique_ct_series(folder: Path, shared_data: Path,
                            direction: Sequence[float]) -> list[Path]:
    """The real CT (shrunk 4x) sampled on 20 oblique 3 mm slices, as one series in ``folder``.

    ``direction``: a row-major 3x3 rotation whose first two columns are the
    slices' row and column directions (e.g. conftest's ``OBLIQUE``).
    """
    ct = ct_volume(shared_data, shrink=4)
    m = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    orientation = tuple(np.concatenate((m[:, 0], m[:, 1])))
    _, _, normal = axes(orientation)
    positions = [np.array([-60.0, 40.0, -30.0]) + i * 3.0 * normal for i in range(20)]
    slices = plane_slices(ct, positions, orientation, (60, 56), (3.5, 3.5), thickness=3.0)
    return write_series(folder, slices, intercept=-1024, description="oblique head")
