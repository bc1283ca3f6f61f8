"""The batch's review page, ``index.html``: every case, sortable, filterable, rated by keyboard.

One self-contained file (inline CSS and JavaScript, no network access): it
works from a ``file://`` URL and when the QC folder is copied elsewhere (the
pictures are linked by relative paths).  Without JavaScript it still shows
the grid of cases and the table.  See ``docs/qc.md`` for the keys and the
rating workflow.

Ratings live in the browser's ``localStorage`` under
``nimask-ratings:<batch id>``; the batch id (:func:`batch_id`) is a digest of
the cases' inputs, outputs and settings, so a page written again for the same
batch finds its ratings, and another batch starts blank.  The page exports
them as ``ratings.csv`` (:data:`nimask.evidence.ratings.RATING_COLUMNS`).
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import math
import os
import urllib.parse
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io.nifti import atomic_write, safe_text
from .qc_picture import qc_png_name

if TYPE_CHECKING:
    from ..records import FileResult

__all__ = ["INDEX_NAME", "batch_id", "write_index"]

#: Name of the batch page in the QC folder.
INDEX_NAME = "index.html"


@functools.lru_cache(maxsize=2)
def _asset(name: str) -> str:
    """``review_page.css`` or ``review_page.js``, shipped beside this module."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}f}"


