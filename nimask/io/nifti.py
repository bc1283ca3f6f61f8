"""Reading volumes and writing masks, with the checks SimpleITK does not make.

Reading is done by ITK's ``NiftiImageIO`` (so the geometry is ITK's own), after
nimask has looked at the header and the file itself:

* the header is parsed (with nibabel) from the first bytes: NIfTI-2, vector,
  RGB, complex, 2D and real 4D volumes are refused with a clear reason;
* the file must hold every byte the header promises, in a gzip stream that
  really ends.  SimpleITK reads a truncated ``.nii.gz`` *without error* and
  fills the missing part with zeros, and the gzip trailer's size field proves
  nothing (a truncated file may end with the right four bytes).  nimask
  decompresses the whole stream, member after member, and requires each
  member's CRC-32 and length check at its true end; for the volumes it reads
  itself (every 3D volume ITK would not rescale) this is the one decompression
  that fills the voxel buffer, for the others a separate pass before ITK reads.

Masks are written from the input's own header bytes: only the data fields
(``dim``, datatype, scaling, intent, ``cal_*``, ``descrip``, ``vox_offset``)
are replaced, so the qform, the sform, their codes, ``pixdim`` (signs and
``qfac`` included) and ``xyzt_units`` come through byte for byte, and every
reader (ITK, nibabel) places the mask exactly where it places the input.
(ITK's writer derives both transforms from the one it chose on reading and
sets both codes to 1; nibabel's writer "fixes" negative ``pixdim``, odd
``qfac`` and codes outside 0-4: either would move the mask.)  Writes are
atomic: a temporary file in the output folder, then a rename.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import logging
import math
import os
import shutil
import stat
import struct
import tempfile
import threading
import types
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from ..core.images import new_image
from ..exceptions import InvalidVolumeError, OutputError, ParameterError, VolumeReadError
from .tempfiles import TEMP_MARKER, cleanup_temporaries, owner_tag, publish_refusal

_inflate: types.ModuleType
_GzipWriter: Any
try:  # Intel ISA-L: inflate twice as fast as zlib's, deflate of a mask 6x faster
    from isal import isal_zlib as _inflate
    from isal.igzip import IGzipFile as _GzipWriter
except ImportError:  # pragma: no cover - isal is a dependency; zlib still works
    _inflate = zlib
    _GzipWriter = gzip.GzipFile
_INFLATE_ERRORS: tuple[type[BaseException], ...] = (zlib.error, _inflate.error)

__all__ = [
    "INPUT_ID_ECODE",
    "INPUT_ID_PREFIX",
    "TEMP_MARKER",
    "IdentityJob",
    "InputIdentity",
    "LoadedVolume",
    "NiftiInfo",
    "as_path",
    "cleanup_temporaries",
    "input_identity",
    "insert_extension",
    "inspect_nifti",
    "itk_can_name",
    "open_regular",
    "read_descrip",
    "read_input_token",
    "read_start",
    "read_volume",
    "safe_text",
    "special_file_kind",
    "temporary_tag",
    "unchanged_since",
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
#: Single-file NIfTI-1: header (348 bytes) and extension flag (4 bytes).
_HEADER_BYTES = 352
#: Largest ``vox_offset`` ITK can use (niftilib casts it to a C ``int``).
_MAX_VOX_OFFSET = 2**31 - 1
#: Decompressed bytes tolerated past the voxel data before a stream is
#: refused as not a volume (a gzip "bomb" behind a small header).
_MAX_EXCESS = 1 << 28
_SUPPORTED_NAMES = "8- to 64-bit integers, float32 and float64"


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


def as_path(value: object, what: str = "path") -> Path:
    """``value`` as a :class:`~pathlib.Path`, for ``str`` and ``os.PathLike[str]`` only.

    Raises
    ------
    ParameterError
        ``bytes`` (or an ``os.PathLike`` giving bytes) or any other type: nimask
        takes text paths (decode bytes with :func:`os.fsdecode`).
    """
    raw = os.fspath(value) if isinstance(value, os.PathLike) else value
    if isinstance(raw, str):
        return Path(raw)
    if isinstance(raw, bytes):
        raise ParameterError(
            f"{what} must be a str or os.PathLike giving str, got bytes {value!r}; "
            "decode it first, e.g. os.fsdecode(path)"
        )
    raise ParameterError(
        f"{what} must be a str or os.PathLike, got {type(value).__name__} {value!r}"
    )


def _nonblocking_opener(path: str, flags: int) -> int:
    # Opening a FIFO for reading blocks until a writer appears; with O_NONBLOCK it
    # returns at once, and the file type is checked before anything is read.
    return os.open(path, flags | os.O_NONBLOCK)


def special_file_kind(mode: int) -> str | None:
    """``None`` for a regular file, else what a ``st_mode`` is ("a FIFO (named pipe)", ...)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def open_regular(path: str | os.PathLike[str]) -> io.BufferedReader:
    """Open ``path`` for reading only if it is a regular file (or a link to one).

    A FIFO, socket or device is never read (the open does not block either).

    Raises
    ------
    VolumeReadError
        Not a regular file, a broken link, missing, or not readable.
    """
    path = Path(path)
    try:
        fh = open(path, "rb", opener=_nonblocking_opener)  # noqa: SIM115 - returned open
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
    try:
        kind = special_file_kind(os.fstat(fh.fileno()).st_mode)
        if kind == "a directory":
            raise VolumeReadError("is a directory, not a file")
        if kind is not None:
            raise VolumeReadError(f"{kind}, not a regular file: never read")
        os.set_blocking(fh.fileno(), True)
    except BaseException:
        fh.close()
        raise
    return fh


