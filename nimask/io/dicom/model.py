"""Records of the DICOM layer: one 2D image, one series, the checks' verdict, a folder scan."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "DicomFrame",
    "DicomScan",
    "DicomSeries",
    "SeriesCheck",
    "SkippedSeries",
]

Vec3 = tuple[float, float, float]
Action = Literal["read", "resample", "refuse"]


@dataclass(frozen=True)
class DicomFrame:
    """One 2D image: a single-frame file, or one frame of a multi-frame file.

    Attributes
    ----------
    path : Path
        The file holding the image.
    frame : int or None
        0-based frame index in a multi-frame (enhanced) file; ``None`` for a
        single-frame file.
    sop_instance_uid : str
        The instance's SOPInstanceUID (shared by all frames of one file).
    position : tuple of 3 float or None
        ImagePositionPatient: the centre of the first transmitted pixel, in mm (LPS).
    orientation : tuple of 6 float or None
        ImageOrientationPatient: row direction then column direction cosines.
    pixel_spacing : tuple of 2 float or None
        PixelSpacing as DICOM orders it: (between rows, between columns), in mm.
    rows, columns : int
        Image size.
    slice_thickness : float or None
        SliceThickness in mm.
    rescale_slope, rescale_intercept : float
        Modality LUT: value = stored * slope + intercept (1 and 0 when absent).
    instance_number : int or None
        InstanceNumber (single-frame) or the 1-based frame number (multi-frame).
    image_type : tuple of str
        ImageType (FrameType for a frame of an enhanced file).
    variant : tuple of (str, str)
        The identifiers that tell apart several images at one position (echo,
        temporal position, stack, trigger time, b-value, acquisition), for messages.
    gantry_tilt : float or None
        GantryDetectorTilt in degrees.
    samples_per_pixel : int
        1 for grey-scale images.
    photometric : str
        PhotometricInterpretation.
    transfer_syntax : str
        The file's TransferSyntaxUID.
    pixel_offset : int
        Byte offset of the file's first pixel value when the pixel data are
        native (uncompressed), else -1.
    bits_allocated, bits_stored, pixel_representation : int
        How each stored value is laid out (PixelRepresentation 1: signed).
    """

    path: Path
    frame: int | None
    sop_instance_uid: str
    position: Vec3 | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int
    slice_thickness: float | None = None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    instance_number: int | None = None
    image_type: tuple[str, ...] = ()
    variant: tuple[tuple[str, str], ...] = ()
    gantry_tilt: float | None = None
    samples_per_pixel: int = 1
    photometric: str = "MONOCHROME2"
    transfer_syntax: str = ""
    pixel_offset: int = -1
    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0

    @property
    def key(self) -> tuple[str, int | None]:
        """(SOPInstanceUID, frame): the same key means the same image."""
        return (self.sop_instance_uid, self.frame)

    def describe(self) -> str:
        """``name`` or ``name[frame 3]`` for messages."""
        name = self.path.name
        return name if self.frame is None else f"{name}[frame {self.frame + 1}]"


@dataclass(frozen=True)
class SeriesCheck:
    """What :func:`~nimask.io.dicom.check_series` found in a series' headers.

    Attributes
    ----------
    action : {"read", "resample", "refuse"}
        ``"read"``: the slices form a regular grid and are stacked as they are;
        ``"resample"``: they are interpolated onto a regular grid (gantry tilt,
        non-uniform spacing); ``"refuse"``: the series cannot be made one
        correct volume (``reason`` says why).
    reason : str
        One line, set when ``action == "refuse"``.
    flags : tuple of str
        Codes of what fired, e.g. ``"gantry_tilt"``, ``"sheared"``,
        ``"nonuniform_spacing"``, ``"missing_slices"``, ``"duplicate_slices"``,
        ``"duplicate_instances"``, ``"mixed_orientations"``, ``"mixed_geometry"``,
        ``"single_image"``, ``"phase_image"``, ``"no_geometry"``, ``"color"``.
    findings : tuple of str
        One readable line per finding (what fired, with the numbers).
    order : tuple of int
        Indices into ``series.frames`` of the images used, sorted by position
        along the slice normal (ascending, as ITK sorts); copies of one
        instance and identical duplicates are left out.
    offsets : tuple of float
        Position of each image of ``order`` along the normal, in mm, the
        first at 0.
    normal : tuple of 3 float
        Slice normal (row x column direction).
    step : float
        Regular slice spacing found (mm); 0 when it cannot be told.
    tilt_degrees : float
        Angle between the line through the slice positions and the normal
        (0 when they step along the normal).
    shear_mm : float
        Largest in-plane distance between a slice's position and the line
        through the first position along the normal.
    """

    action: Action
    reason: str = ""
    flags: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()
    order: tuple[int, ...] = ()
    offsets: tuple[float, ...] = ()
    normal: Vec3 = (0.0, 0.0, 1.0)
    step: float = 0.0
    tilt_degrees: float = 0.0
    shear_mm: float = 0.0

    @property
    def ok(self) -> bool:
        """True unless the series is refused."""
        return self.action != "refuse"


@dataclass(frozen=True)
class DicomSeries:
    """One image series (one SeriesInstanceUID) found by :func:`~nimask.io.dicom.find_series`.

    Attributes
    ----------
    series_instance_uid, study_instance_uid, frame_of_reference_uid, sop_class_uid : str
        The UIDs (SOP class of the first image).
    patient_id, study_date, modality, series_description : str
        As in the headers ("" when absent).
    series_number : int or None
        SeriesNumber.
    frames : tuple of DicomFrame
        Every 2D image of the series, in file-name then frame order.
    check : SeriesCheck or None
        The checks' verdict (set by ``find_series``; ``None`` on a hand-made record).
    """

    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    patient_id: str
    study_date: str
    series_number: int | None
    series_description: str
    modality: str
    frames: tuple[DicomFrame, ...]
    check: SeriesCheck | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        """The distinct files holding the series, sorted by path."""
        return tuple(sorted({f.path for f in self.frames}))

    @property
    def multiframe(self) -> bool:
        """True when the images come from multi-frame (enhanced) files."""
        return any(f.frame is not None for f in self.frames)

    @property
    def folder(self) -> Path:
        """The deepest folder holding all the series' files."""
        parents = {str(p.parent) for p in self.files}
        return Path(os.path.commonpath(sorted(parents)))

    @property
    def label(self) -> str:
        """How a person recognises the series: ``T1 MPRAGE (series 5, UID 1.2.3...)``."""
        what = self.series_description or self.modality or "DICOM series"
        number = f"series {self.series_number}, " if self.series_number is not None else ""
        return f"{what} ({number}UID {self.series_instance_uid})"


