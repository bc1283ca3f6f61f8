"""The fast closing against the plain ITK chain, which defines the result."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nimask.batch.run import mask_dataset
from nimask.batch.settings import MaskSettings
from nimask.core.closing import ball_kernel, close_ball, close_with_kernel, ellipsoid_kernel
from nimask.core.masking import (
    close_mask,
    mm_ball_radii,
    threshold_mask,
    validate_closing_radius_mm,
)
from nimask.core.pipeline import brain_mask
from nimask.exceptions import InvalidVolumeError, ParameterError
from nimask.io.nifti import read_volume


def itk_closing(array: np.ndarray, radius_xyz: list[int]) -> np.ndarray:
    """The plain design-card chain on a (z, y, x) 0/1 array."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.uint8))
    if max(radius_xyz) == 0:
        return sitk.GetArrayFromImage(image)
    closed = sitk.BinaryMorphologicalClosing(image, radius_xyz, sitk.sitkBall, 1, True)
    return sitk.GetArrayFromImage(closed)


def itk_dilated_point(radius_xyz: list[int]) -> np.ndarray:
    """ITK's ball kernel, read off by dilating a single voxel."""
    shape = [2 * r + 3 for r in reversed(radius_xyz)]
    array = np.zeros(shape, dtype=np.uint8)
    array[tuple(s // 2 for s in shape)] = 1
    dilated = sitk.BinaryDilate(sitk.GetImageFromArray(array), radius_xyz, sitk.sitkBall, 0, 1)
    return sitk.GetArrayFromImage(dilated)[1:-1, 1:-1, 1:-1].astype(bool)


# --- the kernel -----------------------------------------------------------------

@pytest.mark.parametrize(
    ("radius", "count"), [(0, 1), (1, 19), (2, 81), (3, 179), (4, 389), (5, 739), (6, 1189)]
)
def test_ball_kernel_is_itks_ball(radius: int, count: int) -> None:
    kernel = ball_kernel(radius)
    assert int(kernel.sum()) == count
    np.testing.assert_array_equal(kernel, itk_dilated_point([radius] * 3))
    d = np.arange(-radius, radius + 1)
    dist2 = d[:, None, None] ** 2 + d[None, :, None] ** 2 + d[None, None, :] ** 2
    np.testing.assert_array_equal(kernel, dist2 <= (radius + 0.5) ** 2)


@pytest.mark.parametrize("radius_xyz", [[0, 0, 2], [1, 2, 3], [3, 1, 0], [4, 4, 1], [2, 0, 5]])
def test_ellipsoid_kernel_is_itks_anisotropic_ball(radius_xyz: list[int]) -> None:
    kernel = ellipsoid_kernel([float(r) for r in reversed(radius_xyz)])
    np.testing.assert_array_equal(kernel, itk_dilated_point(radius_xyz))


def test_ellipsoid_kernel_fractional_radii() -> None:
    # radius 1.5 -> semi-axis 2: offsets with |d| <= 2, i.e. d**2 sums to <= 4
    kernel = ellipsoid_kernel([1.5, 1.5, 1.5])
    d = np.arange(-2, 3)
    dist2 = d[:, None, None] ** 2 + d[None, :, None] ** 2 + d[None, None, :] ** 2
    np.testing.assert_array_equal(kernel, dist2 <= 4)
    assert int(kernel.sum()) == 33
    # radius 0.49 along z: semi-axis 0.99 < 1, so a single slice
    assert ellipsoid_kernel([0.49, 2, 2]).shape == (1, 5, 5)
    with pytest.raises(ValueError, match="finite"):
        ellipsoid_kernel([1.0, math.nan, 1.0])


def test_kernel_must_be_rows_of_centred_segments() -> None:
    bad = np.zeros((3, 3, 3), dtype=bool)
    bad[1, 1, 1] = bad[1, 1, 2] = True  # not symmetric
    with pytest.raises(ValueError, match="centred segment"):
        close_with_kernel(np.ones((4, 4, 4), np.uint8), bad)
    with pytest.raises(ValueError, match="odd sizes"):
        close_with_kernel(np.ones((4, 4, 4), np.uint8), np.ones((2, 3, 3), bool))


# --- exactness against ITK --------------------------------------------------------

_shapes = st.tuples(*(st.integers(1, 18) for _ in range(3)))


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    shape = draw(_shapes)
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.01, 0.05, 0.15, 0.4, 0.8]))
    rng = np.random.default_rng(seed)
    array = (rng.random(shape) < density).astype(np.uint8)
    if draw(st.booleans()):  # foreground on every face
        for axis in range(3):
            for end in (0, -1):
                index = [slice(None)] * 3
                index[axis] = end
                face = array[tuple(index)]
                face |= (rng.random(face.shape) < 0.5).astype(np.uint8)
    return array


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(array=masks(), radius=st.integers(0, 6))
def test_close_ball_equals_itk(array: np.ndarray, radius: int) -> None:
    expected = itk_closing(array, [radius] * 3)
    got = close_ball(array, radius)
    assert got.dtype == np.uint8
    assert got.shape == array.shape
    assert int(np.count_nonzero(got != expected)) == 0


