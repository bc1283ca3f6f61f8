"""The numpy Otsu threshold, foreground and read path against ITK (the reference).

``sitk.OtsuThresholdImageFilter`` (128 bins, bin max, finite-voxel mask when a
float volume holds NaN/Inf) defines the threshold; ``BinaryThreshold`` the
foreground; ITK's NIfTI reader followed by :func:`nimask.io.nifti._restore_nonfinite`
the image read.  Every comparison here must be exact.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from _nifti_fixtures import AFFINE, write, write_scaled
from _otsu_rule import exact_rule_threshold
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nimask.core import masking
from nimask.core import otsu as otsu_module
from nimask.core.otsu import histogram_edges, itk_otsu_threshold, otsu, otsu_from_histogram
from nimask.core.threads import work_threads
from nimask.evidence.report import LARGE_COMPONENT_FRACTION, mask_statistics
from nimask.io import nifti as io

DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32,
          np.uint64, np.int64, np.float32, np.float64]


def itk_threshold(array: np.ndarray, finite: np.ndarray | None = None) -> float:
    """The reference: ITK's filter as nimask configures it."""
    image = sitk.GetImageFromArray(array)
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetInsideValue(0)
    otsu.SetOutsideValue(1)
    otsu.SetNumberOfHistogramBins(128)
    otsu.SetReturnBinMidpoint(False)
    if finite is None:
        otsu.Execute(image)
    else:
        otsu.SetMaskValue(1)
        mask = sitk.GetImageFromArray(finite.astype(np.uint8))
        otsu.Execute(image, mask)
    return float(otsu.GetThreshold())


def same(a: float | None, b: float | None) -> bool:
    """Equal, NaN included (ITK's threshold is NaN when its bin edges overflow)."""
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