@dataclass(frozen=True)
class SkippedSeries:
    """Files of one series left out by discovery, with the reason (a localizer, an SR, ...)."""

    series_instance_uid: str
    series_description: str
    reason: str
    files: tuple[Path, ...]

    @property
    def note(self) -> str:
        """One line for a report."""
        what = self.series_description or self.series_instance_uid or "unknown series"
        return f"skipped {what} ({len(self.files)} file(s)): {self.reason}"


@dataclass
class DicomScan:
    """What :func:`~nimask.io.dicom.find_series` found under a folder.

    Attributes
    ----------
    root : Path
        The folder (or file) searched.
    series : list of DicomSeries
        Image series, sorted by patient, study date, series number and UID; each
        carries its :class:`SeriesCheck` (refused ones included: they fail with
        their reason).
    skipped : list of SkippedSeries
        Localizers/scouts and non-image objects (SR, PR, SEG, ...) with the reason.
    not_dicom : list of Path
        Files that are not DICOM (README, DICOMDIR excepted: that one is skipped).
    unreadable : list of (Path, str)
        DICOM files whose header could not be parsed, with the error.
    """

    root: Path
    series: list[DicomSeries] = field(default_factory=list)
    skipped: list[SkippedSeries] = field(default_factory=list)
    not_dicom: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """One line per skipped series, unreadable file, and the count of non-DICOM files."""
        lines = [s.note for s in self.skipped]
        lines += [f"unreadable DICOM file {p}: {why}" for p, why in self.unreadable]
        if self.not_dicom:
            lines.append(f"{len(self.not_dicom)} file(s) that are not DICOM ignored")
        return lines
