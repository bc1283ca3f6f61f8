"""Quality-control pictures: one PNG per case and an ``index.html`` for the batch.

Each picture shows three orthogonal slices through the mask's centroid, side
by side: axial (seen from the feet: patient's right on the left, anterior at
the top), coronal (right on the left, superior at the top) and sagittal
(anterior on the left, superior at the top).  The slices follow the anatomical
axes closest to the image's axes (``GetDirection``), like ``sitk.DICOMOrient``
would, but through array views, without copying the volume.

* Intensities: a CT in Hounsfield units (1st percentile at or below
  :data:`HU_AIR_BELOW`) is shown with the window :data:`HU_WINDOW`; anything
  else between its 0.5th and 99.5th percentiles.
* Every slice is resampled (``sitk.Resample``: linear for the image, nearest
  neighbour for the mask) to square pixels of one size for the whole picture,
  so anisotropic voxels keep their physical proportions; the longest physical
  extent of the volume becomes :data:`PANEL_PX` pixels.
* The mask is drawn as a translucent fill (``sitk.LabelOverlay``, colour
  :data:`FILL_RGB`, opacity :data:`FILL_OPACITY`) with its contour
  (``sitk.LabelContour``, thickened inwards to 2-3 pixels) in
  :data:`CONTOUR_RGB`.  Pixels outside the mask stay grey.
* The PNG is written by ITK, atomically; the file name, coverage and settings
  go into the PNG's ``tEXt`` chunks and into ``index.html`` beside the picture.
"""

from __future__ import annotations

import html
import itertools
import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from ..io.nifti import atomic_write
from .report import mask_statistics

if TYPE_CHECKING:
    from ..records import FileResult

__all__ = [
    "CONTOUR_RGB",
    "FILL_OPACITY",
    "FILL_RGB",
    "GAP_PX",
    "HU_AIR_BELOW",
    "HU_WINDOW",
    "INDEX_NAME",
    "PANEL_PX",
    "intensity_window",
    "qc_png_name",
    "render_case",
    "write_index",
]

#: Pixels given to the longest physical extent of the volume.
PANEL_PX = 320
#: Black pixels between two panels.
GAP_PX = 4
#: Colour of the translucent mask fill.
FILL_RGB = (255, 0, 0)
#: Opacity of the mask fill.
FILL_OPACITY = 0.2
#: Colour of the mask contour.
CONTOUR_RGB = (255, 255, 0)
#: A volume whose 1st percentile is at or below this value is treated as CT (HU).
HU_AIR_BELOW = -500.0
#: Display window for CT, in HU (soft tissue and brain grey, air black, bone white).
HU_WINDOW = (-100.0, 150.0)
#: Name of the batch page in the QC folder.
INDEX_NAME = "index.html"

_SAMPLE = 2_000_000  # voxels used for the percentiles


def qc_png_name(input_path: str | os.PathLike[str]) -> str:
    """``scan_001.nii.gz`` -> ``scan_001_qc.png``."""
    name = Path(input_path).name
    if name.lower().endswith(".nii.gz"):
        name = name[: -len(".nii.gz")]
    return name + "_qc.png"


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


