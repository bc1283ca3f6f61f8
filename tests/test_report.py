"""Per-file statistics, cohort flags and the CSV/JSON report, on hand-checkable phantoms."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from nimask import generate_brain_mask_dataset, mask_dataset
from nimask.evidence.report import (
    LARGE_COMPONENT_FRACTION,
    REPORT_COLUMNS,
    flag_cohort,
    mask_statistics,
    report_format,
    robust_z,
    write_report,
)
from nimask.exceptions import ParameterError
from nimask.io.nifti import TEMP_MARKER
from nimask.records import FileResult

REPO = Path(__file__).resolve().parents[1]


def _mask(array_zyx: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
          ) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx.astype(np.uint8))
    image.SetSpacing(spacing)
    return image


def _two_boxes() -> np.ndarray:
    """20 x 20 x 10 grid (x, y, z): a 5x5x4 box (100 voxels) and a 2x2x2 box (8 voxels)."""
    a = np.zeros((10, 20, 20), np.uint8)  # z, y, x
    a[2:6, 5:10, 5:10] = 1
    a[7:9, 15:17, 15:17] = 1
    return a


def test_statistics_of_two_boxes_are_exact() -> None:
    stats = mask_statistics(_mask(_two_boxes(), (1.0, 2.0, 3.0)))
    assert stats.mask_voxels == 108
    assert stats.total_voxels == 4000
    assert stats.coverage_percent == pytest.approx(2.7)
    assert stats.volume_ml == pytest.approx(108 * 6 / 1000)  # 6 mm^3 voxels
    assert stats.components == 2
    assert stats.largest_component_share == pytest.approx(100 / 108)
    assert stats.large_components == 2  # 8 voxels >= 1 % of 108
    assert stats.border_faces == ()
    assert not stats.touches_border
    assert stats.centroid_index == pytest.approx(((100 * 7 + 8 * 15.5) / 108,) * 2
                                                 + ((100 * 3.5 + 8 * 7.5) / 108,))


def test_small_component_is_not_large() -> None:
    a = np.zeros((30, 30, 30), np.uint8)
    a[0:20, 0:20, 0:20] = 1  # 8000 voxels
    a[25, 25, 25] = 1  # 1 voxel < 1 % of 8001
    stats = mask_statistics(_mask(a))
    assert stats.components == 2
    assert stats.large_components == 1
    assert LARGE_COMPONENT_FRACTION * 8001 > 1
    assert stats.border_faces == ("x-", "y-", "z-")


def test_components_use_face_connectivity() -> None:
    a = np.zeros((5, 5, 5), np.uint8)
    a[1, 1, 1] = 1
    a[2, 2, 1] = 1  # shares an edge only: two components with face connectivity
    a[2, 2, 2] = 1  # shares a face with the previous one
    stats = mask_statistics(_mask(a))
    assert stats.components == 2
    assert stats.largest_component_share == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("index_zyx", "face"),
    [((3, 3, 0), "x-"), ((3, 3, 6), "x+"), ((3, 0, 3), "y-"), ((3, 5, 3), "y+"),
     ((0, 3, 3), "z-"), ((4, 3, 3), "z+")],
)
def test_each_border_face_is_named(index_zyx: tuple[int, int, int], face: str) -> None:
    a = np.zeros((5, 6, 7), np.uint8)  # z=5, y=6, x=7
    a[index_zyx] = 1
    stats = mask_statistics(_mask(a))
    assert stats.border_faces == (face,)
    assert stats.touches_border


def test_empty_and_full_masks() -> None:
    empty = mask_statistics(_mask(np.zeros((4, 5, 6), np.uint8), (2.0, 2.0, 2.0)))
    assert (empty.mask_voxels, empty.components, empty.largest_component_share) == (0, 0, None)
    assert empty.volume_ml == 0.0
    assert empty.centroid_index == (2.5, 2.0, 1.5)  # grid centre
    full = mask_statistics(_mask(np.ones((4, 5, 6), np.uint8), (2.0, 2.0, 2.0)))
    assert full.coverage_percent == 100.0
    assert full.volume_ml == pytest.approx(120 * 8 / 1000)
    assert full.border_faces == ("x-", "x+", "y-", "y+", "z-", "z+")


def test_robust_z() -> None:
    # median 12, |dev| = 2 1 0 1 18, MAD = 1
    assert robust_z([10, 11, 12, 13, 30]) == pytest.approx(
        [0.6745 * d for d in (-2, -1, 0, 1, 18)])
    # MAD 0 -> MeanAD fallback: mean |dev| = 40/5 = 8
    z = robust_z([10, 10, 10, 10, 50])
    assert z[-1] == pytest.approx(40 / (1.2533 * 8))
    assert z[:4] == [0.0] * 4
    assert robust_z([5, 5, 5]) == [0.0, 0.0, 0.0]
    assert robust_z([]) == []


def _res(name: str, coverage: float | None, **kw: object) -> FileResult:
    res = FileResult(input=name, output=name + "_mask", status=str(kw.pop("status", "written")))
    res.coverage_percent = coverage
    res.mask_voxels = kw.pop("mask_voxels", None if coverage is None else 1000)  # type: ignore[assignment]
    res.touches_border = bool(kw.pop("touches_border", False))
    res.large_components = kw.pop("large_components", 1)  # type: ignore[assignment]
    assert not kw
    return res


def test_flags_per_file_and_cohort() -> None:
    results = [
        _res("a", 30.0), _res("b", 31.0), _res("c", 29.0), _res("d", 30.5),
        _res("e", 96.0),  # almost full and far from the cohort
        _res("f", 0.0, mask_voxels=0),
        _res("g", 0.5, touches_border=True, large_components=2),
        _res("h", None, status="failed"),
    ]
    flagged = flag_cohort(results)
    flags = {r.input: r.flags for r in results}
    assert flags == {
        "a": [], "b": [], "c": [], "d": [],
        "e": ["almost_full", "coverage_outlier"],
        "f": ["empty", "coverage_outlier"],
        "g": ["almost_empty", "coverage_outlier", "touches_border",
              "multiple_large_components"],
        "h": [],
    }
    assert flagged == 3
    # 7 measured files: median 30, |dev| = 0 1 1 .5 66 30 29.5 -> MAD 1
    assert results[4].coverage_z == pytest.approx(0.6745 * 66)
    assert results[7].coverage_z is None


def test_no_coverage_outlier_under_five_files() -> None:
    results = [_res("a", 30.0), _res("b", 31.0), _res("c", 29.0), _res("d", 90.0)]
    assert flag_cohort(results) == 0
    assert all(r.coverage_z is None and r.flags == [] for r in results)


def test_report_format_by_suffix() -> None:
    assert report_format("x/r.CSV") == "csv"
    assert report_format(Path("r.json")) == "json"
    with pytest.raises(ParameterError, match=r"\.csv or \.json"):
        report_format("r.txt")


def _write_phantoms(folder: Path) -> None:
    """Two int16 phantoms (values 0/1) and a 4D file that must fail."""
    folder.mkdir()
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(_two_boxes().T.astype(np.int16), affine), folder / "boxes.nii.gz")
    edge = np.zeros((8, 8, 8), np.int16)
    edge[0:3, 2:5, 2:5] = 1  # touches x- ; 27 voxels
    nib.save(nib.Nifti1Image(edge, np.diag([2.0, 2.0, 2.0, 1.0])), folder / "edge.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 2), np.int16), np.eye(4)), folder / "four_d.nii.gz")


def test_mask_dataset_csv_report(tmp_path: Path) -> None:
    _write_phantoms(tmp_path / "in")
    report = tmp_path / "sub" / "report.csv"
    results = mask_dataset(tmp_path / "in", tmp_path / "out", (0.5, 1.5), 0, report=report)
    assert [Path(r.input).name for r in results] == ["boxes.nii.gz", "edge.nii.gz", "four_d.nii.gz"]
    boxes, edge, four_d = results
    assert (boxes.mask_voxels, boxes.components, boxes.large_components) == (108, 2, 2)
    assert boxes.volume_ml == pytest.approx(0.648)
    assert boxes.flags == ["multiple_large_components"]
    assert (edge.mask_voxels, edge.border_faces, edge.touches_border) == (27, ["x-"], True)
    assert edge.volume_ml == pytest.approx(27 * 8 / 1000)
    assert edge.coverage_percent == pytest.approx(100 * 27 / 512)
    assert edge.flags == ["touches_border"]
    assert four_d.status == "failed"
    assert four_d.flags == []
    assert four_d.mask_voxels is None

    with open(report, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[: len(REPORT_COLUMNS)] == list(REPORT_COLUMNS)
    assert [r["status"] for r in rows] == ["written", "written", "failed"]
    assert rows[0]["mask_voxels"] == "108"
    assert float(rows[0]["volume_ml"]) == pytest.approx(0.648)
    assert rows[0]["components"] == "2"
    assert rows[0]["threshold_low"] == "1.0"
    assert rows[0]["threshold_high"] == "1.0"
    assert rows[1]["border_faces"] == "x-"
    assert rows[1]["flags"] == "touches_border"
    assert rows[2]["mask_voxels"] == ""
    assert "4D volume with 2 time points" in rows[2]["error"]
    assert not [p for p in report.parent.iterdir() if TEMP_MARKER in p.name]


def test_generate_brain_mask_dataset_json_report(tmp_path: Path) -> None:
    _write_phantoms(tmp_path / "in")
    report = tmp_path / "report.json"
    assert generate_brain_mask_dataset(
        tmp_path / "in", tmp_path / "out", (0.5, 1.5), 0, report=report) is None
    doc = json.loads(report.read_text())
    files = doc["files"]
    assert [Path(f["input"]).name for f in files] == [
        "boxes.nii.gz", "edge.nii.gz", "four_d.nii.gz"]
    assert files[0]["mask_voxels"] == 108
    assert files[0]["largest_component_share"] == round(100 / 108, 4)
    assert files[0]["threshold_mode"] == "manual"
    assert files[1]["touches_border"] is True
    assert files[2]["status"] == "failed"
    assert files[2]["coverage_percent"] is None
    assert doc["flags"] == {
        "touches_border": [files[1]["input"]],
        "multiple_large_components": [files[0]["input"]],
    }


def test_bad_report_suffix_fails_before_any_work(tmp_path: Path) -> None:
    _write_phantoms(tmp_path / "in")
    with pytest.raises(ParameterError, match="report must end in"):
        mask_dataset(tmp_path / "in", tmp_path / "out", report=tmp_path / "r.xlsx")
    assert not (tmp_path / "out").exists()


def test_write_report_non_finite_threshold_is_valid_json(tmp_path: Path) -> None:
    res = FileResult(input="a.nii.gz", output="a_mask.nii.gz", status="written",
                     threshold_low=-math.inf, threshold_high=3.0)
    write_report([res], tmp_path / "r.json")
    files = json.loads((tmp_path / "r.json").read_text())["files"]
    assert files[0]["threshold_low"] == "-inf"
    assert files[0]["threshold_high"] == 3.0


def test_report_columns_are_every_field_of_file_result() -> None:
    # Every field is a column, listed once (the page's table is checked in test_docs.py).
    fields = [f.name for f in dataclasses.fields(FileResult)]
    assert sorted(REPORT_COLUMNS) == sorted(fields)
    assert len(set(REPORT_COLUMNS)) == len(REPORT_COLUMNS)
    page = (REPO / "docs" / "guide" / "reports-and-flags.md").read_text(encoding="utf-8")
    for name in fields:
        assert f"| `{name}` |" in page


def test_report_rounds_measured_floats_and_serialises_notes_unambiguously(
    tmp_path: Path,
) -> None:
    notes = ["scl_slope applied; values in HU", 'quote " and, comma', "a\\b"]
    res = FileResult(input="a.nii.gz", output="a_mask.nii.gz", status="written",
                     threshold_low=0.30000000000000004, threshold_high=1 / 3,
                     otsu_threshold=12.345678901234567, seconds=0.31576323100000536,
                     coverage_percent=12.345678901, coverage_z=-1.23456789, volume_ml=1.2345678,
                     largest_component_share=0.987654321, notes=notes,
                     flags=["touches_border", "almost_full"], border_faces=["x-", "z+"])
    write_report([res], tmp_path / "r.csv")
    write_report([res], tmp_path / "r.json")
    with open(tmp_path / "r.csv", newline="", encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["seconds"] == "0.316"
    assert row["coverage_percent"] == "12.3457"
    assert row["coverage_z"] == "-1.235"
    assert row["volume_ml"] == "1.235"
    assert row["largest_component_share"] == "0.9877"
    # Thresholds are exact, never rounded.
    assert float(row["threshold_low"]) == 0.30000000000000004
    assert float(row["threshold_high"]) == 1 / 3
    assert float(row["otsu_threshold"]) == 12.345678901234567
    assert json.loads(row["notes"]) == notes
    assert row["flags"].split(";") == ["touches_border", "almost_full"]
    assert row["border_faces"].split(";") == ["x-", "z+"]
    (record,) = json.loads((tmp_path / "r.json").read_text())["files"]
    assert (record["seconds"], record["coverage_percent"]) == (0.316, 12.3457)
    assert record["notes"] == notes
    assert record["threshold_low"] == 0.30000000000000004


def test_failed_rows_have_no_output(tmp_path: Path) -> None:
    _write_phantoms(tmp_path / "in")
    report = tmp_path / "r.csv"
    results = mask_dataset(tmp_path / "in", tmp_path / "out", (0.5, 1.5), 0, report=report)
    assert [(r.status, bool(r.output)) for r in results] == [
        ("written", True), ("written", True), ("failed", False)]
    with open(report, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[2]["status"] == "failed"
    assert rows[2]["output"] == ""
    assert rows[0]["output"] == str(tmp_path / "out" / "boxes_mask.nii.gz")
