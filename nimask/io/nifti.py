"""Reading volumes and writing masks, with the checks SimpleITK does not make.

Reading is done by ITK's ``NiftiImageIO`` (so the geometry is ITK's own), after
nimask has looked at the header and the file itself:

* the header is parsed (with nibabel) from the first bytes: NIfTI-2, vector,
  RGB, complex, 2D and real 4D volumes are refused with a clear reason;
* the file must hold every byte the header promises.  SimpleITK reads a
  truncated ``.nii.gz`` *without error* and fills the missing part with zeros;
  nimask compares the gzip trailer's size field with the header and, when they
  disagree, decompresses the stream to find out (truncated, corrupt, or a
  header claiming more data than the file holds).

Masks are written with nibabel from a copy of the input's header, so that the
qform, the sform, their codes and ``xyzt_units`` come through unchanged (ITK's
writer derives both transforms from the one it chose on reading and sets both
codes to 1, which moves the mask whenever the input's qform and sform differ).
Writes are atomic: a temporary file in the output folder, then a rename.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import math
import os
import struct
import tempfile
import types
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from ..exceptions import InvalidVolumeError, OutputError, VolumeReadError
from .tempfiles import TEMP_MARKER, cleanup_temporaries, owner_tag, publish_refusal

_inflate: types.ModuleType
try:  # Intel ISA-L's inflate: the same bytes as zlib's, about twice as fast
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - isal is a dependency; zlib still works
    _inflate = zlib
_INFLATE_ERRORS: tuple[type[BaseException], ...] = (zlib.error, _inflate.error)

__all__ = [
    "TEMP_MARKER",
    "LoadedVolume",
    "NiftiInfo",
    "cleanup_temporaries",
    "inspect_nifti",
    "read_descrip",
    "read_start",
    "read_volume",
    "verify_payload",
    "write_mask",
]

logger = logging.getLogger(__name__)

#: Largest ratio of uncompressed to compressed size deflate can reach (~1032:1),
#: with margin: a gzip file promising more data than this cannot hold it.
_MAX_DEFLATE_RATIO = 1100

_SUPPORTED_DTYPES = {
    np.dtype(t).newbyteorder("=")
    for t in (
        np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32,
        np.uint64, np.int64, np.float32, np.float64,
    )
}
_CHUNK = 1 << 20


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; masks get the permissions a plain open() would give.
_FILE_MODE = 0o666 & ~_current_umask()


@dataclass
class NiftiInfo:
    """What nimask learnt from a NIfTI file before ITK reads it."""

    path: Path
    header: Any  # nibabel.Nifti1Header
    gzipped: bool
    shape: tuple[int, ...]  # the full ``dim`` shape, x first
    payload_end: int  # vox_offset + voxel bytes: the uncompressed size the file must reach
    notes: list[str] = field(default_factory=list)


@dataclass
class LoadedVolume:
    """A volume read by ITK, with the header it was read from."""

    image: sitk.Image
    info: NiftiInfo
    notes: list[str] = field(default_factory=list)


def read_start(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of a file, with a one-line reason when it cannot be opened.

    Raises
    ------
    VolumeReadError
        A directory, a broken symbolic link, a missing or unreadable file.
    """
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except IsADirectoryError as exc:
        raise VolumeReadError("is a directory, not a file") from exc
    except FileNotFoundError as exc:
        if path.is_symlink():
            raise VolumeReadError(
                f"broken symbolic link: its target {os.readlink(path)!r} does not exist"
            ) from exc
        raise VolumeReadError("file not found (removed during the run?)") from exc
    except OSError as exc:
        raise VolumeReadError(f"cannot open: {exc.strerror or exc}") from exc