def _overlay(gray: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB (rows, cols, 3) uint8: translucent fill plus contour over a grey slice."""
    gray_img = sitk.GetImageFromArray(gray)
    mask_img = sitk.GetImageFromArray(mask)
    fill = sitk.LabelOverlay(gray_img, mask_img, FILL_OPACITY, 0, list(FILL_RGB))
    rgb = sitk.GetArrayFromImage(fill)
    # The outline (LabelContour), thickened inwards to 2-3 pixels so it stays visible.
    outline = sitk.BinaryDilate(sitk.LabelContour(mask_img, True, 0), [1, 1], sitk.sitkBox)
    contour = sitk.GetArrayFromImage(outline) & mask
    rgb[contour != 0] = CONTOUR_RGB
    return rgb


def _png_text(data: bytes, texts: dict[str, str]) -> bytes:
    """Insert ``tEXt`` chunks (Latin-1) before the PNG's ``IEND`` chunk."""
    chunks = b""
    for key, value in texts.items():
        body = key.encode("latin-1", "replace") + b"\x00" + value.encode("latin-1", "replace")
        chunks += (struct.pack(">I", len(body)) + b"tEXt" + body
                   + struct.pack(">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF))
    end = data.rindex(b"IEND") - 4
    return data[:end] + chunks + data[end:]


def render_case(
    image: sitk.Image,
    mask: sitk.Image,
    png_path: str | os.PathLike[str],
    *,
    centroid_index: Sequence[float] | None = None,
    caption: str = "",
) -> Path:
    """Write the QC picture of one case: three mid-slices with the mask drawn over them.

    Parameters
    ----------
    image : SimpleITK.Image
        The 3D volume the mask was computed from.
    mask : SimpleITK.Image
        3D 0/1 mask on the same grid.
    png_path : str or os.PathLike
        Output ``.png``; written atomically.
    centroid_index : (x, y, z) floats, optional
        Continuous index (ITK order) the three slices go through, rounded to the
        nearest voxel after orientation (ties upwards); default: the centroid
        of the mask (:func:`nimask.evidence.report.mask_statistics`), or the centre of
        the grid when the mask is empty.
    caption : str, optional
        Stored in the PNG's ``Description`` text chunk.

    Returns
    -------
    pathlib.Path
        ``png_path``.  The picture is ``3 panel widths + 2 * GAP_PX`` wide and
        as high as the tallest panel (shorter panels are centred vertically).
    """
    size = image.GetSize()
    if centroid_index is None:
        centroid_index = mask_statistics(mask).centroid_index
    low, high, _ = intensity_window(image)
    perm, flips = _lps_axes(image.GetDirection())
    vol = _oriented(sitk.GetArrayViewFromImage(image), perm, flips)
    lab = _oriented(sitk.GetArrayViewFromImage(mask), perm, flips)
    spacing = [image.GetSpacing()[a] for a in perm]
    centre = [
        min(size[a] - 1, max(0, math.floor(
            ((size[a] - 1 - centroid_index[a]) if flips[i] else centroid_index[a]) + 0.5)))
        for i, a in enumerate(perm)
    ]
    extents = [n * s for n, s in zip(vol.shape, spacing, strict=True)]
    pixel = max(extents) / PANEL_PX
    sx, sy, sz = spacing
    cx, cy, cz = centre
    planes = [  # (image plane, mask plane, (col spacing, row spacing)), rows top to bottom
        (vol[:, :, cz].T, lab[:, :, cz].T, (sx, sy)),              # axial
        (vol[:, cy, :].T[::-1], lab[:, cy, :].T[::-1], (sx, sz)),  # coronal
        (vol[cx, :, :].T[::-1], lab[cx, :, :].T[::-1], (sy, sz)),  # sagittal
    ]
    panels = []
    for plane, mplane, sp in planes:
        values = np.nan_to_num(plane.astype(np.float32), nan=low, posinf=high, neginf=low)
        scaled = np.clip((values - low) * (255.0 / (high - low)), 0.0, 255.0)
        gray = _resample(scaled.astype(np.float32), sp, pixel, sitk.sitkLinear)
        gray_u8 = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        lab2 = _resample((mplane != 0).astype(np.uint8), sp, pixel, sitk.sitkNearestNeighbor)
        panels.append(_overlay(gray_u8, lab2))
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + GAP_PX * (len(panels) - 1)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    col = 0
    for panel in panels:
        top = (height - panel.shape[0]) // 2
        canvas[top : top + panel.shape[0], col : col + panel.shape[1]] = panel
        col += panel.shape[1] + GAP_PX
    rgb = sitk.GetImageFromArray(canvas, isVector=True)
    out = Path(png_path)
    texts = {"Title": out.name, "Software": "nimask"}
    if caption:
        texts["Description"] = caption

    def write(tmp: Path) -> None:
        sitk.WriteImage(rgb, str(tmp))
        tmp.write_bytes(_png_text(tmp.read_bytes(), texts))

    atomic_write(out, write)
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}f}"


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.4em} .grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));
gap:14px} .card{background:#fff;border:1px solid #ccc;border-radius:6px;padding:8px}
.card.flagged{border:2px solid #d98200} .card.failed{border:2px solid #c00;background:#fff4f4}
.card img{width:100%;background:#000} .name{font-weight:600;word-break:break-all}
.flag{display:inline-block;background:#ffe3b3;border-radius:3px;padding:0 4px;margin:1px;
font-size:.85em}
.err{color:#b00} table{border-collapse:collapse;font-size:.85em;margin-top:1em;background:#fff}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left} td.n{text-align:right}
tr.failed td{background:#fff0f0} tr.flagged td{background:#fff8e8}
"""


def _flags_html(flags: Sequence[str]) -> str:
    return "".join(f'<span class="flag">{html.escape(f)}</span>' for f in flags)


def _png_href(res: FileResult, qc_dir: Path) -> str:
    png = Path(res.qc_png) if res.qc_png else qc_dir / qc_png_name(res.input)
    if res.status != "failed" and png.is_file():
        return os.path.relpath(png, qc_dir)
    return ""


def write_index(results: Sequence[FileResult], qc_dir: str | os.PathLike[str],
                *, title: str = "nimask QC") -> Path:
    """Write ``index.html`` in ``qc_dir``: a grid of every case and the report table.

    Cases appear in the order of ``results``; a failed case has a card with its
    error and no picture.  Returns the path of the page (written atomically).
    """
    folder = Path(qc_dir)
    folder.mkdir(parents=True, exist_ok=True)
    flagged = [r for r in results if r.flags]
    failed = [r for r in results if r.status == "failed"]
    written = sum(r.status == "written" for r in results)
    files = f"{len(results)} file{'s' if len(results) != 1 else ''}"
    counts: dict[str, int] = {}
    for r in results:
        for f in r.flags:
            counts[f] = counts.get(f, 0) + 1
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{files}: {written} written, "
        f"{sum(r.status == 'skipped' for r in results)} skipped, {len(failed)} failed; "
        f"{len(flagged)} flagged.</p>",
        "<p>Panels: axial (patient's right on the left), coronal, sagittal (anterior on "
        "the left), through the mask's centre. Red fill and yellow contour: the mask.</p>",
    ]
    if counts:
        parts.append("<p>Flags: " + ", ".join(
            f'<span class="flag">{html.escape(k)}</span> {v}' for k, v in counts.items()
        ) + "</p>")
    parts.append('<div class="grid">')
    for r in results:
        name = Path(r.input).name
        cls = "failed" if r.status == "failed" else ("flagged" if r.flags else "")
        href = _png_href(r, folder)
        parts.append(f'<div class="card {cls}" id="{html.escape(name)}">')
        if href:
            src = html.escape(href)
            parts.append(f'<a href="{src}"><img src="{src}" alt="{html.escape(name)}"></a>')
        parts.append(f'<div class="name">{html.escape(name)}</div>')
        if r.status == "failed":
            parts.append(f'<div class="err">failed: {html.escape(r.error)}</div>')
        else:
            parts.append(
                f"<div>{html.escape(r.status)} &middot; coverage {_fmt(r.coverage_percent)} % "
                f"&middot; {_fmt(r.volume_ml)} mL &middot; {r.components} component(s)</div>"
            )
        parts.append(f"<div>{_flags_html(r.flags)}</div></div>")
    parts.append("</div>")
    header = ("file", "status", "flags", "coverage %", "coverage z", "volume mL", "components",
              "largest share", "border faces", "threshold", "s", "error")
    parts.append("<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in header)
                 + "</tr></thead><tbody>")
    for r in results:
        cls = "failed" if r.status == "failed" else ("flagged" if r.flags else "")
        if r.threshold_low is not None and r.threshold_high is not None:
            thr = f"{r.threshold_mode} [{r.threshold_low:g}, {r.threshold_high:g}]"
        else:
            thr = r.threshold_mode
        cells = [
            f'<td><a href="#{html.escape(Path(r.input).name)}">'
            f"{html.escape(Path(r.input).name)}</a></td>",
            f"<td>{html.escape(r.status)}</td>",
            f"<td>{_flags_html(r.flags)}</td>",
            f'<td class="n">{_fmt(r.coverage_percent, 2)}</td>',
            f'<td class="n">{_fmt(r.coverage_z, 2)}</td>',
            f'<td class="n">{_fmt(r.volume_ml, 1)}</td>',
            f'<td class="n">{"" if r.components is None else r.components}</td>',
            f'<td class="n">{_fmt(r.largest_component_share, 3)}</td>',
            f"<td>{html.escape(' '.join(r.border_faces))}</td>",
            f"<td>{html.escape(thr)}</td>",
            f'<td class="n">{r.seconds:.2f}</td>',
            f"<td>{html.escape(r.error)}</td>",
        ]
        parts.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>")
    parts.append("</tbody></table></body></html>\n")
    text = "\n".join(parts)
    out = folder / INDEX_NAME
    atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return out
