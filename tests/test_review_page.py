"""The review page (index.html), ratings files and the re-run of rated cases.

The browser tests open the page in a real headless Chromium (Debian's
``chromium`` package, driven by playwright's Python API through
``executable_path``; no browser is downloaded).  ``.ci/run`` installs
Chromium when it is missing; where no browser can be had they are skipped
with a loud message (see ``conftest.py``).
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from nimask import cli, mask_dataset
from nimask.evidence.ratings import (
    RATING_COLUMNS,
    Rating,
    parse_rating_choice,
    rated_inputs,
    read_input_list,
    read_ratings,
)
from nimask.evidence.review_page import batch_id, write_index
from nimask.exceptions import ParameterError
from nimask.records import FileResult

BROWSER_SKIP = "BROWSER TESTS SKIPPED"
# sizes of the bright box along x in each case: coverages 2.5 % ... 15 %; c5 touches the border
SIZES = {"c0": 4, "c1": 8, "c2": 12, "c3": 16, "c4": 20, "c5": 24}


def _cohort(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in SIZES.items():
        data = np.zeros((24, 20, 20), np.int16)  # x, y, z
        start = 0 if name == "c5" else 2
        data[start : start + size, 5:15, 5:15] = 100
        nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.5, 1.0])), folder / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 3), np.int16), np.eye(4)), folder / "z4d.nii.gz")
    return folder


def _run(tmp: Path, **options: Any) -> list[FileResult]:
    return mask_dataset(tmp / "in", tmp / "out", (50, 200), 0, qc_dir=tmp / "qc",
                        report=tmp / "report.csv", workers=1, **options)


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[FileResult]]:
    tmp = tmp_path_factory.mktemp("batch")
    _cohort(tmp / "in")
    return tmp, _run(tmp)


# --- the page as written ------------------------------------------------------


def _page_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="nimask-data">(.*?)</script>',
                      page, re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_index_is_self_contained_and_lists_every_case(batch: tuple[Path, list[FileResult]]
                                                      ) -> None:
    tmp, results = batch
    page = (tmp / "qc" / "index.html").read_text()
    assert "http://" not in page
    assert "https://" not in page
    assert "<link" not in page
    assert "<script src" not in page
    assert "7 files: 6 written, 0 skipped, 1 failed, 0 ignored; 1 flagged." in page
    assert page.count('<img loading="lazy"') == 6  # one per picture (and the viewer's)
    assert 'src="c0_qc.png"' in page
    assert "failed, no mask written: 4D volume with 3 time points" in page
    assert '<div class="card flagged" id="c5.nii.gz" data-i="5">' in page
    # summary, card and table
    assert page.count('<span class="flag">touches_border</span>') == 3
    data = _page_data(page)
    assert data["batch"] == batch_id(results)
    assert [c["name"] for c in data["cases"]] == [Path(r.input).name for r in results]
    assert [c["coverage"] for c in data["cases"][:6]] == [r.coverage_percent for r in results[:6]]
    assert data["cases"][6]["png"] == ""
    assert data["cases"][6]["status"] == "failed"


def test_notes_earlier_ratings_and_script_escaping(tmp_path: Path) -> None:
    res = [
        FileResult("/d/a.nii.gz", "/m/a_mask.nii.gz", "written", coverage_percent=10.0,
                   notes=["sform is not orthonormal", "note with </script><b>"],
                   earlier_rating="bad", earlier_note="sinus cut", earlier_reviewer="ana"),
        FileResult("/d/b.nii.gz", "/m/b_mask.nii.gz", "failed", error="unreadable <gzip>"),
    ]
    page = write_index(res, tmp_path).read_text()
    assert "<li>sform is not orthonormal</li>" in page
    assert "<li>note with &lt;/script&gt;&lt;b&gt;</li>" in page
    assert page.count("</script>") == 2  # the data block and the code: nothing else closes them
    assert "earlier rating: bad: sinus cut (ana)" in page
    assert "1 with an earlier rating." in page
    assert "failed, no mask written: unreadable &lt;gzip&gt;" in page
    data = _page_data(page)
    assert data["cases"][0]["notes"][1] == "note with </script><b>"
    assert data["cases"][0]["earlier"] == "bad"


def test_batch_id_follows_inputs_and_settings() -> None:
    a = [FileResult("/d/a.nii.gz", "/m/a_mask.nii.gz", "written", threshold_mode="otsu")]
    same = [FileResult("/d/a.nii.gz", "/m/a_mask.nii.gz", "written", threshold_mode="otsu",
                       seconds=3.0, coverage_percent=1.0)]
    other = [FileResult("/d/a.nii.gz", "/m/a_mask.nii.gz", "written", threshold_mode="manual",
                        threshold_low=50.0, threshold_high=200.0)]
    assert batch_id(a) == batch_id(same)
    assert batch_id(a) != batch_id(other)
    assert re.fullmatch(r"[0-9a-f]{16}", batch_id(a))


# --- ratings files ----------------------------------------------------------------


def _write_ratings(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(RATING_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_read_ratings_and_select(tmp_path: Path) -> None:
    path = _write_ratings(tmp_path / "r.csv", [
        {"input": "/old/mount/c1.nii.gz", "output": "/m/c1_mask.nii.gz", "rating": "bad",
         "note": "cut, badly", "reviewer": "ana", "time": "2025-01-01T10:00:00Z"},
        {"input": "C:\\scans\\c2.nii.gz", "rating": "Unsure"},
        {"input": "c3.nii.gz", "rating": "good"},
        {"input": "c1.nii.gz", "rating": "bad", "note": "second look"},
        {"input": "c4.nii.gz", "rating": "", "note": "only a note"},
        {"input": "", "rating": "bad"},
    ])
    table = read_ratings(path)
    # kept by the input as written (a run matches them to its cases), in the file's order
    assert list(table) == ["/old/mount/c1.nii.gz", "C:\\scans\\c2.nii.gz", "c3.nii.gz",
                           "c1.nii.gz", "c4.nii.gz"]
    assert table["c1.nii.gz"] == Rating("c1.nii.gz", "", "bad", "second look")
    assert table["C:\\scans\\c2.nii.gz"].rating == "unsure"
    assert table["C:\\scans\\c2.nii.gz"].name == "c2.nii.gz"
    assert rated_inputs(table, ["bad"]) == ["/old/mount/c1.nii.gz", "c1.nii.gz"]
    assert rated_inputs(table, parse_rating_choice("bad, unsure")) == [
        "/old/mount/c1.nii.gz", "C:\\scans\\c2.nii.gz", "c1.nii.gz"]
    with pytest.raises(ParameterError, match="among good, bad, unsure"):
        parse_rating_choice("ugly")
    bad = _write_ratings(tmp_path / "bad.csv", [{"input": "a.nii.gz", "rating": "meh"}])
    with pytest.raises(ParameterError, match="line 2: rating 'meh' is not one of"):
        read_ratings(bad)
    (tmp_path / "nocol.csv").write_text("file,verdict\na,bad\n")
    with pytest.raises(ParameterError, match="not a ratings file: no input or rating column"):
        read_ratings(tmp_path / "nocol.csv")
    with pytest.raises(ParameterError, match="cannot read"):
        read_ratings(tmp_path / "missing.csv")


def test_read_input_list(batch: tuple[Path, list[FileResult]], tmp_path: Path) -> None:
    tmp, results = batch
    assert read_input_list(tmp / "report.csv") == [r.input for r in results]
    plain = tmp_path / "list.txt"
    plain.write_text("# cases to redo\nc1.nii.gz\n\n  /x/c3.nii.gz  \n")
    assert read_input_list(plain) == ["c1.nii.gz", "/x/c3.nii.gz"]


def test_only_and_earlier_ratings_in_a_run(tmp_path: Path) -> None:
    _cohort(tmp_path / "in")
    ratings = _write_ratings(tmp_path / "r.csv", [
        {"input": "/elsewhere/c1.nii.gz", "rating": "bad", "note": "too small",
         "reviewer": "ana"},
        {"input": "c3.nii.gz", "rating": "good"},
    ])
    results = _run(tmp_path, only=["/elsewhere/c1.nii.gz", "c3.nii.gz"], ratings=ratings)
    assert [Path(r.input).name for r in results] == ["c1.nii.gz", "c3.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "c1_mask.nii.gz", "c3_mask.nii.gz"]
    assert [(r.earlier_rating, r.earlier_note, r.earlier_reviewer) for r in results] == [
        ("bad", "too small", "ana"), ("good", "", "")]
    with (tmp_path / "report.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["earlier_rating"], r["earlier_note"]) for r in rows] == [
        ("bad", "too small"), ("good", "")]
    page = (tmp_path / "qc" / "index.html").read_text()
    assert "earlier rating: bad: too small (ana)" in page
    with pytest.raises(ParameterError, match="1 selected input"):
        _run(tmp_path, only=["c1.nii.gz", "nope.nii.gz"])
    with pytest.raises(ParameterError, match="selects no input"):
        _run(tmp_path, only=[])
    with pytest.raises(ParameterError, match="list of inputs"):
        _run(tmp_path, only="c1.nii.gz")


def test_only_and_ratings_tell_same_names_apart_in_a_nested_tree(tmp_path: Path) -> None:
    """Two ``scan.nii.gz`` in sub-folders: matched by the path relative to the input
    folder (also from a ratings file written where the data lay before), never together
    by their shared name."""
    tree = tmp_path / "in"
    for sub, size in (("a", 4), ("b", 12)):
        (tree / sub).mkdir(parents=True)
        data = np.zeros((24, 20, 20), np.int16)
        data[2 : 2 + size, 5:15, 5:15] = 100
        nib.save(nib.Nifti1Image(data, np.eye(4)), tree / sub / "scan.nii.gz")
    nib.save(nib.Nifti1Image(data, np.eye(4)), tree / "b" / "other.nii.gz")
    out = tmp_path / "out"

    def run(**options: Any) -> list[FileResult]:
        return mask_dataset(tree, out, (50, 200), 0, recursive=True, workers=1, **options)

    (only_b,) = run(only=["/old/mount/in/b/scan.nii.gz"])
    assert only_b.input == str(tree / "b" / "scan.nii.gz")
    assert only_b.mask_voxels == 12 * 10 * 10
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.nii.gz")) == [
        "b/scan_mask.nii.gz"]
    (only_a,) = run(only=["a/scan.nii.gz"])
    assert only_a.mask_voxels == 4 * 10 * 10
    (exact,) = run(only=[str(tree / "a" / "scan.nii.gz")])
    assert exact.input == str(tree / "a" / "scan.nii.gz")
    # a file name alone: fine when unambiguous, refused when it names both scans
    (other,) = run(only=["other.nii.gz"])
    assert other.input == str(tree / "b" / "other.nii.gz")
    with pytest.raises(ParameterError, match=(
            r"only= entry 'scan.nii.gz' names 2 inputs \(a/scan.nii.gz, b/scan.nii.gz\): "
            r"give its path relative to the input folder")):
        run(only=["scan.nii.gz"])
    # ratings from the QC page of the data at its old place: each scan gets its own
    ratings = _write_ratings(tmp_path / "r.csv", [
        {"input": "/old/mount/in/a/scan.nii.gz", "rating": "bad", "note": "small"},
        {"input": "/old/mount/in/b/scan.nii.gz", "rating": "good"},
        {"input": "other.nii.gz", "rating": "unsure"},
    ])
    table = read_ratings(ratings)
    assert rated_inputs(table, ["bad"]) == ["/old/mount/in/a/scan.nii.gz"]
    results = run(only=rated_inputs(table, ["bad", "good"]), ratings=table)
    assert [(r.input, r.earlier_rating, r.earlier_note) for r in results] == [
        (str(tree / "a" / "scan.nii.gz"), "bad", "small"),
        (str(tree / "b" / "scan.nii.gz"), "good", "")]
    everything = run(ratings=ratings)
    assert [(Path(r.input).relative_to(tree).as_posix(), r.earlier_rating)
            for r in everything] == [("a/scan.nii.gz", "bad"), ("b/other.nii.gz", "unsure"),
                                     ("b/scan.nii.gz", "good")]
    # a bare name naming both scans is shown on neither
    ambiguous = _write_ratings(tmp_path / "amb.csv", [{"input": "scan.nii.gz",
                                                       "rating": "bad"}])
    assert [r.earlier_rating for r in run(ratings=ambiguous)] == ["", "", ""]


def test_cli_selection_options(tmp_path: Path) -> None:
    _cohort(tmp_path / "in")
    good_only = _write_ratings(tmp_path / "r.csv", [{"input": "c1.nii.gz", "rating": "good"}])
    runner = CliRunner()
    res = runner.invoke(cli.main, ["mask", str(tmp_path / "in"), str(tmp_path / "out"),
                                   "--only-rated", "bad", str(good_only)])
    assert res.exit_code == 0, res.output
    assert f"nimask: no input rated bad in {good_only}; nothing to run" in res.stdout
    assert not (tmp_path / "out").exists()
    listing = tmp_path / "redo.txt"
    listing.write_text("c2.nii.gz\n")
    res = runner.invoke(cli.main, ["mask", str(tmp_path / "in"), str(tmp_path / "out"),
                                   "--inputs-from", str(listing), "--threshold", "50", "200",
                                   "--workers", "1", "--qc", str(tmp_path / "qc"),
                                   "--qc-layout", "mosaic"])
    assert res.exit_code == 0, res.output
    assert "nimask: 1 mask written" in res.stdout
    assert sorted(p.name for p in (tmp_path / "qc").iterdir()) == ["c2_qc.png", "index.html"]
    # a ratings file as the list: its verdicts are the earlier ratings
    rated = _write_ratings(tmp_path / "r2.csv", [{"input": "c4.nii.gz", "rating": "unsure",
                                                   "note": "blurry"}])
    res = runner.invoke(cli.main, ["mask", str(tmp_path / "in"), str(tmp_path / "out"),
                                   "--inputs-from", str(rated), "--threshold", "50", "200",
                                   "--workers", "1", "--report", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    files = json.loads((tmp_path / "r.json").read_text())["files"]
    assert [(Path(f["input"]).name, f["earlier_rating"], f["earlier_note"]) for f in files] == [
        ("c4.nii.gz", "unsure", "blurry")]
    res = runner.invoke(cli.main, ["mask", str(tmp_path / "in"), str(tmp_path / "out"),
                                   "--inputs-from", str(listing), "--only-rated", "bad",
                                   str(good_only)])
    assert res.exit_code == 2
    assert "--only-rated and --inputs-from exclude each other" in res.output
    res = runner.invoke(cli.main, ["mask", str(tmp_path / "in"), str(tmp_path / "out"),
                                   "--only-rated", "awful", str(good_only)])
    assert res.exit_code == 2
    assert "among good, bad, unsure" in res.output
    res = runner.invoke(cli.main, ["mask", str(tmp_path / "in"), str(tmp_path / "out"),
                                   "--qc-layout", "grid"])
    assert res.exit_code == 2


# --- in a real browser ------------------------------------------------------------


def _chromium() -> str | None:
    for candidate in (os.environ.get("NIMASK_CHROMIUM"), shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"{BROWSER_SKIP}: playwright is not installed (pip install -e '.[test]')")
    path = _chromium()
    if path is None:
        pytest.skip(f"{BROWSER_SKIP}: no Chromium found (apt-get install chromium, or set "
                    "NIMASK_CHROMIUM)")
    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=path, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"])
        except Exception as exc:
            pytest.skip(f"{BROWSER_SKIP}: Chromium at {path} does not start: {exc}")
        yield chromium
        chromium.close()


class _Page:
    """A page of a fresh browser context, recording console errors."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(accept_downloads=True,
                                           viewport={"width": 1400, "height": 900})
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text)
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.url = url
        self.page.goto(url)

    def shown(self, selector: str = ".card") -> list[int]:
        """data-i of the visible cards (or rows), in page order."""
        return [int(v) for v in self.page.eval_on_selector_all(
            f"{selector}[data-i]", "els => els.filter(e => !e.hidden)"
            ".map(e => e.getAttribute('data-i'))")]

    def current(self) -> int:
        return int(self.page.get_attribute(".card.current", "data-i"))

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.page.keyboard.press(key)



