"""Opt-in refinement steps on phantoms with exact voxel expectations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nimask.core.masking import close_mask, threshold_mask
from nimask.core.refine import (
    Refinements,
    axial_axis,
    close_mask_skimage_ball,
    dilate_mask,
    erode_mask,
    exclude_above,
    fill_holes,
    keep_largest_component,
    nidataset_otsu_threshold,
    refine_mask,
    validate_fill_holes,
    validate_opening_radius,
)
from nimask.exceptions import InvalidVolumeError, ParameterError


def image_from(array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
               direction: tuple[float, ...] | None = None) -> sitk.Image:
    """``array`` is indexed (k, j, i) as SimpleITK returns it."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(spacing)
    image.SetOrigin((-3.0, 5.0, 7.5))
    if direction is not None:
        image.SetDirection(direction)
    return image


def voxels(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


# ----------------------------------------------------------------- fill holes


def hollow_box(shape: tuple[int, int, int], lo: int, hi: int) -> np.ndarray:
    """A closed box surface (1-voxel walls) spanning [lo, hi] on every axis."""
    a = np.zeros(shape, np.uint8)
    a[lo:hi + 1, lo:hi + 1, lo:hi + 1] = 1
    a[lo + 1:hi, lo + 1:hi, lo + 1:hi] = 0
    return a


def test_fill_holes_3d_fills_closed_cavity_exactly() -> None:
    shell = hollow_box((14, 14, 14), 2, 11)  # 10^3 box, 8^3 cavity
    assert shell.sum() == 1000 - 512
    out = fill_holes(image_from(shell), "3d")
    assert voxels(out).sum() == 1000
    assert voxels(out)[2:12, 2:12, 2:12].all()
    assert out.GetOrigin() == (-3.0, 5.0, 7.5)


def test_fill_holes_3d_background_is_face_connected() -> None:
    # A cavity that touches the outside only through a vertex diagonal is a
    # hole for face connectivity (ITK fully connected off, scipy's default).
    a = np.ones((5, 5, 5), np.uint8)
    a[2, 2, 2] = 0          # cavity voxel ...
    a[3, 3, 3] = 0          # ... touching this one only by a vertex ...
    a[4, 4, 4] = 0          # ... which touches a border voxel only by a vertex
    out = voxels(fill_holes(image_from(a), "3d"))
    assert out[2, 2, 2] == 1
    assert out[3, 3, 3] == 1
    assert out[4, 4, 4] == 0
    assert out.sum() == 124


def neck_open_head(shape: tuple[int, int, int] = (12, 12, 12)) -> np.ndarray:
    """Box walls around axis 0 of the array (k), top closed, bottom open at k=0."""
    a = np.zeros(shape, np.uint8)
    a[0:11, 1:11, 1:11] = 1        # box k 0..10, j/i 1..10: 11 x 10 x 10 = 1100
    a[0:10, 2:10, 2:10] = 0        # cavity k 0..9 reaches the border at k=0
    return a


def test_slice_fill_closes_head_open_at_the_neck() -> None:
    head = neck_open_head()
    assert head.sum() == 1100 - 640
    image = image_from(head)
    assert axial_axis(image) == 2
    assert voxels(fill_holes(image, "3d")).sum() == 460  # 3D fill finds no hole
    filled = voxels(fill_holes(image, "slices"))
    assert filled.sum() == 1100
    assert filled[0:11, 1:11, 1:11].all()
    assert voxels(fill_holes(image, "both")).sum() == 1100


def test_slice_axis_follows_the_direction_cosines() -> None:
    # Voxel axis j points superior-inferior: slices are perpendicular to j,
    # i.e. numpy axis 1; the neck opening is along j.
    head = np.moveaxis(neck_open_head(), 0, 1)
    direction = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0)
    image = image_from(head, direction=direction)
    assert axial_axis(image) == 1
    assert voxels(fill_holes(image, "slices")).sum() == 1100
    # The same volume sliced along k (identity direction) stays open.
    assert voxels(fill_holes(image_from(head), "slices")).sum() == 460
    assert voxels(fill_holes(image_from(head), "slices", axis=1)).sum() == 1100


