"""Every volume format a case can come in and a mask can go out in.

Reading (:func:`read_case`):

* NIfTI (``.nii.gz``, ``.nii``) goes through the careful path of :mod:`nimask.io.nifti`
  (header vetted, payload checked, NaN restored), and the mask keeps a copy of the input's
  header;
* NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``) and MINC-2 (``.mnc``) are read
  by SimpleITK with an explicit ``ImageIO`` (so a file is read only as what its name says),
  after checks SimpleITK does not make: the header must describe a 3D scalar volume (2D,
  4D with more than one time point, vector and complex voxels are refused; a trailing
  singleton 4th axis is dropped with a note), the file must hold the bytes the header
  promises (a truncated MetaImage otherwise fails with "No such file or directory"), and
  MINC-1 (netCDF) files, which ITK cannot read, are refused with a reason;
* a DICOM series (``Case.kind == "dicom-series"``) is read by
  :func:`nimask.io.dicom.read_series` (:func:`read_dicom_case`).

Writing (:func:`write_case_mask`), always atomically (:func:`nimask.io.nifti.atomic_write`):

* a NIfTI mask of a NIfTI input: nibabel, with a copy of the input's header
  (:func:`nimask.io.nifti.write_mask`, unchanged);
* any other combination: SimpleITK's writer for the output's format, NRRD and MetaImage
  compressed (deterministic: same input and parameters, same bytes; MINC files differ from
  run to run in the HDF5 object times and libminc's ``ident`` stamp only, which SimpleITK
  cannot turn off: docs/cohorts.md).  Before the file is
  renamed into place its geometry is read back and compared with the image's: identical
  for MetaImage (it stores the doubles), identical to the last bits (relative 1e-12) for
  NRRD (which stores spacing times direction) and MINC (which stores the origin along its
  own axes), within float32 precision for NIfTI (which stores float32); otherwise the case
  fails.

Provenance (the text of :meth:`nimask.batch.settings.MaskSettings.provenance`) is stored
where the format allows: the NIfTI ``descrip`` field, the NRRD key/value pair
``nimask_provenance:=...``, the MetaImage field ``nimask_provenance = ...``; MINC masks get
it in a JSON sidecar (``<mask stem>.json``, :func:`sidecar_path`).  :func:`read_provenance`
reads it back from any of them.

Header fidelity with ``output_format="same"``: NRRD masks are written in ITK's convention
(``space: left-posterior-superior``, ``space directions``, ``space origin``: 3D Slicer's),
MetaImage masks with ``TransformMatrix``, ``Offset``, ``ElementSpacing`` and the
``AnatomicalOrientation`` ITK derives from the direction (``RAI`` for an identity
direction: 3D Slicer's).  An input that uses these conventions gets the same field values
back; :func:`header_differences` lists any field that differs (e.g. a NRRD in
``right-anterior-superior`` space comes back in ``left-posterior-superior`` with the same
physical geometry), and the case gets a note for each.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..exceptions import InvalidVolumeError, OutputError, ParameterError, VolumeReadError
from ..records import Case
from . import nifti
from .nifti import NiftiInfo, read_descrip, read_volume, write_mask

__all__ = [
    "INPUT_KEY",
    "OUTPUT_FORMATS",
    "PROVENANCE_KEY",
    "VOLUME_FORMATS",
    "CaseVolume",
    "ImageInformation",
    "data_files",
    "dicom_module",
    "geometry_difference",
    "header_differences",
    "image_information",
    "import_seg_writer",
    "mask_extension",
    "read_case",
    "read_dicom_case",
    "read_header_fields",
    "read_mask_input_token",
    "read_provenance",
    "read_seg_provenance",
    "seg_path",
    "sidecar_path",
    "split_volume_name",
    "validate_output_format",
    "verify_mask_file",
    "volume_format",
    "write_case_mask",
    "write_case_seg",
    "write_sidecar",
]

logger = logging.getLogger(__name__)

#: Volume file extensions (matched case-insensitively) -> format name.
VOLUME_FORMATS: dict[str, str] = {
    ".nii.gz": "nii.gz",
    ".nii": "nii",
    ".nrrd": "nrrd",
    ".nhdr": "nhdr",
    ".mha": "mha",
    ".mhd": "mhd",
    ".mnc": "mnc",
}
#: Values of ``output_format``.
OUTPUT_FORMATS = ("nii.gz", "same", "nrrd", "mha", "nii", "dicom-seg")
#: Key of nimask's provenance in NRRD and MetaImage masks.
PROVENANCE_KEY = "nimask_provenance"
#: Key of the input's identity (:meth:`nimask.io.nifti.InputIdentity.token`) in NRRD and
#: MetaImage masks, and in the ``"nimask"`` block of a MINC mask's JSON sidecar.
INPUT_KEY = "nimask_input"

# Mask extension per input format for output_format="same": detached headers (.nhdr, .mhd)
# give one attached file (.nrrd, .mha), so that a mask is one file renamed into place.  A
# case without a volume file format of its own (a DICOM series) gets NIfTI.
_SAME_EXTENSION = {
    "nii.gz": ".nii.gz", "nii": ".nii", "nrrd": ".nrrd", "nhdr": ".nrrd",
    "mha": ".mha", "mhd": ".mha", "mnc": ".mnc", "dicom": ".nii.gz",
}
# "dicom-seg": the NIfTI mask (report, QC, re-runs) and a DICOM SEG beside it (seg_path).
_EXPLICIT_EXTENSION = {"nii.gz": ".nii.gz", "nii": ".nii", "nrrd": ".nrrd", "mha": ".mha",
                       "dicom-seg": ".nii.gz"}
#: Key of nimask's provenance in a DICOM SEG's AlgorithmParameters (``key=value``).
SEG_PROVENANCE_KEY = "provenance"
_IMAGE_IO = {
    "nii.gz": "NiftiImageIO", "nii": "NiftiImageIO", "nrrd": "NrrdImageIO",
    "nhdr": "NrrdImageIO", "mha": "MetaImageIO", "mhd": "MetaImageIO", "mnc": "MINCImageIO",
}
_NIFTI = ("nii.gz", "nii")
_COMPLEX = {
    getattr(sitk, name) for name in ("sitkComplexFloat32", "sitkComplexFloat64")
    if hasattr(sitk, name)
}
#: Largest ratio of uncompressed to compressed size deflate can reach, with margin.
_MAX_DEFLATE_RATIO = 1100
_HEADER_LIMIT = 1 << 16  # bytes of a NRRD/MetaImage header read at most
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def volume_format(name: str | os.PathLike[str]) -> str | None:
    """The format of a volume file name (``"nii.gz"``, ``"nrrd"``, ...), ``None`` if unknown."""
    split = split_volume_name(name)
    return None if split is None else split[1]


def split_volume_name(name: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``"scan.NII.GZ"`` -> ``("scan", "nii.gz")``; ``None`` for another kind of file."""
    text = os.path.basename(os.fspath(name))
    lower = text.lower()
    for ext, fmt in VOLUME_FORMATS.items():  # ".nii.gz" before ".nii"... and ".gz"
        if lower.endswith(ext) and len(text) > len(ext):
            return text[: -len(ext)], fmt
    return None


