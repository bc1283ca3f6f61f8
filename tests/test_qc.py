"""QC pictures and index.html: size, orientation, overlay placement, batch page."""

from __future__ import annotations

import html
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from nimask import mask_dataset
from nimask.evidence.qc import (
    CONTOUR_RGB,
    FILL_OPACITY,
    GAP_PX,
    HU_WINDOW,
    PANEL_PX,
    intensity_window,
    qc_png_name,
    render_case,
)

# Phantom: 40 x 30 x 20 voxels (x, y, z), spacing 1 x 1 x 2 mm, identity direction
# (x -> left, y -> posterior, z -> superior).  Extents 40, 30, 40 mm: the longest is
# 40 mm = PANEL_PX pixels, so one pixel is 40/PANEL_PX mm = 1/8 mm for PANEL_PX=320.
SCALE = PANEL_PX / 40  # pixels per mm
BOX = {"x": (10, 30), "y": (5, 20), "z": (4, 16)}  # half-open voxel ranges of the mask


def _phantom(direction_flip_x: bool = False) -> tuple[sitk.Image, sitk.Image]:
    rng = np.random.default_rng(0)
    img = rng.normal(20.0, 2.0, (20, 30, 40)).astype(np.float32)  # z, y, x
    mask = np.zeros((20, 30, 40), np.uint8)
    (x0, x1), (y0, y1), (z0, z1) = BOX["x"], BOX["y"], BOX["z"]
    mask[z0:z1, y0:y1, x0:x1] = 1
    img[mask == 1] += 80.0
    img[:, :, 0:3] += 40.0  # an asymmetric bright band on the x- side
    image = sitk.GetImageFromArray(img)
    image.SetSpacing((1.0, 1.0, 2.0))
    if direction_flip_x:
        # the same object stored with the x axis running to the right
        image = sitk.GetImageFromArray(img[:, :, ::-1].copy())
        image.SetSpacing((1.0, 1.0, 2.0))
        image.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
        image.SetOrigin((39.0, 0.0, 0.0))
        mask = mask[:, :, ::-1].copy()
    m = sitk.GetImageFromArray(mask)
    m.CopyInformation(image)
    return image, m


def _read_png(path: Path) -> np.ndarray:
    image = sitk.ReadImage(str(path))
    assert image.GetNumberOfComponentsPerPixel() == 3
    return sitk.GetArrayFromImage(image)