@settings(max_examples=80, deadline=None)
@given(array=masks(), radius_xyz=st.lists(st.integers(0, 4), min_size=3, max_size=3))
def test_anisotropic_kernel_equals_itk(array: np.ndarray, radius_xyz: list[int]) -> None:
    expected = itk_closing(array, radius_xyz)
    got = close_with_kernel(array, ellipsoid_kernel([float(r) for r in reversed(radius_xyz)]))
    assert int(np.count_nonzero(got != expected)) == 0


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 70), (2, 1, 3), (1, 2, 2), (2, 2, 2)])
@pytest.mark.parametrize("radius", [1, 3, 6])
def test_tiny_and_full_volumes(shape: tuple[int, int, int], radius: int) -> None:
    for array in (np.ones(shape, np.uint8), np.zeros(shape, np.uint8)):
        expected = itk_closing(array, [radius] * 3)
        np.testing.assert_array_equal(close_ball(array, radius), expected)
    # every voxel of a full volume stays (the safe border keeps the faces)
    assert int(close_ball(np.ones(shape, np.uint8), radius).sum()) == math.prod(shape)


def test_gap_closed_across_word_boundary() -> None:
    # two slabs 6 voxels apart along x around bit 64: radius 3 bridges them
    array = np.zeros((9, 9, 140), np.uint8)
    array[2:7, 2:7, 40:61] = 1
    array[2:7, 2:7, 67:90] = 1
    got = close_ball(array, 3)
    np.testing.assert_array_equal(got, itk_closing(array, [3] * 3))
    assert got[4, 4, 61:67].all()
    assert not close_ball(array, 2)[4, 4, 61:67].any()


def test_close_mask_matches_itk_method_and_keeps_geometry() -> None:
    rng = np.random.default_rng(7)
    array = (rng.random((23, 31, 77)) < 0.1).astype(np.uint8)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-10.0, 3.0, 7.5))
    image.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
    fast = close_mask(image, 3)
    plain = close_mask(image, 3, method="itk")
    assert fast.GetPixelID() == sitk.sitkUInt8
    for attr in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(fast, attr)() == getattr(image, attr)()
    assert int(np.count_nonzero(
        sitk.GetArrayViewFromImage(fast) != sitk.GetArrayViewFromImage(plain))) == 0
    assert close_mask(image, 0) is image
    with pytest.raises(ParameterError, match="method"):
        close_mask(image, 3, method="scipy")


def test_close_mask_other_values_fall_back_to_itk() -> None:
    array = np.zeros((9, 9, 9), np.uint8)
    array[2:7, 2:7, 2:4] = 1
    array[2:7, 2:7, 5:7] = 2  # not foreground for ITK
    image = sitk.GetImageFromArray(array)
    expected = sitk.BinaryMorphologicalClosing(image, [1] * 3, sitk.sitkBall, 1, True)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(close_mask(image, 1)), sitk.GetArrayViewFromImage(expected)
    )


# --- closing_radius_mm ------------------------------------------------------------

def test_mm_radius_on_isotropic_voxels_is_the_voxel_radius() -> None:
    rng = np.random.default_rng(3)
    image = sitk.GetImageFromArray((rng.random((20, 24, 28)) < 0.08).astype(np.uint8))
    image.SetSpacing((0.5, 0.5, 0.5))
    by_mm = close_mask(image, closing_radius=1, closing_radius_mm=1.5)  # replaces the 1
    by_voxels = close_mask(image, 3, method="itk")
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(by_mm), sitk.GetArrayViewFromImage(by_voxels)
    )


