"""DICOM SEG written by nimask, read back with highdicom and pydicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from _dicom_fixtures import write_oblique_ct_series
from conftest import OBLIQUE

from nimask._version import __version__
from nimask.core.pipeline import brain_mask
from nimask.exceptions import DicomSeriesError, ParameterError
from nimask.io.dicom import DicomSeries, find_series, read_series, write_seg

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def _source_pixel_mask(mask: sitk.Image, ds) -> np.ndarray:
    """``mask`` at the centre of each pixel of source image ``ds`` (nearest voxel),
    computed from the DICOM header and the mask's affine only."""
    ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
    row = np.asarray(ds.ImageOrientationPatient[:3], dtype=float)
    col = np.asarray(ds.ImageOrientationPatient[3:], dtype=float)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    kk, jj = np.mgrid[0:ds.Rows, 0:ds.Columns]
    points = ipp + jj[..., None] * dx * row + kk[..., None] * dy * col
    affine = np.asarray(mask.GetDirection()).reshape(3, 3) @ np.diag(mask.GetSpacing())
    index = (points - np.asarray(mask.GetOrigin())) @ np.linalg.inv(affine).T
    index = np.floor(index + 0.5).astype(int)  # ITK's nearest neighbour: round half up
    size = np.asarray(mask.GetSize())
    inside = np.all((index >= 0) & (index < size), axis=-1)
    values = sitk.GetArrayViewFromImage(mask)
    out = np.zeros((ds.Rows, ds.Columns), dtype=np.uint8)
    x, y, z = index[inside].T
    out[inside] = values[z, y, x]
    return out


def _check_segment(seg, kind_label: str, code: str) -> None:
    assert seg.SOPClassUID == SEG_SOP_CLASS
    assert seg.SegmentationType == "BINARY"
    (segment,) = seg.SegmentSequence
    assert segment.SegmentNumber == 1
    assert segment.SegmentLabel == kind_label
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentAlgorithmName == "nimask"
    prop = segment.SegmentedPropertyTypeCodeSequence[0]
    assert (prop.CodeValue, prop.CodingSchemeDesignator, prop.CodeMeaning) == (
        code, "SCT", kind_label)
    category = segment.SegmentedPropertyCategoryCodeSequence[0]
    assert (category.CodeValue, category.CodingSchemeDesignator) == ("91723000", "SCT")
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "nimask"
    assert algorithm.AlgorithmVersion == __version__
    assert seg.Manufacturer == "nimask"
    assert seg.SoftwareVersions == __version__


def _references(seg) -> dict[str, np.ndarray]:
    """SOPInstanceUID of each frame's source -> the frame's ImagePositionPatient."""
    out = {}
    for item in seg.PerFrameFunctionalGroupsSequence:
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        position = item.PlanePositionSequence[0].ImagePositionPatient
        out[source.ReferencedSOPInstanceUID] = np.asarray(position, dtype=float)
    return out


@pytest.fixture(scope="module")
def oblique_series(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> DicomSeries:
    folder = tmp_path_factory.mktemp("oblique")
    write_oblique_ct_series(folder, shared_data, OBLIQUE)
    (series,) = find_series(folder).series
    return series


def test_seg_matches_the_mask_voxel_for_voxel(tmp_path: Path, oblique_series) -> None:
    image, _ = read_series(oblique_series)
    mask = sitk.Cast(image > -300, sitk.sitkUInt8)
    assert 0 < sitk.GetArrayViewFromImage(mask).sum() < sitk.GetArrayViewFromImage(mask).size
    out = write_seg(mask, oblique_series, tmp_path / "seg.dcm",
                    parameters={"threshold": "-300"})
    assert out == tmp_path / "seg.dcm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.dcm"]  # no temporary left
    seg = hd.seg.segread(out)
    _check_segment(seg, "Brain", "12738006")
    assert seg.SeriesDescription == "nimask brain mask"
    assert seg.SeriesNumber == 1007
    assert seg.StudyInstanceUID == oblique_series.study_instance_uid
    assert seg.FrameOfReferenceUID == oblique_series.frame_of_reference_uid
    assert seg.PatientID == "PAT01"
    params = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert params.AlgorithmParameters == "threshold=-300"
    # references: the series, each of its instances, one frame on each
    (ref_series,) = seg.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == oblique_series.series_instance_uid
    sources = {f.sop_instance_uid: f for f in oblique_series.frames}
    assert {i.ReferencedSOPInstanceUID for i in ref_series.ReferencedInstanceSequence} == set(
        sources)
    frames = _references(seg)
    assert set(frames) == set(sources)
    for uid, position in frames.items():
        np.testing.assert_allclose(position, sources[uid].position, atol=1e-4)
    # decoded, in the volume's slice order: the mask, voxel for voxel
    order = [oblique_series.frames[i].sop_instance_uid for i in oblique_series.check.order]
    decoded = seg.get_pixels_by_source_instance(order, segment_numbers=[1])[..., 0]
    np.testing.assert_array_equal(decoded, sitk.GetArrayFromImage(mask))
    # pydicom alone agrees (frames unpacked from the 1-bit pixel data)
    raw = pydicom.dcmread(out)
    assert raw.BitsAllocated == 1
    assert raw.pixel_array.shape == (20, 56, 60)
    assert raw.pixel_array.sum() == sitk.GetArrayViewFromImage(mask).sum()