def _read_prefix(path: Path, size: int = 540) -> tuple[bytes, bool]:
    gzipped = read_start(path, 2) == b"\x1f\x8b"
    try:
        if gzipped:
            with gzip.open(path, "rb") as gz:
                return gz.read(size), True
        with open(path, "rb") as fh:
            return fh.read(size), False
    except EOFError as exc:
        raise VolumeReadError("truncated gzip file: it ends inside the NIfTI header") from exc
    except (OSError, zlib.error) as exc:
        raise VolumeReadError(f"cannot decompress the header: {exc}") from exc


def inspect_nifti(path: str | os.PathLike[str]) -> NiftiInfo:
    """Parse and vet the header of a NIfTI-1 file (gzipped or not).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    NiftiInfo

    Raises
    ------
    VolumeReadError
        Empty, unreadable, not NIfTI, or NIfTI-2 (ITK 5.4 cannot read it).
    InvalidVolumeError
        Not a 3D scalar volume of a supported data type.
    """
    path = Path(path)
    prefix, gzipped = _read_prefix(path)
    if len(prefix) == 0:
        raise VolumeReadError("empty file")
    if len(prefix) < 348:
        raise VolumeReadError(f"not a NIfTI file: only {len(prefix)} bytes")
    sizeof_hdr_le = struct.unpack("<i", prefix[:4])[0]
    sizeof_hdr_be = struct.unpack(">i", prefix[:4])[0]
    if 540 in (sizeof_hdr_le, sizeof_hdr_be):
        raise VolumeReadError(
            "NIfTI-2 header: not supported (ITK 5.4's NIfTI reader cannot read NIfTI-2); "
            "convert to NIfTI-1, e.g. with nibabel"
        )
    if 348 not in (sizeof_hdr_le, sizeof_hdr_be):
        raise VolumeReadError("not a NIfTI file (no NIfTI-1 header)")
    try:
        header = nib.Nifti1Header.from_fileobj(_BytesReader(prefix[:348]), check=False)
    except Exception as exc:  # nibabel raises several types for broken headers
        raise VolumeReadError(f"invalid NIfTI header: {exc}") from exc
    magic = bytes(header["magic"]).rstrip(b"\x00")
    if magic != b"n+1":
        raise VolumeReadError(
            f"not a single-file NIfTI-1 volume (magic {magic!r}); "
            "NIfTI pairs (.hdr/.img) and Analyze files are not supported"
        )
    dims = [int(d) for d in header["dim"]]
    ndim = dims[0]
    if not 1 <= ndim <= 7:
        raise VolumeReadError(f"invalid header: dim[0] = {ndim}")
    shape = tuple(dims[1 : ndim + 1])
    if any(s <= 0 for s in shape):
        raise VolumeReadError(f"invalid header: non-positive size in dim {list(shape)}")
    datatype = int(header["datatype"])
    try:
        dtype = header.get_data_dtype()
    except Exception as exc:
        raise InvalidVolumeError(f"unknown NIfTI datatype code {datatype}") from exc
    if dtype.fields is not None or dtype.kind == "c":
        raise InvalidVolumeError(
            f"voxels of type {header.get_value_label('datatype')} (RGB/complex) are not "
            "supported: nimask masks scalar volumes"
        )
    if dtype.newbyteorder("=") not in _SUPPORTED_DTYPES:
        raise InvalidVolumeError(f"unsupported voxel type {dtype} for masking")
    if len(shape) > 4 and any(s > 1 for s in shape[4:]):
        raise InvalidVolumeError(
            f"vector-valued voxels (dim {list(shape)}): nimask masks scalar 3D volumes"
        )
    if len(shape) < 3 or shape[2] < 1:
        raise InvalidVolumeError(f"not a 3D volume: {len(shape)}D with shape {list(shape)}")
    if len(shape) >= 4 and shape[3] > 1:
        raise InvalidVolumeError(
            f"4D volume with {shape[3]} time points (shape {list(shape)}); "
            "nimask masks 3D volumes: split the series first"
        )
    notes = []
    if len(shape) > 3:
        notes.append(f"trailing singleton dimension(s) squeezed: {list(shape)} -> "
                     f"{list(shape[:3])}")
    gz_name = path.name.lower().endswith(".gz")
    if gz_name and not gzipped:
        notes.append("file is named .nii.gz but is not gzip-compressed; read as plain NIfTI")
    elif gzipped and not gz_name:
        notes.append("file is named .nii but is gzip-compressed; read as compressed NIfTI")
    # A single-file NIfTI-1 keeps its data at or after byte 352 (readers
    # treat a smaller vox_offset as 352).
    vox_offset = max(int(header["vox_offset"]), 352)
    n_voxels = int(np.prod(shape, dtype=np.int64))
    payload_end = vox_offset + n_voxels * dtype.itemsize
    return NiftiInfo(path, header, gzipped, shape, payload_end, notes)


