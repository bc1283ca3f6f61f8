"""Finding the inputs of a folder and naming their masks.

:func:`scan_folder` sorts the ``.nii.gz`` entries of a folder into inputs and
entries set aside (with the reason); :func:`output_name` gives a mask's name.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import InputFolderError
from .nifti import TEMP_MARKER, read_descrip

__all__ = [
    "MASK_SUFFIX",
    "NII_GZ",
    "PROVENANCE_PREFIX",
    "FolderScan",
    "find_inputs",
    "output_name",
    "scan_folder",
]

logger = logging.getLogger(__name__)

NII_GZ = ".nii.gz"
MASK_SUFFIX = "_mask"
#: Start of the NIfTI ``descrip`` of every mask nimask writes (its provenance).
PROVENANCE_PREFIX = "nimask "


def output_name(input_path: str | os.PathLike[str]) -> str:
    """``scan_001.nii.gz`` -> ``scan_001_mask.nii.gz`` (extension matched case-insensitively)."""
    name = Path(input_path).name
    if not name.lower().endswith(NII_GZ):
        raise ValueError(f"not a .nii.gz file name: {name!r}")
    return name[: -len(NII_GZ)] + MASK_SUFFIX + NII_GZ


@dataclass
class FolderScan:
    """The ``.nii.gz`` entries of an input folder: inputs, and those set aside.

    Attributes
    ----------
    inputs : list of Path
        Files to mask, sorted by name.
    ignored : list of (Path, str)
        Entries named ``*.nii.gz`` that are not inputs, with the reason:
        a directory, a macOS ``._*`` resource-fork file, or a mask written by
        nimask (``descrip`` starting with ``"nimask "``).  nimask's own
        temporary files are left out silently.
    """

    inputs: list[Path]
    ignored: list[tuple[Path, str]] = field(default_factory=list)


def scan_folder(nii_folder: str | os.PathLike[str]) -> FolderScan:
    """Sort the ``.nii.gz`` entries of ``nii_folder`` into inputs and ignored entries.

    The extension is matched case-insensitively.  Sub-folders are not entered;
    a broken symbolic link is kept as an input (it fails with a clear reason).

    Raises
    ------
    InputFolderError
        ``nii_folder`` does not exist, is not a folder, or cannot be listed.
    """
    folder = Path(nii_folder)
    if not folder.exists():
        raise InputFolderError(f"input folder does not exist: {folder}")
    if not folder.is_dir():
        raise InputFolderError(f"input path is not a folder: {folder}")
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise InputFolderError(
            f"cannot list input folder {folder}: {exc.strerror or exc}"
        ) from exc
    scan = FolderScan([])
    for entry in sorted(entries, key=lambda e: e.name):
        name = entry.name
        if not name.lower().endswith(NII_GZ) or TEMP_MARKER in name:
            continue
        path = Path(entry.path)
        if name.startswith("._"):
            scan.ignored.append((path, "macOS resource-fork file, not a volume"))
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            scan.ignored.append((path, "a directory, not a file"))
            continue
        descrip = read_descrip(path)
        if descrip is not None and descrip.startswith(PROVENANCE_PREFIX):
            scan.ignored.append((path, f"a mask written by nimask ({descrip!r}), not an input"))
            continue
        scan.inputs.append(path)
    return scan


def find_inputs(nii_folder: str | os.PathLike[str]) -> list[Path]:
    """The ``.nii.gz`` files directly inside ``nii_folder`` to mask, sorted by name.

    See :func:`scan_folder` for what is set aside (sub-folders, macOS ``._*``
    files, masks written by nimask, nimask's temporary files); each ignored
    entry is logged.

    Raises
    ------
    InputFolderError
        ``nii_folder`` does not exist, is not a folder, or holds no ``.nii.gz``
        input.
    """
    scan = scan_folder(nii_folder)
    for path, why in scan.ignored:
        level = logging.WARNING if "directory" in why else logging.INFO
        logger.log(level, "ignoring %s: %s", path.name, why)
    if not scan.inputs:
        extra = f" ({len(scan.ignored)} .nii.gz entries ignored)" if scan.ignored else ""
        raise InputFolderError(f"no .nii.gz files in input folder: {nii_folder}{extra}")
    return scan.inputs