def validate_output_format(value: object) -> str:
    """``value`` if it is one of :data:`OUTPUT_FORMATS` (case-insensitive, leading dot allowed).

    Raises
    ------
    ParameterError
    """
    if isinstance(value, str):
        text = value.strip().lower().lstrip(".")
        if text in OUTPUT_FORMATS:
            return text
    raise ParameterError(
        f"output_format must be one of {', '.join(map(repr, OUTPUT_FORMATS))}, got {value!r}"
    )


def mask_extension(input_format: str, output_format: str) -> str:
    """Extension of the mask of an ``input_format`` case written as ``output_format``."""
    if output_format == "same":
        return _SAME_EXTENSION[input_format]
    return _EXPLICIT_EXTENSION[output_format]


def _extension_of(path: Path) -> str:
    lower = path.name.lower()
    return ".nii.gz" if lower.endswith(".nii.gz") else Path(lower).suffix


def seg_path(mask_path: str | os.PathLike[str]) -> Path:
    """``x_mask.nii.gz`` -> ``x_seg.dcm`` (the DICOM SEG beside a DICOM series' mask)."""
    path = Path(mask_path)
    stem = path.name[: -len(_extension_of(path))]
    if stem.endswith("_mask"):
        stem = stem[: -len("_mask")]
    return path.with_name(stem + "_seg.dcm")


def sidecar_path(mask_path: str | os.PathLike[str]) -> Path:
    """``x_mask.nii.gz`` -> ``x_mask.json`` (the JSON sidecar beside a mask)."""
    path = Path(mask_path)
    return path.with_name(path.name[: -len(_extension_of(path))] + ".json")