@st.composite
def volumes(draw: st.DrawFn) -> np.ndarray:
    """Small volumes of every supported type with awkward value distributions."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=3, max_size=3)))
    size = math.prod(shape)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["spread", "two", "few", "noise", "bimodal"]))
    if dtype.kind == "f":
        top = 30 if dtype == np.float64 else 8
        scale = 10.0 ** draw(st.integers(-top, top))
        centre = draw(st.sampled_from([0.0, 1.0, -1.0, 1e3, -1e6])) * scale * draw(
            st.sampled_from([0, 1, 3, 1e4]))
        if kind == "two":
            values = rng.choice([centre, centre + scale], size)
        elif kind == "few":
            values = centre + scale * rng.integers(0, draw(st.integers(2, 6)), size)
        elif kind == "noise":
            values = centre + scale * (100 + rng.normal(0, 1e-3, size))
        elif kind == "bimodal":
            values = centre + scale * np.where(rng.random(size) < 0.4,
                                               rng.normal(0, 1, size), rng.normal(8, 2, size))
        else:
            values = centre + scale * rng.uniform(-1, 1, size)
        array = values.astype(dtype)
    else:
        info = np.iinfo(dtype)
        lo = max(int(info.min), -(2**53) + 2)
        hi = min(int(info.max), 2**53 - 2)
        a = draw(st.integers(lo, hi))
        width = draw(st.sampled_from([1, 2, 5, 127, 128, 1000, 70000, 2**24, 2**40]))
        b = min(hi, a + width)
        if kind == "two":
            array = rng.choice([a, b], size)
        elif kind == "few":
            array = rng.choice(np.linspace(a, b, 4).astype(np.int64), size)
        else:
            array = rng.integers(a, b, size, endpoint=True)
        array = np.asarray(array).astype(dtype)
    return array.reshape(shape)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(volumes())
def test_numpy_otsu_equals_itk_filter(array: np.ndarray) -> None:
    if array.min() == array.max():
        return
    public = masking.otsu_threshold(sitk.GetImageFromArray(array))
    if otsu(array).rule == "itk":
        # ITK's histogram is well defined: exactly ITK's value
        reference = itk_threshold(array)
        assert itk_otsu_threshold(array) == reference
        assert public == reference
    else:
        # degenerate: the documented exact rule, never ITK's undefined value
        assert itk_otsu_threshold(array) is None
        assert public == exact_rule_threshold(array)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(volumes(), st.floats(0.0, 0.6), st.booleans())
def test_numpy_otsu_with_nonfinite_voxels(array: np.ndarray, share: float,
                                          with_inf: bool) -> None:
    if array.dtype.kind != "f":
        array = array.astype(np.float32)
    array = array.copy()
    rng = np.random.default_rng(array.size)
    bad = rng.random(array.shape) < share
    array[bad] = np.inf if with_inf else np.nan
    finite = np.isfinite(array)
    if not finite.any() or array[finite].min() == array[finite].max():
        return
    image = sitk.GetImageFromArray(array)
    if otsu(array, finite).rule == "itk":
        reference = itk_threshold(array, finite)
        assert itk_otsu_threshold(array, finite) == reference
        assert masking.otsu_threshold(image) == reference
    else:
        assert masking.otsu_threshold(image) == exact_rule_threshold(array, finite)
    _same_masks(image)


def _same_masks(image: sitk.Image, threshold: tuple[float, float] | None = None) -> None:
    """The fast path's mask is the ITK filters' (the exact rule's where ITK's is degenerate)."""
    fast = masking.threshold_mask(image, threshold)
    if threshold is None:
        view = sitk.GetArrayViewFromImage(image)
        finite = np.isfinite(view) if view.dtype.kind == "f" else None
        if otsu(view, finite).rule != "itk":
            t = exact_rule_threshold(view, finite)
            values = view if finite is None else np.where(finite, view, view.dtype.type(0))
            expected = (values > view.dtype.type(t)) if finite is None else (
                finite & (values > view.dtype.type(t)))
            if not expected.any():  # the documented few-valued fallback: the maximum
                top = view[finite].max() if finite is not None else view.max()
                expected = (view == top)
            assert fast.otsu_threshold == float(t)
            assert np.array_equal(sitk.GetArrayViewFromImage(fast.mask), expected)
            return
    ref = masking.threshold_mask(image, threshold, method="itk")
    assert same(fast.lower, ref.lower)
    assert same(fast.otsu_threshold, ref.otsu_threshold)
    assert (fast.upper, fast.notes, fast.nonfinite_voxels) == (
        ref.upper, ref.notes, ref.nonfinite_voxels)
    assert fast.mask.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayViewFromImage(fast.mask),
                          sitk.GetArrayViewFromImage(ref.mask))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(volumes(), st.floats(-1e6, 1e6), st.floats(0, 1e6))
def test_numpy_foreground_equals_itk(array: np.ndarray, low: float, width: float) -> None:
    image = sitk.GetImageFromArray(array)
    if array.min() != array.max():
        _same_masks(image)
    _same_masks(image, (low, low + width))
    mid = float(array.flat[0])
    _same_masks(image, (mid, mid))


def test_degenerate_itk_histogram_uses_the_exact_rule() -> None:
    # ITK's single-precision bin width collapses: 1e9 .. 1e9 + 3 in double
    array = np.array([1e9, 1e9 + 1, 1e9 + 3] * 4, dtype=np.float64).reshape(2, 2, 3)
    assert itk_otsu_threshold(array) is None
    assert otsu(array).rule == "exact"
    assert masking.otsu_threshold(sitk.GetImageFromArray(array)) == exact_rule_threshold(array)
    # 64-bit integers beyond 2**53: binned as doubles, as ITK does (not a fallback)
    big = np.array([0, 2**60, 2**61], dtype=np.int64).reshape(1, 1, 3)
    assert itk_otsu_threshold(big) == itk_threshold(big.astype(np.float64))


def test_float64_beyond_float32_range_uses_the_exact_rule() -> None:
    array = np.full((5, 6, 7), -1e300)
    array[1:4, 2:5, 3:6] = 1e300
    array[0, :3, :4] = 2e299
    # ITK's single-precision bin width overflows: its threshold is not finite
    assert not math.isfinite(itk_threshold(array))
    assert otsu(array).rule == "exact"
    image = sitk.GetImageFromArray(array)
    outcome = masking.threshold_mask(image)
    t = exact_rule_threshold(array)
    assert outcome.otsu_threshold == t
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(outcome.mask), array > t)
    assert sitk.GetArrayViewFromImage(outcome.mask)[array == 1e300].all()
    assert not sitk.GetArrayViewFromImage(outcome.mask)[array == -1e300].any()


@pytest.mark.parametrize("threads", [1, 2])
def test_int32_tiny_range_at_huge_offset_is_deterministic(threads: int) -> None:
    # ITK's float32 bin width collapses near 2**31: its own filter gave two
    # different thresholds in 100 runs on such a volume (one thread as well).
    rng = np.random.default_rng(1)
    array = (2**31 - 100 + rng.integers(0, 51, (30, 30, 30))).astype(np.int32)
    assert otsu(array).rule == "exact"
    image = sitk.GetImageFromArray(array)
    t = exact_rule_threshold(array)
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    try:
        masks = {sitk.GetArrayFromImage(masking.threshold_mask(image).mask).tobytes()
                 for _ in range(10)}
        values = {masking.otsu_threshold(image) for _ in range(10)}
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)
    assert values == {float(t)}
    assert masks == {(array > t).astype(np.uint8).tobytes()}
    # two values at the top of the type: the higher one is foreground
    two = np.where(rng.random((8, 9, 10)) < 0.3, 2**31 - 1, 2**31 - 5).astype(np.int32)
    assert otsu(two).rule == "exact"
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(masking.threshold_mask(sitk.GetImageFromArray(two)).mask),
        (two == 2**31 - 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_path_taken_on_ordinary_volumes(dtype: type) -> None:
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    top = 200 if info is None else min(int(info.max), 5000)
    array = rng.integers(0, top, (6, 7, 8)).astype(dtype)
    value = itk_otsu_threshold(array)
    assert value is not None
    assert value == itk_threshold(array)


def test_calculator_pieces_match_itk_on_a_known_histogram() -> None:
    # uint8: no auto range, [-0.5, 255.5] in 128 bins of width 2
    mins, maxs = histogram_edges(-0.5, 255.5, 128)
    assert mins[:3] == [-0.5, 1.5, 3.5]
    assert maxs[-1] == 255.5
    freq = [0] * 128
    freq[5], freq[100] = 10, 30
    t = otsu_from_histogram(freq, mins, maxs)
    array = np.array([10] * 10 + [200] * 30, dtype=np.uint8).reshape(2, 4, 5)
    assert t == maxs[5] == 11.5
    assert itk_threshold(array) == 11.0 == itk_otsu_threshold(array)


def test_mask_statistics_components_as_relabel_on_the_whole_grid() -> None:
    rng = np.random.default_rng(3)
    for trial in range(40):
        shape = tuple(int(s) for s in rng.integers(1, 16, 3))
        dtype = (np.uint8, np.int16)[trial % 2]
        array = ((rng.random(shape) < rng.uniform(0.05, 0.9)) * (1 + trial % 3)).astype(dtype)
        mask = sitk.GetImageFromArray(array)
        stats = mask_statistics(mask)
        n = int(np.count_nonzero(array))
        assert stats.mask_voxels == n
        if n == 0:
            assert stats.components == 0
            continue
        binary = mask if dtype == np.uint8 else mask != 0
        relabel = sitk.RelabelComponentImageFilter()
        relabel.Execute(sitk.ConnectedComponent(binary, False))
        sizes = [int(s) for s in relabel.GetSizeOfObjectsInPixels()]
        assert stats.components == len(sizes)
        assert stats.largest_component_share == sizes[0] / n
        assert stats.large_components == sum(s >= LARGE_COMPONENT_FRACTION * n for s in sizes)


# --- the single-decompression read -------------------------------------------------

def reference_read(path: Path) -> sitk.Image:
    """ITK's NIfTI reader, then the NaN/Inf voxels put back as NaN."""
    info = io.inspect_nifti(path)
    image = io._itk_read(info.path)
    return io._restore_nonfinite(image, info)[0]