def read_start(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of a file, with a one-line reason when it cannot be opened.

    Only a regular file (or a link to one) is read (:func:`open_regular`).

    Raises
    ------
    VolumeReadError
        A directory, a FIFO, socket or device, a broken symbolic link, a missing or
        unreadable file.
    """
    with open_regular(path) as fh:
        try:
            return fh.read(size)
        except OSError as exc:
            raise VolumeReadError(f"cannot read: {exc.strerror or exc}") from exc


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
        raise VolumeReadError(f"the gzip stream is corrupt ({_one_line(exc)})") from exc


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
    ParameterError
        ``path`` is not a str or os.PathLike[str] (e.g. bytes).
    VolumeReadError
        Empty, unreadable, not NIfTI, NIfTI-2 (ITK 5.4 cannot read it), a
        corrupt gzip stream, or an invalid header (``dim[0]`` outside 1-7,
        ``vox_offset`` not finite or inside the 352-byte header).
    InvalidVolumeError
        Not a 3D scalar volume of a supported data type, or a ``scl_inter``
        that is not finite while ``scl_slope`` scales the voxels.
    """
    path = as_path(path)
    prefix, gzipped = _read_prefix(path)
    try:
        header, shape, notes = _vet_header(prefix)
    except VolumeReadError:
        # A corrupt or truncated stream garbles the header: say what is wrong.
        if gzipped:
            problem = _stream_problem(path)
            if problem is not None:
                raise VolumeReadError(problem) from None
        raise
    gz_name = path.name.lower().endswith(".gz")
    if gz_name and not gzipped:
        notes.append("file is named .nii.gz but is not gzip-compressed; read as plain NIfTI")
    elif gzipped and not gz_name:
        notes.append("file is named .nii but is gzip-compressed; read as compressed NIfTI")
    vox_offset = int(header["vox_offset"])
    n_voxels = int(np.prod(shape, dtype=np.int64))
    payload_end = vox_offset + n_voxels * header.get_data_dtype().itemsize
    return NiftiInfo(path, header, gzipped, shape, payload_end, notes)


def _vet_header(prefix: bytes) -> tuple[Any, tuple[int, ...], list[str]]:
    """Parse the first bytes of a file as a NIfTI-1 header nimask can read."""
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
    # The byte order is the one in which sizeof_hdr reads 348 (as niftilib
    # decides), not nibabel's guess from dim[0], which reads dim[0] = 8 as 2048.
    endianness = "<" if sizeof_hdr_le == 348 else ">"
    try:
        header = nib.Nifti1Header(prefix[:348], endianness=endianness, check=False)
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
        raise VolumeReadError(f"invalid header: dim[0] = {ndim} (must be 1 to 7)")
    shape = tuple(dims[1 : ndim + 1])
    if any(s <= 0 for s in shape):
        raise VolumeReadError(f"invalid header: non-positive size in dim {list(shape)}")
    _vet_vox_offset(float(header["vox_offset"]))
    _vet_datatype(header)
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
    _vet_scaling(header)
    notes = []
    if len(shape) > 3:
        notes.append(f"trailing singleton dimension(s) squeezed: {list(shape)} -> "
                     f"{list(shape[:3])}")
    notes.extend(_geometry_notes(header))
    return header, shape, notes


def _vet_vox_offset(vox_offset: float) -> None:
    """Where the voxels start must be clear to every reader."""
    if not math.isfinite(vox_offset):
        raise VolumeReadError(f"invalid header: vox_offset is {vox_offset}")
    if vox_offset < _HEADER_BYTES:
        # niftilib (ITK) then reads from byte 348, nibabel from vox_offset
        raise VolumeReadError(
            f"invalid header: vox_offset = {vox_offset:g} lies inside the 352-byte header of "
            "a single-file NIfTI-1 (readers disagree on where the voxels start)"
        )
    if vox_offset > _MAX_VOX_OFFSET:
        raise VolumeReadError(
            f"invalid header: vox_offset = {vox_offset:g} is beyond 2**31 - 1, "
            "which ITK's NIfTI reader cannot seek to"
        )


def _vet_datatype(header: Any) -> None:
    datatype = int(header["datatype"])
    label = header.get_value_label("datatype")
    try:
        dtype = header.get_data_dtype()
    except Exception as exc:
        raise InvalidVolumeError(f"unknown NIfTI datatype code {datatype}") from exc
    if dtype.fields is not None or dtype.kind == "c":
        raise InvalidVolumeError(
            f"voxels of type {label} (RGB/complex) are not supported: nimask masks scalar "
            "volumes"
        )
    if dtype.kind == "V" or dtype.newbyteorder("=") not in _SUPPORTED_DTYPES:
        raise InvalidVolumeError(
            f"unsupported voxel type {label} (NIfTI datatype {datatype}): nimask masks "
            f"volumes of {_SUPPORTED_NAMES}"
        )


def _vet_scaling(header: Any) -> None:
    """A finite, non-zero ``scl_slope`` needs a finite ``scl_inter``.

    NIfTI scales every voxel to ``scl_slope * v + scl_inter``; with a NaN or
    infinite intercept the intensities are undefined (niftilib, hence ITK,
    would silently use 0; nibabel refuses to scale).
    """
    slope = float(header["scl_slope"])
    inter = float(header["scl_inter"])
    if math.isfinite(slope) and slope != 0 and not math.isfinite(inter):
        raise InvalidVolumeError(
            f"invalid header: scl_inter is {inter} with scl_slope {slope:g}: the scaled "
            "intensities are undefined"
        )


def _geometry_notes(header: Any) -> list[str]:
    """Header fields ITK and nibabel read differently (nibabel rewrites them)."""
    odd = []
    pixdim = [float(v) for v in header["pixdim"][:4]]
    if pixdim[0] < 0 and pixdim[0] != -1:
        odd.append(f"pixdim[0] (qfac) = {pixdim[0]:g}")
    for axis in (1, 2, 3):
        if pixdim[axis] < 0:
            odd.append(f"pixdim[{axis}] = {pixdim[axis]:g}")
    for key in ("qform_code", "sform_code"):
        code = int(header[key])
        if not 0 <= code <= 4:
            odd.append(f"{key} = {code} (outside 0-4)")
    if not odd:
        return []
    return [f"header read differently by ITK and nibabel ({', '.join(odd)}): the mask keeps "
            "these fields unchanged, so each reader places the mask where it places the input"]


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


#: NIfTI extension code of the input identity in a mask (``NIFTI_ECODE_COMMENT``).
INPUT_ID_ECODE = 6
#: Start of the text of that extension.
INPUT_ID_PREFIX = "nimask-input "


@dataclass(frozen=True)
class InputIdentity:
    """What identifies an input's content: its size and a SHA-256 hash of its bytes.

    ``digest`` is the SHA-256 (hex) of the file as stored (the compressed bytes of a
    ``.nii.gz``: ``sha256sum`` prints the same); for an input read from several files
    (a detached header and its data, a DICOM series) it is the SHA-256 of their
    SHA-256 digests, one per line, in order, and ``size`` their total.  ``stat``
    holds ``(st_dev, st_ino, st_size, st_mtime_ns)`` of each file when it was hashed,
    to notice a file replaced while it is read.
    """

    size: int
    digest: str
    stat: tuple[tuple[int, int, int, int], ...] = field(default=(), compare=False)

    def token(self) -> str:
        """The text stored in a mask: ``nimask-input size=<bytes> sha256=<hex>``."""
        return f"{INPUT_ID_PREFIX}size={self.size} sha256={self.digest}"


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _file_digest(path: str | os.PathLike[str]) -> tuple[int, str, tuple[int, int, int, int]]:
    with open_regular(path) as fh:
        return _digest_open(fh)


def _digest_open(fh: io.BufferedReader) -> tuple[int, str, tuple[int, int, int, int]]:
    """Size, SHA-256 and stat key of an open file, read 1 MiB at a time."""
    digest = hashlib.sha256()
    before = os.fstat(fh.fileno())
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    size = 0
    try:
        while n := fh.readinto(buffer):
            digest.update(view[:n])
            size += n
    except OSError as exc:
        raise VolumeReadError(f"cannot read: {exc.strerror or exc}") from exc
    return size, digest.hexdigest(), _stat_key(before)


def _identity(parts: list[tuple[int, str, tuple[int, int, int, int]]]) -> InputIdentity:
    size = sum(part[0] for part in parts)
    if len(parts) == 1:
        digest = parts[0][1]
    else:
        digest = hashlib.sha256("".join(f"{part[1]}\n" for part in parts).encode()).hexdigest()
    return InputIdentity(size, digest, tuple(part[2] for part in parts))


def input_identity(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> InputIdentity:
    """Size and SHA-256 of the bytes of an input's file(s), each read once, 1 MiB at a time.

    SHA-256 rather than BLAKE2b: with the SHA instructions of current CPUs (through
    OpenSSL) it hashed a 7.8 MB ``.nii.gz`` in 4 ms against 18 ms
    (``benchmarks/input_hash.py`` measures the cost against masking).

    Raises
    ------
    VolumeReadError
        A file is not a regular file, or not readable.
    """
    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    return _identity([_file_digest(path) for path in files])


class IdentityJob:
    """:func:`input_identity` computed in a thread while the caller reads the volume.

    The files are opened (and checked to be regular files) at once, in the
    calling thread, so a file that cannot be opened fails here as it does in
    :func:`input_identity`; the hashing itself runs in a thread (``hashlib``
    and file reads release the GIL), which ``result()`` joins.  Call
    ``result()`` (or ``join()``) before returning: no thread is left behind.

    Raises
    ------
    VolumeReadError
        A file is not a regular file, or cannot be opened.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        self._handles: list[io.BufferedReader] = []
        try:
            for path in paths:
                self._handles.append(open_regular(path))
        except BaseException:
            self._close()
            raise
        self._value: InputIdentity | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nimask-hash", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        for fh in self._handles:
            fh.close()

    def _run(self) -> None:
        try:
            self._value = _identity([_digest_open(fh) for fh in self._handles])
        except BaseException as exc:  # re-raised by result() in the caller's thread
            self._error = exc
        finally:
            self._close()

    def join(self) -> None:
        """Wait for the hashing to end."""
        self._thread.join()

    def result(self) -> InputIdentity:
        """The identity (waits for the hashing); raises what the hashing raised."""
        self.join()
        if self._error is not None:
            raise self._error
        if self._value is None:  # pragma: no cover - _run sets one of the two
            raise VolumeReadError("the input's hash was not computed")
        return self._value


def unchanged_since(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], identity: InputIdentity,
) -> bool:
    """True when every file still has the device, inode, size and mtime it had when hashed."""
    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    try:
        return tuple(_stat_key(os.stat(path)) for path in files) == identity.stat
    except OSError:
        return False


def insert_extension(path: Path, ecode: int, content: bytes) -> None:
    """Add a NIfTI extension to a NIfTI-1 file without one (written by ITK), in place.

    The header is kept byte for byte except ``vox_offset`` and the extension flag;
    the voxels follow the extension.  A gzip file is compressed again (ISA-L,
    level 1, no time stamp, as nimask's own NIfTI masks: the same bytes every time).

    Raises
    ------
    VolumeReadError
        Not a NIfTI-1 file, or one that already has extensions.
    """
    raw = Path(path).read_bytes()
    gzipped = raw[:2] == b"\x1f\x8b"
    data = gzip.decompress(raw) if gzipped else raw
    if len(data) < 352:
        raise VolumeReadError("not a NIfTI-1 file: too short for a header")
    if struct.unpack("<i", data[:4])[0] == 348:
        endian = "<"
    elif struct.unpack(">i", data[:4])[0] == 348:
        endian = ">"
    else:
        raise VolumeReadError("not a NIfTI-1 file")
    if data[348] != 0:
        raise VolumeReadError("the file already has NIfTI extensions")
    vox_offset = int(struct.unpack(f"{endian}f", data[108:112])[0])
    esize = -(-(8 + len(content)) // 16) * 16
    extension = struct.pack(f"{endian}ii", esize, ecode) + content.ljust(esize - 8, b"\x00")
    header = bytearray(data[:348])
    header[108:112] = struct.pack(f"{endian}f", float(352 + esize))
    out = bytes(header) + b"\x01\x00\x00\x00" + extension + data[max(vox_offset, 352):]
    Path(path).write_bytes(_gzip_bytes(out) if gzipped else out)


def read_input_token(path: str | os.PathLike[str]) -> str | None:
    """The input identity recorded in a mask nimask wrote (:meth:`InputIdentity.token`).

    ``None`` when the file is not a readable NIfTI-1 or has no such extension
    (e.g. a mask written by an older nimask).
    """
    try:
        prefix, _ = _read_prefix(Path(path), 4096)
    except VolumeReadError:
        return None
    if len(prefix) < 352:
        return None
    if struct.unpack("<i", prefix[:4])[0] == 348:
        endian = "<"
    elif struct.unpack(">i", prefix[:4])[0] == 348:
        endian = ">"
    else:
        return None
    vox_offset = struct.unpack(f"{endian}f", prefix[108:112])[0]
    if not math.isfinite(vox_offset) or prefix[348] == 0:
        return None
    end = min(int(vox_offset), len(prefix))
    pos = 352
    while pos + 8 <= end:
        esize, ecode = struct.unpack(f"{endian}ii", prefix[pos : pos + 8])
        if esize < 16 or esize % 16 or pos + esize > end:
            return None
        content = prefix[pos + 8 : pos + esize].rstrip(b"\x00")
        if ecode == INPUT_ID_ECODE and content.startswith(INPUT_ID_PREFIX.encode()):
            return content.decode("ascii", "replace")
        pos += esize
    return None


def itk_can_name(path: str | os.PathLike[str]) -> bool:
    """Whether SimpleITK can be given this path (its text must be valid UTF-8).

    A file name that is not valid UTF-8 (e.g. Latin-1 bytes) reaches Python with
    surrogate escapes, which SimpleITK cannot convert: it aborts the process.
    """
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def safe_text(text: str) -> str:
    """``text`` with the bytes of a non-UTF-8 file name shown as ``\\xNN`` escapes.

    Names are decoded with surrogate escapes (PEP 383); this gives printable,
    valid UTF-8 text for logs, reports and HTML (``M\\xfcller.nii.gz``).
    """
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@contextlib.contextmanager
def _itk_alias(path: Path) -> Iterator[Path]:
    """A symbolic link with a plain name to ``path``, for SimpleITK; removed afterwards."""
    name = "input.nii.gz" if path.name.lower().endswith(".nii.gz") else "input.nii"
    try:
        folder = Path(tempfile.mkdtemp(prefix="nimask-read-"))
    except OSError as exc:
        raise VolumeReadError(
            "its name is not valid UTF-8 and no temporary link can be made for SimpleITK: "
            f"{exc.strerror or exc}"
        ) from exc
    try:
        link = folder / name
        if not itk_can_name(link):
            raise VolumeReadError(
                "its name is not valid UTF-8 and the temporary folder's name is not either: "
                "SimpleITK cannot open it"
            )
        try:
            os.symlink(os.path.abspath(path), link)
        except OSError as exc:
            raise VolumeReadError(
                "its name is not valid UTF-8 and no temporary link can be made for "
                f"SimpleITK: {exc.strerror or exc}"
            ) from exc
        yield link
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_size_bounds(info: NiftiInfo) -> None:
    """Cheap checks before anything is decompressed or allocated.

    A plain file must be at least as long as the header needs; a gzip file
    cannot hold more than ~1032 times its size (deflate's limit), so a header
    claiming terabytes in a small file is refused here.
    """
    need = info.payload_end
    size = info.path.stat().st_size
    if not info.gzipped:
        if size < need:
            raise VolumeReadError(
                f"file is truncated: header needs {need} bytes, file has {size}"
            )
        return
    if size < 18:
        raise VolumeReadError("truncated gzip file")
    if need > size * _MAX_DEFLATE_RATIO + 4096:
        raise VolumeReadError(
            f"its header needs {need} bytes of data but a {size}-byte gzip file cannot hold "
            "that much: truncated file or a header claiming dimensions the file does not hold"
        )


@dataclass
class _StreamEnd:
    """How a (decompressed) file ended: its size and what followed the last gzip member."""

    total: int
    trailing: int = 0

    def notes(self) -> list[str]:
        if not self.trailing:
            return []
        return [f"{self.trailing} bytes after the end of the gzip stream ignored"]


def _read_stream(path: Path, gzipped: bool, start: int, out: np.ndarray,
                 need: int, *, stop_after: int | None = None) -> _StreamEnd:
    """Copy bytes ``[start, start + out.size)`` of the (decompressed) file into ``out``.

    A gzip file is decompressed to its end, member after member (straight
    into ``out``, chunk by chunk: the whole file is never held in memory), and
    each member must end with its CRC-32 and length check: a truncated or
    corrupt stream raises :class:`VolumeReadError` whatever its last four
    bytes say.  Bytes after the last member that do not start another member
    are counted as trailing (ITK and zlib ignore them).  ``need`` is the size
    the header promises; a stream going on far beyond it is refused.
    ``stop_after``: return (unverified) once that many bytes were decompressed.
    """
    end = start + out.size
    position = 0  # offset in the uncompressed stream

    def take(piece: bytes) -> None:
        nonlocal position
        lo, hi = max(start, position), min(end, position + len(piece))
        if lo < hi:
            out[lo - start : hi - start] = np.frombuffer(piece, np.uint8, hi - lo, lo - position)
        position += len(piece)
        if position > need + max(need, _MAX_EXCESS):
            raise VolumeReadError(
                f"the gzip stream holds more than {position} bytes but the header describes "
                f"{need}: not a volume nimask can read"
            )

    with open(path, "rb") as fh:
        if not gzipped:
            fh.seek(start)
            fh.readinto(out.data)
            return _StreamEnd(os.fstat(fh.fileno()).st_size)
        try:
            decomp = _inflate.decompressobj(31)
            pending = b""
            while True:
                chunk = decomp.unconsumed_tail or pending or fh.read(_CHUNK)
                pending = b""
                if not chunk:
                    raise VolumeReadError(
                        "truncated gzip file: the compressed stream ends before its end marker"
                    )
                take(decomp.decompress(chunk, _CHUNK * 4))
                if stop_after is not None and position >= stop_after:
                    return _StreamEnd(position)
                if not decomp.eof:
                    continue
                # the member ended and its CRC and length matched
                rest = decomp.unused_data
                if len(rest) < 2:
                    rest += fh.read(2 - len(rest))
                if rest[:2] == b"\x1f\x8b":
                    decomp = _inflate.decompressobj(31)
                    pending = rest
                    continue
                here = fh.tell()
                return _StreamEnd(position, len(rest) + fh.seek(0, os.SEEK_END) - here)
        except _INFLATE_ERRORS as exc:
            raise VolumeReadError(f"the gzip stream is corrupt ({_one_line(exc)})") from exc


def _stream_problem(path: Path) -> str | None:
    """Why the gzip stream of ``path`` is corrupt or truncated, or ``None``.

    Used to name the cause when a header or ITK's reader fails; looks at the
    first 64 MiB at most (a damaged stream garbles what follows the damage).
    """
    try:
        _read_stream(path, True, 0, np.empty(0, np.uint8), 1 << 62, stop_after=1 << 26)
    except VolumeReadError as exc:
        return str(exc)
    except OSError:
        return None
    return None


def verify_payload(info: NiftiInfo) -> list[str]:
    """Check that the file holds all the voxel bytes its header promises.

    A gzip file is decompressed to its end (without keeping the data): every
    member must end with a matching CRC-32 and length, and the total must
    reach ``vox_offset`` plus the voxel bytes.  The gzip size field alone is
    not trusted: a truncated file can end with the expected four bytes.

    Returns
    -------
    list of str
        Notes (bytes after the end of the gzip stream, ignored).

    Raises
    ------
    VolumeReadError
        Truncated, corrupt, or shorter than the header claims.
    """
    _check_size_bounds(info)
    if not info.gzipped:
        return []
    ending = _read_stream(info.path, True, 0, np.empty(0, np.uint8), info.payload_end)
    _check_total(ending, info.payload_end)
    return ending.notes()


def _check_total(ending: _StreamEnd, need: int) -> None:
    if ending.total < need:
        raise VolumeReadError(
            f"file holds {ending.total} bytes of data but its header needs {need}: truncated "
            "file or a header claiming dimensions the file does not hold"
        )


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
    slope, inter = _scaling(header)
    return abs(slope) > eps and (abs(slope - 1.0) > eps or abs(inter) > eps)




def _scaling(header: Any) -> tuple[float, float]:
    """The ``(slope, intercept)`` ITK applies when :func:`_must_rescale` is true.

    niftilib turns a non-finite value into 0, and ITK takes a slope within
    machine epsilon of 0 as 1 (the same steps as :func:`_must_rescale`).
    """
    slope = float(header["scl_slope"])
    inter = float(header["scl_inter"])
    slope = slope if math.isfinite(slope) else 0.0
    inter = inter if math.isfinite(inter) else 0.0
    if abs(slope) < float(np.finfo(np.float64).eps):
        slope = 1.0
    return slope, inter


def _direct_kind(info: NiftiInfo) -> str | None:
    """How :func:`_read_voxels` reads ``info``'s voxels, ``None`` when it leaves them to ITK.

    ``"float"``: a float file ITK would not rescale; ``"int"``: an integer file
    ITK would not rescale (any width); ``"int-scaled"``: an integer file of at
    most 32 bits that ITK reads as float32 after ``scl_slope``/``scl_inter``.
    """
    if len(info.shape) != 3:
        return None
    dtype = info.header.get_data_dtype()
    rescale = _must_rescale(info.header)
    if dtype.kind == "f":
        return None if rescale else "float"
    if dtype.kind in "iu":
        if not rescale:
            return "int"
        return "int-scaled" if dtype.itemsize <= 4 else None
    return None


#: Voxels converted at a time (bounds the temporaries of rescaling and NaN checks).
_BLOCK = 1 << 20


def _rescaled_float32_into(out: np.ndarray, raw: np.ndarray, slope: float, inter: float) -> None:
    """``float32(float64(float32(raw)) * slope + inter)``, ITK's NIfTI rescaling, into ``out``.

    ITK's ``NiftiImageIO`` converts the stored integers to its float32 output
    buffer, then rescales each voxel in double precision and stores the result
    as float32 (beyond the float32 range: +-inf, refused afterwards by
    :func:`_check_scaling_overflow` as for ITK's own read).  ``out`` is float32
    of ``raw``'s shape; the work goes block by block (bounded temporaries).
    """
    flat_in = raw.reshape(-1)
    flat_out = out.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        for lo in range(0, flat_in.size, _BLOCK):
            block = flat_in[lo : lo + _BLOCK].astype(np.float32).astype(np.float64)
            block *= slope
            block += inter
            flat_out[lo : lo + _BLOCK] = block


def _nonfinite_to_nan(flat: np.ndarray) -> None:
    """Set every NaN/Inf voxel of a flat float array to NaN, in place, block by block."""
    for lo in range(0, flat.size, _BLOCK):
        block = flat[lo : lo + _BLOCK]
        nonfinite = ~np.isfinite(block)
        if nonfinite.any():
            block[nonfinite] = np.nan


def _read_voxels(info: NiftiInfo) -> tuple[sitk.Image, list[str]] | None:
    """The voxels of a volume nimask reads itself, as an image; ``None``: ITK reads it.

    ITK's voxels are the stored ones when it does not rescale them
    (:func:`_must_rescale`), except that its NIfTI reader replaces NaN/Inf by 0
    (niftilib), which nimask has to undo anyway (:func:`_restore_nonfinite`);
    for integers of at most 32 bits that it rescales, they are
    :func:`_rescaled_float32_into` of the stored ones.  So the voxels are read here,
    in the one decompression that also verifies the gzip stream to its end,
    straight into the image's own buffer (no copy), before ITK sees the file;
    :func:`_direct_image` adds ITK's geometry.  The result is the same image as
    ITK's read followed by :func:`_restore_nonfinite`, with one decompression
    instead of two or three (tested against ITK's reader for every voxel type,
    byte order and scaling).
    """
    kind = _direct_kind(info)
    if kind is None:
        return None
    dtype = info.header.get_data_dtype()
    n_bytes = int(np.prod(info.shape, dtype=np.int64)) * dtype.itemsize
    start = info.payload_end - n_bytes  # vox_offset as inspect_nifti read it
    shape_zyx = tuple(int(n) for n in info.shape[::-1])
    if kind == "int-scaled":
        # the stored integers in a scratch buffer, the float32 image made from them
        target = np.empty(n_bytes, dtype=np.uint8)
        image, array = new_image(shape_zyx, np.dtype(np.float32))
    else:
        # the stored voxels straight into the image's own buffer
        image, array = new_image(shape_zyx, dtype)
        target = array.reshape(-1).view(np.uint8)
    try:
        ending = _read_stream(info.path, info.gzipped, start, target, info.payload_end)
    except OSError as exc:
        if isinstance(exc, VolumeReadError):
            raise
        raise VolumeReadError(f"cannot read: {exc.strerror or exc}") from exc
    _check_total(ending, info.payload_end)
    if kind == "int-scaled":
        _rescaled_float32_into(array, target.view(dtype).reshape(shape_zyx),
                               *_scaling(info.header))
    elif not dtype.isnative:
        array.byteswap(inplace=True)  # the bytes were stored in the file's order
    if kind == "float":
        _nonfinite_to_nan(array.reshape(-1))
    del array, target
    return image, ending.notes()


def _direct_image(info: NiftiInfo, image: sitk.Image) -> sitk.Image | None:
    """The image of :func:`_read_voxels` with the geometry ITK reads from the header.

    ``None`` when ITK does not read the header as a 3D scalar image of the
    header's size (ITK then reads the file).
    """
    reader = _itk_reader(info.path)
    reader.ReadImageInformation()
    if (reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1
            or tuple(reader.GetSize()) != info.shape):
        return None
    image.SetOrigin(reader.GetOrigin())
    spacing, direction = _itk_output_grid(reader.GetSpacing(), reader.GetDirection())
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def _itk_output_grid(spacing: tuple[float, ...], direction: tuple[float, ...]
                     ) -> tuple[list[float], list[float]]:
    """``ImageFileReader``'s own adjustment of what the image IO reports.

    A negative spacing (a negative ``pixdim[i]`` in the qform) becomes its
    absolute value with the direction's column ``i`` negated, as
    ``itk::ImageFileReader::GenerateOutputInformation`` does.
    """
    n = len(spacing)
    out_spacing = list(spacing)
    out_direction = list(direction)
    for i in range(n):
        if out_spacing[i] < 0:
            out_spacing[i] = -out_spacing[i]
            for j in range(n):
                out_direction[j * n + i] = -out_direction[j * n + i]
    return out_spacing, out_direction


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # ITK messages end with the useful sentence after "ITK ERROR: ...: "
    if "ITK ERROR" in text:
        text = text.rsplit("ITK ERROR", 1)[1].split(":", 2)[-1]
    return " ".join(text.split())




def read_volume(path: str | os.PathLike[str]) -> LoadedVolume:
    """Vet a NIfTI file, then read it as a 3D scalar ``sitk.Image`` with ITK.

    A path that is not valid UTF-8 (:func:`itk_can_name`) is read through a
    symbolic link with a plain name in the system's temporary folder, removed
    afterwards; the returned ``info.path`` is ``path``.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    LoadedVolume
        The image (intensities after ``scl_slope``/``scl_inter``), the parsed
        header, and notes worth logging (squeezed singleton axis, sheared sform,
        header fields other readers rewrite, bytes after the gzip stream).

    Raises
    ------
    ParameterError
        ``path`` is not a str or os.PathLike[str].
    VolumeReadError
        Not a readable NIfTI-1 file: empty, truncated (whatever its gzip size
        field says), a corrupt gzip stream, an invalid header.
    InvalidVolumeError
        Not a 3D scalar volume of a supported voxel type, undefined scaling
        (``scl_inter`` NaN with a ``scl_slope``), or scaling that overflows.
    """
    checked = as_path(path)
    if itk_can_name(checked):
        return _read_volume(checked)
    with _itk_alias(checked) as alias:
        loaded = _read_volume(alias)
    loaded.info.path = checked
    return loaded


def _read_volume(path: Path) -> LoadedVolume:
    info = inspect_nifti(path)
    _check_size_bounds(info)
    notes = list(info.notes)
    voxels = _read_voxels(info)
    if voxels is None:
        notes.extend(verify_payload(info))  # before ITK reads (it zero-fills a short file)
    else:
        notes.extend(voxels[1])

    def itk_read() -> tuple[sitk.Image, bool]:
        nonlocal voxels
        if voxels is not None:
            image = _direct_image(info, voxels[0])
            if image is not None:
                return image, True
            voxels = None  # ITK reads it another way: let it read the file
        return _itk_read(info.path), False

    try:
        image, direct = itk_read()
    except RuntimeError as exc:
        message = _one_line(exc)
        if "orthonormal" not in message:
            # (the stream was verified: ITK never meets a corrupt one here)
            raise VolumeReadError(f"ITK cannot read it: {message}") from exc
        try:
            with _permissive_sform():
                image, direct = itk_read()
        except RuntimeError as exc2:
            raise VolumeReadError(f"ITK cannot read it: {_one_line(exc2)}") from exc2
        notes.append("sform is not orthonormal: ITK orthogonalised it for processing; "
                     "the mask keeps the input's header unchanged")
    del voxels
    if direct:
        _check_scaling_overflow(image, info)  # (scaled integers only)
        return LoadedVolume(image, info, notes)
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
    _check_scaling_overflow(image, info)
    # The pure layer counts the NaN voxels and notes them as background.
    image, _ = _restore_nonfinite(image, info)
    return LoadedVolume(image, info, notes)


def _check_scaling_overflow(image: sitk.Image, info: NiftiInfo) -> None:
    """Refuse a volume whose ``scl_slope``/``scl_inter`` overflow the type ITK reads into.

    ITK's reader sets non-finite raw voxels to 0 before scaling, so a
    non-finite voxel in its rescaled image comes from the scaling itself
    (e.g. ``scl_slope = 1e37`` on int16 data read as float32).
    """
    if not _must_rescale(info.header) or image.GetPixelID() not in (
            sitk.sitkFloat32, sitk.sitkFloat64):
        return
    view = sitk.GetArrayViewFromImage(image)
    if np.isfinite(view.min()) and np.isfinite(view.max()):
        return
    count = int(np.count_nonzero(~np.isfinite(view)))
    kind = "float32" if image.GetPixelID() == sitk.sitkFloat32 else "float64"
    raise InvalidVolumeError(
        f"scaling overflow: scl_slope = {float(info.header['scl_slope']):g} and scl_inter = "
        f"{float(info.header['scl_inter']):g} take {count} voxels beyond the {kind} range "
        "ITK reads scaled voxels into"
    )


def _restore_nonfinite(image: sitk.Image, info: NiftiInfo) -> tuple[sitk.Image, int]:
    """Put back as NaN the NaN/Inf voxels that ITK's NIfTI reader replaced by 0.

    niftilib (inside ITK's ``NiftiImageIO``) silently sets every non-finite
    float voxel to 0 on reading, so a NaN could pass a window containing 0.
    Only float files that may hold such a voxel (ITK read a 0, or the file has
    an intercept) are read again (raw values) to find them.
    """
    dtype = info.header.get_data_dtype()
    if dtype.kind != "f":
        return image, 0
    inter = float(info.header["scl_inter"]) if _must_rescale(info.header) else 0.0
    # A stored 0 reads as 0 when there is no intercept: without a 0 there was no NaN.
    if not inter and not np.any(sitk.GetArrayViewFromImage(image) == 0):
        return image, 0
    n_bytes = int(np.prod(info.shape[:3], dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(n_bytes, dtype=np.uint8)
    _read_stream(info.path, info.gzipped, info.payload_end - n_bytes, buffer, info.payload_end)
    raw = buffer.view(dtype).reshape(info.shape[:3], order="F")
    nonfinite = ~np.isfinite(raw.T)  # (z, y, x) like ITK's array
    count = int(np.count_nonzero(nonfinite))
    if count == 0:
        return image, 0
    array = sitk.GetArrayFromImage(image)
    array[nonfinite] = np.nan
    restored = sitk.GetImageFromArray(array)
    restored.CopyInformation(image)
    return restored, count


def mask_header(info: NiftiInfo, descrip: str, extension_bytes: int = 0) -> Any:
    """Header for a uint8 mask: the input's header with only the data fields replaced.

    Built on the input's own header bytes, unchecked (nibabel's checks would
    rewrite negative ``pixdim``, an odd ``qfac`` or codes outside 0-4, which
    moves the mask for ITK): every spatial field is the input's, byte for byte.
    ``extension_bytes``: size of the NIfTI extensions after the header (the
    voxels start after them).
    """
    header = info.header.copy()
    header.set_data_shape(info.shape[:3])
    header.set_data_dtype(np.uint8)
    header["scl_slope"] = 1.0  # unscaled, as nibabel writes it
    header["scl_inter"] = 0.0
    header["vox_offset"] = _HEADER_BYTES + extension_bytes
    header["intent_code"] = 0
    header["intent_name"] = b""
    header["cal_min"] = 0
    header["cal_max"] = 1
    header["descrip"] = descrip.encode("ascii", "replace")[:79]
    return header


def write_mask(mask: sitk.Image, info: NiftiInfo, out_path: Path, descrip: str,
               input_token: str | None = None) -> None:
    """Write ``mask`` atomically to ``out_path`` with the input's spatial header.

    The file is the header of ``mask_header``, the extension flag, the
    input's identity ``input_token`` (:meth:`InputIdentity.token`) as a NIfTI
    extension (code :data:`INPUT_ID_ECODE`, ``NIFTI_ECODE_COMMENT``) when given,
    and the voxels; a name ending in ``.gz`` is gzip-compressed (Intel ISA-L's
    deflate, level 1, no name, mtime 0: the same mask gives the same bytes with a
    given ISA-L version and CPU family, as zlib's output is fixed for a given zlib;
    on a mask about 6 times faster than zlib's level 1 and about 15 % smaller), any
    other name (``.nii``) is written plain.  The data go to a
    temporary file in the same folder which is flushed, fsync'ed and renamed
    over ``out_path``; on any failure the temporary file is removed and
    ``out_path`` is left as it was.

    Raises
    ------
    OutputError
        The file cannot be written.
    """
    data = sitk.GetArrayViewFromImage(mask)  # (z, y, x): x varies fastest, as in NIfTI
    if data.dtype != np.uint8:
        data = data.astype(np.uint8)
    content = b"" if input_token is None else input_token.encode("ascii")
    size = len(_extension(INPUT_ID_ECODE, content, "<")) if content else 0
    header = mask_header(info, descrip, size)
    extension = _extension(INPUT_ID_ECODE, content, header.endianness) if content else b""
    contents = _MaskFile(header.binaryblock, np.ascontiguousarray(data),
                         gzipped=Path(out_path).name.lower().endswith(".gz"),
                         extension=extension)
    atomic_write(out_path, lambda tmp: _save_mask_file(contents, tmp))


def _mask_gzip(fileobj: Any) -> Any:
    """A gzip writer onto ``fileobj`` as nimask compresses its masks (level 1, no name, mtime 0)."""
    return _GzipWriter(filename="", mode="wb", compresslevel=1, fileobj=fileobj, mtime=0)


def _gzip_bytes(data: bytes) -> bytes:
    """``data`` as one gzip member, compressed as nimask's masks."""
    buffer = io.BytesIO()
    with _mask_gzip(buffer) as out:
        out.write(data)
    return buffer.getvalue()


def _extension(ecode: int, content: bytes, endian: str) -> bytes:
    """One NIfTI-1 extension: size, code, content padded with NULs to a multiple of 16."""
    esize = -(-(8 + len(content)) // 16) * 16
    return struct.pack(f"{endian}ii", esize, ecode) + content.ljust(esize - 8, b"\x00")


@dataclass
class _MaskFile:
    """The bytes of a mask file: a 348-byte header and the voxels in NIfTI order."""

    header: bytes
    voxels: np.ndarray
    gzipped: bool = True
    #: NIfTI extensions after the header (empty: none).
    extension: bytes = b""


def _save_mask_file(contents: _MaskFile, path: Path) -> None:
    """Write a single-file NIfTI-1, gzip-compressed by ISA-L (level 1, no name, mtime 0)."""
    with open(path, "wb") as raw:
        out: Any = raw
        if contents.gzipped:
            out = _mask_gzip(raw)
        with out:
            out.write(contents.header)
            if contents.extension:
                out.write(b"\x01\0\0\0")  # extension flag
                out.write(contents.extension)
            else:
                out.write(b"\0" * (_HEADER_BYTES - len(contents.header)))  # no extension
            out.write(contents.voxels.data)


def temporary_tag(name: str) -> str:
    """Eight hex digits identifying a final file name in its temporaries' names.

    ``blake2b`` of the name's file-system bytes: the same on every machine.
    """
    digest = hashlib.blake2b(os.fsencode(name), digest_size=4)
    return digest.hexdigest()


def atomic_write(out_path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file to ``out_path``.

    The temporary file is ``.nimask-tmp-<run>-<host>-<pid>-<tag>-XXXXXXXX<suffix>``
    in the folder of ``out_path`` (owner fields: :mod:`nimask.io.tempfiles`;
    ``<tag>``: :func:`temporary_tag` of ``out_path``'s name).  Its length (at
    most about 60 characters) does not depend on ``out_path``'s name, so any
    name the file system accepts can be written.  On any exception
    (``KeyboardInterrupt`` included) it is removed and ``out_path`` is left as
    it was.  Only a process killed outright (SIGKILL, power loss) can leave it
    behind; the next run removes it once its writer is gone
    (:func:`cleanup_temporaries`).  Right before the rename the current run's
    check is asked (:func:`nimask.io.tempfiles.publish_refusal`): a worker whose
    run has ended removes its temporary and raises instead of publishing.

    Raises
    ------
    OutputError
        The file cannot be written, or the run it was written for has ended.
    """
    out_path = Path(out_path)
    suffix = ".nii.gz" if out_path.name.lower().endswith(".nii.gz") else out_path.suffix
    if len(suffix) > 8 or not suffix.isascii():
        suffix = ""
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f"{TEMP_MARKER}{owner_tag()}{temporary_tag(out_path.name)}-",
            suffix=suffix, dir=out_path.parent,
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