def test_fill_both_fills_cavity_and_open_neck() -> None:
    a = np.zeros((12, 30, 12), np.uint8)
    a[:, 0:12, :] = neck_open_head()                    # open cavity: 640 voxels
    a[:, 16:28, :] = hollow_box((12, 12, 12), 1, 10)    # closed cavity: 512 voxels
    before = int(a.sum())
    assert voxels(fill_holes(image_from(a), "3d")).sum() == before + 512
    assert voxels(fill_holes(image_from(a), "slices")).sum() == before + 512 + 640
    assert voxels(fill_holes(image_from(a), "both")).sum() == before + 512 + 640
    refined = refine_mask(image_from(a), (1, 1), 0, Refinements(fill_holes="both"))
    assert voxels(refined.mask).sum() == before + 512 + 640
    assert refined.steps == ("threshold [1,1]", "fill-holes 3d", "fill-holes slices axis=k")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, "3d"), (False, "off"), ("3D", "3d"), ("slices", "slices"), ("both", "both"),
     ("none", "off"), ("off", "off")],
)
def test_validate_fill_holes(value: object, expected: str) -> None:
    assert validate_fill_holes(value) == expected


@pytest.mark.parametrize("value", ["2d", 1, None, "yes"])
def test_validate_fill_holes_rejects(value: object) -> None:
    with pytest.raises(ParameterError, match="fill_holes must be"):
        validate_fill_holes(value)


# ---------------------------------------------------------- largest component


def test_largest_component_uses_face_connectivity() -> None:
    a = np.zeros((10, 10, 10), np.uint8)
    a[1:4, 1:4, 1:4] = 1            # 27 voxels
    a[4, 4, 4] = 1                  # touches the cube only by a vertex
    a[6:8, 6:8, 6:8] = 1            # 8 voxels
    out, dropped = keep_largest_component(image_from(a))
    arr = voxels(out)
    assert arr.sum() == 27
    assert dropped == 2
    assert arr[1:4, 1:4, 1:4].all()
    assert arr[4, 4, 4] == 0


def test_largest_component_of_empty_mask() -> None:
    out, dropped = keep_largest_component(image_from(np.zeros((4, 4, 4), np.uint8)))
    assert voxels(out).sum() == 0
    assert dropped == 0


def test_largest_component_tie_breaks() -> None:
    a = np.zeros((10, 10, 10), np.uint8)  # (k, j, i)
    a[6:8, 0:2, 0:2] = 1   # "A": low i, high k
    a[0:2, 0:2, 6:8] = 1   # "B": high i, low k
    itk, _ = keep_largest_component(image_from(a))
    nid, _ = keep_largest_component(image_from(a), tie_break="nidataset")
    # ITK labels in storage order (i fastest, k slowest): B comes first.
    assert voxels(itk)[0:2, 0:2, 6:8].all()
    assert voxels(itk).sum() == 8
    # scipy.ndimage.label on nibabel's (i, j, k) array: smallest i first, A.
    assert voxels(nid)[6:8, 0:2, 0:2].all()
    assert voxels(nid).sum() == 8
    with pytest.raises(ParameterError, match="tie_break"):
        keep_largest_component(image_from(a), tie_break="scipy")


# ------------------------------------------------------------------- opening


def dumbbell() -> np.ndarray:
    a = np.zeros((20, 40, 20), np.uint8)
    a[4:15, 2:13, 4:15] = 1    # large cube 11^3 = 1331
    a[5:14, 25:34, 5:14] = 1   # small cube 9^3 = 729
    a[9, 13:25, 9] = 1         # 1-voxel bar bridging them (12 voxels)
    return a


def test_opening_around_largest_component_cuts_bridge() -> None:
    a = dumbbell()
    image = image_from(a)
    # Without opening, the bar joins everything into one component.
    whole, dropped = keep_largest_component(image)
    assert voxels(whole).sum() == 1331 + 729 + 12
    assert dropped == 0
    eroded = erode_mask(image, 1)
    kept, dropped = keep_largest_component(eroded)
    out = voxels(dilate_mask(kept, 1))
    assert dropped == 1
    # The large cube opened by ITK's radius-1 ball (3x3x3 minus its 8
    # corners) is the cube minus its 8 corner voxels.
    assert out.sum() == 1331 - 8
    assert out[5:14, 25:34, 5:14].sum() == 0
    assert out[9, 13:25, 9].sum() == 0
    assert not (out & ~a.astype(bool)).any()