def assert_same_image(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetPixelID() == b.GetPixelID()
    assert a.GetSize() == b.GetSize()
    assert a.GetOrigin() == b.GetOrigin()
    assert a.GetSpacing() == b.GetSpacing()
    assert a.GetDirection() == b.GetDirection()
    x, y = sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)
    assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f")


def _float_volume(dtype: type) -> np.ndarray:
    rng = np.random.default_rng(11)
    data = rng.normal(100, 40, (9, 8, 7)).astype(dtype)
    data[data < 80] = 0
    data[0, 0, :3] = [np.nan, np.inf, -np.inf]
    return data


def _volume(dtype: str) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return _float_volume(np.float64)
    native = np.dtype(dtype).newbyteorder("=")
    info = np.iinfo(native)
    rng = np.random.default_rng(12)
    data = rng.integers(0, min(int(info.max), 3000), (9, 8, 7)).astype(native)
    data[0, 0, 0], data[0, 0, 1] = info.min, info.max  # the type's extremes read back
    return data


class _DirectSpy:
    """Records the files whose image came from nimask's own read."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[Path] = []
        real = io._direct_image

        def spy(info: io.NiftiInfo, voxels: sitk.Image) -> sitk.Image | None:
            image = real(info, voxels)
            if image is not None:
                self.paths.append(info.path)
            return image

        monkeypatch.setattr(io, "_direct_image", spy)


@pytest.mark.parametrize("dtype", ["u1", "i1", "<u2", ">i2", "<u4", ">i4", "<u8", ">i8",
                                   np.float32, np.float64, ">f4", ">f8"])
@pytest.mark.parametrize("gzipped", [True, False])
@pytest.mark.parametrize("inflate", ["default", "zlib"])
def test_direct_read_equals_itk_read(tmp_path: Path, dtype: str, gzipped: bool,
                                     inflate: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if inflate == "zlib":  # without the optional fast inflate
        monkeypatch.setattr(io, "_inflate", zlib)
    path = write(tmp_path / "v.nii.gz", _volume(dtype), dtype=dtype, gzipped=gzipped)
    spy = _DirectSpy(monkeypatch)
    loaded = io.read_volume(path)
    assert spy.paths == [path]
    assert_same_image(loaded.image, reference_read(path))
    if np.dtype(dtype).kind == "f":
        assert int(np.isnan(sitk.GetArrayViewFromImage(loaded.image)).sum()) == 3


@pytest.mark.parametrize(("slope", "inter", "direct"), [
    (1.0, 0.0, True), (0.0, 0.0, True), (0.0, 5.0, False), (2.0, 0.0, False),
    (1.0, 3.0, False), (float("nan"), 7.0, False), (float("nan"), float("nan"), True),
    (1.0 + 1e-17, 0.0, True),
])
def test_direct_read_of_floats_only_where_itk_does_not_rescale(
    tmp_path: Path, slope: float, inter: float, direct: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _float_volume(np.float32)
    image = nib.Nifti1Image(data, AFFINE)
    image.header["scl_slope"] = slope
    image.header["scl_inter"] = inter
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, path)
    info = io.inspect_nifti(path)
    assert io._must_rescale(info.header) is not direct
    assert (io._read_voxels(info) is not None) is direct
    spy = _DirectSpy(monkeypatch)
    assert_same_image(io.read_volume(path).image, reference_read(path))
    assert (spy.paths == [path]) is direct


@pytest.mark.parametrize("dtype", ["i1", "u1", "<i2", ">i2", "<u2", "<i4", ">i4", "<u4", "<i8",
                                   "<u8"])
@pytest.mark.parametrize(("slope", "inter"), [
    (1.0, 0.0), (0.5, 3.25), (3.3, -1024.7), (123.456, 0.1), (1e-3, 1e5),
    (float("nan"), 7.0), (0.0, 7.0), (-2.5, 0.0), (1e30, 0.0),
])
@pytest.mark.parametrize("gzipped", [True, False])
def test_direct_read_of_scaled_integers_equals_itk_read(
    tmp_path: Path, dtype: str, slope: float, inter: float, gzipped: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(abs(hash((dtype, slope, inter))) % 2**32)
    native = np.dtype(dtype).newbyteorder("=")
    info = np.iinfo(native)
    low, high = max(int(info.min), -2**62), min(int(info.max), 2**62)
    raw = rng.integers(low, high, size=(9, 8, 7), dtype=native, endpoint=True).astype(dtype)
    raw.flat[:4] = [info.min, info.max, 0, info.max - 1]  # the extremes and 0
    path = write_scaled(tmp_path / ("v.nii.gz" if gzipped else "v.nii"), raw, slope, inter,
                        dtype=dtype, gzipped=gzipped)
    header = io.inspect_nifti(path).header
    scaled = io._must_rescale(header)
    expect_direct = not scaled or native.itemsize <= 4
    spy = _DirectSpy(monkeypatch)
    reference = reference_read(path)
    overflow = not np.all(np.isfinite(sitk.GetArrayViewFromImage(reference)))
    if overflow:  # ITK's own read overflows float32 there: refused either way
        with pytest.raises(io.InvalidVolumeError, match="scaling overflow"):
            io.read_volume(path)
        assert slope == 1e30
        return
    loaded = io.read_volume(path)
    assert spy.paths == ([path] if expect_direct else [])
    assert_same_image(loaded.image, reference)
    if scaled and expect_direct:
        assert loaded.image.GetPixelID() == sitk.sitkFloat32
    elif not scaled:
        assert np.array_equal(sitk.GetArrayViewFromImage(loaded.image), raw.T)


def test_rescaling_by_blocks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = np.arange(-5000, 5000, dtype=np.int32).reshape(10, 10, 100) * 7919
    whole = np.empty(raw.shape, np.float32)
    io._rescaled_float32_into(whole, raw, 0.37, -12.5)
    monkeypatch.setattr(io, "_BLOCK", 333)
    blocks = np.empty(raw.shape, np.float32)
    io._rescaled_float32_into(blocks, raw, 0.37, -12.5)
    assert np.array_equal(blocks, whole)
    expected = (raw.astype(np.float32).astype(np.float64) * 0.37 - 12.5).astype(np.float32)
    assert np.array_equal(whole, expected)


def test_direct_read_of_multi_member_gzip_and_large_offset(tmp_path: Path) -> None:
    data = _float_volume(np.float32)
    image = nib.Nifti1Image(data, AFFINE)
    plain = tmp_path / "plain.nii"
    nib.save(image, plain)
    raw = plain.read_bytes()
    # two gzip members: header and data compressed separately
    two = tmp_path / "two.nii.gz"
    two.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    assert_same_image(io.read_volume(two).image, reference_read(two))
    # data after a header extension
    image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"x" * 200))
    ext = tmp_path / "ext.nii.gz"
    nib.save(image, ext)
    assert int(io.inspect_nifti(ext).header["vox_offset"]) > 352
    assert_same_image(io.read_volume(ext).image, reference_read(ext))


def test_direct_read_of_a_corrupt_stream_names_the_corruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(5)
    path = write(tmp_path / "v.nii.gz", rng.normal(0, 1, (40, 40, 40)).astype(np.float32))
    data = bytearray(path.read_bytes())
    at = 3 * len(data) // 4
    data[at : at + 64] = bytes(64)  # ISIZE intact
    path.write_bytes(bytes(data))
    with pytest.raises(io.VolumeReadError, match=r"^the gzip stream is corrupt \("):
        io.read_volume(path)
    with pytest.raises(io.VolumeReadError, match=r"^the gzip stream is corrupt \("):
        io.verify_payload(io.inspect_nifti(path))
    # the same reason when ITK would read the file (a rescaled volume)
    monkeypatch.setattr(io, "_read_voxels", lambda info: None)
    with pytest.raises(io.VolumeReadError, match=r"^the gzip stream is corrupt \("):
        io.read_volume(path)


@pytest.mark.slow
def test_shared_volumes_exact(shared_data: Path) -> None:
    """Every real 3D volume: threshold, foreground, read, statistics as ITK's."""
    checked = 0
    for path in sorted(shared_data.glob("*.nii*")):
        try:
            info = io.inspect_nifti(path)
        except Exception:  # the deliberately bad files
            continue
        if len(info.shape) != 3:
            continue
        image = io.read_volume(path).image
        assert_same_image(image, reference_read(path))
        view = sitk.GetArrayViewFromImage(image)
        if view.min() == view.max():
            continue
        assert itk_otsu_threshold(view) is not None, path.name
        _same_masks(image)
        assert masking.otsu_threshold(image) == itk_threshold(view)
        as_float = sitk.Cast(image, sitk.sitkFloat32)
        _same_masks(as_float)
        checked += 1
    assert checked >= 8


