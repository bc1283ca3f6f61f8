"""One series -> one SimpleITK volume on a correct, regular grid (or a one-line refusal).

Geometry (all in DICOM patient coordinates, LPS, mm): each image i has its
position P_i (ImagePositionPatient), row direction r, column direction c and
pixel spacing (dx along r, dy along c).  Its pixel (column j, row k) lies at
``P_i + j dx r + k dy c``.  The slice normal is ``n = r x c``.

* ``"read"``: the positions step regularly along n.  The volume's origin is the
  first position along n, its direction (r, c, n), its spacing (dx, dy,
  distance first-last / (N - 1)): the grid SimpleITK's series reader builds.
* ``"resample"``: the positions are off the normal line (gantry tilt: each
  slice is shifted in-plane against the previous one) and/or irregular along n
  (non-uniform spacing, or missing slices with ``fill_missing``).  The output
  grid keeps the slices' own axes (r, c, n) and pixel lattice of the first
  slice, is widened in-plane to hold every shifted slice, and steps along n by
  the regular slice step (adjusted so the grid ends on the last slice).  Each
  node is interpolated linearly: bilinearly inside the two slices that bracket
  it along n (at the node's in-plane position in each slice's own lattice),
  then linearly between them.  A node that a slice lying in the same plane
  holds exactly takes that pixel's value; a node outside the slices' field of
  view takes the series' lowest value (background).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from ...exceptions import DicomSeriesError
from .checks import check_series
from .model import DicomSeries, SeriesCheck
from .pixels import load_frames

__all__ = ["read_series"]

logger = logging.getLogger(__name__)

#: Interpolation weights this close to 0 or 1 are snapped (a node on a slice is that slice).
_SNAP = 1e-6


def _axes(series: DicomSeries, check: SeriesCheck) -> tuple[npt.NDArray[np.float64], ...]:
    frame = series.frames[check.order[0]]
    o = np.asarray(frame.orientation, dtype=np.float64)
    row, col = o[:3] / np.linalg.norm(o[:3]), o[3:] / np.linalg.norm(o[3:])
    return row, col, np.asarray(check.normal, dtype=np.float64)


def _image(
    array: npt.NDArray[np.float32], origin: npt.NDArray[np.float64], spacing: tuple[float, ...],
    axes: tuple[npt.NDArray[np.float64], ...],
) -> sitk.Image:
    image = sitk.GetImageFromArray(array, isVector=False)
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetDirection(tuple(float(v) for v in np.column_stack(axes).ravel()))
    return image


def read_series(
    series: DicomSeries, *, fill_missing: bool = False
) -> tuple[sitk.Image, list[str]]:
    """Read a DICOM series as one 3D float32 volume in modality units (HU for CT).

    Slices are ordered by position along the slice normal; each image's
    RescaleSlope/RescaleIntercept is applied.  A series whose slices do not
    form a regular grid is resampled onto one (see the module docstring), and
    the notes say so; a series that cannot be one correct volume is refused.

    Parameters
    ----------
    series : DicomSeries
        From :func:`~nimask.io.dicom.find_series`.
    fill_missing : bool, keyword-only
        Interpolate across missing slices instead of refusing the series.

    Returns
    -------
    image : SimpleITK.Image
        3D, float32, origin/spacing/direction in LPS as SimpleITK uses them.
    notes : list of str
        One line per check that fired and what was done about it.

    Raises
    ------
    DicomSeriesError
        The series is refused (single 2D image, mixed orientations, missing
        slices, different images at one position, ...): the message is the
        one-line reason.
    VolumeReadError
        A file's pixels cannot be read.
    MissingDependencyError
        pydicom is not installed.
    """
    check = series.check
    if check is None or fill_missing:
        check = check_series(series, fill_missing=fill_missing)
    if not check.ok:
        raise DicomSeriesError(check.reason)
    frames = [series.frames[i] for i in check.order]
    data = load_frames(frames)
    axes = _axes(series, check)
    first = frames[0]
    dy, dx = first.pixel_spacing or (1.0, 1.0)
    origin = np.asarray(first.position, dtype=np.float64)
    offsets = np.asarray(check.offsets, dtype=np.float64)
    notes = list(check.findings)
    if check.action == "read":
        dz = float(offsets[-1] / (len(offsets) - 1))
        image = _image(data, origin, (dx, dy, dz), axes)
        return image, notes
    positions = np.array([f.position for f in frames], dtype=np.float64)
    rel = positions - origin
    row, col, _ = axes
    if "sheared" in check.flags:
        shift_cols, shift_rows = (rel @ row) / dx, (rel @ col) / dy
    else:
        shift_cols = shift_rows = np.zeros(len(frames))
    array, corner, dz = _resample(data, offsets, shift_cols, shift_rows, check.step)
    grid_origin = origin + corner[0] * dx * row + corner[1] * dy * col
    image = _image(array, grid_origin, (dx, dy, dz), axes)
    nz, ny, nx = array.shape
    why = []
    if "sheared" in check.flags:
        why.append(f"gantry tilt {check.tilt_degrees:.1f} deg, slices shifted up to "
                   f"{check.shear_mm:.1f} mm in-plane")
    if "nonuniform_spacing" in check.flags:
        why.append("non-uniform slice spacing")
    if "missing_slices" in check.flags:
        why.append("missing slices filled by interpolation")
    notes.append(
        f"resampled onto a regular grid ({'; '.join(why)}): {nx}x{ny}x{nz} voxels of "
        f"{dx:.4g} x {dy:.4g} x {dz:.4g} mm along the slices' own axes, "
        f"from {len(frames)} slices, linear interpolation"
    )
    return image, notes


def _taps(t: float, length: int, n_out: int) -> tuple[int, float, int, int]:
    """Linear interpolation ``out[A] = src[A + t]``: (base, frac, lo, hi).

    ``src[A + t] = src[A + base] + frac * (src[A + base + 1] - src[A + base])``;
    outputs ``lo <= A < hi`` lie inside the ``length`` source samples.
    """
    base = math.floor(t)
    frac = t - base
    if frac < _SNAP:
        frac = 0.0
    elif frac > 1 - _SNAP:
        base, frac = base + 1, 0.0
    lo = max(0, -base)
    hi = min(n_out, length - base - (1 if frac else 0))
    return base, frac, lo, max(lo, hi)


Rect = tuple[int, int, int, int]


def _shift_plane(
    image: npt.NDArray[np.float32], t_row: float, t_col: float, n_rows: int, n_cols: int
) -> tuple[npt.NDArray[np.float32], Rect]:
    """``out[B, A] = image[B + t_row, A + t_col]`` (bilinear) and the rectangle where it holds.

    Outside the rectangle (rows r0:r1, columns c0:c1) the output is undefined.
    """
    rows, cols = image.shape
    bc, fc, c0, c1 = _taps(t_col, cols, n_cols)
    br, fr, r0, r1 = _taps(t_row, rows, n_rows)
    out = np.empty((n_rows, n_cols), dtype=np.float32)
    if c1 <= c0 or r1 <= r0:
        return out, (0, 0, 0, 0)
    # columns first, on the source rows the row step needs
    src_rows = slice(r0 + br, r1 + br + (1 if fr else 0))
    left = image[src_rows, c0 + bc:c1 + bc]
    if fc:
        right = image[src_rows, c0 + bc + 1:c1 + bc + 1]
        moved = left + np.float32(fc) * (right - left)  # exact where equal
    else:
        moved = left
    if fr:
        top, bottom = moved[:-1], moved[1:]
        out[r0:r1, c0:c1] = top + np.float32(fr) * (bottom - top)
    else:
        out[r0:r1, c0:c1] = moved
    return out, (r0, r1, c0, c1)


def _resample(
    data: npt.NDArray[np.float32],
    offsets: npt.NDArray[np.float64],
    shift_cols: npt.NDArray[np.float64],
    shift_rows: npt.NDArray[np.float64],
    step: float,
) -> tuple[npt.NDArray[np.float32], tuple[int, int], float]:
    """Interpolate slices (sorted by ``offsets`` along the normal) onto a regular grid.

    Slice i's pixel (row k, column j) lies at in-plane lattice coordinates
    (j + shift_cols[i], k + shift_rows[i]) of the first slice's lattice and at
    ``offsets[i]`` along the normal.  Returns the (z, y, x) array, the output's
    first (column, row) in that lattice, and the spacing along the normal.
    Nodes that a slice they are interpolated from does not hold get the
    lowest value of ``data``.
    """
    n, rows, cols = data.shape
    col0 = math.floor(float(shift_cols.min()) + _SNAP)
    row0 = math.floor(float(shift_rows.min()) + _SNAP)
    col1 = math.ceil(float(shift_cols.max()) + cols - 1 - _SNAP)
    row1 = math.ceil(float(shift_rows.max()) + rows - 1 - _SNAP)
    n_cols, n_rows = col1 - col0 + 1, row1 - row0 + 1
    extent = float(offsets[-1] - offsets[0])
    n_out = max(2, round(extent / step) + 1) if step > 0 else n
    dz = extent / (n_out - 1)
    fill = np.float32(data.min())
    cache: dict[int, tuple[npt.NDArray[np.float32], Rect]] = {}

    def plane(i: int) -> tuple[npt.NDArray[np.float32], Rect]:
        if i not in cache:
            if len(cache) > 2:
                cache.pop(min(cache))
            cache[i] = _shift_plane(data[i], row0 - float(shift_rows[i]),
                                    col0 - float(shift_cols[i]), n_rows, n_cols)
        return cache[i]

    out = np.empty((n_out, n_rows, n_cols), dtype=np.float32)
    for k in range(n_out):
        z = offsets[0] + k * dz
        i = int(np.clip(np.searchsorted(offsets, z, side="right") - 1, 0, n - 2))
        w = float((z - offsets[i]) / (offsets[i + 1] - offsets[i]))
        target = out[k]
        if w < _SNAP or w > 1 - _SNAP:
            values, (r0, r1, c0, c1) = plane(i if w < _SNAP else i + 1)
            region = slice(r0, r1), slice(c0, c1)
            if r1 - r0 < n_rows or c1 - c0 < n_cols:
                target.fill(fill)
            target[region] = values[region]
            continue
        below, (a0, a1, a2, a3) = plane(i)
        above, (b0, b1, b2, b3) = plane(i + 1)
        r0, r1, c0, c1 = max(a0, b0), min(a1, b1), max(a2, b2), min(a3, b3)
        if r1 - r0 < n_rows or c1 - c0 < n_cols:
            target.fill(fill)
        if r1 > r0 and c1 > c0:
            region = slice(r0, r1), slice(c0, c1)
            lower = below[region]
            target[region] = lower + np.float32(w) * (above[region] - lower)
    return out, (col0, row0), dz
