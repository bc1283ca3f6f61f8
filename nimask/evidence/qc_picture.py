"""The QC picture of one case: a labelled PNG that explains itself when opened alone.

Layout
------
A header strip on top (:data:`HEADER_PX` high) names the case and gives its
coverage, volume, flags and settings; below it, slices of the volume with
the mask drawn over them:

``"mid"`` (default)
    One row of three slices through the mask's centroid: axial, coronal,
    sagittal.  The longest physical extent shown becomes :data:`PANEL_PX`
    pixels.
``"mosaic"``
    Three rows (axial, coronal, sagittal) of :data:`MOSAIC_SLICES` slices
    each, spread evenly over the mask's extent along that axis (from the skull
    base to the vertex, front to back, right to left), like the reports of
    MRIQC and fMRIPrep.  The longest physical extent becomes :data:`TILE_PX`
    pixels.

Orientation: axial slices are seen from the feet (patient's right on the
left, anterior at the top), coronal from the front (right on the left,
superior at the top), sagittal from the patient's right (anterior on the
left, superior at the top).  The slices follow the anatomical axes closest to
the image's axes (``GetDirection``), through array views, without copying the
volume.  Each panel carries its orientation letters (R/L, A/P, S/I), computed
from the direction cosines of the axes it shows, and the stored index of its
slice (e.g. ``axial z=54``), so that it can be found in any viewer.

Rendering
---------
* Intensities: a CT in Hounsfield units (1st percentile at or below
  :data:`HU_AIR_BELOW`) is shown with the window :data:`HU_WINDOW`; anything
  else between its 0.5th and 99.5th percentiles.
* Every slice is resampled (``sitk.Resample``: linear for the image, nearest
  neighbour for the mask) to square pixels of one size for the whole
  picture, so anisotropic voxels keep their physical proportions.
* A plane whose pixels would be more than :data:`MAX_ANISOTROPY` times longer
  one way than the other (e.g. coronal and sagittal slices of a volume with
  53 mm slices and 2 mm pixels) is not drawn smeared: its panels are replaced
  by more slices of the readable planes, and the header says which planes
  were left out and why.
* The mask is drawn contour first: a band of :data:`CONTOUR_PX` pixels along
  the inside of its border in :data:`CONTOUR_RGB` with a one-pixel dark halo
  (:data:`HALO_RGB`) just outside, so that the border stays visible on white
  bone and on black air; the inside gets a faint tint (:data:`FILL_RGB` at
  :data:`FILL_OPACITY`, 0 for none).  The panel's edge counts as outside the
  mask: a mask that covers a whole panel shows its border along the panel's
  edge.
* Text is drawn with Pillow's built-in font (``ImageFont.load_default``, no
  font file shipped).  The PNG is written atomically with ``tEXt`` chunks:
  ``Title`` (the file name), ``Description`` (the caption), ``Software`` and
  ``nimask.*`` (details, flags, status, layout, header notes), which
  :func:`relabel_png` reads to redraw the header when the cohort flags are
  known.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from .._version import __version__
from ..exceptions import NimaskError, ParameterError
from ..io.nifti import atomic_write, safe_text
from .report import case_flags, mask_statistics

if TYPE_CHECKING:
    from ..records import FileResult

__all__ = [
    "CONTOUR_PX",
    "CONTOUR_RGB",
    "FILL_OPACITY",
    "FILL_RGB",
    "GAP_PX",
    "HALO_RGB",
    "HEADER_PX",
    "HU_AIR_BELOW",
    "HU_WINDOW",
    "LAYOUTS",
    "MAX_ANISOTROPY",
    "MIN_WIDTH_PX",
    "MOSAIC_SLICES",
    "PANEL_PX",
    "TILE_PX",
    "Panel",
    "QcLabel",
    "QcPicture",
    "case_label",
    "compose_picture",
    "intensity_window",
    "qc_png_name",
    "read_png_label",
    "relabel_png",
    "render_case",
    "update_picture_flags",
    "validate_layout",
]

#: The picture layouts.
LAYOUTS = ("mid", "mosaic")
#: ``"mid"``: pixels given to the longest physical extent shown.
PANEL_PX = 480
#: ``"mosaic"``: pixels given to the longest physical extent shown, per tile.
TILE_PX = 200
#: ``"mosaic"``: slices per row.
MOSAIC_SLICES = 7
#: Pixels between two panels (and between the rows of a mosaic).
GAP_PX = 4
#: Height of the header strip with the case's name, numbers and flags.
HEADER_PX = 92
#: A picture is at least this wide (room for the header).
MIN_WIDTH_PX = 512
#: A plane whose pixel is more than this many times longer one way than the other is not drawn.
MAX_ANISOTROPY = 4.0
#: Colour of the mask's contour band.
CONTOUR_RGB = (255, 48, 48)
#: Width in pixels of the contour band, inside the mask.
CONTOUR_PX = 2
#: Colour of the one-pixel halo just outside the mask.
HALO_RGB = (0, 0, 0)
#: Colour of the tint inside the mask.
FILL_RGB = (255, 48, 48)
#: Opacity of the tint inside the mask (0 for none).
FILL_OPACITY = 0.1
#: A volume whose 1st percentile is at or below this value is treated as CT (HU).
HU_AIR_BELOW = -500.0
#: Display window for CT, in HU (soft tissue and brain grey, air black, bone white).
HU_WINDOW = (-100.0, 150.0)

_GAP_RGB = (40, 40, 40)
_HEADER_RGB = (24, 24, 24)
_TEXT_RGB = (240, 240, 240)
_DIM_RGB = (170, 170, 170)
_FLAG_RGB = (255, 176, 32)
_OK_RGB = (120, 200, 120)
_SAMPLE = 2_000_000  # voxels used for the percentiles
_PLANES = ("axial", "coronal", "sagittal")
# Oriented axes are indexed [L, P, S]: the axis each plane cuts through.
_THROUGH = {"axial": 2, "coronal": 1, "sagittal": 0}
# Letter of the direction in which an LPS coordinate grows, and of the opposite one.
_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))


@dataclass(frozen=True)
class QcLabel:
    """What the header strip of a picture says.

    Attributes
    ----------
    name : str
        The case (file name or series description), on the first line.
    details : str
        Second line, e.g. ``"coverage 12.65 % · 1234.5 mL · otsu r=3"``.
    flags : tuple of str
        Third line, in orange; ``"no flags"`` when empty.
    status : str
        Shown after the flags, e.g. ``"mask kept (skip_existing)"``.
    """

    name: str
    details: str = ""
    flags: tuple[str, ...] = ()
    status: str = ""


@dataclass(frozen=True)
class Panel:
    """One slice drawn in the picture: where it is and what its edges point to.

    ``letters`` are the orientation letters at the panel's left, right, top
    and bottom edges; ``caption`` names the plane and the stored slice index.
    """

    plane: str
    left: int
    top: int
    width: int
    height: int
    letters: tuple[str, str, str, str]
    caption: str


@dataclass
class QcPicture:
    """A composed picture: RGB pixels (rows, cols, 3) and its panels."""

    rgb: np.ndarray
    panels: list[Panel]
    label: QcLabel
    notes: list[str] = field(default_factory=list)
    layout: str = "mid"


def qc_png_name(input_path: str | os.PathLike[str]) -> str:
    """``scan_001.nii.gz`` -> ``scan_001_qc.png``."""
    name = Path(input_path).name
    if name.lower().endswith(".nii.gz"):
        name = name[: -len(".nii.gz")]
    return name + "_qc.png"


def validate_layout(layout: object) -> str:
    """Return ``layout`` if it is one of :data:`LAYOUTS`, else raise ``ParameterError``."""
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ParameterError(f"qc_layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    return layout


def intensity_window(image: sitk.Image) -> tuple[float, float, str]:
    """Display window ``(low, high, kind)``; ``kind`` is ``"ct"`` or ``"percentile"``.

    Percentiles are taken over at most ~2 million evenly strided voxels; NaN/Inf
    voxels are ignored.
    """
    view = sitk.GetArrayViewFromImage(image).reshape(-1)
    sample = view[:: max(1, view.size // _SAMPLE)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0, "percentile"
    p1 = float(np.percentile(sample, 1))
    if p1 <= HU_AIR_BELOW:
        return HU_WINDOW[0], HU_WINDOW[1], "ct"
    low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    if high <= low:
        low, high = float(sample.min()), float(sample.max())
    if high <= low:
        high = low + 1.0
    return low, high, "percentile"


def case_label(result: FileResult, settings_text: str = "") -> QcLabel:
    """The header of a case's picture from its report record.

    The flags are ``result.flags`` once the cohort is flagged, else the flags
    that depend on this case alone (:func:`nimask.evidence.report.case_flags`).
    """
    parts = []
    if result.coverage_percent is not None:
        parts.append(f"coverage {result.coverage_percent:.2f} %")
    if result.volume_ml is not None:
        parts.append(f"{result.volume_ml:.1f} mL")
    if result.components is not None:
        parts.append(f"{result.components} component{'s' if result.components != 1 else ''}")
    if settings_text:
        parts.append(settings_text)
    flags = tuple(result.flags) if result.flags else tuple(case_flags(result))
    status = "mask kept (skip_existing)" if result.status == "skipped" else ""
    return QcLabel(safe_text(Path(result.input).name), " · ".join(parts), flags, status)


# --- geometry ---------------------------------------------------------------


def _lps_axes(direction: Sequence[float]) -> tuple[list[int], list[bool]]:
    """For each physical axis L, P, S: the closest image axis, and whether it runs backwards."""
    d = np.abs(np.asarray(direction, dtype=np.float64).reshape(3, 3))
    best = max(itertools.permutations(range(3)), key=lambda p: sum(d[i, p[i]] for i in range(3)))
    signed = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    perm = list(best)
    flips = [bool(signed[i, perm[i]] < 0) for i in range(3)]
    return perm, flips


def _oriented(array_zyx: np.ndarray, perm: list[int], flips: list[bool]) -> np.ndarray:
    """View of a (z, y, x) array indexed [L, P, S] (index grows to the left, back, top)."""
    xyz = array_zyx.transpose(2, 1, 0)
    out = xyz.transpose(perm)
    for axis, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis)
    return out


def _letter(vector: np.ndarray) -> str:
    """Letter of the anatomical direction closest to an LPS vector."""
    axis = int(np.argmax(np.abs(vector)))
    return _LETTERS[axis][0 if vector[axis] > 0 else 1]


class _Geometry:
    """The volume seen along the anatomical axes: views, spacing, letters, slice names."""

    def __init__(self, image: sitk.Image, mask: sitk.Image) -> None:
        self.perm, self.flips = _lps_axes(image.GetDirection())
        self.vol = _oriented(sitk.GetArrayViewFromImage(image), self.perm, self.flips)
        self.lab = _oriented(sitk.GetArrayViewFromImage(mask), self.perm, self.flips)
        self.size = image.GetSize()
        self.spacing = [image.GetSpacing()[a] for a in self.perm]
        cosines = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
        # LPS vector in which each oriented axis' index grows
        self.vectors = [cosines[:, a] * (-1.0 if f else 1.0)
                        for a, f in zip(self.perm, self.flips, strict=True)]

    def axes(self, plane: str) -> tuple[int, int]:
        """Oriented (column, row) axes of a plane."""
        through = _THROUGH[plane]
        col, row = (a for a in range(3) if a != through)
        return col, row

    def pixel_shape(self, plane: str) -> tuple[float, float]:
        col, row = self.axes(plane)
        return self.spacing[col], self.spacing[row]

    def anisotropy(self, plane: str) -> float:
        a, b = self.pixel_shape(plane)
        return max(a, b) / min(a, b)

    def extent(self, axis: int) -> float:
        return self.vol.shape[axis] * self.spacing[axis]

    def slices(self, plane: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image, mask) 2D arrays of one slice, rows top to bottom, columns left to right."""
        cut: list[slice | int] = [slice(None)] * 3
        cut[_THROUGH[plane]] = index  # basic indexing: a view (np.take would copy the volume)
        img = self.vol[tuple(cut)].T
        lab = self.lab[tuple(cut)].T
        if plane != "axial":  # rows run along S: superior at the top
            img, lab = img[::-1], lab[::-1]
        return img, lab

    def letters(self, plane: str) -> tuple[str, str, str, str]:
        """Letters at the left, right, top and bottom edges of a panel."""
        col, row = self.axes(plane)
        right = _letter(self.vectors[col])
        left = _letter(-self.vectors[col])
        down = self.vectors[row] if plane == "axial" else -self.vectors[row]
        return left, right, _letter(-down), _letter(down)

    def caption(self, plane: str, index: int) -> str:
        """``axial z=54``: the plane and the slice's index along the stored axis."""
        through = _THROUGH[plane]
        axis = self.perm[through]
        stored = self.size[axis] - 1 - index if self.flips[through] else index
        return f"{plane} {'xyz'[axis]}={stored}"

    def mask_range(self, axis: int) -> tuple[int, int]:
        """First and last index along an oriented axis holding mask voxels (whole axis if none)."""
        others = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(np.any(self.lab, axis=others))
        if hits.size == 0:
            return 0, self.vol.shape[axis] - 1
        return int(hits[0]), int(hits[-1])

    def centre(self, centroid_index: Sequence[float]) -> list[int]:
        """Oriented voxel indices of a continuous ITK index (rounded, ties upwards)."""
        return [
            min(self.size[a] - 1, max(0, math.floor(
                ((self.size[a] - 1 - centroid_index[a]) if self.flips[i] else centroid_index[a])
                + 0.5)))
            for i, a in enumerate(self.perm)
        ]