def _coloured(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return ~((r == g) & (g == b))


def _panel_boxes() -> list[tuple[slice, slice, tuple[int, int, int, int]]]:
    """For each panel: (rows, cols) of the panel in the picture and the mask box in it."""
    s = SCALE
    (x0, x1), (y0, y1), (z0, z1) = BOX["x"], BOX["y"], BOX["z"]
    w_ax, h_ax = round(40 * s), round(30 * s)
    w_co, h_co = round(40 * s), round(40 * s)
    w_sa, h_sa = round(30 * s), round(40 * s)
    height = max(h_ax, h_co, h_sa)
    top_ax = (height - h_ax) // 2
    c1, c2 = w_ax + GAP_PX, w_ax + GAP_PX + w_co + GAP_PX
    return [
        # axial: rows = y (anterior at the top), cols = x
        (slice(top_ax, top_ax + h_ax), slice(0, w_ax),
         (round(y0 * s), round(y1 * s), round(x0 * s), round(x1 * s))),
        # coronal: rows = z flipped (superior at the top), cols = x
        (slice(0, h_co), slice(c1, c1 + w_co),
         (round((20 - z1) * 2 * s), round((20 - z0) * 2 * s), round(x0 * s), round(x1 * s))),
        # sagittal: rows = z flipped, cols = y
        (slice(0, h_sa), slice(c2, c2 + w_sa),
         (round((20 - z1) * 2 * s), round((20 - z0) * 2 * s), round(y0 * s), round(y1 * s))),
    ]


def test_picture_size_follows_physical_extent(tmp_path: Path) -> None:
    image, mask = _phantom()
    out = render_case(image, mask, tmp_path / "p.png", caption="p.nii.gz: coverage 1 %")
    rgb = _read_png(out)
    # axial 320x240, coronal 320x320 (20 slices of 2 mm), sagittal 240x320, two gaps
    assert rgb.shape == (PANEL_PX, 320 + 320 + 240 + 2 * GAP_PX, 3)
    assert b"tEXtDescription\x00p.nii.gz: coverage 1 %" in out.read_bytes()


def test_overlay_colour_is_on_the_mask_and_only_there(tmp_path: Path) -> None:
    image, mask = _phantom()
    rgb = _read_png(render_case(image, mask, tmp_path / "p.png"))
    coloured = _coloured(rgb)
    inside_all = np.zeros(coloured.shape, bool)
    for rows, cols, (r0, r1, c0, c1) in _panel_boxes():
        panel = rgb[rows, cols]
        inside = np.zeros(panel.shape[:2], bool)
        inside[r0:r1, c0:c1] = True
        inside_all[rows, cols] = inside
        # centre of the box: translucent fill, red raised above green, green == blue
        centre = panel[(r0 + r1) // 2, (c0 + c1) // 2].astype(int)
        assert centre[1] == centre[2]
        assert centre[0] - centre[1] >= round(255 * FILL_OPACITY) - 1
        # the box edge carries the contour colour
        assert tuple(panel[(r0 + r1) // 2, c0]) == CONTOUR_RGB
        assert tuple(panel[r0, (c0 + c1) // 2]) == CONTOUR_RGB
        assert coloured[rows, cols][inside].all()
    # nothing coloured outside the mask boxes
    assert not coloured[~inside_all].any()


def test_orientation_does_not_depend_on_storage(tmp_path: Path) -> None:
    a = _read_png(render_case(*_phantom(), tmp_path / "a.png"))
    b = _read_png(render_case(*_phantom(direction_flip_x=True), tmp_path / "b.png"))
    np.testing.assert_array_equal(a, b)
    # x- (the patient's right) is on the picture's left in the axial panel: the bright band
    rows, cols, _ = _panel_boxes()[0]
    axial = a[rows, cols, 1].astype(int)
    assert axial[:, :16].mean() > axial[:, -16:].mean() + 50


def test_intensity_window() -> None:
    ct = sitk.GetImageFromArray(np.full((10, 10, 10), -1024, np.int16))
    assert intensity_window(ct) == (*HU_WINDOW, "ct")
    mr = np.zeros((10, 10, 10), np.float32)
    mr[2:8, 2:8, 2:8] = np.linspace(100, 200, 216, dtype=np.float32).reshape(6, 6, 6)
    low, high, kind = intensity_window(sitk.GetImageFromArray(mr))
    assert kind == "percentile"
    assert low == 0.0
    assert high == pytest.approx(np.percentile(mr, 99.5))
    flat = intensity_window(sitk.GetImageFromArray(np.full((4, 4, 4), 7.0, np.float32)))
    assert flat == (7.0, 8.0, "percentile")


def test_qc_png_name() -> None:
    assert qc_png_name("/a/scan_001.nii.gz") == "scan_001_qc.png"
    assert qc_png_name("SCAN.NII.GZ") == "SCAN_qc.png"


def test_mask_dataset_qc_dir_and_index(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, shift in (("a & b.nii.gz", 0), ("c.nii.gz", 3)):
        data = np.zeros((16, 16, 16), np.int16)
        data[4 + shift : 10 + shift, 4:10, 3:9] = 100
        nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.5, 1.0])), folder / name)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 3), np.int16), np.eye(4)), folder / "four.nii.gz")
    qc = tmp_path / "qc"
    results = mask_dataset(folder, tmp_path / "out", (50, 200), 1, qc_dir=qc)
    assert sorted(p.name for p in qc.iterdir()) == [
        "a & b_qc.png", "c_qc.png", "index.html"]
    for res in results[:2]:
        assert Path(res.qc_png).is_file()
        rgb = _read_png(Path(res.qc_png))
        # 16 x 16 x 24 mm: 24 mm -> PANEL_PX; axial 16 x 16 mm, the others 16 x 24 mm
        side = round(16 * PANEL_PX / 24)
        assert rgb.shape == (PANEL_PX, 3 * side + 2 * GAP_PX, 3)
        assert _coloured(rgb).any()
    assert results[2].status == "failed"
    assert results[2].qc_png == ""
    page = (qc / "index.html").read_text()
    for res in results:
        assert html.escape(Path(res.input).name) in page
    assert page.count("<img ") == 2
    assert 'src="a &amp; b_qc.png"' in page
    assert "failed: 4D volume with 3 time points" in page
    assert '<span class="flag">touches_border</span>' not in page  # no flag in this batch
    assert "3 files: 2 written, 0 skipped, 1 failed; 0 flagged." in page


def test_index_shows_flags(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    data = np.zeros((12, 12, 12), np.int16)
    data[0:5, 3:8, 3:8] = 100  # touches x-
    nib.save(nib.Nifti1Image(data, np.eye(4)), folder / "edge.nii.gz")
    mask_dataset(folder, tmp_path / "out", (50, 200), 0, qc_dir=tmp_path / "qc")
    page = (tmp_path / "qc" / "index.html").read_text()
    assert '<div class="card flagged" id="edge.nii.gz">' in page
    assert page.count('<span class="flag">touches_border</span>') == 3  # summary, card, table
