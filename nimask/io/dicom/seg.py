"""Writing a mask as a DICOM Segmentation (SEG) over its source series, with highdicom.

The SEG holds one binary segment ("Brain" or "Head", SNOMED CT codes, algorithm
type AUTOMATIC, algorithm nimask + version) and one frame per source image:
each frame lies exactly on its source image (same position, orientation and
pixel lattice) and references it, so a DICOM viewer lays the mask over the
images.  The frame's pixels are the mask sampled (nearest neighbour) at the
source image's pixel centres: for a series read as it is (``"read"``), that is
the mask voxel for voxel; for a resampled series (gantry tilt, non-uniform
spacing) it is the mask brought back onto the acquired slices.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from ..._version import __version__
from ...exceptions import DicomSeriesError, ParameterError
from ..nifti import atomic_write
from .checks import check_series
from .headers import import_highdicom, import_pydicom
from .model import DicomFrame, DicomSeries

__all__ = ["SEG_KINDS", "write_seg"]

#: Segment label and SNOMED CT property type code (value, meaning) per ``kind``.
SEG_KINDS = {"brain": ("Brain", "12738006"), "head": ("Head", "69536005")}
#: Half a voxel, plus rounding: how far outside the mask grid a source pixel may lie.
_COVER = 0.5 + 1e-3


def _frame_grid(frame: DicomFrame) -> sitk.Image:
    """A 1-slice 3D image lying on ``frame``'s pixel lattice."""
    o = np.asarray(frame.orientation, dtype=np.float64)
    row, col = o[:3] / np.linalg.norm(o[:3]), o[3:] / np.linalg.norm(o[3:])
    normal = np.cross(row, col)
    dy, dx = frame.pixel_spacing or (1.0, 1.0)
    ref = sitk.Image(frame.columns, frame.rows, 1, sitk.sitkUInt8)
    ref.SetOrigin(tuple(float(v) for v in frame.position or (0.0, 0.0, 0.0)))
    ref.SetSpacing((float(dx), float(dy), 1.0))
    ref.SetDirection(tuple(float(v) for v in np.column_stack((row, col, normal)).ravel()))
    return ref


def _covered(mask: sitk.Image, ref: sitk.Image) -> bool:
    """True when the four corner pixels of ``ref`` lie inside ``mask``'s grid."""
    w, h = ref.GetWidth() - 1, ref.GetHeight() - 1
    size = mask.GetSize()
    for corner in ((0, 0, 0), (w, 0, 0), (0, h, 0), (w, h, 0)):
        point = ref.TransformIndexToPhysicalPoint(corner)
        index = mask.TransformPhysicalPointToContinuousIndex(point)
        if any(i < -_COVER or i > n - 1 + _COVER for i, n in zip(index, size, strict=True)):
            return False
    return True


def _sample(mask: sitk.Image, frame: DicomFrame) -> npt.NDArray[np.uint8]:
    ref = _frame_grid(frame)
    if not _covered(mask, ref):
        raise ParameterError(
            f"the mask's grid does not cover source image {frame.describe()} "
            "(was the mask computed from read_series of this series?)"
        )
    sampled = sitk.Resample(mask, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                            sitk.sitkUInt8)
    return sitk.GetArrayFromImage(sampled)[0]


#: Type 2 attributes of the Patient and General Study modules (present, possibly empty),
#: copied into the SEG: de-identified files often lack them.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")


#: Functional groups highdicom reads from the shared group only.
_SHARED_ONLY = ("PlaneOrientationSequence", "PixelMeasuresSequence")


def _for_highdicom(ds: Any) -> Any:
    """A source header as highdicom expects it (in memory only; the files are not touched).

    Type 2 attributes absent from the file (de-identified data) are added empty;
    in an enhanced file, orientation and pixel measures given per frame (the
    checks found them equal) are moved into the shared functional group.
    """
    for keyword in _TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    if per_frame and shared:
        for keyword in _SHARED_ONLY:
            if keyword not in shared[0] and keyword in per_frame[0]:
                setattr(shared[0], keyword, per_frame[0][keyword].value)
                for item in per_frame:
                    if keyword in item:
                        delattr(item, keyword)
    return ds


def _binary(mask: sitk.Image) -> sitk.Image:
    if mask.GetDimension() != 3 or mask.GetNumberOfComponentsPerPixel() != 1:
        raise ParameterError(f"mask must be a 3D scalar image, got {mask.GetDimension()}D "
                             f"with {mask.GetNumberOfComponentsPerPixel()} component(s)")
    values = np.unique(sitk.GetArrayViewFromImage(mask))
    if not set(values.tolist()) <= {0, 1}:
        raise ParameterError(f"mask must hold only 0 and 1, found values {values[:5].tolist()}")
    return sitk.Cast(mask, sitk.sitkUInt8)


