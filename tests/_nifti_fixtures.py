"""Generated NIfTI files for the reliability tests (good, bad and odd ones)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from pathlib import Path

import nibabel as nib
import numpy as np

AFFINE = np.array(
    [[2.0, 0, 0, -20], [0, 2.0, 0, -30], [0, 0, 3.0, 5], [0, 0, 0, 1]]
)


def ramp(shape: tuple[int, ...] = (12, 10, 8)) -> np.ndarray:
    """Deterministic int values 0..99 (every dtype holds them exactly)."""
    return (np.arange(int(np.prod(shape))).reshape(shape) * 7 % 100).astype(np.int16)


def write(
    path: Path,
    data: np.ndarray,
    *,
    dtype: object = None,
    slope: float | None = None,
    inter: float | None = None,
    gzipped: bool = True,
    intent: str | None = None,
) -> Path:
    """Save ``data`` as NIfTI-1 at ``path`` whatever its name (gzip or not)."""
    target = np.dtype(dtype or data.dtype)
    header = nib.Nifti1Header(endianness=">" if target.byteorder == ">" else "<")
    image = nib.Nifti1Image(data.astype(target.newbyteorder("=")), AFFINE, header=header)
    image.set_data_dtype(target)
    if slope is not None:
        image.header.set_slope_inter(slope, inter or 0.0)
    if intent is not None:
        image.header.set_intent(intent)
    buffer = io.BytesIO()
    file_map = image.make_file_map({"image": buffer, "header": buffer})
    image.to_file_map(file_map)
    raw = buffer.getvalue()
    path.write_bytes(gzip.compress(raw, mtime=0) if gzipped else raw)
    return path


def write_scaled(path: Path, raw: np.ndarray, slope: float, inter: float, *,
                 dtype: object = "<i2", gzipped: bool = True) -> Path:
    """``raw`` stored as ``dtype`` (default int16) with ``scl_slope``/``scl_inter`` set
    (nibabel would rescale otherwise); the header in the data's byte order."""
    stored = np.dtype(dtype)
    header = nib.Nifti1Header(endianness=">" if stored.byteorder == ">" else "<")
    header.set_data_dtype(stored)
    header.set_data_shape(raw.shape)
    header.set_sform(AFFINE, 1)
    header.set_qform(AFFINE, 1)
    header["scl_slope"] = slope
    header["scl_inter"] = inter
    header["vox_offset"] = 352
    buffer = io.BytesIO()
    header.write_to(buffer)
    buffer.write(b"\0" * (352 - buffer.tell()))
    buffer.write(raw.astype(stored).tobytes(order="F"))
    path.write_bytes(gzip.compress(buffer.getvalue(), mtime=0) if gzipped else buffer.getvalue())
    return path


def header_only(shape: tuple[int, ...], dtype: object, payload: bytes = b"") -> bytes:
    """Uncompressed NIfTI-1 bytes: a header claiming ``shape`` followed by ``payload``."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.dtype(dtype))
    header.set_data_shape(shape)
    header["vox_offset"] = 352
    buffer = io.BytesIO()
    header.write_to(buffer)
    buffer.write(b"\0" * (352 - buffer.tell()))
    return buffer.getvalue() + payload


def load_mask(path: Path) -> np.ndarray:
    """The mask as an (x, y, z) uint8 array, checked to be a 0/1 uint8 NIfTI."""
    image = nib.load(str(path))
    assert image.get_data_dtype() == np.uint8
    data = np.asanyarray(image.dataobj)
    assert set(np.unique(data)) <= {0, 1}
    return data


def checksums(folder: Path) -> dict[str, tuple[str, int, float]]:
    """sha256, mode and mtime of every entry in ``folder`` (links not followed)."""
    sums = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        st = entry.stat(follow_symlinks=False)
        digest = ""
        if entry.is_file(follow_symlinks=False):
            digest = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
        sums[entry.name] = (digest, st.st_mode, st.st_mtime)
    return sums




def raw_nifti(data: np.ndarray, **fields: object) -> bytes:
    """Uncompressed single-file NIfTI-1 bytes of ``data`` with header fields set as given.

    The fields are written as is, without nibabel's checks (negative ``pixdim``,
    odd ``qfac``, codes outside 0-4, any ``vox_offset``...); ``vox_offset`` is
    352 unless given, and the data always start at byte 352.  The default
    geometry is :data:`AFFINE` as qform (code 1) and sform (code 1).
    """
    header = nib.Nifti1Header(endianness=data.dtype.byteorder if data.dtype.byteorder in "<>"
                              else "=")
    header.set_data_dtype(data.dtype)
    header.set_data_shape(data.shape)
    header.set_qform(AFFINE, 1)
    header.set_sform(AFFINE, 1)
    header["vox_offset"] = 352
    for key, value in fields.items():
        header[key] = value
    return header.binaryblock + b"\0" * 4 + data.tobytes(order="F")
