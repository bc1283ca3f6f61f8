"""DICOM series with a known answer: geometry, the checks, and what read_series does.

Every series here is written by SimpleITK (GDCM) from a known volume or a known
linear field, so the right voxel at every physical point is known.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from _dicom_fixtures import (
    Slice,
    axes,
    ct_volume,
    new_uid,
    plane_slices,
    ramp_slices,
    write_series,
)
from conftest import OBLIQUE

from nimask.exceptions import DicomSeriesError, VolumeReadError
from nimask.io.dicom import check_series, find_series, read_series

pytest.importorskip("pydicom")

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _oblique_orientation() -> tuple[float, ...]:
    m = np.asarray(OBLIQUE).reshape(3, 3)
    return tuple(float(v) for v in np.concatenate((m[:, 0], m[:, 1])))


def _sitk_read(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    (uid,) = reader.GetGDCMSeriesIDs(str(folder))
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid))
    return reader.Execute()


def _only(folder: Path):
    scan = find_series(folder)
    assert len(scan.series) == 1, scan
    return scan.series[0]


@pytest.fixture(scope="module")
def ct(shared_data: Path) -> sitk.Image:
    return ct_volume(shared_data, shrink=4)  # 64 x 64 x 108, ~3.8 mm in-plane


def _axial_slices(ct: sitk.Image, n: int = 20, step: float = 3.0, z0: float = -20.0):
    spacing = ct.GetSpacing()[:2]
    origin = ct.GetOrigin()
    positions = [(origin[0], origin[1] - 0.5, z0 + i * step) for i in range(n)]
    return plane_slices(ct, positions, AXIAL, (64, 60), spacing, thickness=step)


# --- a regular series: stacked as it is, like SimpleITK's reader ---------------------------


def test_oblique_regular_series_equals_simpleitk_reader(tmp_path: Path, ct: sitk.Image) -> None:
    orientation = _oblique_orientation()
    _, _, normal = axes(orientation)
    p0 = np.array([-60.0, 40.0, -30.0])
    positions = [p0 + i * 2.5 * normal for i in range(24)]
    slices = plane_slices(ct, positions, orientation, (70, 64), (3.5, 3.25), thickness=2.5)
    # file names in reverse order: the order must come from the positions
    write_series(tmp_path / "s", slices, names=[f"{99 - i}.dcm" for i in range(24)],
                 intercept=-1024)
    series = _only(tmp_path / "s")
    assert series.check.action == "read"
    assert series.check.flags == ()
    image, notes = read_series(series)
    assert notes == []
    reference = _sitk_read(tmp_path / "s")
    assert image.GetSize() == reference.GetSize() == (70, 64, 24)
    np.testing.assert_allclose(image.GetOrigin(), positions[0], atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(image.GetSpacing(), (3.5, 3.25, 2.5), atol=1e-6)
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), OBLIQUE, atol=1e-6)
    assert image.GetPixelID() == sitk.sitkFloat32
    values = sitk.GetArrayFromImage(image)
    np.testing.assert_array_equal(values, sitk.GetArrayFromImage(reference).astype(np.float32))
    np.testing.assert_array_equal(values, np.stack([s.array for s in slices]))


# --- gantry tilt -------------------------------------------------------------------------


def test_gantry_tilt_each_source_pixel_at_its_dicom_position(
    tmp_path: Path, ct: sitk.Image
) -> None:
    """Tilt of 36.87 deg (cos 0.8, sin 0.6), table steps 2 mm along z, pixels 1.2 mm:
    each slice is shifted exactly one row, so every source pixel is a grid node."""
    orientation = (1.0, 0.0, 0.0, 0.0, 0.8, -0.6)
    row, col, normal = axes(orientation)
    np.testing.assert_allclose(normal, (0, 0.6, 0.8))
    p0 = np.array([-40.0, -70.0, -60.0])
    n = 16
    positions = [p0 + np.array([0.0, 0.0, 2.0 * i]) for i in range(n)]
    slices = plane_slices(ct, positions, orientation, (60, 90), (1.5, 1.2), thickness=2.0)
    write_series(tmp_path / "tilt", slices, tags={"0018|1120": "36.87"})
    series = _only(tmp_path / "tilt")
    check = series.check
    assert check.action == "resample"
    assert set(check.flags) == {"gantry_tilt", "sheared"}
    assert check.tilt_degrees == pytest.approx(math.degrees(math.acos(0.8)), abs=1e-6)
    assert check.shear_mm == pytest.approx((n - 1) * 2.0 * 0.6, abs=1e-6)
    image, notes = read_series(series)
    assert any(line.startswith("gantry tilt: GantryDetectorTilt 36.87 deg") for line in notes)
    assert "resampled onto a regular grid" in notes[-1]
    assert image.GetSize() == (60, 90 + n - 1, n)
    np.testing.assert_allclose(image.GetSpacing(), (1.5, 1.2, 1.6), atol=1e-9)
    np.testing.assert_allclose(image.GetDirection(), np.column_stack((row, col, normal)).ravel(),
                               atol=1e-12)
    values = sitk.GetArrayFromImage(image)
    for i, sl in enumerate(slices):
        # the DICOM position of this slice's first pixel, found in the volume
        index = image.TransformPhysicalPointToContinuousIndex(tuple(positions[i]))
        np.testing.assert_allclose(index, np.rint(index), atol=1e-6)
        x, y, z = (int(v) for v in np.rint(index))
        assert (x, z) == (0, i)
        assert y == n - 1 - i
        np.testing.assert_array_equal(values[z, y:y + 90, x:x + 60], sl.array)
    # what a plain series reader does with the same files: the last slice is off
    plain = _sitk_read(tmp_path / "tilt")
    last = plain.TransformIndexToPhysicalPoint((0, 0, n - 1))
    assert np.linalg.norm(np.subtract(last, positions[-1])) > 15.0
    ours = image.TransformIndexToPhysicalPoint((0, 0, n - 1))
    np.testing.assert_allclose(ours, positions[-1], atol=1e-9)


def _coverage(points: np.ndarray, positions: np.ndarray, orientation, size, spacing,
              offsets: np.ndarray) -> np.ndarray:
    """True where a grid point lies inside the slice(s) it is interpolated from.

    The point's bracketing slices along the normal (both, or only the one it
    lies on) must hold it in their own pixel lattice."""
    row, col, normal = axes(orientation)
    d = (points - positions[0]) @ normal
    i = np.clip(np.searchsorted(offsets, d, side="right") - 1, 0, len(offsets) - 2)
    w = (d - offsets[i]) / (offsets[i + 1] - offsets[i])

    def holds(k: np.ndarray) -> np.ndarray:
        rel = points - positions[k]
        u, v = rel @ row / spacing[0], rel @ col / spacing[1]
        return (u > -1e-6) & (u < size[0] - 1 + 1e-6) & (v > -1e-6) & (v < size[1] - 1 + 1e-6)

    below, above = holds(i), holds(i + 1)
    return np.where(w < 1e-6, below, np.where(w > 1 - 1e-6, above, below & above))


def test_tilt_and_uneven_gaps_reproduce_a_linear_field(tmp_path: Path) -> None:
    """GE-like: 18.5 deg tilt, z steps of 4.2 then 7.38 mm (with a short 1.14 mm gap).

    Each slice holds the linear field f(p) = g . p (rounded to integers), so the
    resampled volume must hold f at every grid node inside the slices, within
    the rounding (0.5): a 0.1 mm error anywhere would show as 0.9."""
    tilt = math.radians(18.5)
    orientation = (1.0, 0.0, 0.0, 0.0, math.cos(tilt), -math.sin(tilt))
    z = [0.0]
    for gap in [4.22] * 9 + [1.14] + [7.38] * 8:
        z.append(z[-1] + gap)
    positions = np.array([(-30.0, -40.0, 5.0 + zi) for zi in z])
    gradient = np.array([3.0, -5.0, 7.0])
    size, spacing = (40, 50), (1.25, 1.1)
    slices = ramp_slices(gradient, 200.0, positions, orientation, size, spacing)
    thickness = [4.0] * 10 + [7.0] * 9
    for sl, t in zip(slices, thickness, strict=True):
        sl.thickness = t
    write_series(tmp_path / "ge", slices, tags={"0018|1120": "18.5"})
    series = _only(tmp_path / "ge")
    check = series.check
    assert check.action == "resample"
    assert set(check.flags) == {"gantry_tilt", "sheared", "nonuniform_spacing"}
    assert "missing_slices" not in check.flags
    image, _ = read_series(series)
    values = sitk.GetArrayFromImage(image).ravel()
    nx, ny, nz = image.GetSize()
    idx = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij"), -1)
    idx = idx.transpose(2, 1, 0, 3).reshape(-1, 3)  # (z, y, x) order, as values
    affine = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    points = idx @ affine.T + np.asarray(image.GetOrigin())
    expected = points @ gradient + 200.0
    offsets = np.asarray(check.offsets)
    inside = _coverage(points, positions, orientation, size, spacing, offsets)
    assert inside.sum() > 0.5 * len(points)
    error = np.abs(values[inside] - expected[inside])
    assert error.max() <= 0.5 + 1e-3
    # outside the slices: the series' lowest value
    assert np.all(values[~inside] == np.min([s.array.min() for s in slices]))
    # SimpleITK's plain reader on the same files is off by many mm
    plain = _sitk_read(tmp_path / "ge")
    p_last = np.asarray(plain.TransformIndexToPhysicalPoint((0, 0, len(z) - 1)))
    assert np.linalg.norm(p_last - positions[-1]) > 20.0


# --- missing, non-uniform, duplicated slices ---------------------------------------------


def test_missing_slice_refused_then_filled_on_request(tmp_path: Path, ct: sitk.Image) -> None:
    slices = _axial_slices(ct)
    paths = write_series(tmp_path / "gap", slices)
    paths[9].unlink()
    series = _only(tmp_path / "gap")
    check = series.check
    assert check.action == "refuse"
    assert "missing_slices" in check.flags
    assert check.reason == (
        "missing slices: the series steps 3 mm but 1 gap(s) skip slices "
        "(1 between 24 and 30 mm along the normal)"
    )
    with pytest.raises(DicomSeriesError, match=r"^missing slices: the series steps 3 mm"):
        read_series(series)
    image, notes = read_series(series, fill_missing=True)
    assert "missing slices filled by interpolation" in notes[-1]
    values = sitk.GetArrayFromImage(image)
    assert values.shape == (20, 60, 64)
    np.testing.assert_allclose(image.GetSpacing()[2], 3.0, atol=1e-9)
    kept = [s.array for i, s in enumerate(slices) if i != 9]
    np.testing.assert_array_equal(values[:9], np.stack(kept[:9]))
    np.testing.assert_array_equal(values[10:], np.stack(kept[9:]))
    below, above = slices[8].array.astype(np.float32), slices[10].array.astype(np.float32)
    np.testing.assert_allclose(values[9], (below + above) / 2, atol=1e-4)


def test_thicker_slices_with_twice_the_gap_are_non_uniform_not_missing(
    tmp_path: Path, ct: sitk.Image
) -> None:
    slices = _axial_slices(ct, n=10)
    z = [0, 2, 4, 6, 8, 10, 12, 14, 18, 22]
    for sl, zi in zip(slices, z, strict=True):
        sl.position = (sl.position[0], sl.position[1], -20.0 + zi)
        sl.thickness = 2.0 if zi <= 14 else 4.0
    write_series(tmp_path / "var", slices)
    check = _only(tmp_path / "var").check
    assert check.action == "resample"
    assert check.flags == ("nonuniform_spacing",)
    assert check.findings == (
        "non-uniform slice spacing: gaps from 2 to 4 mm (2 mm x7, 4 mm x2)",
    )
    image, _ = read_series(_only(tmp_path / "var"))
    assert image.GetSize()[2] == 12  # 22 mm in steps of 2 mm
    values = sitk.GetArrayFromImage(image)
    for k, sl in enumerate(slices[:8]):  # the 2 mm part lies on the grid
        np.testing.assert_array_equal(values[k], sl.array)
    # the same gaps with the thickness unchanged: two slices are missing
    for sl in slices:
        sl.thickness = 2.0
    write_series(tmp_path / "var2", slices)
    check = _only(tmp_path / "var2").check
    assert check.action == "refuse"
    assert check.reason == (
        "missing slices: the series steps 2 mm but 2 gap(s) skip slices "
        "(1 between 14 and 18 mm; 1 between 18 and 22 mm along the normal)"
    )


def test_copies_and_identical_duplicates_are_ignored(tmp_path: Path, ct: sitk.Image) -> None:
    slices = _axial_slices(ct, n=10)
    paths = write_series(tmp_path / "dup" / "a", slices)
    reference, _ = read_series(_only(tmp_path / "dup" / "a"))
    # the same file twice in the tree
    (tmp_path / "dup" / "copy").mkdir()
    shutil.copy(paths[3], tmp_path / "dup" / "copy" / "again.dcm")
    series = _only(tmp_path / "dup")
    assert series.check.flags == ("duplicate_instances",)
    assert series.check.action == "read"
    image, notes = read_series(series)
    assert notes == ["1 copies of instances already found ignored (same SOPInstanceUID)"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image),
                                  sitk.GetArrayFromImage(reference))
    # another instance with the same pixels at the same position
    twin = Slice(slices[5].array, slices[5].position, AXIAL, slices[5].spacing)
    uid = series.series_instance_uid
    write_series(tmp_path / "dup" / "b", [twin], series_uid=uid, names=["twin.dcm"])
    series = _only(tmp_path / "dup")
    assert set(series.check.flags) == {"duplicate_instances", "duplicate_slices"}
    assert series.check.action == "read"
    image, notes = read_series(series)
    assert notes[-1] == (
        "duplicate slices: 1 image(s) identical to another at the same position ignored"
    )
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image),
                                  sitk.GetArrayFromImage(reference))


def test_different_images_at_one_position_refused(tmp_path: Path, ct: sitk.Image) -> None:
    slices = _axial_slices(ct, n=10)
    uid = new_uid()
    write_series(tmp_path / "echo", slices, series_uid=uid, tags={"0018|0086": "1"})
    second = [Slice(s.array // 2, s.position, AXIAL, s.spacing) for s in slices]
    write_series(tmp_path / "echo", second, series_uid=uid, tags={"0018|0086": "2"},
                 names=[f"e2_{i}.dcm" for i in range(10)])
    series = _only(tmp_path / "echo")
    assert series.check.reason == (
        "duplicate slices: 10 positions hold 2 images with different pixels "
        "(EchoNumbers 1, 2): several echoes, phases or repeats in one series"
    )
    with pytest.raises(DicomSeriesError, match="EchoNumbers 1, 2"):
        read_series(series)


def test_mixed_orientations_and_single_image_refused(tmp_path: Path, ct: sitk.Image) -> None:
    uid = new_uid()
    axial = _axial_slices(ct, n=5)
    write_series(tmp_path / "mixed", axial, series_uid=uid)
    coronal = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    positions = [(-100.0, -20.0 + 5 * i, 60.0) for i in range(5)]
    write_series(tmp_path / "mixed", plane_slices(ct, positions, coronal, (64, 40), (3.0, 3.0)),
                 series_uid=uid, names=[f"cor{i}.dcm" for i in range(5)])
    check = _only(tmp_path / "mixed").check
    assert check.flags == ("mixed_orientations",)
    assert check.reason == (
        "mixed orientations: 2 different ImageOrientationPatient in one series "
        "(a multi-plane series cannot be one volume)"
    )
    write_series(tmp_path / "one", axial[:1])
    single = _only(tmp_path / "one")
    assert single.check.flags == ("single_image",)
    with pytest.raises(DicomSeriesError, match=r"^a single 2D image, not a volume$"):
        read_series(single)


# --- values --------------------------------------------------------------------------------


def test_rescale_applied_per_image(tmp_path: Path) -> None:
    """Half the slices store HU / 2 with RescaleSlope 2: every slice comes out in HU."""
    pydicom = pytest.importorskip("pydicom")
    hu = np.stack([np.full((8, 10), -1000 + 100 * i, dtype=np.int16) for i in range(6)])
    hu[:, 2:6, 3:7] = 40
    slices = [Slice(hu[i], (0.0, 0.0, 2.0 * i), AXIAL, (1.0, 1.0)) for i in range(6)]
    paths = write_series(tmp_path / "r", slices, intercept=-1024)
    for path in paths[::2]:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept)  # HU
        ds.RescaleSlope, ds.RescaleIntercept = 2, 0
        ds.PixelRepresentation = 1
        ds.PixelData = (stored // 2).astype(np.int16).tobytes()
        ds.save_as(path)
    image, _ = read_series(_only(tmp_path / "r"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), hu.astype(np.float32))


@pytest.mark.parametrize("compressor", ["JPEG", "JPEG2000"])
def test_compressed_series_read_like_uncompressed(
    tmp_path: Path, ct: sitk.Image, compressor: str
) -> None:
    """JPEG lossless (GDCM decodes it when pydicom has no plugin) and JPEG 2000."""
    slices = _axial_slices(ct, n=6)
    write_series(tmp_path / "plain", slices, intercept=-1024)
    write_series(tmp_path / "packed", slices, intercept=-1024, compressor=compressor)
    pydicom = pytest.importorskip("pydicom")
    plain, _ = read_series(_only(tmp_path / "plain"))
    packed = _only(tmp_path / "packed")
    assert pydicom.uid.UID(packed.frames[0].transfer_syntax).is_compressed
    image, _ = read_series(packed)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(plain))
    assert sitk.GetArrayViewFromImage(image).min() < -900  # HU, rescaled once


def test_enhanced_legacy_converted_equals_classic(tmp_path: Path, ct: sitk.Image) -> None:
    """The same slices as one Legacy Converted Enhanced CT file (highdicom) read the same."""
    pydicom = pytest.importorskip("pydicom")
    hd = pytest.importorskip("highdicom")
    orientation = _oblique_orientation()
    _, _, normal = axes(orientation)
    positions = [np.array([-50.0, 30.0, -20.0]) + i * 3.0 * normal for i in range(12)]
    slices = plane_slices(ct, positions, orientation, (48, 40), (2.5, 2.5), thickness=3.0)
    paths = write_series(tmp_path / "classic", slices, intercept=-1024)
    classic = _only(tmp_path / "classic")
    legacy = [pydicom.dcmread(p) for p in reversed(paths)]
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=legacy, series_instance_uid=new_uid(), series_number=8,
        sop_instance_uid=new_uid(), instance_number=1,
    )
    (tmp_path / "enh").mkdir()
    enhanced.save_as(tmp_path / "enh" / "multi.dcm")
    series = _only(tmp_path / "enh")
    assert series.multiframe
    assert len(series.frames) == 12
    assert len(series.files) == 1
    assert series.check.action == "read"
    a, _ = read_series(classic)
    b, _ = read_series(series)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_check_series_is_what_find_series_stored(tmp_path: Path, ct: sitk.Image) -> None:
    write_series(tmp_path / "s", _axial_slices(ct, n=8))
    series = _only(tmp_path / "s")
    assert check_series(series) == series.check


@pytest.mark.parametrize("signed", [True, False])
def test_stored_bits_below_allocated_read_as_pydicom_decodes(tmp_path: Path, signed: bool) -> None:
    """12 stored bits in 16 with junk in the 4 high bits: nimask's direct read of the
    values masks (unsigned) or sign-extends (signed) them exactly as pydicom does."""
    pydicom = pytest.importorskip("pydicom")
    rng = np.random.default_rng(3)
    low, high = (-2048, 2048) if signed else (0, 4096)
    slices = [Slice(np.zeros((6, 9), np.int16), (0.0, 0.0, 1.5 * i), AXIAL, (1.0, 1.0))
              for i in range(4)]
    paths = write_series(tmp_path / "bits", slices)
    expected = []
    for path in paths:
        ds = pydicom.dcmread(path)
        values = rng.integers(low, high, size=(6, 9))
        junk = rng.integers(0, 16, size=(6, 9)) << 12
        raw = ((values & 0x0FFF) | junk).astype(np.uint16)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, int(signed)
        ds.RescaleIntercept, ds.RescaleSlope = -1000, 1
        ds.PixelData = raw.tobytes()
        ds.save_as(path)
        decoded = pydicom.dcmread(path).pixel_array
        np.testing.assert_array_equal(decoded, values)  # pydicom: the 12-bit values
        expected.append(decoded.astype(np.float32) - 1000)
    image, _ = read_series(_only(tmp_path / "bits"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), np.stack(expected))


def test_truncated_pixel_data_is_a_read_error(tmp_path: Path) -> None:
    slices = [Slice(np.full((20, 20), 7, np.int16), (0.0, 0.0, 2.0 * i), AXIAL, (1.0, 1.0))
              for i in range(3)]
    paths = write_series(tmp_path / "cut", slices)
    series = _only(tmp_path / "cut")
    paths[1].write_bytes(paths[1].read_bytes()[:-100])
    with pytest.raises(VolumeReadError, match=r"IM0002.dcm: pixel data truncated \(350 of 400"):
        read_series(series)