def test_mm_radius_with_whole_voxel_radii_is_itks_ball() -> None:
    rng = np.random.default_rng(4)
    image = sitk.GetImageFromArray((rng.random((16, 30, 30)) < 0.1).astype(np.uint8))
    image.SetSpacing((1.0, 1.0, 3.0))  # x, y, z
    assert mm_ball_radii(image.GetSpacing(), 3.0) == (1.0, 3.0, 3.0)
    got = close_mask(image, closing_radius_mm=3.0)
    expected = sitk.BinaryMorphologicalClosing(image, [3, 3, 1], sitk.sitkBall, 1, True)
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(got), sitk.GetArrayViewFromImage(expected)
    )


def test_mm_radius_kernel_on_ct_spacing() -> None:
    # CT grid 0.957 x 0.957 x 1.5 mm, R = 3 mm: radii 3.135, 3.135, 2 voxels;
    # offsets with sum((d_i * s_i / (R + s_i / 2))**2) <= 1
    spacing = (0.957, 0.957, 1.5)
    kernel = ellipsoid_kernel(mm_ball_radii(spacing, 3.0))
    assert kernel.shape == (5, 7, 7)
    dz, dy, dx = (np.arange(n) - n // 2 for n in kernel.shape)
    sz, sy, sx = spacing[::-1]
    inside = ((dz[:, None, None] * sz / (3 + sz / 2)) ** 2
              + (dy[None, :, None] * sy / (3 + sy / 2)) ** 2
              + (dx[None, None, :] * sx / (3 + sx / 2)) ** 2) <= 1
    np.testing.assert_array_equal(kernel, inside)
    assert int(kernel.sum()) == 145


def _tie_rule_kernel(spacing_xyz: tuple[float, ...], radius_mm: float) -> np.ndarray:
    """The documented rule, offset by offset: ``r_i = R / s_i`` in double, then exact."""
    semi = [Fraction(radius_mm / s) + Fraction(1, 2) for s in reversed(spacing_xyz)]
    half = [math.floor(a) for a in semi]
    kernel = np.zeros([2 * h + 1 for h in half], dtype=bool)
    for d in itertools.product(*(range(-h, h + 1) for h in half)):
        if sum(Fraction(di * di) / (a * a) for di, a in zip(d, semi, strict=True)) <= 1:
            kernel[tuple(di + h for di, h in zip(d, half, strict=True))] = True
    return kernel


def test_mm_kernel_offsets_exactly_on_the_ellipsoid_are_inside() -> None:
    # 0.2 mm voxels along z and R = 2.5 mm: r_z = 2.5 / 0.2 = 12.5 in double, so the
    # offset dz = 13 lies exactly on the ellipsoid (13 / (12.5 + 1/2) = 1): inside.
    kernel = ellipsoid_kernel(mm_ball_radii((1.0, 1.0, 0.2), 2.5))
    assert kernel.shape == (27, 7, 7)
    assert kernel[0, 3, 3]
    assert kernel[26, 3, 3]
    # Two axes: R = 4.5 mm, spacing 1 x 2.25 mm: semi-axes 5 and 2.5 voxels,
    # (dx, dy) = (3, 2) gives 9/25 + 4/6.25 = 1: inside; (4, 2) is not.
    kernel = ellipsoid_kernel(mm_ball_radii((1.0, 2.25, 10.0), 4.5))
    centre = tuple(n // 2 for n in kernel.shape)
    assert kernel[centre[0], centre[1] + 2, centre[2] + 3]
    assert kernel[centre[0], centre[1] - 2, centre[2] - 3]
    assert not kernel[centre[0], centre[1] + 2, centre[2] + 4]
    # y: 0.8 mm, R = 2 mm: r_y = 2.5 in double, dy = 3 on the ellipsoid: inside.
    # The README formula evaluated in floating point puts it just outside
    # (3 * 0.8 = 2.4000000000000004 > 2 + 0.8 / 2): the rule decides exactly
    # on the double r_i instead.
    assert (3 * 0.8 / (2.0 + 0.8 / 2)) ** 2 > 1
    kernel = ellipsoid_kernel(mm_ball_radii((0.2, 0.8, 0.5), 2.0))
    assert kernel.shape == (9, 7, 21)
    assert kernel[4, 0, 10]
    assert kernel[4, 6, 10]


@pytest.mark.parametrize("seed", range(4))
def test_mm_kernel_is_the_documented_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    decimals = [0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9,
                0.957, 1.0, 1.1, 1.2, 1.25, 1.3, 1.5, 2.0, 2.25, 2.5, 3.0]
    checked = 0
    while checked < 40:
        spacing = tuple(float(rng.choice(decimals)) for _ in range(3))
        radius_mm = float(rng.choice(decimals)) * int(rng.integers(1, 5))
        if radius_mm / min(spacing) > 8:  # keep the offset-by-offset reference small
            continue
        checked += 1
        expected = _tie_rule_kernel(spacing, radius_mm)
        np.testing.assert_array_equal(ellipsoid_kernel(mm_ball_radii(spacing, radius_mm)),
                                      expected, err_msg=f"{spacing} {radius_mm}")


def test_mm_radius_zero_and_validation() -> None:
    image = sitk.GetImageFromArray(np.ones((3, 3, 3), np.uint8))
    assert close_mask(image, closing_radius_mm=0) is image
    assert close_mask(image, closing_radius_mm=0.2) is image  # kernel of one voxel
    assert validate_closing_radius_mm(None) is None
    assert validate_closing_radius_mm(2) == 2.0
    for bad in (-1.0, math.inf, math.nan, "3", True):
        with pytest.raises(ParameterError, match="closing_radius_mm"):
            validate_closing_radius_mm(bad)
    with pytest.raises(ParameterError, match="voxels"):
        close_mask(image, closing_radius_mm=1.0, method="itk")
    with pytest.raises(InvalidVolumeError, match="spacing"):
        mm_ball_radii((1.0, 0.0, 1.0), 2.0)


def test_brain_mask_accepts_mm_radius() -> None:
    array = np.zeros((12, 12, 12), np.float32)
    array[3:9, 3:9, 3:9] = 100
    array[5:7, 5:7, 5:7] = 0  # a hole the closing fills
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 2.0))
    mask = sitk.GetArrayFromImage(
        brain_mask(image, threshold=(50, 200), closing_radius_mm=2.0)
    )
    assert int(mask.sum()) == 216


