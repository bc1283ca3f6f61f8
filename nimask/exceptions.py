"""nimask's exceptions: a small hierarchy rooted at :class:`NimaskError`.

Each class also inherits the builtin a caller would naturally catch, so code
written for nidataset (``except FileNotFoundError``, ``except ValueError``)
keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "DicomSeriesError",
    "InputFolderError",
    "InvalidVolumeError",
    "MissingDependencyError",
    "NimaskError",
    "OutputError",
    "ParameterError",
    "ReportError",
    "SchedulerError",
    "VolumeReadError",
]


class NimaskError(Exception):
    """Base class of every error nimask raises on purpose."""


class InputFolderError(NimaskError, FileNotFoundError):
    """The input folder does not exist, is not a folder, or holds no ``.nii.gz`` file."""


class ParameterError(NimaskError, ValueError):
    """A parameter (threshold, closing radius, ...) is invalid; raised before any work."""


class OutputError(NimaskError, OSError):
    """The output location cannot be created or written."""


class ReportError(OutputError):
    """The masks were computed but the report or the QC page could not be written.

    ``results`` holds every file's record (masks written are complete).
    """

    def __init__(self, message: str, results: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.results = list(results)


class VolumeReadError(NimaskError, OSError):
    """A volume file cannot be read: truncated, corrupt, not NIfTI, unreadable."""


class InvalidVolumeError(NimaskError, ValueError):
    """A volume was read but cannot be masked (not 3D, vector-valued, constant, all NaN, ...)."""


class DicomSeriesError(InvalidVolumeError):
    """A DICOM series cannot be built into one volume on a correct grid.

    Mixed orientations, missing slices, several different images at one position,
    a single 2D image, ...: the message is the one-line reason.
    """


class SchedulerError(NimaskError, ConnectionError):
    """A Dask scheduler cannot be reached, or a local Dask cluster cannot be started."""


class MissingDependencyError(NimaskError, ImportError):
    """An optional dependency (an extra such as ``nimask[dask]``) is not installed."""