def test_opening_through_refine_mask_pipeline() -> None:
    image = image_from(dumbbell().astype(np.int16) * 100)
    outcome = refine_mask(image, (50, 150), 0, Refinements(largest_component=True,
                                                           opening_radius=1))
    assert voxels(outcome.mask).sum() == 1323
    assert outcome.components_dropped == 1
    assert outcome.steps == ("threshold [50,150]", "erode 1", "largest-component dropped=1",
                             "dilate 1", "largest-component dropped=0")


def test_opening_in_mm_uses_per_axis_radius() -> None:
    a = np.zeros((9, 21, 21), np.uint8)
    a[4, 10, 10] = 1
    image = image_from(a, spacing=(1.0, 1.0, 2.0))      # i, j: 1 mm; k: 2 mm
    dilated = voxels(dilate_mask(image, 2.0, "mm"))      # radius (2, 2, 1) voxels
    assert dilated.sum() == 39                           # ITK ball [2, 2, 1]
    assert dilated[:, 10, 10].sum() == 3
    assert dilated[4, 10, :].sum() == 5
    assert voxels(erode_mask(image_from(a), 0.4, "mm")).sum() == 1  # rounds to 0: no-op


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, (0, "vox")), (2, (2, "vox")), ("3", (3, "vox")), ("2mm", (2.0, "mm")),
     (" 2.5 MM ", (2.5, "mm")), ("0mm", (0, "vox"))],
)
def test_validate_opening_radius(value: object, expected: tuple[float, str]) -> None:
    assert validate_opening_radius(value) == expected


@pytest.mark.parametrize("value", [-1, 1.5, True, "2cm", "-2mm", "mm"])
def test_validate_opening_radius_rejects(value: object) -> None:
    with pytest.raises(ParameterError, match="opening_radius must be"):
        validate_opening_radius(value)


# ---------------------------------------------------------- exclude above window


def test_exclude_above_window_keeps_closing_off_bright_voxels() -> None:
    image = np.full((15, 15, 15), -1000, np.int16)
    image[3:12, 3:12, 3:12] = 40          # "brain"
    image[7, 7, 8:12] = 500              # a thin bone spike reaching into it
    img = image_from(image)
    window = threshold_mask(img, (0, 100)).mask
    assert voxels(window).sum() == 729 - 4
    closed = close_mask(window, 2)
    assert voxels(closed).sum() == 729        # the closing bridges over the spike
    cleaned = voxels(exclude_above(closed, img, 100))
    assert cleaned.sum() == 725
    assert cleaned[7, 7, 8:12].sum() == 0
    outcome = refine_mask(img, (0, 100), 2, Refinements(exclude_above_window=True))
    assert (voxels(outcome.mask) == cleaned).all()
    assert outcome.steps[-1] == "exclude-above 100"


def test_exclude_above_on_float_image_drops_nan() -> None:
    a = np.full((4, 4, 4), 50.0, np.float32)
    a[0, 0, 0] = np.nan
    a[1, 1, 1] = 100.5
    mask = image_from(np.ones((4, 4, 4), np.uint8))
    out = voxels(exclude_above(mask, image_from(a), 100.0))
    assert out.sum() == 62
    assert out[0, 0, 0] == 0
    assert out[1, 1, 1] == 0


# ------------------------------------------------- nidataset-compatible pieces


def reference_skimage_closing(a: np.ndarray, r: int) -> np.ndarray:
    """skimage.morphology.binary_closing(a, ball(r)), written out with numpy.

    Dilation with outside = False, erosion with outside = True (mode="ignore").
    """
    offsets = [o for o in itertools.product(range(-r, r + 1), repeat=3)
               if sum(v * v for v in o) <= r * r]
    a = a.astype(bool)

    def shifted(x: np.ndarray, o: tuple[int, ...], fill: bool) -> np.ndarray:
        p = np.pad(x, r, constant_values=fill)
        sl = tuple(slice(r + d, r + d + n) for d, n in zip(o, x.shape, strict=True))
        return p[sl]

    dil = np.zeros_like(a)
    for o in offsets:
        dil |= shifted(a, o, False)
    ero = np.ones_like(a)
    for o in offsets:
        ero &= shifted(dil, o, True)
    return ero.astype(np.uint8)