def test_settings_and_results_record_mm_radius(tmp_path: Path) -> None:
    settings = MaskSettings.create(None, 3, 2.5)
    assert settings.closing_radius_mm == 2.5
    assert settings.voxel_radius is None
    assert settings.provenance().endswith(" otsu r=2.5mm")
    with pytest.raises(ParameterError):
        MaskSettings.create(None, 3, -0.5)
    array = np.zeros((10, 12, 14), np.int16)
    array[2:8, 3:9, 3:11] = 200
    img = nib.Nifti1Image(array.T, np.diag([1.0, 1.0, 2.0, 1.0]))
    src = tmp_path / "in"
    src.mkdir()
    nib.save(img, src / "a.nii.gz")
    results = mask_dataset(src, tmp_path / "out", closing_radius_mm=2.0, workers=1)
    assert [r.status for r in results] == ["written"]
    assert results[0].closing_radius_mm == 2.0
    assert results[0].closing_radius is None
    written = nib.load(tmp_path / "out" / "a_mask.nii.gz")
    assert bytes(written.header["descrip"]).rstrip(b"\0").decode().endswith("r=2mm")
    assert int(np.asarray(written.dataobj).sum()) == 6 * 6 * 8


# --- real volumes -------------------------------------------------------------------

_REAL = [
    "itk_t1_2x2x3mm.nii.gz",
    "invesalius_ct_head_hu.nii.gz",
    "mni152_t1_brain_1mm.nii.gz",
    "small_bigendian_anatomical.nii",
    "bad_4d_singleton_dipy_S0_10slices.nii.gz",
    "itk_brainmask_2x2x3mm.nii.gz",
    "invesalius_ct_bonethresh_mask.nii.gz",
    "invesalius_ct_tissuethresh_mask.nii.gz",
    "mni152_brainmask_1mm.nii.gz",
]
# bad_4d_fmri_example4d.nii.gz is refused by read_volume (two time points).


@pytest.mark.slow
@pytest.mark.parametrize("name", _REAL)
def test_real_volumes_zero_differing_voxels(name: str, shared_data: Path) -> None:
    data = shared_data
    image = read_volume(data / name).image
    windows: list[tuple[float, float] | None] = [None]
    if "ct" in name:
        windows.append((-500.0, 3000.0))
    for window in windows:
        mask = threshold_mask(image, window).mask
        for radius in (1, 3, 5):
            fast = sitk.GetArrayFromImage(close_mask(mask, radius))
            plain = sitk.GetArrayFromImage(close_mask(mask, radius, method="itk"))
            assert int(np.count_nonzero(fast != plain)) == 0, (name, window, radius)