@pytest.mark.slow
def test_page_sorts_and_filters(browser: Any, batch: tuple[Path, list[FileResult]]) -> None:
    tmp, results = batch
    view = _Page(browser, (tmp / "qc" / "index.html").as_uri())
    page = view.page
    assert view.shown() == list(range(7))
    assert page.inner_text("#progress") == "rated 0 of 7 (good 0, bad 0, unsure 0)"
    page.select_option("#f-status", "failed")
    assert view.shown() == [6]
    page.select_option("#f-status", "")
    page.select_option("#f-flag", "touches_border")
    assert view.shown() == [5]
    page.select_option("#f-flag", "-")
    assert view.shown() == [0, 1, 2, 3, 4, 6]
    page.select_option("#f-flag", "")
    page.fill("#f-cmin", "5")
    page.fill("#f-cmax", "13")
    expected = [i for i, r in enumerate(results)
                if r.coverage_percent is not None and 5 <= r.coverage_percent <= 13]
    assert expected
    assert view.shown() == expected
    page.fill("#f-cmin", "")
    page.fill("#f-cmax", "")
    page.select_option("#f-sort", "coverage")
    page.click("#f-dir")  # descending
    by_coverage = sorted(range(6), key=lambda i: -(results[i].coverage_percent or 0))
    assert view.shown() == [*by_coverage, 6]  # no coverage: last
    assert view.shown("#table tbody tr") == [*by_coverage, 6]
    page.fill("#f-text", "c3")
    assert view.shown() == [3]
    page.fill("#f-text", "")
    # the table view by key: sorted by a click on a column's header; the grid back
    page.locator("h1").click()
    view.keys("v")
    assert page.is_visible("#table")
    assert not page.is_visible("#grid")
    page.click('th[data-sort="name"]')
    assert view.shown("#table tbody tr") == list(range(7))
    page.click('th[data-sort="name"]')
    assert view.shown("#table tbody tr") == list(range(6, -1, -1))
    view.keys("v")
    assert page.is_visible("#grid")
    assert not page.is_visible("#table")
    assert view.shown() == list(range(6, -1, -1))
    assert view.errors == []


