"""New SimpleITK images written in place through a numpy array over their buffer."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import SimpleITK as sitk

__all__ = ["new_image"]

_SITK_PIXEL: dict[str, int] = {
    "i1": sitk.sitkInt8, "u1": sitk.sitkUInt8, "i2": sitk.sitkInt16, "u2": sitk.sitkUInt16,
    "i4": sitk.sitkInt32, "u4": sitk.sitkUInt32, "i8": sitk.sitkInt64, "u8": sitk.sitkUInt64,
    "f4": sitk.sitkFloat32, "f8": sitk.sitkFloat64,
}


def new_image(shape_zyx: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[sitk.Image, np.ndarray]:
    """A new zero-filled image of ``dtype`` and a writable ``(z, y, x)`` array over its buffer.

    SimpleITK only hands out read-only views, so the array is made over the
    buffer's address (the image owns the memory: the array must not outlive it).
    Voxels are then written once, in place, instead of being built in numpy and
    copied by ``GetImageFromArray``: one volume-sized buffer less at the peak.
    The image has the default geometry (the caller copies the reference's).
    """
    native = np.dtype(dtype).newbyteorder("=")
    image = sitk.Image([int(n) for n in shape_zyx[::-1]], _SITK_PIXEL[native.str[1:]])
    image.MakeUnique()
    view = sitk.GetArrayViewFromImage(image)
    address = view.__array_interface__["data"][0]
    memory = (ctypes.c_char * view.nbytes).from_address(address)
    array = np.frombuffer(memoryview(memory), dtype=native).reshape(shape_zyx)
    return image, array
