"""The per-series checks: can these 2D images be one volume, as they are or resampled?

:func:`check_series` looks at the headers (and, only when two different instances
lie at one position, at those images' pixels) and returns a
:class:`~nimask.io.dicom.model.SeriesCheck`:

==========================  ================================================  ==========
finding                     how it is told                                    action
==========================  ================================================  ==========
single 2D image             one image                                         refuse
no geometry / colour        ImagePositionPatient, ImageOrientationPatient or  refuse
                            PixelSpacing missing; SamplesPerPixel > 1
mixed geometry              Rows, Columns or PixelSpacing differ              refuse
mixed orientations          ImageOrientationPatient differ (> 1e-3)           refuse
duplicate instances         the same SOPInstanceUID (and frame) twice         ignored
duplicate slices            several instances at one position along the       identical pixels:
                            normal (< 5 % of the slice step)                  ignored; else refuse
missing slices              a gap close to k x the regular step (k >= 2,      refuse (resample
                            within 10 %), slice thickness unchanged           with fill_missing)
non-uniform spacing         a slice more than 1 % of the step (and 1 µm)      resample
                            off the regular grid from first to last slice
gantry tilt / shear         GantryDetectorTilt != 0, or the positions lie     resample when
                            off the line along the normal (> 0.05 pixel)      sheared
phase image                 ImageType value 3 is ``P`` / PHASE                note only
==========================  ================================================  ==========
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .model import Action, DicomFrame, DicomSeries, SeriesCheck
from .pixels import load_frames

__all__ = ["check_series", "slice_step"]

#: Two orientations differ when a direction cosine differs by more than this.
ORIENTATION_TOLERANCE = 1e-3
#: Images closer than this fraction of the slice step along the normal share a position.
DUPLICATE_FRACTION = 0.05
#: A slice off the regular grid by more than this fraction of the step: non-uniform spacing.
UNIFORM_FRACTION = 0.01
#: A slice position farther than this fraction of a pixel from the normal line: sheared.
SHEAR_PIXELS = 0.05
#: A gap within this fraction of k x step (k >= 2) counts as k - 1 missing slices.
MISSING_FRACTION = 0.10


def _unit(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if abs(x) >= 0.005 else f"{x:.3g}"


def _refuse(flags: list[str], findings: list[str], reason: str, **extra: object) -> SeriesCheck:
    return SeriesCheck(
        action="refuse", reason=reason, flags=tuple(flags), findings=tuple(findings),
        **extra,  # type: ignore[arg-type]
    )


def slice_step(gaps: Sequence[float]) -> float:
    """The regular slice step of a list of gaps: the most frequent gap (2 % bins).

    Ties go to the smallest gap.  0 for an empty list.
    """
    values = sorted(g for g in gaps if g > 0)
    if not values:
        return 0.0
    groups: list[list[float]] = []
    for g in values:
        if groups and g - groups[-1][0] <= 0.02 * groups[-1][0] + 1e-6:
            groups[-1].append(g)
        else:
            groups.append([g])
    best = max(groups, key=lambda grp: (len(grp), -grp[0]))
    return float(np.median(best))


def _distinct_orientations(frames: Sequence[DicomFrame]) -> list[tuple[float, ...]]:
    found: list[tuple[float, ...]] = []
    for frame in frames:
        o = frame.orientation or ()
        if not any(max(abs(a - b) for a, b in zip(o, f, strict=True)) <= ORIENTATION_TOLERANCE
                   for f in found):
            found.append(o)
    return found


def _differing_identifiers(frames: Sequence[DicomFrame]) -> str:
    """``EchoNumbers 1, 2`` for the identifiers that differ among ``frames``."""
    names: dict[str, set[str]] = {}
    for frame in frames:
        for name, value in frame.variant:
            names.setdefault(name, set()).add(value)
    parts = [
        f"{name} {', '.join(sorted(values)[:4])}"
        for name, values in names.items()
        if len(values) > 1 and name not in ("ImageType", "FrameType", "AcquisitionNumber")
    ]
    return "; ".join(parts[:2])


def check_series(series: DicomSeries, *, fill_missing: bool = False) -> SeriesCheck:
    """Check that a series' images form one volume; say how it will be read.

    Parameters
    ----------
    series : DicomSeries
        A series from :func:`~nimask.io.dicom.find_series`.
    fill_missing : bool, keyword-only
        Resample across missing slices (linear interpolation between the
        slices on either side) instead of refusing the series.

    Returns
    -------
    SeriesCheck
        ``action`` is ``"read"`` (stack as is), ``"resample"`` (interpolate onto
        a regular grid) or ``"refuse"`` (with a one-line ``reason``); ``flags``
        and ``findings`` say what fired.  See the module docstring for each check.

    Raises
    ------
    MissingDependencyError
        Pixels must be compared (duplicated positions) and pydicom is missing.
    VolumeReadError
        Those pixels cannot be read.
    """
    flags: list[str] = []
    findings: list[str] = []
    # copies of one instance (the same file twice in the tree)
    seen: dict[tuple[str, int | None], int] = {}
    used: list[int] = []
    for i, frame in enumerate(series.frames):
        if frame.key in seen:
            continue
        seen[frame.key] = i
        used.append(i)
    copies = len(series.frames) - len(used)
    if copies:
        flags.append("duplicate_instances")
        findings.append(f"{copies} copies of instances already found ignored (same SOPInstanceUID)")
    frames = [series.frames[i] for i in used]

    if any(f.samples_per_pixel != 1 or f.photometric not in ("MONOCHROME1", "MONOCHROME2")
           for f in frames):
        f0 = frames[0]
        flags.append("color")
        return _refuse(flags, findings, f"colour images ({f0.photometric}, "
                       f"{f0.samples_per_pixel} samples per pixel), not a grey-scale scan")
    missing_geometry = [f for f in frames
                        if f.position is None or f.orientation is None or f.pixel_spacing is None
                        or f.rows <= 0 or f.columns <= 0]
    if missing_geometry:
        flags.append("no_geometry")
        return _refuse(flags, findings, (
            f"{len(missing_geometry)} image(s) lack ImagePositionPatient, "
            f"ImageOrientationPatient, PixelSpacing, Rows or Columns "
            f"(e.g. {missing_geometry[0].describe()})"
        ))
    if len(frames) == 1:
        flags.append("single_image")
        return _refuse(flags, findings, "a single 2D image, not a volume")
    orientations = _distinct_orientations(frames)
    if len(orientations) > 1:
        flags.append("mixed_orientations")
        return _refuse(flags, findings, (
            f"mixed orientations: {len(orientations)} different ImageOrientationPatient "
            f"in one series (a multi-plane series cannot be one volume)"
        ))

    sizes = {(f.rows, f.columns) for f in frames}
    spacings = {tuple(round(v, 5) for v in f.pixel_spacing or ()) for f in frames}
    if len(sizes) > 1 or len(spacings) > 1:
        flags.append("mixed_geometry")
        what = (f"{len(sizes)} image sizes" if len(sizes) > 1
                else f"{len(spacings)} pixel spacings")
        return _refuse(flags, findings, f"mixed geometry: {what} in one series")
    o = np.asarray(orientations[0], dtype=np.float64)
    row, col = _unit(o[:3]), _unit(o[3:])
    if abs(float(row @ col)) > ORIENTATION_TOLERANCE:
        flags.append("no_geometry")
        return _refuse(flags, findings, "ImageOrientationPatient rows and columns not orthogonal")
    normal = _unit(np.cross(row, col))
    positions = np.array([f.position for f in frames], dtype=np.float64)
    along = positions @ normal
    rank = np.lexsort((np.array([f.instance_number or 0 for f in frames]), along))
    sorted_along = along[rank]
    pixel = min(frames[0].pixel_spacing or (1.0, 1.0))

    if any(_phase(f) for f in frames):
        flags.append("phase_image")
        findings.append("phase image (ImageType P/PHASE): a phase map, not anatomy")

    # several instances at one position
    raw_gaps = np.diff(sorted_along)
    rough_step = slice_step([g for g in raw_gaps if g > 1e-3])
    eps = max(1e-3, DUPLICATE_FRACTION * rough_step)
    groups: list[list[int]] = [[int(rank[0])]]
    for k in range(1, len(rank)):
        if raw_gaps[k - 1] <= eps:
            groups[-1].append(int(rank[k]))
        else:
            groups.append([int(rank[k])])
    crowded = [g for g in groups if len(g) > 1]
    if crowded:
        flags.append("duplicate_slices")
        if len(groups) == 1:
            return _refuse(flags, findings, (
                f"all {len(frames)} images lie at one position (a 2D time series or repeats), "
                "not a volume"
            ))
        differing = _crowded_differ(frames, crowded)
        if differing:
            ids = _differing_identifiers([frames[i] for g in crowded for i in g])
            per = Counter(len(g) for g in crowded)
            how = ", ".join(f"{n} positions hold {k} images" for k, n in sorted(per.items()))
            why = f" ({ids})" if ids else ""
            return _refuse(flags, findings, (
                f"duplicate slices: {how} with different pixels{why}: several echoes, "
                "phases or repeats in one series"
            ))
        dropped = sum(len(g) - 1 for g in crowded)
        findings.append(
            f"duplicate slices: {dropped} image(s) identical to another at the same "
            "position ignored"
        )
    keep = [g[0] for g in groups]
    frames_used = [frames[i] for i in keep]
    order = tuple(used[i] for i in keep)
    pos = positions[keep]
    d = pos @ normal - float(pos[0] @ normal)
    n = len(d)

    # gantry tilt and shear: positions off the line along the normal
    rel = pos - pos[0]
    in_plane = rel - np.outer(rel @ normal, normal)
    shear = float(np.max(np.linalg.norm(in_plane, axis=1)))
    span = rel[-1]
    length = float(np.linalg.norm(span))
    tilt = math.degrees(math.acos(min(1.0, abs(float(span @ normal)) / length))) if length else 0.0
    header_tilts = {f.gantry_tilt for f in frames_used if f.gantry_tilt}
    sheared = shear > SHEAR_PIXELS * pixel
    if header_tilts or sheared:
        flags.append("gantry_tilt")
        header = (f"GantryDetectorTilt {', '.join(_fmt(t) for t in sorted(header_tilts))} deg"
                  if header_tilts else "GantryDetectorTilt 0")
        if sheared:
            flags.append("sheared")
            findings.append(
                f"gantry tilt: {header}; slice positions step at {_fmt(tilt)} deg to the slice "
                f"normal, up to {_fmt(shear)} mm in-plane off the normal line "
                "(a plain series reader would shear the volume)"
            )
        else:
            findings.append(
                f"gantry tilt: {header}, but the slice positions step along the normal "
                "(geometry already follows the tilted planes)"
            )

    gaps = np.diff(d)
    step = slice_step(gaps.tolist())
    regular = d[-1] / (n - 1)
    off_grid = float(np.max(np.abs(d - regular * np.arange(n))))
    uniform = off_grid <= max(1e-3, UNIFORM_FRACTION * regular)
    missing: list[str] = []
    if not uniform and step > 0:
        step_thickness = _typical_thickness(frames_used, gaps, step)
        for k, g in enumerate(gaps):
            m = round(g / step)
            if m < 2 or abs(g - m * step) > MISSING_FRACTION * step:
                continue
            sides = {frames_used[k].slice_thickness, frames_used[k + 1].slice_thickness}
            if step_thickness is not None and sides != {step_thickness}:
                continue
            missing.append(f"{m - 1} between {_fmt(d[k])} and {_fmt(d[k + 1])} mm")
    extra = {
        "order": order,
        "offsets": tuple(float(v) for v in d),
        "normal": tuple(float(v) for v in normal),
        "step": float(step if not uniform else regular),
        "tilt_degrees": tilt if sheared else 0.0,
        "shear_mm": shear if sheared else 0.0,
    }
    if missing:
        flags.append("missing_slices")
        more = "; ..." if len(missing) > 3 else ""
        text = (f"missing slices: the series steps {_fmt(step)} mm but {len(missing)} gap(s) "
                f"skip slices ({'; '.join(missing[:3])}{more} along the normal)")
        findings.append(text)
        if not fill_missing:
            return _refuse(flags, findings, text, **extra)
    elif not uniform:
        flags.append("nonuniform_spacing")
        counts = Counter(round(float(g), 2) for g in gaps)
        common = ", ".join(f"{_fmt(g)} mm x{c}" for g, c in counts.most_common(4))
        findings.append(
            f"non-uniform slice spacing: gaps from {_fmt(float(gaps.min()))} to "
            f"{_fmt(float(gaps.max()))} mm ({common})"
        )
    action: Action = "resample" if (sheared or not uniform) else "read"
    return SeriesCheck(action=action, flags=tuple(flags), findings=tuple(findings),
                       **extra)  # type: ignore[arg-type]


def _phase(frame: DicomFrame) -> bool:
    types = [t.upper() for t in frame.image_type]
    return (len(types) > 2 and types[2] == "P") or "PHASE" in types


def _typical_thickness(
    frames: Sequence[DicomFrame], gaps: npt.NDArray[np.float64], step: float
) -> float | None:
    """SliceThickness most common among slices around gaps of the regular step."""
    found: Counter[float | None] = Counter()
    for k, g in enumerate(gaps):
        if abs(g - step) <= MISSING_FRACTION * step:
            found[frames[k].slice_thickness] += 1
            found[frames[k + 1].slice_thickness] += 1
    if not found:
        return None
    return found.most_common(1)[0][0]


def _crowded_differ(frames: Sequence[DicomFrame], crowded: list[list[int]]) -> bool:
    """True when some position holds images whose pixels or in-plane position differ."""
    for group in crowded:
        ref = frames[group[0]]
        for i in group[1:]:
            a_pos = np.asarray(ref.position, dtype=np.float64)
            b_pos = np.asarray(frames[i].position, dtype=np.float64)
            if float(np.max(np.abs(a_pos - b_pos))) > 1e-3:
                return True
    needed = [frames[i] for g in crowded for i in g]
    values = load_frames(needed)
    k = 0
    for group in crowded:
        first = values[k]
        for j in range(1, len(group)):
            if not np.array_equal(first, values[k + j], equal_nan=True):
                return True
        k += len(group)
    return False