def _header_bytes(path: str | os.PathLike[str], size: int) -> bytes:
    """The first ``size`` bytes of a file, decompressed when it is gzip (one open, one read)."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
        if head[:2] != b"\x1f\x8b":
            return head[:size]
        inflate = zlib.decompressobj(31)
        prefix = inflate.decompress(head, size)
        while len(prefix) < size and not inflate.eof:
            chunk = inflate.unconsumed_tail or fh.read(_CHUNK)
            if not chunk:
                break
            prefix += inflate.decompress(chunk, size - len(prefix))
        return prefix


def read_descrip(path: str | os.PathLike[str]) -> str | None:
    """The NIfTI ``descrip`` text of a file, or ``None`` if it is not a readable NIfTI-1.

    Reads the file once, decompressing only the header (discovery calls it for every
    candidate input).
    """
    try:
        prefix = _header_bytes(path, 348)
    except (OSError, zlib.error):
        return None
    if len(prefix) < 348 or 348 not in struct.unpack("<i", prefix[:4]) + struct.unpack(
        ">i", prefix[:4]
    ):
        return None
    return prefix[148:228].split(b"\x00", 1)[0].decode("ascii", "replace")


class _BytesReader:
    """Minimal file object over bytes (nibabel only needs ``read``)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk


def verify_payload(info: NiftiInfo) -> None:
    """Check that the file holds all the voxel bytes its header promises.

    For a gzip file the trailer's ISIZE (uncompressed size mod 2**32) is
    compared with the header; only when they differ is the stream decompressed
    (in chunks, without keeping the data) to decide between a multi-member
    gzip file that is fine and a truncated or corrupt one.

    Raises
    ------
    VolumeReadError
        Truncated, corrupt, or shorter than the header claims.
    """
    path = info.path
    need = info.payload_end
    if not info.gzipped:
        have = path.stat().st_size
        if have < need:
            raise VolumeReadError(
                f"file is truncated: header needs {need} bytes, file has {have}"
            )
        return
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size < 18:
            raise VolumeReadError("truncated gzip file")
        fh.seek(-4, os.SEEK_END)
        isize = struct.unpack("<I", fh.read(4))[0]
    if need > size * _MAX_DEFLATE_RATIO + 4096:
        # Checked before anything is decompressed or allocated: a header may
        # claim terabytes that a small file cannot hold.
        raise VolumeReadError(
            f"its header needs {need} bytes of data but a {size}-byte gzip file cannot hold "
            "that much: truncated file or a header claiming dimensions the file does not hold"
        )
    if need < (1 << 32) and isize == need:
        return  # ISIZE is the size modulo 2**32: it proves nothing beyond 4 GiB
    total = _decompressed_size(path)
    if total < need:
        raise VolumeReadError(
            f"file holds {total} bytes of data but its header needs {need}: truncated file "
            "or a header claiming dimensions the file does not hold"
        )


def _decompressed_size(path: Path) -> int:
    total = 0
    try:
        with gzip.open(path, "rb") as gz:
            while True:
                chunk = gz.read(_CHUNK * 8)
                if not chunk:
                    break
                total += len(chunk)
    except EOFError as exc:
        raise VolumeReadError(
            "truncated gzip file: the compressed stream ends before its end marker"
        ) from exc
    except (OSError, zlib.error) as exc:
        raise VolumeReadError(f"corrupt gzip data: {exc}") from exc
    return total