@dataclass
class CaseVolume:
    """A case read into memory.

    Attributes
    ----------
    image : SimpleITK.Image
        3D scalar volume (intensities after any rescaling the format defines).
    format : str
        The input's format (:data:`VOLUME_FORMATS` value, or ``"dicom"``).
    nifti : NiftiInfo or None
        NIfTI inputs: the vetted header a NIfTI mask copies.
    header : dict of str to str
        NRRD/MetaImage inputs: the header fields as written (:func:`read_header_fields`),
        for the header fidelity check of ``output_format="same"``.
    notes : list of str
        Worth logging (squeezed axis, sheared sform, ...).
    """

    image: sitk.Image
    format: str
    nifti: NiftiInfo | None = None
    header: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- headers


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(_HEADER_LIMIT)


def _nrrd_header(head: bytes) -> tuple[dict[str, str], int] | None:
    """Fields (``key: value`` and ``key:=value``) and the byte offset where data start."""
    if not head.startswith(b"NRRD000"):
        return None
    fields: dict[str, str] = {}
    pos = head.index(b"\n") + 1 if b"\n" in head else len(head)
    while pos < len(head):
        end = head.find(b"\n", pos)
        if end < 0:
            break
        line = head[pos:end].decode("latin-1").rstrip("\r")
        pos = end + 1
        if line == "":
            return fields, pos
        if line.startswith("#"):
            continue
        if ":=" in line:
            key, value = line.split(":=", 1)
            fields[key] = value
        elif ": " in line:
            key, value = line.split(": ", 1)
            fields[key.strip().lower()] = value.strip()
    return fields, len(head)  # detached header: no blank line before the end


