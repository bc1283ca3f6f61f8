"""Reading DICOM headers with pydicom: one file -> the images it holds, or why it is skipped.

pydicom (a requirement of nimask) is imported lazily, so that ``import nimask`` stays
light; :func:`import_pydicom` raises :class:`~nimask.exceptions.MissingDependencyError`
when a broken install lacks it.  highdicom (DICOM SEG only) is the optional extra
``nimask[dicom]``.
"""

from __future__ import annotations

import importlib
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

from ...exceptions import MissingDependencyError
from .model import DicomFrame

__all__ = [
    "IMAGE_SOP_CLASSES",
    "FileHeader",
    "import_highdicom",
    "import_pydicom",
    "read_header",
]

INSTALL_HINT = 'pip install "nimask[dicom]"'

#: SOP classes read as volumes (single-frame and enhanced multi-frame CT, MR, PET).
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
}
_DICOMDIR = "1.2.840.10008.1.3.10"
#: Series descriptions that name a localizer or scout (matched case-insensitively).
_LOCALIZER_WORDS = re.compile(
    r"(localizer|localiser|scout|survey|topogram|scanogram|3[- ]?plane[ _-]?loc)", re.I
)


def _import(name: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if name == "pydicom":  # a requirement of nimask itself: the install is broken
            raise MissingDependencyError(
                f"{what} needs the package 'pydicom', a requirement of nimask that is not "
                "installed here: pip install pydicom"
            ) from exc
        raise MissingDependencyError(
            f"{what} needs the optional package {name!r}: {INSTALL_HINT}"
        ) from exc


_pydicom: ModuleType | None = None


def import_pydicom() -> ModuleType:
    """The ``pydicom`` module, or :class:`MissingDependencyError` with the install hint."""
    global _pydicom
    if _pydicom is None:
        _pydicom = _import("pydicom", "reading DICOM")
    return _pydicom


def import_highdicom() -> ModuleType:
    """The ``highdicom`` module, or :class:`MissingDependencyError` with the install hint."""
    return _import("highdicom", "writing DICOM SEG")


@dataclass(frozen=True)
class FileHeader:
    """What one file holds: its series' identity and its images, or why it is left out.

    ``kind`` is ``"image"`` (``frames`` set), ``"skip"`` (``reason`` set: a
    localizer, a non-image object), ``"not_dicom"`` or ``"unreadable"``.
    """

    path: Path
    kind: str
    reason: str = ""
    series_instance_uid: str = ""
    study_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    sop_class_uid: str = ""
    patient_id: str = ""
    study_date: str = ""
    series_number: int | None = None
    series_description: str = ""
    modality: str = ""
    frames: tuple[DicomFrame, ...] = ()


#: Value representations held as plain ASCII: decoded here, without pydicom's conversion.
_ASCII_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"}
#: Binary numbers: struct format code per value representation.
_BINARY_VRS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_TAGS: dict[str, int] = {}


def _tag(keyword: str) -> int:
    tag = _TAGS.get(keyword)
    if tag is None:
        found = import_pydicom().datadict.tag_for_keyword(keyword)
        if found is None:
            raise KeyError(f"unknown DICOM keyword {keyword!r}")
        tag = _TAGS[keyword] = int(found)
    return tag


def _get(ds: Any, keyword: str, default: Any = None) -> Any:
    """The value of ``keyword`` in ``ds`` (``default`` when absent or empty).

    Header reading is dominated by pydicom's per-element value conversion, so
    ASCII values (UIDs, codes, decimal and integer strings, dates) and binary
    numbers are decoded here from the raw element: a str, or a list of str for
    several values; a number or a list of numbers.  Text in the dataset's
    character set (LO, SH, PN, ...) and sequences go through pydicom.
    """
    if ds is None:
        return default
    pydicom = import_pydicom()
    tag = _tag(keyword)
    elem = ds.get_item(tag)
    if elem is None:
        return default
    if not isinstance(elem, pydicom.dataelem.RawDataElement):
        value = elem.value
        return default if value is None or value == "" else value
    raw = elem.value
    if not raw:
        return default
    vr = elem.VR or pydicom.datadict.dictionary_VR(tag)
    if vr in _ASCII_VRS:
        text = raw.decode("ascii", "replace").strip("\x00 ")
        if not text:
            return default
        return [part.strip("\x00 ") for part in text.split("\\")] if "\\" in text else text
    code = _BINARY_VRS.get(vr)
    if code is not None:
        size = struct.calcsize(code)
        order = "<" if elem.is_little_endian else ">"
        values = struct.unpack(f"{order}{len(raw) // size}{code}", raw[: len(raw) // size * size])
        if not values:
            return default
        return values[0] if len(values) == 1 else list(values)
    value = ds[tag].value
    return default if value is None or value == "" else value


def _text(ds: Any, keyword: str) -> str:
    value = _get(ds, keyword)
    if value is None:
        return ""
    if isinstance(value, list):
        value = "\\".join(str(v) for v in value)
    return " ".join(str(value).split())


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _coalesce(*values: float | None) -> float:
    """The first value that is not ``None`` (the last argument is the default)."""
    for value in values:
        if value is not None:
            return value
    raise ValueError("no default given")


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        items = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return tuple(items) if len(items) == n else None


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split("\\"))
    return tuple(str(v).strip() for v in value)


def _first(ds: Any, keyword: str) -> Any:
    """First item of sequence ``keyword`` of ``ds``, ``None`` when absent or empty."""
    if ds is None:
        return None
    seq = _get(ds, keyword)
    if not seq:
        return None
    return seq[0]


def _variant(pairs: list[tuple[str, Any]]) -> tuple[tuple[str, str], ...]:
    out = []
    for name, value in pairs:
        if value is None or value == "":
            continue
        text = "\\".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
        out.append((name, text))
    return tuple(out)


def _layout(ds: Any, pixel_offset: int) -> dict[str, int]:
    """Where and how the stored values lie in the file."""
    allocated = int(_get(ds, "BitsAllocated", 16) or 16)
    return {
        "pixel_offset": pixel_offset,
        "bits_allocated": allocated,
        "bits_stored": int(_get(ds, "BitsStored", allocated) or allocated),
        "pixel_representation": int(_get(ds, "PixelRepresentation", 0) or 0),
    }


def _classic_frame(ds: Any, path: Path, transfer_syntax: str, pixel_offset: int) -> DicomFrame:
    spacing = _floats(_get(ds, "PixelSpacing"), 2)
    return DicomFrame(
        path=path,
        frame=None,
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        position=_floats(_get(ds, "ImagePositionPatient"), 3),  # type: ignore[arg-type]
        orientation=_floats(_get(ds, "ImageOrientationPatient"), 6),  # type: ignore[arg-type]
        pixel_spacing=spacing,  # type: ignore[arg-type]
        rows=int(_get(ds, "Rows", 0) or 0),
        columns=int(_get(ds, "Columns", 0) or 0),
        slice_thickness=_float(_get(ds, "SliceThickness")),
        rescale_slope=_coalesce(_float(_get(ds, "RescaleSlope")), 1.0),
        rescale_intercept=_coalesce(_float(_get(ds, "RescaleIntercept")), 0.0),
        instance_number=_int(_get(ds, "InstanceNumber")),
        image_type=_strings(_get(ds, "ImageType")),
        variant=_variant([
            ("EchoNumbers", _get(ds, "EchoNumbers")),
            ("EchoTime", _get(ds, "EchoTime")),
            ("TemporalPositionIdentifier", _get(ds, "TemporalPositionIdentifier")),
            ("TriggerTime", _get(ds, "TriggerTime")),
            ("DiffusionBValue", _get(ds, "DiffusionBValue")),
            ("AcquisitionNumber", _get(ds, "AcquisitionNumber")),
            ("ImageType", _get(ds, "ImageType")),
        ]),
        gantry_tilt=_float(_get(ds, "GantryDetectorTilt")),
        samples_per_pixel=int(_get(ds, "SamplesPerPixel", 1) or 1),
        photometric=_text(ds, "PhotometricInterpretation") or "MONOCHROME2",
        transfer_syntax=transfer_syntax,
        **_layout(ds, pixel_offset),
    )


def _pick(item: Any, keyword: str) -> Any:
    """``item.get(keyword)``, ``None`` when ``item`` is ``None``."""
    return _get(item, keyword)


def _enhanced_frames(
    ds: Any, path: Path, transfer_syntax: str, pixel_offset: int
) -> tuple[DicomFrame, ...]:
    """One :class:`DicomFrame` per frame, geometry from the functional groups.

    Each functional group is taken from the frame's own item of
    PerFrameFunctionalGroupsSequence, else from SharedFunctionalGroupsSequence.
    """
    n = _int(_get(ds, "NumberOfFrames")) or 1
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence") or []
    sop = _text(ds, "SOPInstanceUID")
    tilt = _float(_get(ds, "GantryDetectorTilt"))
    samples = int(_get(ds, "SamplesPerPixel", 1) or 1)
    photometric = _text(ds, "PhotometricInterpretation") or "MONOCHROME2"
    image_type = _strings(_get(ds, "ImageType"))
    rows, columns = int(_get(ds, "Rows", 0) or 0), int(_get(ds, "Columns", 0) or 0)
    layout = _layout(ds, pixel_offset)
    frames = []
    for k in range(n):
        item = per_frame[k] if k < len(per_frame) else None

        def group(keyword: str, item: Any = item) -> Any:
            found = _first(item, keyword)
            return found if found is not None else _first(shared, keyword)

        position = group("PlanePositionSequence")
        orientation = group("PlaneOrientationSequence")
        measures = group("PixelMeasuresSequence")
        transform = group("PixelValueTransformationSequence")
        content = group("FrameContentSequence")
        frame_type = (
            group("MRImageFrameTypeSequence") or group("CTImageFrameTypeSequence")
            or group("PETFrameTypeSequence")
        )
        echo = group("MREchoSequence")
        diffusion = group("MRDiffusionSequence")
        cardiac = group("CardiacSynchronizationSequence")
        frames.append(DicomFrame(
            path=path,
            frame=k,
            sop_instance_uid=sop,
            position=_floats(_pick(position, "ImagePositionPatient"), 3),  # type: ignore[arg-type]
            orientation=_floats(  # type: ignore[arg-type]
                _pick(orientation, "ImageOrientationPatient"), 6
            ),
            pixel_spacing=_floats(_pick(measures, "PixelSpacing"), 2),  # type: ignore[arg-type]
            rows=rows,
            columns=columns,
            slice_thickness=_float(_pick(measures, "SliceThickness")),
            rescale_slope=_coalesce(
                _float(_pick(transform, "RescaleSlope")), _float(_get(ds, "RescaleSlope")), 1.0
            ),
            rescale_intercept=_coalesce(
                _float(_pick(transform, "RescaleIntercept")),
                _float(_get(ds, "RescaleIntercept")), 0.0,
            ),
            instance_number=k + 1,
            image_type=_strings(_pick(frame_type, "FrameType")) or image_type,
            variant=_variant([
                ("StackID", _pick(content, "StackID")),
                ("TemporalPositionIndex", _pick(content, "TemporalPositionIndex")),
                ("EffectiveEchoTime", _pick(echo, "EffectiveEchoTime")),
                ("DiffusionBValue", _pick(diffusion, "DiffusionBValue")),
                ("NominalCardiacTriggerDelayTime",
                 _pick(cardiac, "NominalCardiacTriggerDelayTime")),
                ("FrameAcquisitionNumber", _pick(content, "FrameAcquisitionNumber")),
                ("FrameType", _pick(frame_type, "FrameType")),
            ]),
            gantry_tilt=tilt,
            samples_per_pixel=samples,
            photometric=photometric,
            transfer_syntax=transfer_syntax,
            **layout,
        ))
    return tuple(frames)


def _localizer_reason(ds: Any, frames: tuple[DicomFrame, ...]) -> str:
    types = {t.upper() for t in _strings(_get(ds, "ImageType"))}
    for frame in frames:
        types.update(t.upper() for t in frame.image_type)
    if "LOCALIZER" in types:
        return "a localizer/scout (ImageType LOCALIZER)"
    description = _text(ds, "SeriesDescription")
    if description and _LOCALIZER_WORDS.search(description):
        return f"a localizer/scout (SeriesDescription {description!r})"
    return ""


def read_header(path: Path) -> FileHeader:
    """Read one file's header (pixel data not read) and describe what it holds.

    Never raises for a bad file: a non-DICOM file gives ``kind="not_dicom"``, a
    DICOM file that cannot be parsed ``kind="unreadable"`` with the error.

    Raises
    ------
    MissingDependencyError
        pydicom is not installed.
    """
    pydicom = import_pydicom()
    try:
        with open(path, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            pixel_offset = _pixel_offset(fh, ds)
    except pydicom.errors.InvalidDicomError:
        return FileHeader(path, "not_dicom", "no DICOM preamble")
    except Exception as exc:  # pydicom raises many types on a damaged file
        return FileHeader(path, "unreadable", " ".join(str(exc).split()) or type(exc).__name__)
    try:
        return _describe(ds, path, pixel_offset)
    except Exception as exc:  # a header with malformed values
        return FileHeader(path, "unreadable", " ".join(str(exc).split()) or type(exc).__name__)


#: Explicit-VR elements with a 4-byte length (2 reserved bytes after the VR).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}


def _pixel_offset(fh: BinaryIO, ds: Any) -> int:
    """Offset of the first stored value when the pixel data follow uncompressed, else -1.

    ``fh`` stands where pydicom stopped (``stop_before_pixels``): at the Pixel
    Data element's tag, whose header is decoded here.
    """
    pydicom = import_pydicom()
    syntax = _text(getattr(ds, "file_meta", None), "TransferSyntaxUID")
    if not syntax:
        return -1
    uid = pydicom.uid.UID(syntax)
    if uid.is_compressed or uid == pydicom.uid.DeflatedExplicitVRLittleEndian:
        return -1
    start = fh.tell()
    head = fh.read(12)
    if len(head) < 8:
        return -1
    order = "<" if uid.is_little_endian else ">"
    group, element = struct.unpack(order + "HH", head[:4])
    if (group, element) != (0x7FE0, 0x0010):
        return -1
    if uid.is_implicit_VR:
        (length,) = struct.unpack(order + "I", head[4:8])
        offset = start + 8
    elif head[4:6] in _LONG_VRS:
        if len(head) < 12:
            return -1
        (length,) = struct.unpack(order + "I", head[8:12])
        offset = start + 12
    else:
        (length,) = struct.unpack(order + "H", head[6:8])
        offset = start + 8
    return -1 if length == 0xFFFFFFFF else offset


def _describe(ds: Any, path: Path, pixel_offset: int = -1) -> FileHeader:
    meta = getattr(ds, "file_meta", None)
    sop_class = _text(ds, "SOPClassUID") or _text(meta, "MediaStorageSOPClassUID")
    transfer_syntax = _text(meta, "TransferSyntaxUID")
    identity: dict[str, Any] = {
        "series_instance_uid": _text(ds, "SeriesInstanceUID"),
        "study_instance_uid": _text(ds, "StudyInstanceUID"),
        "frame_of_reference_uid": _text(ds, "FrameOfReferenceUID"),
        "sop_class_uid": sop_class,
        "patient_id": _text(ds, "PatientID"),
        "study_date": _text(ds, "StudyDate"),
        "series_number": _int(_get(ds, "SeriesNumber")),
        "series_description": _text(ds, "SeriesDescription"),
        "modality": _text(ds, "Modality"),
    }
    if sop_class == _DICOMDIR or (meta is not None and _text(meta, "MediaStorageSOPClassUID")
                                  == _DICOMDIR):
        return FileHeader(path, "skip", "a DICOMDIR (media index), not an image", **identity)
    if sop_class not in IMAGE_SOP_CLASSES:
        name = _uid_name(sop_class)
        return FileHeader(path, "skip", f"not a CT, MR or PET image ({name})", **identity)
    if not identity["series_instance_uid"]:
        return FileHeader(path, "unreadable", "no SeriesInstanceUID", **identity)
    if "NumberOfFrames" in ds or "PerFrameFunctionalGroupsSequence" in ds:
        frames = _enhanced_frames(ds, path, transfer_syntax, pixel_offset)
    else:
        frames = (_classic_frame(ds, path, transfer_syntax, pixel_offset),)
    localizer = _localizer_reason(ds, frames)
    if localizer:
        return FileHeader(path, "skip", localizer, **identity)
    return FileHeader(path, "image", frames=frames, **identity)


def _uid_name(uid: str) -> str:
    if not uid:
        return "no SOPClassUID"
    pydicom = import_pydicom()
    name = str(pydicom.uid.UID(uid).name)
    return name if name != uid else f"SOP class {uid}"
