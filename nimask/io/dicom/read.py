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


def _shift_axis(
    arr: npt.NDArray[np.float32], t: float, n_out: int, axis: int
) -> npt.NDArray[np.float32]:
    """Linear interpolation: ``out[A] = arr[A + t]`` along ``axis``, NaN outside ``arr``."""
    base = math.floor(t)
    frac = t - base
    if frac < _SNAP:
        frac = 0.0
    elif frac > 1 - _SNAP:
        base, frac = base + 1, 0.0
    length = arr.shape[axis]
    shape = list(arr.shape)
    shape[axis] = n_out
    out = np.full(shape, np.nan, dtype=np.float32)
    # output A is valid when base + A >= 0 and base + A (+1 if frac) <= length - 1
    lo = max(0, -base)
    hi = min(n_out, length - base - (1 if frac else 0))
    if hi <= lo:
        return out
    src = [slice(None)] * arr.ndim
    dst = [slice(None)] * arr.ndim
    dst[axis] = slice(lo, hi)
    src[axis] = slice(lo + base, hi + base)
    if frac == 0.0:
        out[tuple(dst)] = arr[tuple(src)]
        return out
    nxt = [slice(None)] * arr.ndim
    nxt[axis] = slice(lo + base + 1, hi + base + 1)
    a = arr[tuple(src)]
    out[tuple(dst)] = a + np.float32(frac) * (arr[tuple(nxt)] - a)  # exact where equal
    return out


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
    fill = np.float32(np.nanmin(data))
    cache: dict[int, npt.NDArray[np.float32]] = {}

    def plane(i: int) -> npt.NDArray[np.float32]:
        if i not in cache:
            if len(cache) > 2:
                cache.pop(min(cache))
            moved = _shift_axis(data[i], col0 - float(shift_cols[i]), n_cols, axis=1)
            cache[i] = _shift_axis(moved, row0 - float(shift_rows[i]), n_rows, axis=0)
        return cache[i]

    out = np.empty((n_out, n_rows, n_cols), dtype=np.float32)
    for k in range(n_out):
        z = offsets[0] + k * dz
        i = int(np.clip(np.searchsorted(offsets, z, side="right") - 1, 0, n - 2))
        w = float((z - offsets[i]) / (offsets[i + 1] - offsets[i]))
        if w < _SNAP:
            values = plane(i).copy()
        elif w > 1 - _SNAP:
            values = plane(i + 1).copy()
        else:
            below = plane(i)
            values = below + np.float32(w) * (plane(i + 1) - below)
        np.nan_to_num(values, copy=False, nan=fill)
        out[k] = values
    return out, (col0, row0), dz