def test_seg_refusals(tmp_path: Path, oblique_series) -> None:
    image, _ = read_series(oblique_series)
    mask = sitk.Cast(image > -300, sitk.sitkUInt8)
    with pytest.raises(ParameterError, match=r"kind must be one of \['brain', 'head'\]"):
        write_seg(mask, oblique_series, tmp_path / "a.dcm", kind="skull")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"only 0 and 1, found values \[0, 2\]"):
        write_seg(mask * 2, oblique_series, tmp_path / "a.dcm")
    moved = sitk.Image(mask)
    moved.SetOrigin(tuple(v + 100.0 for v in mask.GetOrigin()))
    with pytest.raises(ParameterError, match="does not cover source image"):
        write_seg(moved, oblique_series, tmp_path / "a.dcm")
    assert not list(tmp_path.iterdir())


def test_seg_of_a_refused_series_refused(tmp_path: Path, oblique_series) -> None:
    single = DicomSeries(**{**oblique_series.__dict__, "frames": oblique_series.frames[:1],
                            "check": None})
    mask = sitk.Image(60, 56, 1, sitk.sitkUInt8)
    with pytest.raises(DicomSeriesError, match="a single 2D image"):
        write_seg(mask, single, tmp_path / "a.dcm")


def test_seg_is_skipped_by_discovery(tmp_path: Path, oblique_series) -> None:
    image, _ = read_series(oblique_series)
    folder = tmp_path / "tree"
    folder.mkdir()
    write_seg(sitk.Cast(image > 0, sitk.sitkUInt8), oblique_series, folder / "seg.dcm")
    scan = find_series(folder)
    assert scan.series == []
    assert [s.note for s in scan.skipped] == [
        "skipped nimask brain mask (1 file(s)): not a CT, MR or PET image (Segmentation Storage)"
    ]


@pytest.mark.slow
def test_seg_over_the_tilted_ct_lies_on_the_acquired_slices(
    tmp_path: Path, shared_data: Path
) -> None:
    """The mask lives on the resampled grid; the SEG frames lie on the 28 acquired
    (tilted, unevenly spaced) slices and hold the mask at their pixel centres."""
    folder = shared_data / "dicom" / "ct_head_ge_tilt"
    (series,) = find_series(folder).series
    image, _ = read_series(series)
    mask = brain_mask(image, preset="ct-head")  # nimask's own head mask, end to end
    out = write_seg(mask, series, tmp_path / "head.dcm", kind="head")
    seg = hd.seg.segread(out)
    _check_segment(seg, "Head", "69536005")
    frames = _references(seg)
    assert len(frames) == 28
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        np.testing.assert_allclose(frames[ds.SOPInstanceUID],
                                   np.asarray(ds.ImagePositionPatient, dtype=float), atol=1e-4)
        decoded = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], segment_numbers=[1])
        expected = _source_pixel_mask(mask, ds)
        assert expected.sum() > 1000
        np.testing.assert_array_equal(decoded[0, ..., 0], expected)


@pytest.mark.slow
def test_seg_over_an_enhanced_file_references_its_frames(
    tmp_path: Path, shared_data: Path
) -> None:
    (series,) = find_series(shared_data / "dicom" / "mr_t1w_enhanced_siemens_xa30").series
    image, _ = read_series(series)
    mask = sitk.Cast(image > 150, sitk.sitkUInt8)
    seg = hd.seg.segread(write_seg(mask, series, tmp_path / "t1.dcm"))
    source_uid = series.frames[0].sop_instance_uid
    numbers = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.ReferencedSOPInstanceUID == source_uid
        numbers.append(int(source.ReferencedFrameNumber))
    assert sorted(numbers) == list(range(1, 97))
    decoded = seg.get_pixels_by_source_frame(
        source_uid, source_frame_numbers=list(range(1, 97)), segment_numbers=[1])[..., 0]
    volume = sitk.GetArrayFromImage(mask)
    for z, i in enumerate(series.check.order):  # volume slice z is file frame i
        np.testing.assert_array_equal(decoded[series.frames[i].frame], volume[z])
