"""BIDS datasets: the anatomical images to mask, and the names of their derivative masks.

:func:`find_bids_anat` lists ``sub-<label>/[ses-<label>/]anat/*_<suffix>.nii[.gz]`` of a raw
BIDS dataset (suffixes :data:`BIDS_SUFFIXES`) as :class:`~nimask.records.Case` records whose
output stems follow the BIDS derivatives rules for masks::

    sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>][_<entity>-<label>...]_desc-<desc>

(``_mask.nii.gz`` is added by :func:`nimask.io.discovery.mask_relpath`).  The source's
entities that a mask may carry (``task``, ``acq``, ``ce``, ``rec``, ``run``, ``echo``,
``part``, ``chunk``) are kept in BIDS order.  The source's suffix cannot be part of a mask's
name, so the ``desc`` label carries it when it is not ``T1w``: ``desc-brain`` /
``desc-head`` for a T1w, ``desc-headT2w``, ``desc-headFLAIR``, ``desc-brainCT`` for the others
(masks of several images of one session never share a name, and a name never depends on
which other images a session holds).  Each case carries the fields of its JSON sidecar
(``Type``, ``Sources`` as BIDS URIs, ``RawSources``).

The ``desc`` label itself (``brain`` or ``head``) is the caller's choice
(:func:`nimask.batch.bids.mask_bids` derives it from the preset).  Writing the derivative
dataset (``dataset_description.json``, ``.bidsignore``) is :mod:`nimask.batch.bids`'s.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..exceptions import InputFolderError, ParameterError
from ..records import Case
from .discovery import entry_problem
from .formats import split_volume_name

__all__ = [
    "BIDS_SUFFIXES",
    "MASK_ENTITIES",
    "BidsScan",
    "desc_label",
    "find_bids_anat",
    "normalize_labels",
]

#: Anatomical suffixes masked by default (``CT`` is not a BIDS 1.11 suffix yet; datasets
#: following the CT extension proposal use it).
BIDS_SUFFIXES = ("T1w", "T2w", "FLAIR", "CT")
#: Entities a BIDS anatomical mask may carry, in BIDS order (``desc`` added last).
MASK_ENTITIES = ("sub", "ses", "task", "acq", "ce", "rec", "run", "echo", "part", "space",
                 "chunk", "res", "label")
_LABEL = re.compile(r"^[A-Za-z0-9]+$")
_PAIR = re.compile(r"^([A-Za-z0-9]+)-([A-Za-z0-9]+)$")


class BidsScan:
    """The anatomical images of a BIDS dataset chosen for masking.

    Attributes
    ----------
    cases : list of Case
    ignored : list of (Path, str)
        Files under ``anat/`` set aside with the reason (a name that is not a valid
        BIDS name, entities the mask cannot carry, a FIFO, a mask written by nimask).
    subjects : list of str
        Participant labels whose images were searched.
    """

    def __init__(self, cases: list[Case], ignored: list[tuple[Path, str]],
                 subjects: list[str]) -> None:
        self.cases = cases
        self.ignored = ignored
        self.subjects = subjects


def normalize_labels(labels: str | Iterable[str] | None, prefix: str) -> list[str] | None:
    """``["sub-01", "02"]`` -> ``["01", "02"]`` (the BIDS-Apps form, prefix optional).

    Raises
    ------
    ParameterError
        A label that is not alphanumeric.
    """
    if labels is None:
        return None
    items = [labels] if isinstance(labels, str) else list(labels)
    out = []
    for item in items:
        text = str(item).strip()
        if text.startswith(prefix + "-"):
            text = text[len(prefix) + 1 :]
        if not _LABEL.match(text):
            raise ParameterError(f"not a BIDS {prefix} label: {item!r} (letters and digits)")
        if text not in out:
            out.append(text)
    return out


def desc_label(kind: str, suffix: str) -> str:
    """The mask's ``desc`` label: ``kind`` (``brain``/``head``), plus the suffix unless T1w."""
    return kind if suffix == "T1w" else kind + suffix