@pytest.mark.slow
def test_keyboard_review_persists_exports_and_reruns(
    browser: Any, tmp_path: Path
) -> None:
    _cohort(tmp_path / "in")
    results = _run(tmp_path)
    view = _Page(browser, (tmp_path / "qc" / "index.html").as_uri())
    page = view.page
    page.fill("#f-reviewer", "ana")
    page.locator("h1").click()
    # j/k and arrows move the current case
    assert view.current() == 0
    view.keys("j", "j")
    assert view.current() == 2
    view.keys("k")
    assert view.current() == 1
    view.keys("ArrowDown", "ArrowDown", "ArrowUp")
    assert view.current() == 2
    # open large, rate with keys (the next case comes up after each rating)
    view.keys("k", "Enter")
    assert page.is_visible("#viewer")
    assert page.inner_text("#v-name") == "c1.nii.gz"
    assert page.get_attribute("#v-img", "src") == "c1_qc.png"
    view.keys("b")  # c1 bad -> c2
    assert page.inner_text("#v-name") == "c2.nii.gz"
    view.keys("g")  # c2 good -> c3
    view.keys("u")  # c3 unsure -> c4
    view.keys("k", "k", "k")  # back to c1: add a note
    assert page.inner_text("#v-name") == "c1.nii.gz"
    view.keys("n")
    page.keyboard.type("frontal sinus, \"cut\"")
    view.keys("Enter", "j", "j", "j", "j", "j")  # down to the failed case
    assert page.inner_text("#v-name") == "z4d.nii.gz"
    assert "failed, no mask written: 4D volume with 3 time points" in page.inner_text(
        "#v-err")
    view.keys("b", "Escape")
    assert not page.is_visible("#viewer")
    assert page.inner_text("#progress") == "rated 4 of 7 (good 1, bad 2, unsure 1)"
    # the ratings survive a reload
    page.reload()
    assert page.inner_text("#progress") == "rated 4 of 7 (good 1, bad 2, unsure 1)"
    assert page.inner_text('.card[data-i="1"] .rating') == "bad"
    assert page.inner_text('#table tr[data-i="2"] .rating') == "good"
    page.select_option("#f-rating", "bad")
    assert view.shown() == [1, 6]
    # one click exports ratings.csv
    with page.expect_download() as info:
        page.click("#export")
    download = info.value
    assert download.suggested_filename == "ratings.csv"
    exported = tmp_path / "ratings.csv"
    download.save_as(exported)
    with exported.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(RATING_COLUMNS)
    assert [(r["input"], r["output"], r["rating"], r["note"], r["reviewer"]) for r in rows] == [
        (results[1].input, results[1].output, "bad", 'frontal sinus, "cut"', "ana"),
        (results[2].input, results[2].output, "good", "", "ana"),
        (results[3].input, results[3].output, "unsure", "", "ana"),
        (results[6].input, results[6].output, "bad", "", "ana"),
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", r["time"]) for r in rows)
    assert view.errors == []
    # feed the verdicts back: only the bad cases run, with another threshold
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    proc = subprocess.run(
        [sys.executable, "-m", "nimask", "mask", str(tmp_path / "in"), str(tmp_path / "out"),
         "--threshold", "60", "200", "--closing-radius", "0", "--workers", "1",
         "--report", str(tmp_path / "rerun.csv"), "--qc", str(tmp_path / "qc2"),
         "--only-rated", "bad", str(exported)],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 1, proc.stderr  # z4d fails again
    assert "nimask: 1 mask written, 0 skipped, 1 failed" in proc.stdout
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    assert [n for n in sorted(after) if after[n] != before.get(n)] == ["c1_mask.nii.gz"]
    with (tmp_path / "rerun.csv").open() as fh:
        rerun = list(csv.DictReader(fh))
    assert [(Path(r["input"]).name, r["threshold_low"], r["earlier_rating"], r["earlier_note"])
            for r in rerun] == [("c1.nii.gz", "60.0", "bad", 'frontal sinus, "cut"'),
                                ("z4d.nii.gz", "", "bad", "")]
    second = (tmp_path / "qc2" / "index.html").read_text()
    assert html.escape('earlier rating: bad: frontal sinus, "cut" (ana)') in second
    # the new page is another batch: it starts unrated, with the earlier verdicts shown
    again = _Page(browser, (tmp_path / "qc2" / "index.html").as_uri())
    assert again.page.inner_text("#progress") == "rated 0 of 2 (good 0, bad 0, unsure 0)"
    again.keys("Enter")
    assert again.page.inner_text("#v-earlier") == 'earlier rating: bad: frontal sinus, "cut" (ana)'
    assert again.errors == []


@pytest.mark.slow
def test_copied_folder_still_shows_its_pictures(browser: Any, batch: tuple[Path, list[FileResult]],
                                                tmp_path: Path) -> None:
    tmp, _ = batch
    copy = tmp_path / "elsewhere" / "qc"
    shutil.copytree(tmp / "qc", copy)
    view = _Page(browser, (copy / "index.html").as_uri())
    view.page.wait_for_function(
        "document.querySelector('.card[data-i=\"0\"] img').naturalWidth > 0")
    width = view.page.eval_on_selector('.card[data-i="0"] img', "img => img.naturalWidth")
    assert width > 500
    assert view.errors == []