def test_skimage_ball_closing_differs_from_itk_ball() -> None:
    # Sparse random voxels in the middle of the grid (no border effects):
    # nidataset's ball (x^2+y^2+z^2 <= 9, 123 voxels) is smaller than ITK's
    # radius-3 ball (179 voxels), so the closings differ; nimask follows the
    # reference exactly.
    rng = np.random.default_rng(3)
    a = np.zeros((24, 24, 24), np.uint8)
    a[6:18, 6:18, 6:18] = rng.random((12, 12, 12)) < 0.15
    ours = voxels(close_mask_skimage_ball(image_from(a), 3))
    assert (ours == reference_skimage_closing(a, 3)).all()
    itk = voxels(close_mask(image_from(a), 3))
    assert int(np.count_nonzero(ours != itk)) > 0


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.uint8, st.tuples(st.integers(3, 9), st.integers(3, 9), st.integers(3, 9)),
           elements=st.integers(0, 1)),
    st.integers(0, 3),
)
def test_skimage_ball_closing_matches_reference(a: np.ndarray, r: int) -> None:
    out = voxels(close_mask_skimage_ball(image_from(a), r))
    assert (out == reference_skimage_closing(a, r)).all()


def test_skimage_ball_closing_border_rule() -> None:
    # A U-shape open towards the border: outside counts as foreground for the
    # erosion, so the closing fills the notch up to the border (an ITK
    # safe-border closing does not).
    a = np.zeros((7, 7, 7), np.uint8)
    a[:, :, 0:2] = 1
    a[:, :, 5:7] = 1
    a[:, 0:2, :] = 1
    out = voxels(close_mask_skimage_ball(image_from(a), 2))
    assert (out == reference_skimage_closing(a, 2)).all()
    assert out.sum() > voxels(close_mask(image_from(a), 2)).sum()


def test_skimage_ball_closing_all_foreground_and_empty() -> None:
    ones = image_from(np.ones((4, 4, 4), np.uint8))
    assert voxels(close_mask_skimage_ball(ones, 3)).sum() == 64
    zeros = image_from(np.zeros((4, 4, 4), np.uint8))
    assert voxels(close_mask_skimage_ball(zeros, 3)).sum() == 0


def test_nidataset_otsu_threshold_exact_value() -> None:
    a = np.zeros((4, 10, 10), np.int16)
    a[0:2] = 10
    a[2:4] = 200
    a[0, 0, 0] = -5        # ignored: only voxels > 0 count
    t = nidataset_otsu_threshold(image_from(a))
    # 256 bins over [10, 200]: the best split is after the first bin, whose
    # centre is 10 + (190 / 256) / 2.
    assert t == 10 + 190 / 256 / 2
    outcome = refine_mask(image_from(a), None, 0, Refinements(compat="nidataset"))
    assert outcome.mode == "nidataset-otsu"
    assert outcome.otsu_threshold == t
    # band [0.5 t, 2 t] = [5.19, 20.74] in integers: 6..20 -> the 10s only
    assert (outcome.lower, outcome.upper) == (6.0, 20.0)
    assert voxels(outcome.mask).sum() == 199


def test_nidataset_otsu_threshold_constant_and_empty() -> None:
    a = np.zeros((3, 3, 3), np.float32)
    a[1, 1, 1] = 7.5
    assert nidataset_otsu_threshold(image_from(a)) == 7.5
    with pytest.raises(InvalidVolumeError, match="no voxel above 0"):
        nidataset_otsu_threshold(image_from(np.zeros((3, 3, 3), np.float32) - 1))


def test_skimage_otsu_when_available() -> None:
    skimage_filters = pytest.importorskip("skimage.filters")
    rng = np.random.default_rng(7)
    a = np.concatenate([rng.normal(40, 9, 3000), rng.normal(130, 25, 5000),
                        rng.normal(-50, 5, 500)]).reshape(10, 25, 34).astype(np.float32)
    data = a.astype(np.float64)
    assert nidataset_otsu_threshold(image_from(a)) == skimage_filters.threshold_otsu(
        data[data > 0])