def write_seg(
    mask: sitk.Image,
    series: DicomSeries,
    out_path: str | os.PathLike[str],
    *,
    kind: Literal["brain", "head"] = "brain",
    series_number: int | None = None,
    series_description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``mask`` as a binary DICOM SEG referencing the images of ``series``.

    Parameters
    ----------
    mask : SimpleITK.Image
        3D mask of 0 and 1 on the grid :func:`~nimask.io.dicom.read_series`
        returned for ``series`` (any grid covering every source image works:
        it is sampled at the source pixels).
    series : DicomSeries
        The source series (from :func:`~nimask.io.dicom.find_series`).
    out_path : path
        The ``.dcm`` file to write (atomically: a temporary file, then a rename).
    kind : {"brain", "head"}, keyword-only
        Segment: SNOMED CT 12738006 "Brain" or 69536005 "Head", category
        91723000 "Anatomical Structure".
    series_number : int, keyword-only
        SeriesNumber of the SEG; default 1000 + the source's SeriesNumber.
    series_description : str, keyword-only
        Default ``"nimask <kind> mask"``.
    parameters : mapping, keyword-only
        nimask's parameters, stored as the algorithm's parameters.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    ParameterError
        ``kind`` unknown; the mask is not 3D 0/1 or does not cover the series.
    DicomSeriesError
        The series is refused by the checks, or holds several multi-frame files.
    MissingDependencyError
        highdicom is not installed (``pip install "nimask[dicom]"``), or pydicom is missing.
    OutputError
        The file cannot be written.
    """
    if kind not in SEG_KINDS:
        raise ParameterError(f"kind must be one of {sorted(SEG_KINDS)}, got {kind!r}")
    hd = import_highdicom()
    pydicom = import_pydicom()
    from pydicom.sr.codedict import codes

    check = series.check or check_series(series)
    if not check.ok:
        raise DicomSeriesError(check.reason)
    mask = _binary(mask)
    if series.multiframe:
        files = series.files
        if len(files) != 1:
            raise DicomSeriesError(
                f"a SEG over {len(files)} multi-frame files is not supported (one file only)"
            )
        frames = sorted((f for f in series.frames if f.path == files[0]),
                        key=lambda f: f.frame or 0)
        # every frame of the file, in frame order, whether used or an identical duplicate
        frames = list({f.frame: f for f in frames}.values())
    else:
        frames = [series.frames[i] for i in check.order]
    pixels = np.stack([_sample(mask, frame) for frame in frames])
    paths = list(dict.fromkeys(f.path for f in frames))
    sources = [_for_highdicom(pydicom.dcmread(str(p), stop_before_pixels=True)) for p in paths]
    iop = sources[0].get("ImageOrientationPatient")
    for ds in sources[1:]:  # within the checks' tolerance: one orientation, as highdicom wants
        if iop is not None and "ImageOrientationPatient" in ds:
            ds.ImageOrientationPatient = iop

    label, code = SEG_KINDS[kind]
    prop = codes.SCT.Brain if kind == "brain" else codes.SCT.Head
    if prop.value != code:  # the code dictionary disagrees with the documented code
        raise ParameterError(f"SNOMED code for {label} is {prop.value}, expected {code}")
    algorithm = hd.AlgorithmIdentificationSequence(
        name="nimask",
        family=codes.cid7162.HistogramAnalysis,
        version=__version__,
        parameters={str(k): str(v) for k, v in (parameters or {}).items()} or None,
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=prop,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    number = series_number if series_number is not None else 1000 + (series.series_number or 0)
    with warnings.catch_warnings():
        # highdicom warns about source PatientName values it copies (e.g. "REMOVED")
        warnings.filterwarnings("ignore", message=".*person name.*", category=UserWarning)
        seg = _segmentation(hd, sources, pixels, segment, number, kind, label,
                            series_description)
    out = Path(out_path)
    atomic_write(out, lambda tmp: seg.save_as(str(tmp)))
    return out


def _segmentation(
    hd: Any, sources: list[Any], pixels: npt.NDArray[np.uint8], segment: Any, number: int,
    kind: str, label: str, series_description: str | None,
) -> Any:
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="nimask",
        manufacturer_model_name="nimask",
        software_versions=__version__,
        device_serial_number="none",
        series_description=series_description or f"nimask {kind} mask",
        content_label=label.upper(),
        content_description=f"nimask {kind} mask",
        omit_empty_frames=False,
    )