def _spread(low: int, high: int, count: int) -> list[int]:
    """``count`` indices spread evenly over [low, high] (centres of equal parts), unique."""
    picks = [math.floor(low + (high - low) * (k + 0.5) / count + 0.5) for k in range(count)]
    return sorted(set(picks))


def _plan(geo: _Geometry, layout: str, centre: list[int]) -> tuple[list[list[tuple[str, int]]],
                                                                  list[str]]:
    """Rows of (plane, oriented index) to draw, and the header notes."""
    readable = [p for p in _PLANES if geo.anisotropy(p) <= MAX_ANISOTROPY]
    notes = []
    if not readable:
        readable = list(_PLANES)
        notes.append(f"every plane over {MAX_ANISOTROPY:g}x anisotropic: shown stretched")
    elif len(readable) < len(_PLANES):
        left_out = [p for p in _PLANES if p not in readable]
        voxel = " x ".join(f"{s:.3g}" for s in geo.spacing)
        notes.append(f"{', '.join(left_out)} not shown: voxels {voxel} mm, over "
                     f"{MAX_ANISOTROPY:g}x longer one way in those planes")
    if layout == "mid":
        if len(readable) == len(_PLANES):
            return [[(p, centre[_THROUGH[p]]) for p in _PLANES]], notes
        first = readable[0]
        low, high = geo.mask_range(_THROUGH[first])
        extra = [low + round((high - low) * q) for q in (0.25, 0.75)]
        row = [(p, centre[_THROUGH[p]]) for p in readable]
        have = {i for p, i in row if p == first}
        for index in extra:
            if len(row) < len(_PLANES) and index not in have:
                row.append((first, index))
                have.add(index)
        row.sort(key=lambda pi: (_PLANES.index(pi[0]), pi[1]))
        return [row], notes
    per_plane = MOSAIC_SLICES * len(_PLANES) // len(readable)
    rows = []
    for plane in readable:
        through = _THROUGH[plane]
        low, high = geo.mask_range(through)
        # left to right: inferior to superior, anterior to posterior, right to left
        picks = _spread(low, high, per_plane)
        n_rows = math.ceil(len(picks) / MOSAIC_SLICES)
        per_row = math.ceil(len(picks) / n_rows)
        for start in range(0, len(picks), per_row):
            rows.append([(plane, i) for i in picks[start : start + per_row]])
    return rows, notes