def _meta_header(head: bytes) -> tuple[dict[str, str], int] | None:
    """MetaImage fields (``Key = Value``) and the byte offset where data start."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(head):
        end = head.find(b"\n", pos)
        if end < 0:
            end = len(head)
        line = head[pos:end].decode("latin-1").rstrip("\r")
        pos = end + 1
        if "=" not in line:
            if line.strip():
                return None
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        fields[key] = value
        if key == "ElementDataFile":
            return fields, min(pos, len(head))
    return (fields, len(head)) if "ObjectType" in fields or "NDims" in fields else None


def read_header_fields(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """The header fields of a NRRD (``.nrrd``/``.nhdr``) or MetaImage (``.mha``/``.mhd``) file.

    NRRD field names are lower-cased (``space directions``); key/value pairs keep their
    key (``nimask_provenance``).  ``None`` when the file cannot be read or is not of that
    format.  Only the first 64 KiB are read.
    """
    path = Path(path)
    fmt = volume_format(path)
    try:
        head = _read_head(path)
    except OSError:
        return None
    parsed = _nrrd_header(head) if fmt in ("nrrd", "nhdr") else (
        _meta_header(head) if fmt in ("mha", "mhd") else None)
    return None if parsed is None else parsed[0]


def read_provenance(mask_path: str | os.PathLike[str]) -> str | None:
    """nimask's provenance stored in a mask (any output format), ``None`` if there is none.

    NIfTI: the ``descrip`` field; NRRD/MetaImage: the ``nimask_provenance`` key; MINC: the
    JSON sidecar's ``nimask.provenance``.  The text is returned as stored; whether it is
    nimask's full format is for :func:`nimask.batch.settings.parse_provenance` to say.
    """
    return _recorded(Path(mask_path), read_descrip, PROVENANCE_KEY, "provenance")


def read_mask_input_token(mask_path: str | os.PathLike[str]) -> str | None:
    """The input identity recorded in a mask nimask wrote, ``None`` if there is none.

    NIfTI: a NIfTI extension (:func:`nimask.io.nifti.read_input_token`); NRRD/MetaImage:
    the :data:`INPUT_KEY` key; MINC: the JSON sidecar's ``nimask.input``.  A mask
    written by an older nimask has none.
    """
    return _recorded(Path(mask_path), nifti.read_input_token, INPUT_KEY, "input")


def _recorded(path: Path, from_nifti: Callable[[Path], str | None], key: str,
              sidecar_field: str) -> str | None:
    """A text nimask recorded in a mask: NIfTI by ``from_nifti``, NRRD/MetaImage header
    ``key``, MINC sidecar ``nimask.<sidecar_field>``; ``None`` when there is none."""
    fmt = volume_format(path)
    if fmt in _NIFTI:
        return from_nifti(path)
    if fmt in ("nrrd", "nhdr", "mha", "mhd"):
        fields = read_header_fields(path)
        return None if fields is None else fields.get(key)
    if fmt == "mnc":
        try:
            doc = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        block = doc.get("nimask") if isinstance(doc, dict) else None
        text = block.get(sidecar_field) if isinstance(block, dict) else None
        return text if isinstance(text, str) else None
    return None


def _numbers(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|NaN",
                                         text)]


_NRRD_SPACES = {
    "lps": "left-posterior-superior", "ras": "right-anterior-superior",
    "las": "left-anterior-superior", "3d-right-handed": "3d-right-handed",
    "3d-left-handed": "3d-left-handed",
}
_GEOMETRY_FIELDS = {
    "nrrd": ("space", "space directions", "space origin"),
    "mha": ("TransformMatrix", "Offset", "ElementSpacing", "AnatomicalOrientation"),
}
_META_ALIASES = {"Offset": ("Offset", "Position", "Origin"),
                 "TransformMatrix": ("TransformMatrix", "Rotation", "Orientation")}


def _field(fields: Mapping[str, str], family: str, name: str) -> str | None:
    if family == "mha":
        for alias in _META_ALIASES.get(name, (name,)):
            if alias in fields:
                return fields[alias]
        return None
    return fields.get(name)


def header_differences(input_fields: Mapping[str, str], mask_fields: Mapping[str, str],
                       family: str) -> list[str]:
    """Geometry fields whose values differ between an input's header and its mask's.

    ``family`` is ``"nrrd"`` (``space``, ``space directions``, ``space origin``) or
    ``"mha"`` (``TransformMatrix``/``Offset``/``ElementSpacing``/``AnatomicalOrientation``,
    with MetaImage's aliases ``Position``/``Origin`` and ``Rotation``/``Orientation``).
    Numbers are compared as numbers (``-0`` equals ``0``; relative difference up to
    1e-12, the last digits of a printed double); names as words (``LPS`` equals
    ``left-posterior-superior``).  Returns one line per differing field.
    """
    lines = []
    for name in _GEOMETRY_FIELDS[family]:
        a, b = _field(input_fields, family, name), _field(mask_fields, family, name)
        if a is None and b is None:
            continue
        if name in ("space", "AnatomicalOrientation"):
            same = a is not None and b is not None and (
                _NRRD_SPACES.get(a.strip().lower(), a.strip().lower())
                == _NRRD_SPACES.get(b.strip().lower(), b.strip().lower()))
        else:
            na, nb = _numbers(a or ""), _numbers(b or "")
            same = len(na) == len(nb) and a is not None and b is not None and all(
                math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-12)
                for x, y in zip(na, nb, strict=True))
        if not same:
            lines.append(f"{name}: input {a!r}, mask {b!r}")
    return lines


# ---------------------------------------------------------------------------- reading


def read_dicom_case(case: Case) -> CaseVolume:
    """Read a DICOM series case with :func:`nimask.io.dicom.read_series`.

    The case carries its :class:`~nimask.io.dicom.DicomSeries` (``case.payload``, set by
    :func:`nimask.io.discovery.discover_dicom`): one 3D float32 volume on a regular grid
    (HU for CT), and one note per check that fired.

    Raises
    ------
    VolumeReadError
        pydicom (a requirement of nimask) is missing, the case has no series
        record, or a file's pixels cannot be read.
    InvalidVolumeError
        The series is refused by its checks (``DicomSeriesError``, one-line reason).
    """
    if case.payload is None:
        raise VolumeReadError("a DICOM case needs its series record: find it with "
                              "discover(..., dicom=True)")
    image, notes = dicom_module().read_series(case.payload)
    return CaseVolume(image, "dicom", None, {}, list(notes))


def write_case_seg(mask: sitk.Image, case: Case, out_path: Path, *, kind: str,
                   provenance: str) -> Path:
    """Write ``mask`` of a DICOM series case as a DICOM SEG over its images, atomically.

    :func:`nimask.io.dicom.write_seg` with segment ``kind`` (``"brain"`` or ``"head"``);
    ``provenance`` is stored as the algorithm's parameter ``provenance=<text>``
    (:func:`read_seg_provenance` reads it back).

    Raises
    ------
    ParameterError
        The case is not a DICOM series.
    MissingDependencyError
        highdicom is not installed (``pip install "nimask[dicom]"``).
    DicomSeriesError, OutputError
        The SEG cannot be built or written.
    """
    if case.kind != "dicom-series" or case.payload is None:
        raise ParameterError("a DICOM SEG needs a DICOM series as input; this input is "
                             f"{case.format} ({case.display})")
    dicom = dicom_module()
    return Path(dicom.write_seg(mask, case.payload, out_path, kind=kind,
                                parameters={SEG_PROVENANCE_KEY: provenance}))


def import_seg_writer() -> ModuleType:
    """highdicom, which DICOM SEG output needs.

    Raises
    ------
    MissingDependencyError
        It is not installed: ``pip install "nimask[dicom]"``.
    """
    headers = importlib.import_module(f"{__package__}.dicom.headers")
    return headers.import_highdicom()


def read_seg_provenance(path: str | os.PathLike[str]) -> tuple[str | None, str | None]:
    """nimask's provenance and the referenced ``SeriesInstanceUID`` of a DICOM SEG file.

    ``(None, None)`` when the file is missing or not a SEG nimask wrote (headers only).
    """
    try:
        import pydicom

        ds = pydicom.dcmread(os.fspath(path), stop_before_pixels=True)
        segment = ds.SegmentSequence[0]
        text = str(segment.SegmentationAlgorithmIdentificationSequence[0].AlgorithmParameters)
        series = str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID)
    except Exception:  # unreadable, not DICOM, not nimask's SEG: not an up-to-date SEG
        return None, None
    prefix = SEG_PROVENANCE_KEY + "="
    return (text[len(prefix):] if text.startswith(prefix) else None), series


def dicom_module() -> ModuleType:
    """:mod:`nimask.io.dicom`, imported when a DICOM case is met (it needs pydicom).

    Raises
    ------
    VolumeReadError
        It cannot be imported.
    """
    try:
        return importlib.import_module(f"{__package__}.dicom")
    except ImportError as exc:
        raise VolumeReadError(f"DICOM series cannot be read here: {exc}") from exc


def read_case(case: Case) -> CaseVolume:
    """Read the volume of one case, whatever its format.

    Parameters
    ----------
    case : Case

    Returns
    -------
    CaseVolume

    Raises
    ------
    VolumeReadError, InvalidVolumeError
        With a one-line reason: unreadable, truncated, not 3D scalar, ...
    """
    if case.kind == "dicom-series":
        return read_dicom_case(case)
    fmt = case.format
    if fmt in _NIFTI:
        loaded = read_volume(case.source)
        return CaseVolume(loaded.image, fmt, loaded.info, {}, list(loaded.notes))
    if fmt not in _IMAGE_IO:
        raise VolumeReadError(f"not a volume format nimask reads: {case.source.name}")
    return _read_itk(case.source, fmt)


def _itk_message(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("/", "In ", "sitk::ERROR"))]
    text = useful[-1] if useful else (lines[-1] if lines else type(exc).__name__)
    if "ITK ERROR" in text:
        text = text.rsplit("ITK ERROR", 1)[1].split(":", 2)[-1]
    return " ".join(text.split())


def _data_file(path: Path, name: str) -> Path | None:
    """A detached header's single data file (``None`` for LIST/pattern forms)."""
    name = name.strip()
    if not name or name.upper().startswith("LIST") or "%" in name or " " in name:
        return None
    return path.parent / name


def data_files(path: str | os.PathLike[str]) -> tuple[Path, ...]:
    """Every file a volume is read from: the file, and a detached header's data file."""
    path = Path(path)
    fmt = volume_format(path)
    if fmt not in ("nhdr", "mhd"):
        return (path,)
    fields = read_header_fields(path) or {}
    name = fields.get("data file", fields.get("datafile", "")) if fmt == "nhdr" else \
        fields.get("ElementDataFile", "")
    if fmt == "mhd" and name.upper() == "LOCAL":
        return (path,)
    data = _data_file(path, name)
    return (path,) if data is None else (path, data)


def _check_payload(path: Path, fmt: str, head: bytes, needed: int) -> None:
    """Fail a NRRD/MetaImage file that cannot hold the ``needed`` bytes its header promises."""
    if fmt in ("nrrd", "nhdr"):
        parsed = _nrrd_header(head)
        if parsed is None:
            raise VolumeReadError("not a NRRD file (no NRRD000x magic line)")
        fields, offset = parsed
        encoding = fields.get("encoding", "raw").lower()
        name = fields.get("data file", fields.get("datafile"))
        skips = any(k in fields for k in ("byte skip", "line skip"))
        compressed = encoding in ("gzip", "gz", "bzip2", "bz2")
        raw = encoding == "raw"
    else:
        parsed = _meta_header(head)
        if parsed is None:
            raise VolumeReadError("not a MetaImage file (no 'Key = Value' header)")
        fields, offset = parsed
        name = fields.get("ElementDataFile")
        if name is None:
            raise VolumeReadError("MetaImage header without ElementDataFile")
        if name.upper() == "LOCAL":
            name = None
        skips = "HeaderSize" in fields
        compressed = fields.get("CompressedData", "False").lower() == "true"
        raw = not compressed
        if compressed and "CompressedDataSize" in fields and name is None:
            with contextlib.suppress(ValueError):
                promised = int(float(fields["CompressedDataSize"]))
                have = path.stat().st_size - offset
                if have < promised:
                    raise VolumeReadError(
                        f"file is truncated: its header promises {promised} bytes of "
                        f"compressed data, the file holds {have}")
    if skips or (not raw and not compressed):
        return  # ITK decides (and words the error)
    if name is not None:
        data = _data_file(path, name)
        if data is None:
            return
        try:
            have = data.stat().st_size
        except OSError as exc:
            raise VolumeReadError(
                f"data file {data.name} of the header cannot be read: {exc.strerror or exc}"
            ) from exc
    else:
        have = path.stat().st_size - offset
    if raw and have < needed:
        raise VolumeReadError(
            f"file is truncated: its header needs {needed} bytes of data, the file holds {have}")
    if compressed and needed > have * _MAX_DEFLATE_RATIO + 4096:
        raise VolumeReadError(
            f"its header needs {needed} bytes of data but {have} compressed bytes cannot hold "
            "that much: truncated file or a header claiming dimensions the file does not hold")


def _reader(path: Path) -> sitk.ImageFileReader:
    """A SimpleITK reader of ``path`` with the ImageIO of its extension.

    Raises
    ------
    VolumeReadError
        The path is not valid UTF-8: SimpleITK cannot take it (it would abort the
        process).  NIfTI files are read through a link with a plain name instead
        (:func:`nimask.io.nifti.read_volume`); other formats fail with this reason.
    """
    if not nifti.itk_can_name(path):
        raise VolumeReadError(
            "its path is not valid UTF-8, which SimpleITK cannot open (NIfTI files are "
            "read through a link; rename this one)")
    fmt = volume_format(path)
    reader = sitk.ImageFileReader()
    if fmt in _IMAGE_IO:
        reader.SetImageIO(_IMAGE_IO[fmt])
    reader.SetFileName(str(path))
    return reader


def _read_itk(path: Path, fmt: str) -> CaseVolume:
    head = nifti.read_start(path, _HEADER_LIMIT)
    if fmt == "mnc":
        if head.startswith(b"CDF"):
            raise VolumeReadError(
                "MINC-1 (netCDF) file: ITK reads MINC-2 only; convert it with "
                "'mincconvert -2 in.mnc out.mnc'")
        if not head.startswith(_HDF5_MAGIC):
            raise VolumeReadError("not a MINC-2 file (no HDF5 signature)")
    reader = _reader(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise VolumeReadError(f"ITK cannot read its header: {_itk_message(exc)}") from exc
    size = list(reader.GetSize())
    dim = reader.GetDimension()
    components = reader.GetNumberOfComponents()
    pixel = reader.GetPixelID()
    if pixel in _COMPLEX:
        raise InvalidVolumeError("complex voxels are not supported: nimask masks scalar volumes")
    if components != 1:
        raise InvalidVolumeError(
            f"vector-valued voxels ({components} components): nimask masks scalar 3D volumes")
    if dim < 3:
        raise InvalidVolumeError(f"not a 3D volume: a {dim}D image of size {size}")
    if dim > 4 or (dim == 4 and size[3] != 1):
        extra = f"{size[3]} time points, " if dim == 4 else ""
        raise InvalidVolumeError(
            f"{dim}D volume ({extra}size {size}); nimask masks 3D volumes: split it first")
    if any(s < 1 for s in size):
        raise VolumeReadError(f"invalid header: size {size}")
    itemsize = sitk.GetArrayViewFromImage(sitk.Image([1] * dim, pixel)).dtype.itemsize
    needed = int(np.prod(size, dtype=np.int64)) * itemsize
    fields: dict[str, str] = {}
    if fmt in ("nrrd", "nhdr", "mha", "mhd"):
        _check_payload(path, fmt, head, needed)
        fields = read_header_fields(path) or {}
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolumeReadError(f"ITK cannot read it: {_itk_message(exc)}") from exc
    notes = []
    if dim == 4:
        fields = {}  # a 3D mask's header cannot repeat a 4D header's fields
        image = sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0],
                             sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX)
        notes.append(f"trailing singleton dimension squeezed: {size} -> {size[:3]}")
    for key in image.GetMetaDataKeys():
        image.EraseMetaData(key)
    return CaseVolume(image, fmt, None, fields, notes)