def _num(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return float(value)


def batch_id(results: Sequence[FileResult]) -> str:
    """Short digest naming a batch: its inputs, outputs and each case's settings."""
    keys = [
        [r.input, r.output, r.threshold_mode, r.threshold_low, r.threshold_high,
         r.closing_radius, r.closing_radius_mm, r.preset, r.steps]
        for r in results
    ]
    text = json.dumps(keys, default=str, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _png_href(res: FileResult, qc_dir: Path) -> str:
    """Relative URL of the case's picture (percent-encoded file-system bytes), or ``""``."""
    png = Path(res.qc_png) if res.qc_png else qc_dir / qc_png_name(res.input)
    if res.status in ("written", "skipped") and png.is_file():
        return urllib.parse.quote(os.fsencode(Path(os.path.relpath(png, qc_dir)).as_posix()))
    return ""


def _h(text: str) -> str:
    """HTML text of a string that may hold a non-UTF-8 file name (shown as ``\\xNN``)."""
    return html.escape(safe_text(text))


def _flags_html(flags: Sequence[str]) -> str:
    return "".join(f'<span class="flag">{html.escape(f)}</span>' for f in flags)


def _earlier_text(res: FileResult) -> str:
    if not (res.earlier_rating or res.earlier_note):
        return ""
    text = f"earlier rating: {res.earlier_rating or '(none)'}"
    if res.earlier_note:
        text += f": {res.earlier_note}"
    if res.earlier_reviewer:
        text += f" ({res.earlier_reviewer})"
    return text


def _threshold_text(r: FileResult) -> str:
    if r.threshold_low is not None and r.threshold_high is not None:
        return f"{r.threshold_mode} [{r.threshold_low:g}, {r.threshold_high:g}]"
    return r.threshold_mode


def _case_json(i: int, r: FileResult, href: str, name: str) -> dict[str, Any]:
    return {
        "i": i,
        "name": safe_text(name),
        "input": safe_text(r.input),
        "output": safe_text(r.output),
        "status": r.status,
        "error": safe_text(r.error),
        "flags": list(r.flags),
        "coverage": _num(r.coverage_percent),
        "z": _num(r.coverage_z),
        "volume": _num(r.volume_ml),
        "components": r.components,
        "notes": [safe_text(n) for n in r.notes],
        "png": href,
        "earlier": r.earlier_rating,
        "earlierNote": r.earlier_note,
        "earlierReviewer": r.earlier_reviewer,
        "threshold": _threshold_text(r),
    }


def _card(i: int, r: FileResult, href: str, name: str) -> str:
    cls = "failed" if r.status == "failed" else ("flagged" if r.flags else "")
    out = [f'<div class="card {cls}" id="{_h(name)}" data-i="{i}">']
    if href:
        src = html.escape(href)
        out.append(f'<a class="pic" href="{src}"><img loading="lazy" src="{src}" '
                   f'alt="{_h(name)}"></a>')
    out.append(f'<div class="name">{_h(name)}<span class="rating"></span></div>')
    if r.status == "failed":
        out.append(f'<div class="err">failed, no mask written: {_h(r.error)}</div>')
    else:
        comps = "" if r.components is None else f" &middot; {r.components} component(s)"
        out.append(
            f'<div class="meta">{html.escape(r.status)} &middot; coverage '
            f"{_fmt(r.coverage_percent, 2)} % &middot; {_fmt(r.volume_ml)} mL{comps}</div>"
        )
    out.append(f'<div class="flags">{_flags_html(r.flags)}</div>')
    earlier = _earlier_text(r)
    if earlier:
        out.append(f'<div class="earlier e-{html.escape(r.earlier_rating)}">'
                   f"{html.escape(earlier)}</div>")
    if r.notes:
        out.append('<ul class="notes">' + "".join(
            f"<li>{_h(n)}</li>" for n in r.notes) + "</ul>")
    out.append("</div>")
    return "".join(out)


_COLUMNS = (  # header, sort key ("" = not sortable)
    ("#", "input"), ("file", "name"), ("status", "status"), ("rating", "rating"),
    ("earlier", "earlier"), ("flags", "flags"), ("coverage %", "coverage"),
    ("coverage z", "z"), ("volume mL", "volume"), ("components", "components"),
    ("largest share", ""), ("border faces", ""), ("threshold", ""), ("s", ""),
    ("notes and errors", ""),
)


def _row(i: int, r: FileResult, name: str) -> str:
    cls = "failed" if r.status == "failed" else ("flagged" if r.flags else "")
    cells = [
        f'<td class="n">{i + 1}</td>',
        f'<td><a href="#{_h(name)}">{_h(name)}</a></td>',
        f"<td>{html.escape(r.status)}</td>",
        '<td class="rating"></td>',
        f"<td>{html.escape(_earlier_text(r).removeprefix('earlier rating: '))}</td>",
        f"<td>{_flags_html(r.flags)}</td>",
        f'<td class="n">{_fmt(r.coverage_percent, 2)}</td>',
        f'<td class="n">{_fmt(r.coverage_z, 2)}</td>',
        f'<td class="n">{_fmt(r.volume_ml, 1)}</td>',
        f'<td class="n">{"" if r.components is None else r.components}</td>',
        f'<td class="n">{_fmt(r.largest_component_share, 3)}</td>',
        f"<td>{html.escape(' '.join(r.border_faces))}</td>",
        f"<td>{html.escape(_threshold_text(r))}</td>",
        f'<td class="n">{r.seconds:.2f}</td>',
        '<td class="text">'
        + (f'<span class="err">failed, no mask written: {_h(r.error)}</span>'
           if r.error else "")
        + "".join(f"<div>{_h(n)}</div>" for n in r.notes) + "</td>",
    ]
    return f'<tr class="{cls}" data-i="{i}">' + "".join(cells) + "</tr>"


def write_index(results: Sequence[FileResult], qc_dir: str | os.PathLike[str],
                *, title: str = "nimask QC", labels: Sequence[str] | None = None) -> Path:
    """Write ``index.html`` in ``qc_dir``: the review page of a batch.

    Cases appear in the order of ``results`` (sortable on the page); a failed
    case has a card with its reason and no picture.  ``labels`` names each case
    (default: the input's file name; a nested tree passes the path relative to
    its input folder, so that two ``scan.nii.gz`` stay apart).  Entries that
    were not inputs (``status="ignored"``) are counted and listed with their
    reason, without a card.  File names that are not valid UTF-8 are shown with
    ``\\xNN`` escapes and linked by their percent-encoded bytes.  Returns the
    path of the page (written atomically).
    """
    names = [Path(r.input).name for r in results] if labels is None else list(labels)
    if len(names) != len(results):
        raise ValueError(f"{len(names)} labels for {len(results)} results")
    folder = Path(qc_dir)
    folder.mkdir(parents=True, exist_ok=True)
    ignored = [(r, n) for r, n in zip(results, names, strict=True) if r.status == "ignored"]
    names = [n for r, n in zip(results, names, strict=True) if r.status != "ignored"]
    results = [r for r in results if r.status != "ignored"]
    hrefs = [_png_href(r, folder) for r in results]
    flagged = sum(bool(r.flags) for r in results)
    status = {s: sum(r.status == s for r in results) for s in ("written", "skipped", "failed")}
    files = f"{len(results)} file{'s' if len(results) != 1 else ''}"
    counts: dict[str, int] = {}
    for r in results:
        for f in r.flags:
            counts[f] = counts.get(f, 0) + 1
    earlier = sum(bool(r.earlier_rating) for r in results)
    data = {
        "batch": batch_id(results),
        "title": title,
        "cases": [_case_json(i, r, h, n) for i, (r, h, n) in enumerate(zip(
            results, hrefs, names, strict=True))],
    }
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    flag_options = "".join(f'<option value="{html.escape(k)}">{html.escape(k)}</option>'
                           for k in counts)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title)}</title><style>{_asset('review_page.css')}</style></head>",
        f'<body data-batch="{data["batch"]}">',
        f"<header><h1>{_h(title)}</h1>",
        f'<p class="summary">{files}: {status["written"]} written, {status["skipped"]} '
        f"skipped, {status['failed']} failed, {len(ignored)} ignored; {flagged} flagged."
        + (f" {earlier} with an earlier rating." if earlier else "") + "</p>",
        "<p>Each picture: the file name, coverage, volume and flags on top; slices with "
        "orientation letters (axial seen from the feet: patient's right on the left). "
        "Red contour with a dark halo: the mask's border; faint red tint: inside.</p>",
    ]
    if ignored:
        parts.append('<details class="ignored"><summary>Ignored (not inputs): '
                     f"{len(ignored)}</summary><ul>" + "".join(
                         f"<li>{_h(n)}: {_h('; '.join(r.notes))}</li>"
                         for r, n in ignored) + "</ul></details>")
    if counts:
        parts.append('<p class="flagcount">Flags: ' + ", ".join(
            f'<span class="flag">{html.escape(k)}</span> {v}' for k, v in counts.items()
        ) + "</p>")
    parts.append(_TOOLBAR.format(flag_options=flag_options))
    parts.append("</header>")
    parts.append('<noscript><p class="warn">Sorting, filtering and rating need JavaScript; '
                 "the cases and the table are shown below.</p></noscript>")
    parts.append('<main><div class="grid" id="grid">')
    parts.extend(_card(i, r, h, n) for i, (r, h, n) in enumerate(zip(results, hrefs, names,
                                                                        strict=True)))
    parts.append("</div>")
    head = "".join(
        f'<th data-sort="{key}">{html.escape(label)}</th>' if key else
        f"<th>{html.escape(label)}</th>"
        for label, key in _COLUMNS
    )
    parts.append(f'<table id="table"><thead><tr>{head}</tr></thead><tbody>')
    parts.extend(_row(i, r, n) for i, (r, n) in enumerate(zip(results, names, strict=True)))
    parts.append("</tbody></table></main>")
    parts.append(_VIEWER)
    parts.append(f'<script type="application/json" id="nimask-data">{payload}</script>')
    parts.append(f"<script>{_asset('review_page.js')}</script></body></html>\n")
    text = "\n".join(parts)
    out = folder / INDEX_NAME
    atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return out