@contextlib.contextmanager
def _permissive_sform() -> Iterator[None]:
    """Let ITK orthogonalise a sheared sform (the written mask keeps the original)."""
    old = os.environ.get("ITK_NIFTI_SFORM_PERMISSIVE")
    os.environ["ITK_NIFTI_SFORM_PERMISSIVE"] = "1"
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)
        if old is None:
            os.environ.pop("ITK_NIFTI_SFORM_PERMISSIVE", None)
        else:
            os.environ["ITK_NIFTI_SFORM_PERMISSIVE"] = old


def _itk_reader(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetImageIO("NiftiImageIO")
    reader.SetFileName(str(path))
    return reader


def _itk_read(path: Path) -> sitk.Image:
    return _itk_reader(path).Execute()


def _must_rescale(header: Any) -> bool:
    """``NiftiImageIO::MustRescale()``: does ITK apply ``scl_slope``/``scl_inter``?

    The same comparisons on the same (float32 header -> double) values:
    niftilib turns a non-finite ``scl_slope`` or ``scl_inter`` into 0
    (``FIXED_FLOAT``) and ITK takes a slope within machine epsilon of 0 as 1.
    """
    eps = float(np.finfo(np.float64).eps)
    slope = float(header["scl_slope"])
    inter = float(header["scl_inter"])
    slope = slope if math.isfinite(slope) else 0.0
    inter = inter if math.isfinite(inter) else 0.0
    if abs(slope) < eps:
        slope = 1.0
    return abs(slope) > eps and (abs(slope - 1.0) > eps or abs(inter) > eps)


def _read_stream(path: Path, gzipped: bool, start: int, out: np.ndarray) -> bool:
    """Copy bytes ``[start, start + out.size)`` of the (decompressed) file into ``out``.

    Decompresses chunk by chunk (gzip members one after the other) straight
    into ``out``: the whole file is never held in memory.  Returns ``False``
    when the file ends first.
    """
    end = start + out.size
    position = 0  # offset in the uncompressed stream

    def take(piece: bytes) -> None:
        nonlocal position
        lo, hi = max(start, position), min(end, position + len(piece))
        if lo < hi:
            out[lo - start : hi - start] = np.frombuffer(piece, np.uint8, hi - lo, lo - position)
        position += len(piece)

    with open(path, "rb") as fh:
        if not gzipped:
            fh.seek(start)
            return fh.readinto(out.data) == out.size
        decomp = _inflate.decompressobj(31)
        while position < end:
            chunk = decomp.unconsumed_tail or fh.read(_CHUNK)
            if not chunk:
                break
            take(decomp.decompress(chunk, _CHUNK * 4))
            if decomp.eof:
                rest = decomp.unused_data + fh.read(2)
                if len(rest) < 2 or rest[:2] != b"\x1f\x8b":
                    break  # end of the last member (trailing bytes ignored)
                decomp = _inflate.decompressobj(31)
                take(decomp.decompress(rest, _CHUNK * 4))
    return position >= end


def _read_float_direct(info: NiftiInfo) -> sitk.Image | None:
    """A float volume read with one decompression; ``None``: use ITK's reader.

    ITK's NIfTI reader replaces NaN/Inf voxels by 0 (niftilib), so finding
    them needs the raw voxels anyway (:func:`_restore_nonfinite`).  When ITK
    would not rescale the voxels (:func:`_must_rescale`) and reads a 3D image,
    its voxels are the raw ones except there; so the raw voxels are read once
    here (non-finite ones set to NaN, as :func:`_restore_nonfinite` does) and
    the geometry comes from ITK's header reading: the same image as ITK's read
    followed by :func:`_restore_nonfinite`, one decompression instead of two.
    """
    dtype = info.header.get_data_dtype()
    if dtype.kind != "f" or _must_rescale(info.header) or len(info.shape) != 3:
        return None
    reader = _itk_reader(info.path)
    reader.ReadImageInformation()
    if (reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1
            or tuple(reader.GetSize()) != info.shape):
        return None
    n_bytes = int(np.prod(info.shape, dtype=np.int64)) * dtype.itemsize
    start = info.payload_end - n_bytes  # vox_offset as inspect_nifti read it
    buffer = np.empty(n_bytes, dtype=np.uint8)
    try:
        complete = _read_stream(info.path, info.gzipped, start, buffer)
    except (OSError, EOFError, *_INFLATE_ERRORS):  # type: ignore[misc]
        return None  # ITK's reader decides (and words the error)
    if not complete:
        return None
    raw = buffer.view(dtype).reshape(info.shape[::-1])
    array = raw if raw.dtype.isnative else raw.astype(dtype.newbyteorder("="))
    del raw, buffer
    nonfinite = ~np.isfinite(array)
    if nonfinite.any():
        array[nonfinite] = np.nan  # ``array`` is this function's own buffer
    del nonfinite
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(reader.GetOrigin())
    image.SetSpacing(reader.GetSpacing())
    image.SetDirection(reader.GetDirection())
    return image


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # ITK messages end with the useful sentence after "ITK ERROR: ...: "
    if "ITK ERROR" in text:
        text = text.rsplit("ITK ERROR", 1)[1].split(":", 2)[-1]
    return " ".join(text.split())


def read_volume(path: str | os.PathLike[str]) -> LoadedVolume:
    """Vet a NIfTI file, then read it as a 3D scalar ``sitk.Image`` with ITK.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    LoadedVolume
        The image (intensities after ``scl_slope``/``scl_inter``), the parsed
        header, and notes worth logging (squeezed singleton axis, sheared sform).

    Raises
    ------
    VolumeReadError, InvalidVolumeError
    """
    info = inspect_nifti(path)
    verify_payload(info)
    notes = list(info.notes)
    direct: sitk.Image | None = None
    try:
        direct = _read_float_direct(info)
        image = direct if direct is not None else _itk_read(info.path)
    except RuntimeError as exc:
        message = _one_line(exc)
        if "orthonormal" not in message:
            raise VolumeReadError(f"ITK cannot read it: {message}") from exc
        try:
            with _permissive_sform():
                direct = _read_float_direct(info)
                image = direct if direct is not None else _itk_read(info.path)
        except RuntimeError as exc2:
            raise VolumeReadError(f"ITK cannot read it: {_one_line(exc2)}") from exc2
        notes.append("sform is not orthonormal: ITK orthogonalised it for processing; "
                     "the mask keeps the input's header unchanged")
    if direct is not None:
        return LoadedVolume(direct, info, notes)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidVolumeError(
            f"vector-valued voxels ({image.GetNumberOfComponentsPerPixel()} components): "
            "nimask masks scalar 3D volumes"
        )
    if image.GetDimension() == 4:
        size = list(image.GetSize())
        if size[3] != 1:
            raise InvalidVolumeError(f"4D volume with {size[3]} time points")
        image = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0],
                             sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX)
    if image.GetDimension() != 3:
        raise InvalidVolumeError(f"not a 3D volume: ITK read a {image.GetDimension()}D image")
    if tuple(image.GetSize()) != info.shape[:3]:
        raise VolumeReadError(
            f"ITK read size {image.GetSize()} but the header says {info.shape[:3]}"
        )
    # The pure layer counts the NaN voxels and notes them as background.
    image, _ = _restore_nonfinite(image, info)
    return LoadedVolume(image, info, notes)


