"""Run-based mask statistics against ITK's ConnectedComponent + RelabelComponent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nimask.evidence.runs import component_sizes, mask_runs


def itk_sizes(array: np.ndarray) -> list[int]:
    """The plain ITK reference: face-connected labels, sizes largest first."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array != 0, dtype=np.uint8))
    relabel = sitk.RelabelComponentImageFilter()
    relabel.Execute(sitk.ConnectedComponent(image, False))
    return [int(s) for s in relabel.GetSizeOfObjectsInPixels()]


masks = hnp.arrays(
    np.bool_, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=14),
    elements=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(masks)
def test_components_equal_itk_on_random_masks(array: np.ndarray) -> None:
    runs = mask_runs(array)
    assert component_sizes(runs) == itk_sizes(array)
    per_x, per_y, per_z = runs.per_axis_counts()
    assert per_x.tolist() == array.sum(axis=(0, 1)).tolist()
    assert per_y.tolist() == array.sum(axis=(0, 2)).tolist()
    assert per_z.tolist() == array.sum(axis=(1, 2)).tolist()
    assert int(runs.lengths.sum()) == int(array.sum())
    as_uint8 = mask_runs(array.astype(np.uint8))  # a 0/1 mask as nimask writes it
    for name in ("row", "start", "stop"):
        assert getattr(as_uint8, name).tolist() == getattr(runs, name).tolist()


def test_runs_of_a_known_mask() -> None:
    array = np.zeros((2, 2, 6), dtype=np.uint8)
    array[0, 0, 1:3] = 1
    array[0, 0, 4:6] = 1
    array[1, 0, 2] = 1  # touches the first run through z only
    array[0, 1, 0] = 1  # diagonal to nothing: its own component
    runs = mask_runs(array)
    assert runs.row.tolist() == [0, 0, 1, 2]
    assert runs.start.tolist() == [1, 4, 0, 2]
    assert runs.stop.tolist() == [3, 6, 1, 3]
    assert component_sizes(runs) == [3, 2, 1]


def test_snake_needs_many_hooks() -> None:
    # one component winding through every row: union-find must join all runs
    array = np.zeros((3, 9, 9), dtype=np.uint8)
    for y in range(0, 9, 2):
        array[:, y, :] = 1
        array[:, y + 1 if y + 1 < 9 else y, (0 if (y // 2) % 2 else 8)] = 1
    assert component_sizes(mask_runs(array)) == itk_sizes(array)


def test_empty_and_full() -> None:
    assert component_sizes(mask_runs(np.zeros((3, 4, 5), np.uint8))) == []
    assert component_sizes(mask_runs(np.ones((3, 4, 5), np.uint8))) == [60]


def test_not_3d_is_refused() -> None:
    with pytest.raises(ValueError, match="3D"):
        mask_runs(np.zeros((3, 4), np.uint8))


@pytest.mark.slow
def test_components_equal_itk_on_real_masks(shared_data: Path) -> None:
    names = ["itk_brainmask_2x2x3mm.nii.gz", "invesalius_ct_bonethresh_mask.nii.gz",
             "invesalius_ct_tissuethresh_mask.nii.gz", "mni152_brainmask_1mm.nii.gz"]
    for name in names:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / name)))
        assert component_sizes(mask_runs(array)) == itk_sizes(array), name
    # the bone mask is fragmented: many components, a real test of the union-find
    bone = sitk.GetArrayFromImage(
        sitk.ReadImage(str(shared_data / "invesalius_ct_bonethresh_mask.nii.gz")))
    assert len(itk_sizes(bone)) > 10


@settings(max_examples=60, deadline=None)
@given(masks, st.integers(1, 40))
def test_runs_found_block_by_block_are_the_same(array: np.ndarray, block: int) -> None:
    whole = mask_runs(array)
    import nimask.evidence.runs as runs_module

    saved = runs_module._BLOCK_VOXELS
    runs_module._BLOCK_VOXELS = block  # rows a few at a time (at least one row per block)
    try:
        pieces = mask_runs(array)
    finally:
        runs_module._BLOCK_VOXELS = saved
    for name in ("row", "start", "stop"):
        assert getattr(pieces, name).tolist() == getattr(whole, name).tolist()
    assert component_sizes(pieces) == itk_sizes(array)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_runs_and_components_in_threads_equal_itk(threads: int) -> None:
    # 4.3 M voxels and ~100 k runs: the rows and the two neighbour directions
    # are split over threads when ITK may use more than one.
    rng = np.random.default_rng(3)
    shape = (66, 256, 255)
    noise = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(
        sitk.GetImageFromArray(rng.random(shape).astype(np.float32)), 1.5))
    array = noise > np.quantile(noise, 0.55)
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        runs = mask_runs(array)
        sizes = component_sizes(runs)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)
    assert runs.row.size > 1 << 14
    assert np.all(np.diff(runs.row) >= 0)  # rows in order across the parts
    assert sizes == itk_sizes(array)
    per_x, per_y, per_z = runs.per_axis_counts()
    assert per_x.tolist() == array.sum(axis=(0, 1)).tolist()
    assert per_y.tolist() == array.sum(axis=(0, 2)).tolist()
    assert per_z.tolist() == array.sum(axis=(1, 2)).tolist()


@settings(max_examples=60, deadline=None)
@given(masks)
def test_int64_indices_give_the_same_runs_and_components(array: np.ndarray) -> None:
    # volumes whose keys do not fit int32 (over ~2^31 voxels) use int64 indices;
    # the switch point is lowered so that path runs on small masks
    import nimask.evidence.runs as runs_module

    small = mask_runs(array)
    saved = runs_module._INT32_KEYS
    runs_module._INT32_KEYS = 0
    try:
        wide = mask_runs(array)
        sizes = component_sizes(wide)
    finally:
        runs_module._INT32_KEYS = saved
    assert small.row.dtype == np.int32
    assert wide.row.dtype == np.int64
    for name in ("row", "start", "stop"):
        assert getattr(wide, name).tolist() == getattr(small, name).tolist()
    assert sizes == itk_sizes(array)


def test_values_other_than_one_are_foreground() -> None:
    # a 0/1 uint8 mask is used as it is; any other values are compared with 0
    array = np.zeros((2, 3, 7), dtype=np.uint8)
    array[0, 1, 1:4] = [1, 2, 255]
    array[1, 1, 3:6] = 7
    for variant in (array, array.astype(np.int16), array != 0, (array != 0).astype(np.uint8)):
        runs = mask_runs(variant)
        assert runs.row.tolist() == [1, 4]
        assert runs.start.tolist() == [1, 3]
        assert runs.stop.tolist() == [4, 6]
        assert component_sizes(runs) == [6]


def test_runs_touching_both_row_ends_stay_in_their_rows() -> None:
    # foreground at the end of one row and the start of the next are one stretch
    # of the flat array but two runs
    array = np.zeros((1, 3, 4), dtype=np.uint8)
    array[0, 0, 2:] = 1
    array[0, 1, :] = 1
    array[0, 2, :1] = 1
    runs = mask_runs(array)
    assert runs.row.tolist() == [0, 1, 2]
    assert runs.start.tolist() == [2, 0, 0]
    assert runs.stop.tolist() == [4, 4, 1]
    assert component_sizes(runs) == itk_sizes(array) == [7]
