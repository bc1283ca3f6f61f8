"""QC pictures: size, label, contour, orientation letters, layouts, thick slices, cohort flags."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image, ImageDraw, ImageFont

from nimask import mask_dataset
from nimask.evidence.qc import (
    CONTOUR_PX,
    CONTOUR_RGB,
    FILL_OPACITY,
    FILL_RGB,
    GAP_PX,
    HALO_RGB,
    HEADER_PX,
    HU_WINDOW,
    MOSAIC_SLICES,
    PANEL_PX,
    TILE_PX,
    QcLabel,
    intensity_window,
    qc_png_name,
    relabel_png,
    render_case,
)
from nimask.evidence.qc_picture import MIN_WIDTH_PX, compose_picture, read_png_label
from nimask.exceptions import ParameterError

# Phantom: 40 x 30 x 20 voxels (x, y, z), spacing 1 x 1 x 2 mm, identity direction
# (x -> left, y -> posterior, z -> superior).  Extents 40, 30, 40 mm: the longest is
# 40 mm = PANEL_PX pixels.
SCALE = PANEL_PX / 40  # pixels per mm
BOX = {"x": (10, 30), "y": (5, 20), "z": (4, 16)}  # half-open voxel ranges of the mask
HEADER_BG = (24, 24, 24)


def _phantom() -> tuple[sitk.Image, sitk.Image]:
    rng = np.random.default_rng(0)
    img = rng.normal(20.0, 2.0, (20, 30, 40)).astype(np.float32)  # z, y, x
    mask = np.zeros((20, 30, 40), np.uint8)
    (x0, x1), (y0, y1), (z0, z1) = BOX["x"], BOX["y"], BOX["z"]
    mask[z0:z1, y0:y1, x0:x1] = 1
    img[mask == 1] += 80.0
    image = sitk.GetImageFromArray(img)
    image.SetSpacing((1.0, 1.0, 2.0))
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


def _mask_boxes() -> dict[str, tuple[int, int, int, int]]:
    """Rows and columns (half-open, panel pixels) of the mask box in each mid panel."""
    s = SCALE
    (x0, x1), (y0, y1), (z0, z1) = BOX["x"], BOX["y"], BOX["z"]
    zrows = (round((20 - z1) * 2 * s), round((20 - z0) * 2 * s))
    return {
        "axial": (round(y0 * s), round(y1 * s), round(x0 * s), round(x1 * s)),
        "coronal": (*zrows, round(x0 * s), round(x1 * s)),
        "sagittal": (*zrows, round(y0 * s), round(y1 * s)),
    }


def test_picture_size_label_and_text_chunks(tmp_path: Path) -> None:
    image, mask = _phantom()
    label = QcLabel("p.nii.gz", "coverage 12.50 % · 7.2 mL", ("touches_border",))
    out = render_case(image, mask, tmp_path / "p.png", caption="p.nii.gz: coverage 1 %",
                      label=label)
    rgb = _read_png(out)
    # 40 mm -> PANEL_PX: axial 40 x 30 mm, coronal 40 x 40 (20 slices of 2 mm), sagittal
    # 30 x 40; the header and a gap above the panels, a gap between them
    width = round(40 * SCALE) * 2 + round(30 * SCALE) + 2 * GAP_PX
    assert rgb.shape == (HEADER_PX + GAP_PX + PANEL_PX, width, 3)
    # the header carries text: the name line differs from the header's background,
    # and the flags line is drawn in orange
    header = rgb[:HEADER_PX]
    name_line = header[6:28, 10:200]
    assert (np.abs(name_line.astype(int) - HEADER_BG).sum(axis=2) > 150).sum() > 100
    flags_line = header[53:70, 10:300].astype(int)
    orange = (flags_line[..., 0] > 200) & (flags_line[..., 1] > 120) & (flags_line[..., 2] < 100)
    assert orange.sum() > 50
    # another name gives another header, the same slices
    other = _read_png(render_case(image, mask, tmp_path / "q.png",
                                  label=QcLabel("another_case.nii.gz", label.details)))
    assert (other[6:28] != rgb[6:28]).any()
    np.testing.assert_array_equal(other[HEADER_PX:], rgb[HEADER_PX:])
    stored, texts = read_png_label(out)
    assert stored == label
    assert texts["Description"] == "p.nii.gz: coverage 1 %"
    assert texts["nimask.layout"] == "mid"


def test_contour_halo_and_tint_on_the_mask_border(tmp_path: Path) -> None:
    image, mask = _phantom()
    pic = compose_picture(image, mask)
    assert [p.plane for p in pic.panels] == ["axial", "coronal", "sagittal"]
    boxes = _mask_boxes()
    inside_all = np.zeros(pic.rgb.shape[:2], bool)
    for panel in pic.panels:
        long, short = round(40 * SCALE), round(30 * SCALE)
        assert (panel.width, panel.height) == {
            "axial": (long, short), "coronal": (long, long), "sagittal": (short, long)
        }[panel.plane]
        view = pic.rgb[panel.top : panel.top + panel.height, panel.left : panel.left + panel.width]
        r0, r1, c0, c1 = boxes[panel.plane]
        mid_r, mid_c = (r0 + r1) // 2, (c0 + c1) // 2
        # the mask's border pixels carry the contour colour, CONTOUR_PX deep
        for k in range(CONTOUR_PX):
            assert tuple(view[mid_r, c0 + k]) == CONTOUR_RGB
            assert tuple(view[mid_r, c1 - 1 - k]) == CONTOUR_RGB
            assert tuple(view[r0 + k, mid_c]) == CONTOUR_RGB
            assert tuple(view[r1 - 1 - k, mid_c]) == CONTOUR_RGB
        assert tuple(view[mid_r, c0 + CONTOUR_PX]) != CONTOUR_RGB
        # a dark halo just outside
        assert tuple(view[mid_r, c0 - 1]) == HALO_RGB
        assert tuple(view[r1, mid_c]) == HALO_RGB
        # a faint tint inside: grey * (1 - a) + FILL_RGB * a
        centre = view[mid_r, mid_c].astype(int)
        assert centre[1] == centre[2]
        assert abs(centre[0] - centre[1] - FILL_OPACITY * (FILL_RGB[0] - FILL_RGB[1])) <= 1
        inside = np.zeros(view.shape[:2], bool)
        inside[r0:r1, c0:c1] = True
        inside_all[panel.top : panel.top + panel.height,
                   panel.left : panel.left + panel.width] = inside
        assert _coloured(view)[inside].all()
    # nothing coloured outside the mask boxes (the halo is black, the gaps grey)
    assert not _coloured(pic.rgb)[~inside_all].any()


def test_a_mask_covering_the_panel_still_shows_its_border() -> None:
    image, _ = _phantom()
    full = sitk.GetImageFromArray(np.ones((20, 30, 40), np.uint8))
    full.CopyInformation(image)
    pic = compose_picture(image, full, fill_opacity=0.0)
    for panel in pic.panels:
        view = pic.rgb[panel.top : panel.top + panel.height, panel.left : panel.left + panel.width]
        frame = np.ones(view.shape[:2], bool)
        frame[CONTOUR_PX:-CONTOUR_PX, CONTOUR_PX:-CONTOUR_PX] = False
        assert (view[frame] == CONTOUR_RGB).all()
        assert not _coloured(view)[~frame].any()  # no fill asked: grey inside


# --- orientation: a phantom with markers, stored RAS and LPS ------------------

NX, NY, NZ = 48, 40, 36  # voxels along x, y, z; 1 mm isotropic


def _marker_phantom(storage: str) -> tuple[sitk.Image, sitk.Image]:
    """A head box with three bright markers: on the patient's left, front and top.

    ``"LPS"``: index x grows to the left, y to the back (ITK direction identity).
    ``"RAS"``: the same object stored with x growing to the right, y to the front.
    """
    img = np.full((NZ, NY, NX), 10.0, np.float32)  # z, y, x in LPS index order
    mask = np.zeros(img.shape, np.uint8)
    mask[8:28, 10:30, 12:36] = 1
    img[mask == 1] = 100.0
    # each marker has a block in two of the mid-slices, away from where the letters go
    img[15:21, 26:32, 40:46] = 400.0  # left (x high in LPS): axial
    img[26:31, 17:23, 40:46] = 400.0  # left: coronal
    img[15:21, 1:6, 30:36] = 400.0  # anterior (y low): axial
    img[26:31, 1:6, 21:27] = 400.0  # anterior: sagittal
    img[30:35, 17:23, 30:36] = 400.0  # superior (z high): coronal
    img[30:35, 26:32, 21:27] = 400.0  # superior: sagittal
    direction = (1, 0, 0, 0, 1, 0, 0, 0, 1)
    origin = (0.0, 0.0, 0.0)
    if storage == "RAS":
        img, mask = img[:, ::-1, ::-1].copy(), mask[:, ::-1, ::-1].copy()
        direction = (-1, 0, 0, 0, -1, 0, 0, 0, 1)
        origin = (NX - 1.0, NY - 1.0, 0.0)
    image = sitk.GetImageFromArray(img)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    m = sitk.GetImageFromArray(mask)
    m.CopyInformation(image)
    return image, m


def _read_letter(rgb: np.ndarray, box: tuple[int, int, int, int], anchor: str,
                 xy: tuple[float, float]) -> str:
    """The letter among R/L/A/P/S/I whose glyph best matches the white pixels at ``xy``."""
    left, top, right, bottom = box
    crop = rgb[top:bottom, left:right]
    seen = (crop >= 250).all(axis=2)
    best, score = "", -1.0
    for letter in "RLAPSI":
        for size in range(10, 19):
            ref = Image.new("L", (right - left, bottom - top), 0)
            ImageDraw.Draw(ref).text((xy[0] - left, xy[1] - top), letter, anchor=anchor,
                                     font=ImageFont.load_default(size=size), fill=255)
            want = np.asarray(ref) >= 250
            union = (want | seen).sum()
            iou = (want & seen).sum() / union if union else 0.0
            if iou > score:
                best, score = letter, iou
    assert score > 0.5, f"no letter found at {xy} (best {best} {score:.2f})"
    return best


@pytest.mark.parametrize("storage", ["LPS", "RAS"])
def test_orientation_letters_follow_the_direction(tmp_path: Path, storage: str) -> None:
    image, mask = _marker_phantom(storage)
    pic = compose_picture(image, mask)
    letters = {p.plane: p.letters for p in pic.panels}
    assert letters == {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"),
                       "sagittal": ("A", "P", "S", "I")}
    # the markers lie on the side their letter names
    for panel in pic.panels:
        view = pic.rgb[panel.top : panel.top + panel.height,
                       panel.left : panel.left + panel.width, 1]
        rows, cols = np.nonzero(view >= 250)
        assert rows.size, panel.plane
        if panel.plane == "axial":  # left marker on the right half, anterior on top
            right_half = cols > panel.width / 2
            assert right_half.any()
            assert rows[right_half].mean() > panel.height / 3
            assert rows.min() < panel.height / 6
        elif panel.plane == "coronal":  # left marker right, superior marker top
            assert cols.max() > panel.width * 0.8
            assert rows.min() < panel.height * 0.1
        else:  # sagittal: anterior marker on the left, superior on top
            assert cols.min() < panel.width * 0.15
            assert rows.min() < panel.height * 0.1
    # the letters drawn in the PNG read as the expected letters
    rgb = _read_png(render_case(image, mask, tmp_path / "m.png",
                                label=QcLabel("markers.nii.gz")))
    for panel in pic.panels:
        x0, y0 = panel.left, panel.top
        x1, y1 = x0 + panel.width, y0 + panel.height
        mx, my = (x0 + x1) / 2, (y0 + y1) / 2
        left, right, top, bottom = panel.letters
        assert _read_letter(rgb, (x0, int(my) - 14, x0 + 30, int(my) + 14), "lm",
                            (x0 + 3, my)) == left
        assert _read_letter(rgb, (x1 - 30, int(my) - 14, x1, int(my) + 14), "rm",
                            (x1 - 3, my)) == right
        assert _read_letter(rgb, (int(mx) - 15, y0, int(mx) + 15, y0 + 26), "mt",
                            (mx, y0 + 3)) == top
        assert _read_letter(rgb, (int(mx) - 15, y1 - 26, int(mx) + 15, y1), "mb",
                            (mx, y1 - 3)) == bottom


def test_ras_and_lps_storage_give_the_same_picture() -> None:
    a = compose_picture(*_marker_phantom("LPS"), label=QcLabel("m"))
    b = compose_picture(*_marker_phantom("RAS"), label=QcLabel("m"))
    np.testing.assert_array_equal(a.rgb, b.rgb)
    assert [p.letters for p in a.panels] == [p.letters for p in b.panels]
    # slice captions give each storage's own index: the same slice, named as stored
    assert [p.caption for p in a.panels] == ["axial z=18", "coronal y=20", "sagittal x=24"]
    assert [p.caption for p in b.panels] == ["axial z=18", "coronal y=19", "sagittal x=23"]


# --- layouts and thick slices --------------------------------------------------


def test_mosaic_spreads_slices_over_the_mask(tmp_path: Path) -> None:
    image, mask = _phantom()
    pic = compose_picture(image, mask, layout="mosaic")
    planes = [p.plane for p in pic.panels]
    assert planes == ["axial"] * MOSAIC_SLICES + ["coronal"] * MOSAIC_SLICES + \
        ["sagittal"] * MOSAIC_SLICES
    # every tile cuts the mask: indices inside the box, increasing, first and last near its ends
    for plane, axis in (("axial", "z"), ("coronal", "y"), ("sagittal", "x")):
        idx = [int(p.caption.split("=")[1]) for p in pic.panels if p.plane == plane]
        low, high = BOX[axis][0], BOX[axis][1] - 1
        assert idx == sorted(idx)
        assert len(set(idx)) == len(idx)
        assert low <= idx[0] <= low + 2
        assert high - 2 <= idx[-1] <= high
    tile = TILE_PX / 40  # pixels per mm
    axial = pic.panels[0]
    assert (axial.width, axial.height) == (round(40 * tile), round(30 * tile))
    rows = sorted({p.top for p in pic.panels})
    assert len(rows) == 3
    assert pic.rgb.shape[1] == max(MIN_WIDTH_PX, MOSAIC_SLICES * round(40 * tile)
                                   + (MOSAIC_SLICES - 1) * GAP_PX)
    out = render_case(image, mask, tmp_path / "m.png", layout="mosaic")
    assert _read_png(out).shape == pic.rgb.shape
    assert read_png_label(out)[1]["nimask.layout"] == "mosaic"
    with pytest.raises(ParameterError, match="qc_layout must be one of mid, mosaic"):
        render_case(image, mask, tmp_path / "x.png", layout="grid")


def _thick(spacing_z: float) -> tuple[sitk.Image, sitk.Image]:
    img = np.full((10, 64, 64), 5.0, np.float32)
    mask = np.zeros(img.shape, np.uint8)
    mask[1:9, 16:48, 12:52] = 1
    img[mask == 1] = 90.0
    image = sitk.GetImageFromArray(img)
    image.SetSpacing((2.0, 2.0, spacing_z))
    m = sitk.GetImageFromArray(mask)
    m.CopyInformation(image)
    return image, m


def test_thick_slices_are_not_smeared(tmp_path: Path) -> None:
    pic = compose_picture(*_thick(53.0))
    assert [p.plane for p in pic.panels] == ["axial"] * 3
    assert [p.caption for p in pic.panels] == ["axial z=3", "axial z=5", "axial z=6"]
    assert pic.notes == ["coronal, sagittal not shown: voxels 2 x 2 x 53 mm, over 4x longer "
                         "one way in those planes"]
    assert all((p.width, p.height) == (PANEL_PX, PANEL_PX) for p in pic.panels)
    mosaic = compose_picture(*_thick(53.0), layout="mosaic")
    assert [p.plane for p in mosaic.panels] == ["axial"] * 8  # every slice holding mask
    assert [int(p.caption.split("=")[1]) for p in mosaic.panels] == list(range(1, 9))
    # 4x exactly is still drawn
    assert [p.plane for p in compose_picture(*_thick(8.0)).panels] == [
        "axial", "coronal", "sagittal"]
    out = render_case(*_thick(53.0), tmp_path / "t.png")
    assert read_png_label(out)[1]["nimask.notes"] == pic.notes[0]


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


def test_relabel_redraws_the_header_only(tmp_path: Path) -> None:
    image, mask = _phantom()
    label = QcLabel("p.nii.gz", "coverage 12.50 %")
    out = render_case(image, mask, tmp_path / "p.png", label=label, caption="cap")
    before = _read_png(out)
    assert relabel_png(out, label) is False
    flagged = QcLabel("p.nii.gz", "coverage 12.50 %", ("coverage_outlier",))
    assert relabel_png(out, flagged) is True
    after = _read_png(out)
    np.testing.assert_array_equal(after[HEADER_PX:], before[HEADER_PX:])
    assert (after[:HEADER_PX] != before[:HEADER_PX]).any()
    stored, texts = read_png_label(out)
    assert stored == flagged
    assert texts["Description"] == "cap"
    # a PNG nimask did not draw keeps its pixels
    foreign = tmp_path / "foreign.png"
    Image.fromarray(np.full((120, 600, 3), 200, np.uint8)).save(foreign)
    assert relabel_png(foreign, flagged) is False
    assert (_read_png(foreign) == 200).all()


# --- in a batch ---------------------------------------------------------------


def _cohort(folder: Path, sizes: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        data = np.zeros((20, 20, 20), np.int16)
        data[2 : 2 + size, 4:16, 4:16] = 100
        nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.5, 1.0])), folder / f"c{i}.nii.gz")


def test_batch_pictures_show_cohort_flags(tmp_path: Path) -> None:
    _cohort(tmp_path / "in", [10, 10, 11, 10, 11, 2])  # c5: a coverage outlier
    results = mask_dataset(tmp_path / "in", tmp_path / "out", (50, 200), 0,
                           qc_dir=tmp_path / "qc", qc_layout="mosaic", workers=2)
    assert results[5].flags == ["coverage_outlier"]
    for res in results:
        label, texts = read_png_label(res.qc_png)
        assert label.name == Path(res.input).name
        assert label.flags == tuple(res.flags)
        assert label.details.startswith(f"coverage {res.coverage_percent:.2f} % · ")
        assert label.details.endswith("thr=50:200 r=0")
        assert texts["nimask.layout"] == "mosaic"


def test_batch_layout_is_validated_before_any_work(tmp_path: Path) -> None:
    _cohort(tmp_path / "in", [4])
    with pytest.raises(ParameterError, match="qc_layout"):
        mask_dataset(tmp_path / "in", tmp_path / "out", qc_dir=tmp_path / "qc",
                     qc_layout="tiles")
    assert not (tmp_path / "out").exists()