_TOOLBAR = """<div class="toolbar" id="toolbar">
<label>view <select id="f-view"><option value="grid">grid</option>
<option value="table">table</option></select></label>
<label>sort <select id="f-sort"><option value="input">input order</option>
<option value="name">name</option><option value="coverage">coverage</option>
<option value="z">|coverage z|</option><option value="volume">volume</option>
<option value="flags">number of flags</option><option value="status">status</option>
<option value="rating">rating</option><option value="earlier">earlier rating</option>
</select></label>
<button type="button" id="f-dir" title="sort direction">ascending</button>
<label>status <select id="f-status"><option value="">all</option>
<option value="written">written</option><option value="skipped">skipped</option>
<option value="failed">failed</option></select></label>
<label>flag <select id="f-flag"><option value="">all</option>
<option value="*">any flag</option><option value="-">no flag</option>{flag_options}
</select></label>
<label>rating <select id="f-rating"><option value="">all</option>
<option value="-">unrated</option><option value="good">good</option>
<option value="bad">bad</option><option value="unsure">unsure</option></select></label>
<label>coverage % <input type="number" id="f-cmin" step="any" placeholder="min">
&ndash; <input type="number" id="f-cmax" step="any" placeholder="max"></label>
<label>name <input type="search" id="f-text" placeholder="/ to search"></label>
<label>reviewer <input type="text" id="f-reviewer" size="10"></label>
<label><input type="checkbox" id="f-advance" checked> next after rating</label>
<button type="button" id="export">Export ratings.csv</button>
<span id="progress"></span> <span id="shown"></span>
</div>
<p class="keys js-keys" id="keys" hidden>Keys: <b>j</b>/<b>k</b> or arrows next/previous
&middot; <b>Enter</b> open large, <b>Esc</b> close &middot; <b>g</b> good, <b>b</b> bad,
<b>u</b> unsure, <b>x</b> clear &middot; <b>n</b> note (Enter to finish) &middot;
<b>v</b> grid/table &middot; <b>/</b> search &middot; <b>e</b> export.
Ratings stay in this browser (localStorage) until exported.</p>
<p class="warn" id="storage-warn" hidden>This browser does not keep data for this page
(localStorage unavailable): export the ratings before closing it.</p>"""

_VIEWER = """<div class="viewer" id="viewer" hidden role="dialog" aria-label="case">
<div class="vbar"><span id="v-pos"></span><b id="v-name"></b><span id="v-status"></span>
<span id="v-rated"></span><button type="button" id="v-close">close (Esc)</button></div>
<div class="vimg"><img id="v-img" alt=""><div class="err" id="v-err"></div></div>
<div class="vinfo"><div id="v-meta"></div><div id="v-flags"></div><div id="v-earlier"></div>
<ul id="v-notes"></ul></div>
<div class="vrate"><button type="button" data-rate="good">good (g)</button>
<button type="button" data-rate="bad">bad (b)</button>
<button type="button" data-rate="unsure">unsure (u)</button>
<button type="button" data-rate="">clear (x)</button>
<textarea id="v-note" placeholder="note: press n to type, Enter or Esc to finish"></textarea>
</div></div>"""
