"""Finding the inputs of a batch and naming their masks.

:func:`scan_folder` sorts the ``.nii.gz`` entries of a folder into inputs and
entries set aside (with the reason); :func:`output_name` gives a mask's name.
These are the documented folder mode.

:func:`discover` is the general form: folders (flat or recursive), single files and
lists of both, a glob ``pattern``, and every volume format of
:mod:`nimask.io.formats`.  It returns one :class:`~nimask.records.Case` per volume with
the output stem its mask gets (the input's relative path: nested trees are mirrored),
and the entries set aside.  :func:`output_problems` finds the cases that must fail
before any work (mask name clashes, names too long, an existing file in an input folder
that nimask did not write).  Every rule applies to every kind of input: only regular
files are opened (a FIFO is never read), nimask's masks and temporaries are never
inputs, the entries set aside are reported with their reason.

DICOM series are one more kind of case (:func:`discover_dicom`, ``discover(..., dicom=True)``).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import InputFolderError, ParameterError, VolumeReadError
from ..records import Case
from .formats import (
    VOLUME_FORMATS,
    data_files,
    dicom_module,
    mask_extension,
    read_provenance,
    split_volume_name,
)
from .nifti import TEMP_MARKER, safe_text

__all__ = [
    "DEFAULT_PATTERN",
    "MASK_SUFFIX",
    "NII_GZ",
    "PROVENANCE_PREFIX",
    "Discovery",
    "FolderInput",
    "FolderScan",
    "as_case",
    "discover",
    "discover_dicom",
    "entry_problem",
    "find_inputs",
    "ignored_label",
    "mask_relpath",
    "output_name",
    "output_problems",
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
        Entries named ``*.nii.gz`` that are not inputs, with the reason
        (:func:`entry_problem`): a directory; a FIFO, socket or device (never
        opened); a macOS ``._*`` resource-fork file; a temporary file of nimask;
        or a mask written by nimask (``descrip`` starting with ``"nimask "``).
    """

    inputs: list[Path]
    ignored: list[tuple[Path, str]] = field(default_factory=list)