# ---------------------------------------------------------------------------- writing


def _close(a: float, b: float, rel: float, absolute: float) -> bool:
    return abs(a - b) <= max(absolute, rel * max(abs(a), abs(b)))


def _geometry_problem(expected: sitk.Image, reader: sitk.ImageFileReader,
                      fmt: str) -> str | None:
    """How the geometry read back from a written file differs from ``expected``, if it does.

    MetaImage stores origin, spacing and direction as doubles: identical.  NRRD stores
    spacing times direction (``space directions``) and MINC the origin along its own
    axes: identical to the last bits (relative 1e-12).  NIfTI stores float32.
    """
    if tuple(reader.GetSize()[:3]) != tuple(expected.GetSize()):
        return f"size {reader.GetSize()} instead of {expected.GetSize()}"
    checks = (("origin", reader.GetOrigin(), expected.GetOrigin()),
              ("spacing", reader.GetSpacing(), expected.GetSpacing()),
              ("direction", reader.GetDirection(), expected.GetDirection()))
    for name, got, want in checks:
        if fmt in _NIFTI:
            # NIfTI stores float32 (the direction as a float32 quaternion or matrix).
            rel, absolute = (1e-6, 1e-5) if name == "direction" else (4e-7, 1e-5)
        elif fmt in ("mnc", "nrrd"):
            rel, absolute = 1e-12, 1e-12
        else:
            rel, absolute = 0.0, 0.0
        ok = len(got) == len(want) and all(
            _close(g, w, rel, absolute) for g, w in zip(got, want, strict=True))
        if not ok:
            return f"{name} {tuple(got)} instead of {tuple(want)}"
    return None