def _search_counts(array: np.ndarray) -> tuple[list[int], tuple]:
    """Per-bin counts by binary search over ITK's cut points, and the counter's arguments."""
    vmin, vmax = array.min().item(), array.max().item()
    if array.dtype.kind == "f":
        vmin, vmax = float(vmin), float(vmax)
    lower, upper = otsu_module._itk_range(array.dtype, vmin, vmax, 128)
    mins, _ = histogram_edges(lower, upper, 128)
    cuts = otsu_module._cut_points(mins, array.dtype, vmin, vmax)
    counts = otsu_module._count_by_search(array, None, cuts.astype(array.dtype), 128)
    return counts, (cuts, array.dtype, (vmin, vmax), lower, upper, 128)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(volumes())
def test_both_guess_corrections_count_as_the_binary_search(array: np.ndarray) -> None:
    # The one-sided and the two-sided corrected guesses, wherever their check
    # accepts them, bin every voxel as a binary search over the cut points.
    if array.min() == array.max() or otsu(array).rule != "itk":
        return
    if array.dtype.itemsize == 8 and array.dtype.kind in "iu" and max(
            abs(int(array.min())), abs(int(array.max()))) >= 2**53:
        return  # binned as doubles, through otsu()'s float64 copy
    expected, args = _search_counts(array)
    for one_sided in (True, False):
        make = otsu_module._cut_counter(*args, one_sided=one_sided)
        if make is not None:
            assert make()(array.reshape(-1)).tolist() == expected


