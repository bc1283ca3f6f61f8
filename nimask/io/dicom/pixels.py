"""Decoding the pixels of DICOM images into modality values (HU for CT), as float32.

pydicom decodes the stored values and nimask applies each image's own
RescaleSlope/RescaleIntercept (per file, or per frame from the functional
groups), so a series whose images carry different rescale values comes out
right.  A single-frame file in a compressed transfer syntax that pydicom has no
decoder for is decoded by GDCM through SimpleITK (which applies the same
rescale); a multi-frame file that pydicom cannot decode is refused with the
transfer syntax named.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from ...exceptions import VolumeReadError
from .headers import import_pydicom
from .model import DicomFrame

__all__ = ["load_frames"]

logger = logging.getLogger(__name__)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


#: Native transfer syntaxes read straight from the file: byte order of the values.
_NATIVE = {
    "1.2.840.10008.1.2": "<",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1": "<",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2": ">",  # Explicit VR Big Endian (retired)
}


def _read_native(path: Path, frame: DicomFrame, n_frames: int) -> npt.NDArray[Any] | None:
    """Stored values of the first ``n_frames`` frames read at their offset, or ``None``.

    Only for uncompressed 8/16/32-bit grey-scale data whose offset the header
    reader found; values with unused high bits (BitsStored < BitsAllocated) are
    masked (unsigned) or sign-extended (signed), as pydicom does.
    """
    order = _NATIVE.get(frame.transfer_syntax)
    if (order is None or frame.pixel_offset < 0 or frame.samples_per_pixel != 1
            or frame.bits_allocated not in (8, 16, 32)
            or not 0 < frame.bits_stored <= frame.bits_allocated):
        return None
    signed = frame.pixel_representation == 1
    dtype = np.dtype(f"{order}{'i' if signed else 'u'}{frame.bits_allocated // 8}")
    count = n_frames * frame.rows * frame.columns
    try:
        data = np.fromfile(path, dtype=dtype, count=count, offset=frame.pixel_offset)
    except OSError as exc:
        raise VolumeReadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if data.size < count:
        raise VolumeReadError(
            f"{path.name}: pixel data truncated ({data.size} of {count} values present)"
        )
    data = data.astype(dtype.newbyteorder("="), copy=False).reshape(
        n_frames, frame.rows, frame.columns)
    unused = frame.bits_allocated - frame.bits_stored
    if unused:
        if signed:
            data = (data << unused) >> unused  # arithmetic shift: sign from bit BitsStored-1
        else:
            data = data & np.array((1 << frame.bits_stored) - 1, dtype=data.dtype)
    return data


def _decode(path: Path) -> npt.NDArray[Any]:
    """Stored values of every frame of ``path``: (rows, cols) or (frames, rows, cols)."""
    pydicom = import_pydicom()
    return np.asarray(pydicom.pixels.pixel_array(str(path)))


def _compressed(transfer_syntax: str) -> bool:
    if not transfer_syntax:
        return False
    pydicom = import_pydicom()
    return bool(pydicom.uid.UID(transfer_syntax).is_compressed)


def _syntax_name(transfer_syntax: str) -> str:
    if not transfer_syntax:
        return "unknown"
    pydicom = import_pydicom()
    return str(pydicom.uid.UID(transfer_syntax).name)


def _gdcm_values(path: Path) -> npt.NDArray[np.float32]:
    """Modality values of a single-frame file decoded by GDCM (rescale applied by GDCM)."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeReadError(f"cannot decode the pixels of {path.name}: {_one_line(exc)}") from exc
    array = sitk.GetArrayFromImage(image)
    return np.asarray(array.reshape(array.shape[-2:]), dtype=np.float32)


def _rescaled(stored: npt.NDArray[Any], frame: DicomFrame) -> npt.NDArray[np.float32]:
    slope, intercept = frame.rescale_slope, frame.rescale_intercept
    if slope == 1.0 and intercept == 0.0:
        return stored.astype(np.float32)
    if slope == 1.0 and float(intercept).is_integer() and stored.dtype.itemsize <= 2:
        return stored.astype(np.float32) + np.float32(intercept)  # exact in float32
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)


def load_frames(frames: Sequence[DicomFrame]) -> npt.NDArray[np.float32]:
    """Modality values of ``frames`` as one (n, rows, cols) float32 array, in the given order.

    Raises
    ------
    VolumeReadError
        A file cannot be read or decoded, or holds fewer frames or another
        image size than its header says.
    """
    if not frames:
        raise ValueError("no frames to load")
    rows, cols = frames[0].rows, frames[0].columns
    out = np.empty((len(frames), rows, cols), dtype=np.float32)
    by_file: dict[Path, list[int]] = {}
    for i, frame in enumerate(frames):
        by_file.setdefault(frame.path, []).append(i)
    for path, indices in by_file.items():
        first = frames[indices[0]]
        n_frames = max((frames[i].frame or 0) for i in indices) + 1
        native = _read_native(path, first, n_frames)
        try:
            stored = native if native is not None else _decode(path)
        except OSError as exc:
            raise VolumeReadError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except Exception as exc:  # no decoder, or damaged data: pydicom raises many types
            if first.frame is not None or not _compressed(first.transfer_syntax):
                raise VolumeReadError(
                    f"cannot decode the pixels of {path.name} (transfer syntax "
                    f"{_syntax_name(first.transfer_syntax)}): {_one_line(exc)}"
                ) from exc
            logger.info("pydicom cannot decode %s (%s): GDCM decodes it", path.name, exc)
            values = _gdcm_values(path)
            if values.shape != (rows, cols):
                raise VolumeReadError(
                    f"{path.name}: {values.shape[1]}x{values.shape[0]} pixels, "
                    f"header says {cols}x{rows}"
                ) from exc
            for i in indices:
                out[i] = values
            continue
        if stored.ndim == 2:
            stored = stored[np.newaxis]
        if stored.ndim != 3 or stored.shape[1:] != (rows, cols):
            raise VolumeReadError(
                f"{path.name}: pixel data of shape {stored.shape}, header says "
                f"{rows} rows x {cols} columns (colour or corrupt data?)"
            )
        for i in indices:
            frame = frames[i]
            k = frame.frame or 0
            if k >= stored.shape[0]:
                raise VolumeReadError(
                    f"{path.name}: frame {k + 1} missing, the file holds {stored.shape[0]}"
                )
            out[i] = _rescaled(stored[k], frame)
    return out