def _write_itk(mask: sitk.Image, out_path: Path, fmt: str, metadata: Mapping[str, str],
               extension: tuple[int, bytes] | None = None) -> None:
    """Write ``mask`` with SimpleITK's writer, atomically, and check its geometry.

    ``extension`` (NIfTI only): a ``(code, content)`` NIfTI extension added to the file
    ITK wrote (:func:`nimask.io.nifti.insert_extension`).
    """
    image = sitk.Image(mask)
    for key, value in metadata.items():
        image.SetMetaData(key, value)
    compress = fmt in ("nii.gz", "nrrd", "mha")

    def write(tmp: Path) -> None:
        if not nifti.itk_can_name(tmp):
            raise OutputError(
                f"cannot write {nifti.safe_text(out_path.name)}: its folder's path is not "
                "valid UTF-8, which SimpleITK cannot take")
        writer = sitk.ImageFileWriter()
        writer.SetImageIO(_IMAGE_IO[fmt])
        writer.SetFileName(str(tmp))
        writer.SetUseCompression(compress)
        try:
            writer.Execute(image)
        except RuntimeError as exc:
            raise OutputError(f"ITK cannot write {out_path.name}: {_itk_message(exc)}") from exc
        if extension is not None:
            nifti.insert_extension(Path(tmp), *extension)
        reader = _reader(Path(tmp))
        reader.ReadImageInformation()
        problem = _geometry_problem(mask, reader, fmt)
        if problem is not None:
            raise InvalidVolumeError(
                f"the mask's geometry does not survive the {fmt} writer: read back with "
                f"{problem}; choose another output_format")

    nifti.atomic_write(out_path, write)  # looked up at call time, as write_mask does


