"""DICOM in and out: find series, check them, read each as one volume, write DICOM SEG.

Reading needs pydicom (a requirement of nimask); writing SEG needs highdicom, the
optional extra ``nimask[dicom]``.  Both are imported lazily: without highdicom
:func:`write_seg` raises :class:`~nimask.exceptions.MissingDependencyError` with the
``pip`` hint.

Typical use::

    scan = find_series(folder)                  # headers only, recursive
    stems = unique_output_stems(scan.series)    # file names, clashes told apart
    for series, stem in zip(scan.series, stems):
        if not series.check.ok:                 # refused: one-line reason
            print(series.label, series.check.reason)
            continue
        image, notes = read_series(series)      # float32, HU for CT, regular grid
        ...                                     # mask = compute_mask(image, ...)
        write_seg(mask, series, out / f"{stem}_seg.dcm", kind="brain")
        sidecar = series_sidecar(series, parameters, notes=notes)

See docs/dicom.md for the checks and the geometry.
"""

from .checks import check_series
from .discover import find_series
from .model import DicomFrame, DicomScan, DicomSeries, SeriesCheck, SkippedSeries
from .naming import series_output_stem, series_sidecar, unique_output_stems
from .read import read_series
from .seg import write_seg

__all__ = [
    "DicomFrame",
    "DicomScan",
    "DicomSeries",
    "SeriesCheck",
    "SkippedSeries",
    "check_series",
    "find_series",
    "read_series",
    "series_output_stem",
    "series_sidecar",
    "unique_output_stems",
    "write_seg",
]