# --- pixels -----------------------------------------------------------------


def _resample(plane: np.ndarray, spacing: tuple[float, float], pixel: float,
              interpolator: int) -> np.ndarray:
    """Resample a 2D (rows, cols) array with (col, row) spacing to square pixels."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(plane))
    img.SetSpacing(spacing)
    rows, cols = plane.shape
    size = [max(1, round(cols * spacing[0] / pixel)), max(1, round(rows * spacing[1] / pixel))]
    origin = [(pixel - spacing[0]) / 2.0, (pixel - spacing[1]) / 2.0]
    identity = sitk.Transform(2, sitk.sitkIdentity)
    out = sitk.Resample(img, size, identity, interpolator, origin, (pixel, pixel),
                        (1.0, 0.0, 0.0, 1.0), 0.0, img.GetPixelID())
    return sitk.GetArrayFromImage(out)


def _box(mask: np.ndarray, radius: int, erode: bool) -> np.ndarray:
    """Erosion or dilation of a 2D boolean array by a square of side ``2 radius + 1``.

    Pixels beyond the array's edge count as background.
    """
    h, w = mask.shape
    padded = np.pad(mask, radius, constant_values=False)
    span = 2 * radius + 1
    rows = padded[:, 0:w].copy()
    for d in range(1, span):
        rows = (rows & padded[:, d : d + w]) if erode else (rows | padded[:, d : d + w])
    out = rows[0:h].copy()
    for d in range(1, span):
        out = (out & rows[d : d + h]) if erode else (out | rows[d : d + h])
    return out


def _overlay(gray: np.ndarray, mask: np.ndarray, fill_opacity: float) -> np.ndarray:
    """RGB (rows, cols, 3) uint8: faint tint, contour band and dark halo over a grey slice."""
    inside = mask != 0
    rgb = np.repeat(gray[..., None], 3, axis=2)
    if fill_opacity > 0 and inside.any():
        tinted = rgb[inside].astype(np.float32) * (1.0 - fill_opacity)
        tinted += np.asarray(FILL_RGB, np.float32) * fill_opacity
        rgb[inside] = np.clip(np.rint(tinted), 0, 255).astype(np.uint8)
    band = inside & ~_box(inside, CONTOUR_PX, erode=True)
    halo = _box(inside, 1, erode=False) & ~inside
    rgb[halo] = HALO_RGB
    rgb[band] = CONTOUR_RGB
    return rgb


def _panel_pixels(geo: _Geometry, plane: str, index: int, pixel: float,
                  window: tuple[float, float], fill_opacity: float) -> np.ndarray:
    low, high = window
    img, lab = geo.slices(plane, index)
    values = np.nan_to_num(img.astype(np.float32), nan=low, posinf=high, neginf=low)
    scaled = np.clip((values - low) * (255.0 / (high - low)), 0.0, 255.0)
    spacing = geo.pixel_shape(plane)
    gray = _resample(scaled.astype(np.float32), spacing, pixel, sitk.sitkLinear)
    gray_u8 = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    mask2 = _resample((lab != 0).astype(np.uint8), spacing, pixel, sitk.sitkNearestNeighbor)
    return _overlay(gray_u8, mask2, fill_opacity)


# --- text -------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _drawable(text: str) -> str:
    """Text the built-in font can draw: accents dropped, other non-ASCII characters as ``?``."""
    plain = unicodedata.normalize("NFKD", text)
    out = []
    for ch in plain:
        if unicodedata.combining(ch):
            continue
        out.append(ch if (" " <= ch <= "~" or ch in "·…") else "?")
    return "".join(out)


def _fit(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> str:
    """``text``, cut in the middle with ``…`` until it fits in ``width`` pixels."""
    text = _drawable(text)
    if font.getlength(text) <= width:
        return text
    keep = len(text)
    while keep > 4:
        keep -= 1
        head = (keep + 1) // 2
        short = text[:head] + "…" + text[len(text) - (keep - head):]
        if font.getlength(short) <= width:
            return short
    return text[:4] + "…"


def _draw_header(draw: ImageDraw.ImageDraw, width: int, label: QcLabel,
                 notes: Sequence[str], layout: str) -> None:
    draw.rectangle((0, 0, width - 1, HEADER_PX - 1), fill=_HEADER_RGB)
    margin = 10
    room = width - 2 * margin
    big, small, tiny = _font(20), _font(15), _font(13)
    tag = f"nimask {__version__} · {layout}"
    tag_w = tiny.getlength(tag)
    draw.text((width - margin - tag_w, 8), tag, font=tiny, fill=_DIM_RGB)
    draw.text((margin, 6), _fit(label.name, big, room - tag_w - 12), font=big, fill=_TEXT_RGB)
    draw.text((margin, 33), _fit(label.details, small, room), font=small, fill=_TEXT_RGB)
    if label.flags:
        flags = "flags: " + ", ".join(label.flags)
        colour = _FLAG_RGB
    else:
        flags, colour = "no flags", _OK_RGB
    flags = _fit(flags, small, room * 0.7 if label.status else room)
    draw.text((margin, 53), flags, font=small, fill=colour)
    if label.status:
        x = margin + small.getlength(flags) + 16
        draw.text((x, 53), _fit(label.status, small, width - margin - x), font=small,
                  fill=_DIM_RGB)
    if notes:
        draw.text((margin, 73), _fit("; ".join(notes), tiny, room), font=tiny, fill=_DIM_RGB)


def _draw_panel_text(draw: ImageDraw.ImageDraw, panel: Panel) -> None:
    size = int(min(18, max(11, min(panel.width, panel.height) / 14)))
    font = _font(size)
    left, right, top, bottom = panel.letters
    x0, y0 = panel.left, panel.top
    x1, y1 = x0 + panel.width, y0 + panel.height
    pad = 3
    style = {"font": font, "fill": (255, 255, 255), "stroke_width": 1, "stroke_fill": (0, 0, 0)}
    mid_y = (y0 + y1) / 2
    mid_x = (x0 + x1) / 2
    draw.text((x0 + pad, mid_y), left, anchor="lm", **style)  # type: ignore[arg-type]
    draw.text((x1 - pad, mid_y), right, anchor="rm", **style)  # type: ignore[arg-type]
    draw.text((mid_x, y0 + pad), top, anchor="mt", **style)  # type: ignore[arg-type]
    draw.text((mid_x, y1 - pad), bottom, anchor="mb", **style)  # type: ignore[arg-type]
    small = _font(max(10, size - 4))
    draw.text((x0 + pad, y0 + pad), _fit(panel.caption, small, panel.width / 2 - 2 * pad),
              font=small, fill=(200, 200, 200), stroke_width=1, stroke_fill=(0, 0, 0))


# --- the picture ------------------------------------------------------------


def compose_picture(
    image: sitk.Image,
    mask: sitk.Image,
    *,
    layout: str = "mid",
    label: QcLabel | None = None,
    centroid_index: Sequence[float] | None = None,
    fill_opacity: float = FILL_OPACITY,
) -> QcPicture:
    """Compose the picture of one case in memory (see :func:`render_case`)."""
    validate_layout(layout)
    if image.GetDimension() != 3 or mask.GetDimension() != 3:
        raise ParameterError("QC pictures need a 3D image and a 3D mask")
    if image.GetSize() != mask.GetSize():
        raise ParameterError(f"mask size {mask.GetSize()} differs from image size "
                             f"{image.GetSize()}")
    if not 0.0 <= fill_opacity <= 1.0:
        raise ParameterError(f"fill_opacity must be within [0, 1], got {fill_opacity!r}")
    geo = _Geometry(image, mask)
    if label is None:
        label = _default_label(mask)
    if centroid_index is None:
        centroid_index = mask_statistics(mask).centroid_index
    rows, notes = _plan(geo, layout, geo.centre(centroid_index))
    shown = {a for row in rows for plane, _ in row for a in geo.axes(plane)}
    pixel = max(geo.extent(a) for a in shown) / (PANEL_PX if layout == "mid" else TILE_PX)
    low, high, _ = intensity_window(image)
    drawn = [[(plane, index, _panel_pixels(geo, plane, index, pixel, (low, high), fill_opacity))
              for plane, index in row] for row in rows]
    widths = [sum(p.shape[1] for _, _, p in row) + GAP_PX * (len(row) - 1) for row in drawn]
    heights = [max(p.shape[0] for _, _, p in row) for row in drawn]
    width = max(MIN_WIDTH_PX, *widths)
    height = HEADER_PX + sum(heights) + GAP_PX * len(drawn)
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = _GAP_RGB
    canvas[HEADER_PX:HEADER_PX + GAP_PX] = _GAP_RGB
    panels = []
    top = HEADER_PX + GAP_PX
    for row, row_w, row_h in zip(drawn, widths, heights, strict=True):
        col = (width - row_w) // 2
        for plane, index, pix in row:
            h, w = pix.shape[:2]
            y = top + (row_h - h) // 2
            canvas[y : y + h, col : col + w] = pix
            panels.append(Panel(plane, col, y, w, h, geo.letters(plane),
                                geo.caption(plane, index)))
            col += w + GAP_PX
        top += row_h + GAP_PX
    return QcPicture(canvas, panels, label, notes, layout)


def _default_label(mask: sitk.Image) -> QcLabel:
    view = sitk.GetArrayViewFromImage(mask)
    n = int(np.count_nonzero(view))
    volume = n * math.prod(mask.GetSpacing()) / 1000.0
    return QcLabel("", f"coverage {100.0 * n / max(1, view.size):.2f} % · {volume:.1f} mL")


def _png_info(label: QcLabel, caption: str, notes: Sequence[str], layout: str) -> PngInfo:
    info = PngInfo()
    texts = {
        "Title": label.name,
        "Software": f"nimask {__version__}",
        "Description": caption,
        "nimask.details": label.details,
        "nimask.flags": ";".join(label.flags),
        "nimask.status": label.status,
        "nimask.layout": layout,
        "nimask.notes": "\n".join(notes),
    }
    for key, value in texts.items():
        if not value and key not in ("Title", "nimask.flags"):
            continue
        if value.isascii():
            info.add_text(key, value)
        else:
            info.add_itxt(key, value)
    return info


def _write_png(out: Path, rgb: Image.Image, info: PngInfo) -> None:
    def write(tmp: Path) -> None:
        rgb.save(tmp, format="PNG", pnginfo=info, compress_level=3)

    atomic_write(out, write)


def render_case(
    image: sitk.Image,
    mask: sitk.Image,
    png_path: str | os.PathLike[str],
    *,
    centroid_index: Sequence[float] | None = None,
    caption: str = "",
    layout: str = "mid",
    label: QcLabel | None = None,
    fill_opacity: float = FILL_OPACITY,
) -> Path:
    """Write the QC picture of one case from an image and a mask already in memory.

    Used for every mask a batch writes, and for a mask kept by
    ``skip_existing`` (read back with its input).

    Parameters
    ----------
    image : SimpleITK.Image
        The 3D volume the mask was computed from.
    mask : SimpleITK.Image
        3D 0/1 mask on the same grid.
    png_path : str or os.PathLike
        Output ``.png``; written atomically.
    centroid_index : (x, y, z) floats, optional
        Continuous index (ITK order) the ``"mid"`` slices go through, rounded
        to the nearest voxel after orientation (ties upwards); default: the
        centroid of the mask (:func:`nimask.evidence.report.mask_statistics`),
        or the centre of the grid when the mask is empty.
    caption : str, optional
        Stored in the PNG's ``Description`` text chunk.
    layout : {"mid", "mosaic"}, default "mid"
        Three mid-slices, or three rows of slices over the mask's extent.
    label : QcLabel, optional
        The header (see :func:`case_label`); default: the picture's file name,
        the coverage and the volume of ``mask``.
    fill_opacity : float, default :data:`FILL_OPACITY`
        Tint inside the mask; 0 draws the contour alone.

    Returns
    -------
    pathlib.Path
        ``png_path``.

    Raises
    ------
    ParameterError
        Unknown layout, images that are not 3D or not on the same grid.
    OutputError
        The picture cannot be written.
    """
    out = Path(png_path)
    if label is None:
        label = replace(_default_label(mask), name=out.name)
    picture = compose_picture(image, mask, layout=layout, label=label,
                              centroid_index=centroid_index, fill_opacity=fill_opacity)
    pil = Image.fromarray(picture.rgb)
    draw = ImageDraw.Draw(pil)
    _draw_header(draw, pil.width, label, picture.notes, layout)
    for panel in picture.panels:
        _draw_panel_text(draw, panel)
    _write_png(out, pil, _png_info(label, caption, picture.notes, layout))
    return out


def read_png_label(png_path: str | os.PathLike[str]) -> tuple[QcLabel, dict[str, str]]:
    """The label stored in a QC picture's text chunks, and all its text chunks."""
    with Image.open(png_path) as img:
        texts = {str(k): str(v) for k, v in img.info.items() if isinstance(v, str)}
    flags = tuple(f for f in texts.get("nimask.flags", "").split(";") if f)
    label = QcLabel(texts.get("Title", ""), texts.get("nimask.details", ""), flags,
                    texts.get("nimask.status", ""))
    return label, texts