def _restore_nonfinite(image: sitk.Image, info: NiftiInfo) -> tuple[sitk.Image, int]:
    """Put back as NaN the NaN/Inf voxels that ITK's NIfTI reader replaced by 0.

    niftilib (inside ITK's ``NiftiImageIO``) silently sets every non-finite
    float voxel to 0 on reading, so a NaN could pass a window containing 0.
    Only float files that may hold such a voxel (ITK read a 0, or the file has
    an intercept) are read again with nibabel (raw values) to find them.
    """
    if info.header.get_data_dtype().kind != "f":
        return image, 0
    _, inter = info.header.get_slope_inter()
    # A stored 0 reads as 0 when there is no intercept: without a 0 there was no NaN.
    if not inter and not np.any(sitk.GetArrayViewFromImage(image) == 0):
        return image, 0
    dtype = info.header.get_data_dtype()
    n_bytes = int(np.prod(info.shape[:3], dtype=np.int64)) * dtype.itemsize
    opener: Any = gzip.open if info.gzipped else open
    with opener(info.path, "rb") as fh:
        fh.seek(info.payload_end - n_bytes)  # vox_offset as inspect_nifti read it
        raw = np.frombuffer(fh.read(n_bytes), dtype=dtype).reshape(info.shape[:3], order="F")
    nonfinite = ~np.isfinite(raw.T)  # (z, y, x) like ITK's array
    count = int(np.count_nonzero(nonfinite))
    if count == 0:
        return image, 0
    array = sitk.GetArrayFromImage(image)
    array[nonfinite] = np.nan
    restored = sitk.GetImageFromArray(array)
    restored.CopyInformation(image)
    return restored, count