def _dataset_name(bids_dir: Path) -> str:
    description = bids_dir / "dataset_description.json"
    if not description.is_file():
        raise InputFolderError(
            f"not a BIDS dataset: no dataset_description.json in {bids_dir}")
    try:
        doc = json.loads(description.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputFolderError(f"unreadable dataset_description.json in {bids_dir}: {exc}") \
            from exc
    name = doc.get("Name") if isinstance(doc, dict) else None
    return name if isinstance(name, str) else bids_dir.name


def _folders(parent: Path, prefix: str) -> list[str]:
    try:
        with os.scandir(parent) as it:
            return sorted(e.name[len(prefix) + 1 :] for e in it
                          if e.name.startswith(prefix + "-") and e.is_dir()
                          and _LABEL.match(e.name[len(prefix) + 1 :]))
    except OSError:
        return []


def _parse(name: str, subject: str, session: str | None,
           suffixes: Sequence[str]) -> tuple[list[tuple[str, str]], str] | str:
    """Entities and suffix of a BIDS file name, or why it is not a source to mask."""
    split = split_volume_name(name)
    if split is None or split[1] not in ("nii.gz", "nii"):
        return "not NIfTI"
    parts = split[0].split("_")
    suffix = parts[-1]
    if suffix not in suffixes:
        return "other suffix"
    pairs = []
    for part in parts[:-1]:
        match = _PAIR.match(part)
        if match is None:
            return f"not a BIDS file name ({part!r} is not an entity-label pair)"
        pairs.append((match[1], match[2]))
    keys = [k for k, _ in pairs]
    if not keys or keys[0] != "sub" or pairs[0][1] != subject:
        return f"not a BIDS file name of sub-{subject} (it must start with sub-{subject}_)"
    if session is not None and (len(keys) < 2 or pairs[1] != ("ses", session)):
        return f"not a BIDS file name of ses-{session} (sub-{subject}_ses-{session}_ expected)"
    unknown = [k for k in keys if k not in MASK_ENTITIES]
    if unknown:
        return (f"entities {', '.join(unknown)} cannot appear in a BIDS mask name; "
                "mask it with 'nimask mask' instead")
    if len(set(keys)) != len(keys):
        return "an entity appears twice in the name"
    order = [MASK_ENTITIES.index(k) for k in keys]
    if order != sorted(order):
        return "entities are not in BIDS order"
    return pairs, suffix


def find_bids_anat(
    bids_dir: str | os.PathLike[str],
    *,
    participant_label: str | Iterable[str] | None = None,
    session_label: str | Iterable[str] | None = None,
    desc: str = "head",
    suffixes: Sequence[str] = BIDS_SUFFIXES,
) -> BidsScan:
    """The anatomical images of a BIDS dataset as cases with BIDS derivative mask names.

    Parameters
    ----------
    bids_dir : path
        Root of a raw BIDS dataset (holds ``dataset_description.json``).
    participant_label, session_label : label(s) or None
        Only these participants / sessions (``"01"`` or ``"sub-01"``); ``None``: all.
    desc : str, default "head"
        ``desc`` label of the masks (``"brain"`` or ``"head"``; the suffix is added for
        non-T1w sources, :func:`desc_label`).
    suffixes : sequence of str
        Anatomical suffixes to mask.

    Returns
    -------
    BidsScan

    Raises
    ------
    InputFolderError
        Not a BIDS dataset, unknown participant or session labels, or no image found.
    ParameterError
        A malformed label.
    """
    root = Path(bids_dir)
    if not root.is_dir():
        raise InputFolderError(f"BIDS folder does not exist or is not a folder: {root}")
    if not _LABEL.match(desc):
        raise ParameterError(f"desc must be letters and digits, got {desc!r}")
    _dataset_name(root)
    subjects = _folders(root, "sub")
    wanted = normalize_labels(participant_label, "sub")
    if wanted is not None:
        missing = [s for s in wanted if s not in subjects]
        if missing:
            raise InputFolderError(
                f"participant label(s) not found in {root}: {', '.join(missing)} "
                f"(found: {', '.join(subjects) or 'none'})")
        subjects = wanted
    sessions_wanted = normalize_labels(session_label, "ses")
    cases: list[Case] = []
    ignored: list[tuple[Path, str]] = []
    sessions_seen: set[str] = set()
    for subject in subjects:
        sub_dir = root / f"sub-{subject}"
        sessions: list[str | None] = list(_folders(sub_dir, "ses")) or [None]
        sessions_seen.update(s for s in sessions if s is not None)
        if sessions_wanted is not None:
            sessions = [s for s in sessions if s in sessions_wanted]
        for session in sessions:
            rel_dir = f"sub-{subject}" + (f"/ses-{session}" if session else "") + "/anat"
            anat = root / rel_dir
            try:
                with os.scandir(anat) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                parsed = _parse(entry.name, subject, session, suffixes)
                if isinstance(parsed, str):
                    if parsed not in ("not NIfTI", "other suffix"):
                        ignored.append((Path(entry.path), parsed))
                    continue
                pairs, suffix = parsed
                path = Path(entry.path)
                try:
                    is_dir = entry.is_dir()
                    mode = entry.stat().st_mode
                except OSError:
                    is_dir, mode = False, None
                why = entry_problem(path, entry.name, is_dir, mode)
                if why is not None:
                    ignored.append((path, why))
                    continue
                fmt = "nii" if entry.name.lower().endswith(".nii") else "nii.gz"
                label = f"{rel_dir}/{entry.name}"
                mask_name = "_".join(f"{k}-{v}" for k, v in pairs)
                kind = desc_label(desc, suffix)
                sidecar = {
                    "Type": "Brain" if desc == "brain" else "Head",
                    "Sources": [f"bids:raw:{label}"],
                    "RawSources": [label],
                }
                cases.append(Case("file", path, str(path), f"{rel_dir}/{mask_name}_desc-{kind}",
                                  fmt, (path,), label, sidecar))
    if sessions_wanted is not None:
        missing = [s for s in sessions_wanted if s not in sessions_seen]
        if missing:
            raise InputFolderError(
                f"session label(s) not found for the chosen participants in {root}: "
                f"{', '.join(missing)}")
    if not cases:
        raise InputFolderError(
            f"no anatomical image ({', '.join('*_' + s for s in suffixes)}, .nii or .nii.gz) "
            f"under sub-*/[ses-*/]anat/ in {root}"
            + (f" ({len(ignored)} files set aside)" if ignored else ""))
    return BidsScan(cases, ignored, subjects)