def relabel_png(png_path: str | os.PathLike[str], label: QcLabel) -> bool:
    """Redraw the header of a QC picture with ``label``; False when it already says that.

    A PNG without nimask's ``nimask.layout`` text chunk (not a picture this
    module drew) is left untouched, and False is returned.

    The slices are left as they are.  Used once the cohort's flags are known
    (``coverage_outlier`` needs every case).
    """
    old, texts = read_png_label(png_path)
    if old == label or "nimask.layout" not in texts:  # not a picture with a header: leave it
        return False
    with Image.open(png_path) as img:
        pil = img.convert("RGB")
    notes = [n for n in texts.get("nimask.notes", "").split("\n") if n]
    layout = texts.get("nimask.layout", "mid")
    _draw_header(ImageDraw.Draw(pil), pil.width, label, notes, layout)
    _write_png(Path(png_path), pil, _png_info(label, texts.get("Description", ""), notes, layout))
    return True


def update_picture_flags(results: Sequence[FileResult]) -> int:
    """Redraw the flags of the pictures whose header does not show ``result.flags``.

    A worker draws the flags it can know alone (:func:`case_label`); once
    :func:`nimask.evidence.report.flag_cohort` has run, this adds
    ``coverage_outlier`` where it applies.  Returns how many pictures changed;
    a picture that cannot be updated gets a note on its result.
    """
    changed = 0
    for res in results:
        if res.status == "failed" or not res.qc_png:
            continue
        try:
            old, _ = read_png_label(res.qc_png)
            if relabel_png(res.qc_png, replace(old, flags=tuple(res.flags))):
                changed += 1
        except (OSError, ValueError, NimaskError) as exc:
            res.notes.append(f"QC picture flags not updated: {exc}")
    return changed