def scan_folder(nii_folder: str | os.PathLike[str]) -> FolderScan:
    """Sort the ``.nii.gz`` entries of ``nii_folder`` into inputs and ignored entries.

    The extension is matched case-insensitively.  Sub-folders are not entered.
    Only regular files (or links to them) are opened: a FIFO named ``x.nii.gz``
    would block a reader forever.  A broken symbolic link is kept as an input (it
    fails with a clear reason).

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
        if not name.lower().endswith(NII_GZ):
            continue
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        why = entry_problem(path, name, is_dir, None if is_dir else _mode(entry))
        if why is not None:
            scan.ignored.append((path, why))
            continue
        scan.inputs.append(path)
    return scan


def find_inputs(nii_folder: str | os.PathLike[str]) -> list[Path]:
    """The ``.nii.gz`` files directly inside ``nii_folder`` to mask, sorted by name.

    See :func:`scan_folder` for what is set aside (sub-folders, FIFOs and other
    special files, macOS ``._*`` files, masks written by nimask, nimask's
    temporary files); each ignored entry is logged as a warning.

    Raises
    ------
    InputFolderError
        ``nii_folder`` does not exist, is not a folder, or holds no ``.nii.gz``
        input.
    """
    scan = scan_folder(nii_folder)
    for path, why in scan.ignored:
        logger.warning("ignoring %s: %s", safe_text(path.name), why)
    if not scan.inputs:
        extra = f" ({len(scan.ignored)} .nii.gz entries ignored)" if scan.ignored else ""
        raise InputFolderError(f"no .nii.gz files in input folder: {nii_folder}{extra}")
    return scan.inputs


# ------------------------------------------------------------------ general discovery

#: The documented folder mode's pattern.
DEFAULT_PATTERN = "*.nii.gz"
#: Why a temporary file of nimask (``.nimask-tmp-...``) is not an input.
TEMPORARY_REASON = ("a temporary file of nimask (of a run writing here, or left by a stopped "
                    "one), not an input")
_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
)


@dataclass(frozen=True)
class FolderInput:
    """An input that must be a folder (the documented function's ``nii_folder``).

    :func:`discover` refuses it when it is a file, with the folder mode's message.
    """

    path: Path

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return str(self.path)


@dataclass
class Discovery:
    """What :func:`discover` found.

    Attributes
    ----------
    cases : list of Case
        The volumes to mask: inputs in the order given, each folder's cases sorted by
        relative path.
    ignored : list of (Path, str)
        Entries that match the pattern but are not inputs, with the reason (as
        :class:`FolderScan`), and inputs given twice.
    roots : list of Path
        The input folders scanned (:func:`output_problems` never lets a mask replace a
        file there that nimask did not write).
    others : int
        Files that match the pattern but are not volumes nimask reads (``.json``,
        ``.raw`` data files, ...): not inputs, not reported one by one.
    """

    cases: list[Case]
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)
    others: int = 0


def as_case(item: Case | str | os.PathLike[str]) -> Case:
    """``item`` if it is a :class:`Case`, else the case of one volume file in a flat folder.

    The stem is the file name without its volume extension (``A.NII.GZ`` -> ``A``).
    """
    if isinstance(item, Case):
        return item
    path = Path(item)
    split = split_volume_name(path)
    stem, fmt = split if split is not None else (path.name, "nii.gz")
    return Case("file", path, str(path), stem, fmt, (path,), path.name)


def mask_relpath(case: Case, output_format: str = "nii.gz") -> str:
    """The mask's path relative to the output folder: ``<stem>_mask<extension>``.

    ``output_format`` is one of :data:`nimask.io.formats.OUTPUT_FORMATS`; with the
    default a flat folder's ``scan.nii.gz`` gives ``scan_mask.nii.gz``
    (:func:`output_name`).
    """
    return case.stem + MASK_SUFFIX + mask_extension(case.format, output_format)


def _compile_segment(segment: str) -> str:
    out = []
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = segment.find("]", i + 2 if segment[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = segment[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    on_path: bool  # matched against the relative path (else the name)
    depth: int | None  # deepest folder level to enter (None: every level)


def _compile_pattern(pattern: object, recursive: bool) -> _Pattern:
    if not isinstance(pattern, str) or not pattern.strip():
        raise ParameterError(f"pattern must be a non-empty glob such as '*.nii.gz', got "
                             f"{pattern!r}")
    if not isinstance(recursive, bool):
        raise ParameterError(f"recursive must be True or False, got {recursive!r}")
    text = pattern.strip().replace("\\", "/") if os.sep == "\\" else pattern.strip()
    if text.startswith("/") or ".." in text.split("/"):
        raise ParameterError(f"pattern must be relative to the input folder: {pattern!r}")
    segments = [seg for seg in text.split("/") if seg not in ("", ".")]
    if not segments:
        raise ParameterError(f"pattern matches no file name: {pattern!r}")
    on_path = len(segments) > 1 or "**" in text
    if recursive and on_path and segments[0] != "**":
        segments = ["**", *segments]
    if not on_path:
        return _Pattern(re.compile(_compile_segment(segments[0]) + r"\Z", re.IGNORECASE),
                        False, None if recursive else 0)
    parts = []
    for seg in segments[:-1]:
        parts.append("(?:[^/]+/)*" if seg == "**" else _compile_segment(seg) + "/")
    last = segments[-1]
    parts.append(".*" if last == "**" else _compile_segment(last.replace("**", "*")))
    deep = any(seg == "**" for seg in segments) or "**" in last
    return _Pattern(re.compile("".join(parts) + r"\Z", re.IGNORECASE), True,
                    None if deep else len(segments) - 1)


def _special_kind(mode: int) -> str | None:
    for test, name in _SPECIAL_KINDS:
        if test(mode):
            return name
    return None


def entry_problem(path: Path, name: str, is_dir: bool, mode: int | None) -> str | None:
    """Why a matching entry is not an input (``None``: it is one): the rules of every kind.

    ``mode`` is the entry's ``st_mode`` with links followed (``None``: broken link, kept
    as an input that fails with its reason).
    """
    if TEMP_MARKER in name:
        return TEMPORARY_REASON
    if name.startswith("._"):
        return "macOS resource-fork file, not a volume"
    if is_dir:
        return "a directory, not a file"
    if mode is not None:
        kind = _special_kind(mode)
        if kind is not None:
            return f"{kind}, not a regular file: never opened"
    if mode is None:
        return None
    text = read_provenance(path)
    if text is not None and text.startswith(PROVENANCE_PREFIX):
        return f"a mask written by nimask ({text!r}), not an input"
    return None


def _mode(entry: os.DirEntry[str]) -> int | None:
    try:
        return entry.stat(follow_symlinks=True).st_mode
    except OSError:
        return None


def _scan_tree(folder: Path, compiled: _Pattern, exclude: Sequence[Path],
               found: Discovery) -> list[tuple[tuple[str, ...], Case]]:
    """Walk ``folder`` (as deep as the pattern needs) and classify matching entries."""
    cases: list[tuple[tuple[str, ...], Case]] = []
    first_ignored = len(found.ignored)
    stack: list[tuple[Path, tuple[str, ...]]] = [(folder, ())]
    while stack:
        current, rel = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except OSError as exc:
            if not rel:
                raise InputFolderError(
                    f"cannot list input folder {folder}: {exc.strerror or exc}") from exc
            found.ignored.append((current, f"folder cannot be listed: {exc.strerror or exc}"))
            continue
        for entry in entries:
            name = entry.name
            parts = (*rel, name)
            try:
                is_dir = entry.is_dir()
                is_link = entry.is_symlink()
            except OSError:
                is_dir = is_link = False
            if is_dir and not is_link and not name.startswith(".") and (
                compiled.depth is None or len(rel) < compiled.depth
            ) and not any(_same_path(entry.path, ex) for ex in exclude):
                stack.append((Path(entry.path), parts))
            target = "/".join(parts) if compiled.on_path else name
            if not compiled.regex.match(target):
                continue
            split = split_volume_name(name)
            if split is None:
                if not is_dir:
                    found.others += 1
                continue
            path = Path(entry.path)
            why = entry_problem(path, name, is_dir, None if is_dir else _mode(entry))
            if why is not None:
                found.ignored.append((path, why))
                continue
            stem = "/".join((*rel, split[0]))
            label = "/".join(parts)
            files = data_files(path) if split[1] in ("nhdr", "mhd") else (path,)
            cases.append((parts, Case("file", path, str(path), stem, split[1], files, label)))
    found.ignored[first_ignored:] = sorted(found.ignored[first_ignored:],
                                           key=lambda item: item[0].relative_to(folder).parts)
    return cases


def _same_path(a: str | os.PathLike[str], b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def discover_dicom(folder: Path) -> tuple[list[Case], list[tuple[Path, str]]]:
    """The DICOM series under ``folder`` (searched recursively, headers only) as cases.

    One :class:`~nimask.records.Case` per series found by
    :func:`nimask.io.dicom.find_series` (refused series included: they fail with their
    check's reason when read): ``kind="dicom-series"``, ``format="dicom"``, ``source`` its
    first file, ``files`` every file, ``display`` and ``label`` the series' label
    (description, number, ``SeriesInstanceUID``), ``stem`` its output name
    (:func:`nimask.io.dicom.unique_output_stems`:
    ``<PatientID>_<StudyDate>_<SeriesNumber>_<SeriesDescription>``), ``sidecar`` the
    series' identity (study and series UIDs, description, number, modality, file and
    image counts) and ``payload`` the series record.  Also returns what was set aside:
    skipped series (localizers, SR/PR/SEG objects, ...) and unreadable files, with the
    reason.

    Raises
    ------
    InputFolderError
        pydicom (a requirement of nimask) is missing from this install.
    """
    try:
        dicom = dicom_module()
        scan = dicom.find_series(folder)
    except (VolumeReadError, ImportError) as exc:
        raise InputFolderError(str(exc)) from exc
    cases = []
    for series, stem in zip(scan.series, dicom.unique_output_stems(scan.series), strict=True):
        fields = dicom.series_sidecar(series, {})
        identity = {k: v for k, v in fields.items()
                    if k not in ("Parameters", "Notes", "GeneratedBy")}
        files = tuple(series.files)
        cases.append(Case("dicom-series", files[0], series.label, stem, "dicom", files,
                          series.label, identity, series))
    ignored = [(s.files[0] if s.files else folder, s.note) for s in scan.skipped]
    ignored += [(path, f"unreadable DICOM file: {why}") for path, why in scan.unreadable]
    return cases, ignored


def ignored_label(path: Path, roots: Sequence[Path]) -> str:
    """How an entry set aside is named in the log: its path relative to its input folder."""
    for root in roots:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            continue
    return str(path)


def _no_inputs_message(inputs: Sequence[Path], pattern: str, found: Discovery) -> str:
    if pattern == DEFAULT_PATTERN and len(inputs) == 1 and not found.others:
        extra = f" ({len(found.ignored)} .nii.gz entries ignored)" if found.ignored else ""
        return f"no .nii.gz files in input folder: {inputs[0]}{extra}"
    where = ", ".join(str(p) for p in inputs)
    counts = []
    if found.ignored:
        counts.append(f"{len(found.ignored)} entries ignored")
    if found.others:
        counts.append(f"{found.others} other files match but are not volumes nimask reads "
                      f"({', '.join(VOLUME_FORMATS)})")
    tail = f" ({'; '.join(counts)})" if counts else ""
    return f"no volume matching {pattern!r} in {where}{tail}"


def discover(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    pattern: str = DEFAULT_PATTERN,
    recursive: bool = False,
    exclude: Sequence[str | os.PathLike[str]] = (),
    dicom: bool = False,
) -> Discovery:
    """Find the volumes to mask in folders, files or a list of both.

    Parameters
    ----------
    inputs : path or iterable of paths
        A folder, a volume file, or several of them.  Each folder's matching volumes
        keep their path relative to it as their output stem (the output tree mirrors
        it); a file's stem is its name.
    pattern : str, default ``"*.nii.gz"``
        Glob matched case-insensitively.  Without ``/`` it is matched against file
        names (in the folder itself, or at any depth with ``recursive``); with ``/`` or
        ``**`` against the path relative to the folder (``sub-*/anat/*_T1w.nii.gz``,
        ``**/*.nrrd``; ``**`` is any number of folders and recurses).  Files given
        directly are taken whatever the pattern.  Only volume formats nimask reads
        (:data:`nimask.io.formats.VOLUME_FORMATS`) become inputs.
    recursive : bool, default False
        Enter sub-folders (hidden ``.*`` folders, symbolic links to folders and the
        ``exclude`` folders are not entered).
    exclude : sequence of paths
        Folders never entered (the output and QC folders).
    dicom : bool, default False
        Folders hold DICOM series (:func:`discover_dicom`) instead of volume files.

    Returns
    -------
    Discovery

    Raises
    ------
    ParameterError
        Bad ``pattern``/``recursive``, no input given, or a file given directly that is
        not a volume format nimask reads.
    InputFolderError
        An input does not exist, a folder cannot be listed, or no volume was found.
    """
    compiled = _compile_pattern(pattern, recursive)
    items: list[object] = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(
        inputs) if isinstance(inputs, Iterable) else [inputs]
    try:
        given = [Path(p) for p in items]  # type: ignore[arg-type]
    except TypeError as exc:
        raise ParameterError(f"inputs must be paths, got {inputs!r}") from exc
    if not given:
        raise ParameterError("no input given")
    skip = [Path(p) for p in exclude]
    found = Discovery([])
    cases: list[Case] = []
    folder_only = {i for i, p in enumerate(items) if isinstance(p, FolderInput)}
    for index, path in enumerate(given):
        if not path.exists() and not path.is_symlink():
            what = "file" if split_volume_name(path) is not None and index not in \
                folder_only else "folder"
            raise InputFolderError(f"input {what} does not exist: {path}")
        if index in folder_only and not path.is_dir():
            raise InputFolderError(f"input path is not a folder: {path}")
        if path.is_dir():
            found.roots.append(path)
            if dicom:
                series, ignored = discover_dicom(path)
                cases.extend(series)
                found.ignored.extend(ignored)
                continue
            tree = _scan_tree(path, compiled, skip, found)
            cases.extend(case for _, case in sorted(tree, key=lambda item: item[0]))
            continue
        split = split_volume_name(path)
        if split is None:
            raise ParameterError(
                f"not a volume file nimask reads: {path} (extensions "
                f"{', '.join(VOLUME_FORMATS)}; for a folder, give the folder)")
        try:
            mode: int | None = path.stat().st_mode
        except OSError:
            mode = None
        why = entry_problem(path, path.name, False, mode)
        if why is not None:
            found.ignored.append((path, why))
            continue
        cases.append(Case("file", path, str(path), split[0], split[1], data_files(path)
                          if split[1] in ("nhdr", "mhd") else (path,), path.name))
    seen: dict[str, Case] = {}
    for case in cases:
        key = os.path.normcase(os.path.abspath(case.source))
        if key in seen and case.kind == "file":
            found.ignored.append((case.source, f"given twice (also as {seen[key].display})"))
            continue
        seen[key] = case
        found.cases.append(case)
    if not found.cases:
        if dicom:
            raise InputFolderError(
                f"no DICOM image series in {', '.join(str(p) for p in given)}"
                + (f" ({len(found.ignored)} set aside)" if found.ignored else ""))
        raise InputFolderError(_no_inputs_message(given, pattern, found))
    return found


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    parent = os.path.realpath(path.parent)
    for root in roots:
        base = os.path.realpath(root)
        if parent == base or parent.startswith(base.rstrip(os.sep) + os.sep):
            return True
    return False


def output_problems(cases: Sequence[Case], output_dir: Path, output_format: str = "nii.gz",
                    *, roots: Sequence[Path] = ()) -> dict[int, str]:
    """Cases that must fail before any work, by index, with the reason.

    * Mask name clashes: cases whose output stems are equal ignoring case (``a.nii`` and
      ``a.nii.gz`` in one folder; ``A.nii.gz`` and ``a.nii.gz``, which clash on a
      case-insensitive file system; two inputs given from different folders with the
      same name) all fail: no mask overwrites another.
    * A mask name longer than the output file system allows (usually 255 bytes).
    * A file already at the mask's path, inside one of the input folders ``roots`` (the
      output tree overlaps the input tree), that nimask did not write (no nimask
      provenance): it is never replaced.
    """
    problems: dict[int, str] = {}
    groups: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        groups.setdefault(case.stem.casefold(), []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        names = [cases[i].label or cases[i].display for i in members]
        listed = (" and ".join(names) + " both give") if len(names) == 2 else (
            ", ".join(names) + " all give")
        shared = cases[members[0]].stem + MASK_SUFFIX
        for i in members:
            problems[i] = (f"mask name clash: {listed} the mask {shared} (names compared "
                           "ignoring case and extension); rename all but one")
    name_max = _name_max(output_dir)
    input_files = {os.path.abspath(f) for case in cases for f in case.files}
    for i, case in enumerate(cases):
        if i in problems:
            continue
        rel = mask_relpath(case, output_format)
        target = output_dir / rel
        length = len(os.fsencode(target.name))
        if length > name_max:
            problems[i] = (f"its mask name would be {length} bytes long, more than the "
                           f"{name_max} the output file system allows; shorten the input's name")
            continue
        if not os.path.lexists(target):
            continue
        if os.path.abspath(target) in input_files:
            problems[i] = f"its mask would replace the input file {target}: never done"
            continue
        if not _inside(target, roots):
            continue
        text = read_provenance(target) if target.is_file() else None
        if text is None or not text.startswith(PROVENANCE_PREFIX):
            problems[i] = (f"{rel} already exists in an input folder and was not written by "
                           "nimask (no nimask provenance): it is never replaced; move it, or "
                           "write the masks to another folder")
    return problems