@pytest.mark.parametrize("kind", ["float32", "float32 with NaN", "int16", "int32 wide"])
def test_counting_threads_give_itk_threshold_on_a_large_volume(kind: str) -> None:
    # Over 2**21 voxels the counts are taken in parallel parts: the threshold
    # is ITK's with 1, 2 and 3 counting threads.
    rng = np.random.default_rng(5)
    shape = (40, 256, 250)  # 2.56 M voxels: not a whole number of blocks per part
    head = rng.random(shape) < 0.45
    values = np.where(head, rng.normal(900, 180, shape), rng.normal(30, 12, shape))
    finite = None
    if kind.startswith("float32"):
        array = values.astype(np.float32)
        if kind.endswith("NaN"):
            array[rng.random(shape) < 0.01] = np.nan
            finite = np.isfinite(array)
    elif kind == "int16":
        array = values.astype(np.int16)
    else:
        array = (values * 3000).astype(np.int32)  # range beyond the per-value count
    reference = itk_threshold(array, finite)
    image = sitk.GetImageFromArray(array)
    expected = array > (int(reference) if array.dtype.kind in "iu" else reference)
    previous = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    try:
        for threads in (1, 2, 3):
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
            assert work_threads() == threads
            assert itk_otsu_threshold(array, finite) == reference
            # the range, the counts and the voxel comparison, each in threads
            assert masking.otsu_threshold(image) == reference
            outcome = masking.threshold_mask(image)
            np.testing.assert_array_equal(sitk.GetArrayViewFromImage(outcome.mask), expected)
            assert outcome.nonfinite_voxels == (0 if finite is None else int((~finite).sum()))
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous)