def mask_header(info: NiftiInfo, descrip: str) -> Any:
    """Header for a uint8 mask: the input's header with the data fields reset."""
    header = info.header.copy()
    header.set_data_shape(info.shape[:3])
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(None, None)
    header["intent_code"] = 0
    header["intent_name"] = b""
    header["cal_min"] = 0
    header["cal_max"] = 1
    header["descrip"] = descrip.encode("ascii", "replace")[:79]
    return header


def write_mask(mask: sitk.Image, info: NiftiInfo, out_path: Path, descrip: str) -> None:
    """Write ``mask`` atomically to ``out_path`` with the input's spatial header.

    The data go to a temporary file in the same folder which is flushed,
    fsync'ed and renamed over ``out_path``; on any failure the temporary file
    is removed and ``out_path`` is left as it was.

    Raises
    ------
    OutputError
        The file cannot be written.
    """
    data = sitk.GetArrayViewFromImage(mask)  # (z, y, x)
    image = nib.Nifti1Image(data.T, None, header=mask_header(info, descrip))
    atomic_write(out_path, lambda tmp: nib.save(image, tmp))


def atomic_write(out_path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file to ``out_path``.

    The temporary file is ``.<name>.nimask-tmp-<run>-<host>-<pid>-XXXXXXXX<suffix>``
    in the folder of ``out_path`` (owner fields: :mod:`nimask.io.tempfiles`).  On
    any exception (``KeyboardInterrupt`` included) it is removed and
    ``out_path`` is left as it was.  Only a process killed outright (SIGKILL,
    power loss) can leave it behind; the next run removes it once its writer is
    gone (:func:`cleanup_temporaries`).  Right before the rename the current
    run's check is asked (:func:`nimask.io.tempfiles.publish_refusal`): a worker
    whose run has ended removes its temporary and raises instead of publishing.

    Raises
    ------
    OutputError
        The file cannot be written, or the run it was written for has ended.
    """
    out_path = Path(out_path)
    suffix = ".nii.gz" if out_path.name.lower().endswith(".nii.gz") else out_path.suffix
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{out_path.name}{TEMP_MARKER}{owner_tag()}", suffix=suffix,
            dir=out_path.parent,
        )
    except OSError as exc:
        raise OutputError(f"cannot write in {out_path.parent}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        refusal = publish_refusal()
        if refusal is not None:
            raise OutputError(f"{out_path.name} not written: {refusal}")
        os.replace(tmp, out_path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(f"cannot write {out_path.name}: {exc.strerror or exc}") from exc
        raise
