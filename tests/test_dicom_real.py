"""The real DICOM series of shared/data/dicom (README there): what nimask reads of each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nimask.io.dicom import find_series, read_series, series_output_stem, unique_output_stems

pytestmark = pytest.mark.slow
pydicom = pytest.importorskip("pydicom")


@pytest.fixture(scope="module")
def dicom_dir(shared_data: Path) -> Path:
    path = shared_data / "dicom"
    if not path.is_dir():
        pytest.skip("shared/data/dicom not found")
    return path


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    (uid,) = reader.GetGDCMSeriesIDs(str(folder))
    files = reader.GetGDCMSeriesFileNames(str(folder), uid)
    return sitk.ReadImage(files[0]) if len(files) == 1 else sitk.ReadImage(files)


def test_whole_tree_five_series(dicom_dir: Path) -> None:
    scan = find_series(dicom_dir)
    # sorted by PatientID, StudyDate, SeriesNumber
    assert [s.series_number for s in scan.series] == [5, 6, 9, 2, 3]
    assert [series_output_stem(s) for s in scan.series] == [
        "12343_hucheng_20220711_5_anat-T1w_acq-tfl",
        "12343_hucheng_20220711_6_anat-T1w_acq-tfl",
        "12343_hucheng_20220711_9_gre_field_mapping",
        "QMNx85rKkkg_nodate_2_CT",
        "crlab_20220407_3_t1_fl2d_sag",
    ]
    assert unique_output_stems(scan.series) == [series_output_stem(s) for s in scan.series]
    assert [len(s.files) for s in scan.series] == [1, 1, 1, 28, 35]
    assert [len(s.frames) for s in scan.series] == [96, 96, 33, 28, 35]
    assert scan.not_dicom == [dicom_dir / "README.md"]
    assert scan.skipped == []
    assert scan.unreadable == []
    assert [s.check.action for s in scan.series] == ["read", "read", "read", "resample", "read"]


def test_ge_tilted_ct_resampled_on_its_dicom_positions(dicom_dir: Path) -> None:
    folder = dicom_dir / "ct_head_ge_tilt"
    (series,) = find_series(folder).series
    check = series.check
    assert check.flags == ("gantry_tilt", "sheared", "nonuniform_spacing")
    assert check.tilt_degrees == pytest.approx(18.5, abs=0.01)
    assert check.shear_mm == pytest.approx(48.21, abs=0.01)
    assert check.findings[1] == (
        "non-uniform slice spacing: gaps from 1.08 to 7 mm (4 mm x13, 7 mm x13, 1.08 mm x1)"
    )
    image, notes = read_series(series)
    assert notes[-1].startswith("resampled onto a regular grid (gantry tilt 18.5 deg, slices "
                                "shifted up to 48.2 mm in-plane; non-uniform slice spacing)")
    assert image.GetSize() == (512, 611, 37)
    np.testing.assert_allclose(image.GetSpacing(), (0.4882812, 0.4882812, 144.0880 / 36),
                               atol=1e-4)
    hu = sitk.GetArrayFromImage(image)
    assert hu.min() == -1500.0  # the scanner's padding value outside the field of view
    assert 2000 < hu.max() <= 2121
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    first, last = (pydicom.dcmread(folder / name) for name in ("01.dcm", "28.dcm"))
    row = np.asarray(first.ImageOrientationPatient[:3], dtype=float)
    col = np.asarray(first.ImageOrientationPatient[3:], dtype=float)
    np.testing.assert_allclose(direction[:, 0], row, atol=1e-6)
    np.testing.assert_allclose(direction[:, 1], col, atol=1e-6)

    # slice 1: its pixels are grid nodes, at their DICOM positions
    index = image.TransformPhysicalPointToContinuousIndex(
        tuple(float(v) for v in first.ImagePositionPatient))
    np.testing.assert_allclose(index, (0, 99, 0), atol=1e-6)
    np.testing.assert_array_equal(hu[0, 99:611, :], first.pixel_array.astype(np.float32))

    # slice 28 (the last, 48.8 mm off in SimpleITK's plain volume): the top plane of the
    # grid passes through it; each node holds slice 28 interpolated at that node's
    # position in slice 28's own pixel lattice (from its ImagePositionPatient alone)
    ipp = np.asarray(last.ImagePositionPatient, dtype=float)
    index = image.TransformPhysicalPointToContinuousIndex(tuple(ipp))
    assert index[0] == pytest.approx(0, abs=1e-6)
    assert index[2] == pytest.approx(36, abs=1e-6)
    dy = float(last.PixelSpacing[0])
    node_rows = np.array([image.TransformIndexToPhysicalPoint((0, y, 36)) for y in range(611)])
    k = (node_rows - ipp) @ col / dy  # row coordinate of each node in slice 28
    source = last.pixel_array.astype(np.float64)
    inside = (k >= 0) & (k <= 511)
    k0 = np.minimum(np.floor(k[inside]).astype(int), 510)
    f = (k[inside] - k0)[:, None]
    expected = source[k0] * (1 - f) + source[k0 + 1] * f
    # equal up to float rounding of the positions: 1e-4 pixel along the column
    tolerance = 1e-3 + 1e-4 * np.abs(source[k0 + 1] - source[k0])
    assert np.all(np.abs(hu[36][inside] - expected) <= tolerance)
    assert np.all(hu[36][~inside] == -1500)

    # what SimpleITK's plain series reader does with the same files
    plain = _sitk_series(folder)
    off = np.subtract(plain.TransformIndexToPhysicalPoint((0, 0, 27)), ipp)
    assert np.linalg.norm(off) == pytest.approx(48.8, abs=0.1)


def test_sagittal_t1_equals_simpleitk_reader(dicom_dir: Path) -> None:
    folder = dicom_dir / "mr_t1_sag_siemens_hfs"
    (series,) = find_series(folder).series
    assert series.check.action == "read"
    assert series.check.flags == ()
    image, notes = read_series(series)
    assert notes == []
    reference = _sitk_series(folder)
    assert image.GetSize() == reference.GetSize() == (256, 256, 35)
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    values = sitk.GetArrayFromImage(image)
    np.testing.assert_array_equal(values, sitk.GetArrayFromImage(reference).astype(np.float32))
    assert (values.min(), values.max()) == (0, 1948)


@pytest.mark.parametrize(
    ("folder", "number", "maximum"),
    [("mr_t1w_enhanced_siemens_xa30", 5, 2927), ("mixed_two_series_xa30_enhanced", 6, 1588)],
)
def test_enhanced_t1w_same_voxels_as_simpleitk(
    dicom_dir: Path, folder: str, number: int, maximum: float
) -> None:
    """One file, 96 frames.  SimpleITK keeps the file's frame order (a left-handed
    grid, determinant -1); nimask sorts along the normal (right-handed): the same
    voxels at the same physical points."""
    scan = find_series(dicom_dir / folder)
    series = next(s for s in scan.series if s.series_number == number)
    assert series.multiframe
    assert series.check.action == "read"
    assert series.check.flags == ()
    image, _ = read_series(series)
    reference = sitk.ReadImage(str(series.files[0]))
    assert image.GetSize() == reference.GetSize() == (128, 128, 96)
    np.testing.assert_allclose(image.GetSpacing(), (2, 2, 2), atol=1e-4)
    assert np.linalg.det(np.reshape(image.GetDirection(), (3, 3))) == pytest.approx(1.0)
    assert np.linalg.det(np.reshape(reference.GetDirection(), (3, 3))) == pytest.approx(-1.0)
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((5, 7, 0)),
                               reference.TransformIndexToPhysicalPoint((5, 7, 95)), atol=1e-3)
    same_grid = sitk.Resample(reference, image, sitk.Transform(), sitk.sitkNearestNeighbor)
    values = sitk.GetArrayFromImage(image)
    np.testing.assert_array_equal(values, sitk.GetArrayFromImage(same_grid).astype(np.float32))
    assert (values.min(), values.max()) == (0, maximum)


def test_mixed_folder_two_series_one_phase_map(dicom_dir: Path) -> None:
    scan = find_series(dicom_dir / "mixed_two_series_xa30_enhanced")
    assert [s.series_description for s in scan.series] == [
        "anat-T1w_acq-tfl", "gre_field_mapping"]
    phase = scan.series[1]
    assert phase.check.flags == ("phase_image",)
    image, notes = read_series(phase)
    assert notes == ["phase image (ImageType P/PHASE): a phase map, not anatomy"]
    assert image.GetSize() == (64, 64, 33)
    np.testing.assert_allclose(image.GetSpacing(), (3.375, 3.375, 3.4), atol=1e-4)
    values = sitk.GetArrayViewFromImage(image)
    assert (values.min(), values.max()) == (-4096, 4094)