def write_case_mask(mask: sitk.Image, volume: CaseVolume, out_path: Path,
                    provenance: str, input_token: str | None = None) -> list[str]:
    """Write ``mask`` to ``out_path`` (format from its extension), atomically, with provenance.

    Parameters
    ----------
    mask : SimpleITK.Image
        uint8 0/1 mask on the volume's grid.
    volume : CaseVolume
        The case as read (its NIfTI header, or its NRRD/MetaImage fields).
    out_path : Path
        ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha`` or ``.mnc``.
    provenance : str
        Text stored in the mask (see the module docstring).
    input_token : str or None
        The input's identity (:meth:`nimask.io.nifti.InputIdentity.token`), stored in a
        NIfTI extension or under :data:`INPUT_KEY` (a MINC mask: in its sidecar, written
        by the caller).

    Returns
    -------
    list of str
        Notes: header fields of a same-format mask that differ from the input's.

    Raises
    ------
    OutputError
        The file cannot be written.
    InvalidVolumeError
        The written geometry does not read back as the image's (nothing is left).
    """
    fmt = volume_format(out_path)
    if fmt is None or fmt in ("nhdr", "mhd"):
        raise ParameterError(f"not a mask file name: {out_path.name}")
    if fmt in _NIFTI and volume.nifti is not None:
        write_mask(mask, volume.nifti, out_path, provenance, input_token)
        return []
    if fmt in _NIFTI:
        extension = None if input_token is None else (
            nifti.INPUT_ID_ECODE, input_token.encode("ascii"))
        _write_itk(mask, out_path, fmt, {"ITK_FileNotes": provenance[:79]}, extension)
        return []
    if fmt == "mnc":
        _write_itk(mask, out_path, fmt, {})
        return []
    metadata = {PROVENANCE_KEY: provenance}
    if input_token is not None:
        metadata[INPUT_KEY] = input_token
    _write_itk(mask, out_path, fmt, metadata)
    family = "nrrd" if fmt == "nrrd" else "mha"
    source_family = {"nrrd": "nrrd", "nhdr": "nrrd", "mha": "mha", "mhd": "mha"}.get(
        volume.format)
    if source_family != family or not volume.header:
        return []
    written = read_header_fields(out_path) or {}
    return [f"{'NRRD' if family == 'nrrd' else 'MetaImage'} header differs from the input's: "
            f"{line} (same physical geometry)"
            for line in header_differences(volume.header, written, family)]


def write_sidecar(path: Path, fields: Mapping[str, Any]) -> bool:
    """Write ``fields`` as JSON to ``path`` atomically, unless it already holds exactly them.

    Returns ``True`` when the file was (re)written.
    """
    text = json.dumps(fields, indent=2, allow_nan=False, default=_json_default) + "\n"
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.read_text(encoding="utf-8") == text:
            return False
    nifti.atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return True


def _json_default(value: object) -> Any:
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclass(frozen=True)
class ImageInformation:
    """A volume's grid as SimpleITK reads it from the header (3D part of a 4D singleton)."""

    size: tuple[int, ...]
    origin: tuple[float, ...]
    spacing: tuple[float, ...]
    direction: tuple[float, ...]
    pixel_id: int
    components: int


def image_information(path: str | os.PathLike[str]) -> ImageInformation:
    """Read only the header of a volume file with the ImageIO of its format.

    Raises
    ------
    VolumeReadError
        ITK cannot read the header.
    """
    reader = _reader(Path(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise VolumeReadError(f"ITK cannot read its header: {_itk_message(exc)}") from exc
    dim = reader.GetDimension()
    direction = reader.GetDirection()
    if dim == 4:
        direction = tuple(direction[r * 4 + c] for r in range(3) for c in range(3))
    return ImageInformation(tuple(reader.GetSize()[:3]), tuple(reader.GetOrigin()[:3]),
                            tuple(reader.GetSpacing()[:3]), tuple(direction),
                            reader.GetPixelID(), reader.GetNumberOfComponents())


def geometry_difference(mask: ImageInformation, volume: ImageInformation,
                        float32: bool) -> str | None:
    """How a mask's grid differs from its volume's (``None``: the same grid).

    ``float32``: the mask is NIfTI made from another format (float32 geometry).
    """
    if mask.size != volume.size:
        return f"shape {list(mask.size)}, input has {list(volume.size)}"
    for name in ("origin", "spacing", "direction"):
        got, want = getattr(mask, name), getattr(volume, name)
        if float32:
            rel, absolute = (1e-6, 1e-5) if name == "direction" else (4e-7, 1e-5)
            same = all(_close(g, w, rel, absolute) for g, w in zip(got, want, strict=True))
        else:
            same = all(_close(g, w, 1e-12, 1e-9) for g, w in zip(got, want, strict=True))
        if not same:
            return f"{name} {list(got)}, input has {list(want)}"
    return None


def verify_mask_file(path: str | os.PathLike[str]) -> None:
    """Read a whole non-NIfTI mask file (a truncated or corrupt one raises).

    Raises
    ------
    VolumeReadError
    """
    reader = _reader(Path(path))
    try:
        reader.Execute()
    except RuntimeError as exc:
        raise VolumeReadError(_itk_message(exc)) from exc
