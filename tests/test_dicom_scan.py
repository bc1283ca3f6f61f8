"""Finding DICOM series in a tree: what is kept, what is skipped and why; names; sidecars."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _dicom_fixtures import Slice, new_uid, write_series

from nimask.exceptions import InputFolderError
from nimask.io.dicom import (
    find_series,
    series_output_stem,
    series_sidecar,
    unique_output_stems,
)

pydicom = pytest.importorskip("pydicom")

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _slices(n: int = 4, value: int = 100) -> list[Slice]:
    array = np.full((6, 8), value, dtype=np.int16)
    return [Slice(array, (0.0, 0.0, 2.0 * i), AXIAL, (1.0, 1.0)) for i in range(n)]


def _basic_text_sr(path: Path, series_uid: str) -> None:
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = new_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = pydicom.dataset.FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = new_uid()
    ds.Modality = "SR"
    ds.SeriesDescription = "dose report"
    ds.save_as(path, enforce_file_format=True)


def test_tree_sorted_into_series_skipped_and_not_dicom(tmp_path: Path) -> None:
    root = tmp_path / "export"
    write_series(root / "study" / "ct", _slices(), description="head plain")
    write_series(root / "study" / "scout", _slices(2),
                 tags={"0008|0008": "ORIGINAL\\PRIMARY\\LOCALIZER"}, description="topo")
    write_series(root / "study" / "aa", _slices(3), modality="MR", description="AAHead_Scout")
    sr_uid = new_uid()
    _basic_text_sr(root / "study" / "sr.dcm", sr_uid)
    (root / "README.txt").write_text("exported by a PACS\n")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / ".hidden").mkdir()
    write_series(root / ".hidden", _slices(), description="hidden series")
    truncated = root / "study" / "broken.dcm"
    truncated.write_bytes((root / "study" / "ct" / "IM0001.dcm").read_bytes()[:300])
    scan = find_series(root)
    assert [s.series_description for s in scan.series] == ["head plain"]
    assert scan.series[0].check.action == "read"
    assert sorted(s.note for s in scan.skipped) == [
        "skipped AAHead_Scout (3 file(s)): a localizer/scout (SeriesDescription 'AAHead_Scout')",
        "skipped dose report (1 file(s)): not a CT, MR or PET image (Basic Text SR Storage)",
        "skipped topo (2 file(s)): a localizer/scout (ImageType LOCALIZER)",
    ]
    assert scan.not_dicom == [root / "README.txt"]
    assert [p for p, _ in scan.unreadable] == [truncated]
    assert len(scan.notes) == 5
    assert scan.notes[-1] == "1 file(s) that are not DICOM ignored"


def test_series_records_survive_pickling(tmp_path: Path) -> None:
    """Worker processes receive series records: they pickle and compare equal."""
    write_series(tmp_path / "s", _slices(), description="head")
    (series,) = find_series(tmp_path / "s").series
    copy = pickle.loads(pickle.dumps(series))
    assert copy == series
    assert copy.check == series.check


def test_series_without_geometry_refused(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "s", _slices())
    ds = pydicom.dcmread(paths[2])
    del ds.ImagePositionPatient
    ds.save_as(paths[2])
    (series,) = find_series(tmp_path / "s").series
    assert series.check.flags == ("no_geometry",)
    assert series.check.reason == (
        "1 image(s) lack ImagePositionPatient, ImageOrientationPatient, PixelSpacing, "
        "Rows or Columns (e.g. IM0003.dcm)"
    )


def test_single_file_and_list_of_sources(tmp_path: Path) -> None:
    a = write_series(tmp_path / "a", _slices(), description="A")
    write_series(tmp_path / "b", _slices(), description="B")
    (one,) = find_series(a[0]).series
    assert one.check.reason == "a single 2D image, not a volume"
    both = find_series([tmp_path / "a", tmp_path / "b"])
    assert [s.series_description for s in both.series] == ["A", "B"]
    assert both.root == tmp_path
    with pytest.raises(InputFolderError, match="DICOM input does not exist"):
        find_series(tmp_path / "nope")


def test_one_series_spread_over_folders_is_one_series(tmp_path: Path) -> None:
    uid = new_uid()
    slices = _slices(6)
    write_series(tmp_path / "part1", slices[:3], series_uid=uid)
    write_series(tmp_path / "part2", slices[3:], series_uid=uid, names=["x1", "x2", "x3"])
    (series,) = find_series(tmp_path).series
    assert len(series.files) == 6
    assert series.folder == tmp_path
    assert series.check.action == "read"


def test_output_stems_are_safe_readable_and_stable(tmp_path: Path) -> None:
    write_series(tmp_path / "s", _slices(), patient_id="12343@hucheng", study_date="20220711",
                 series_number=6, description="T1 MPRAGE / sag")
    (series,) = find_series(tmp_path / "s").series
    assert series_output_stem(series) == "12343_hucheng_20220711_6_T1_MPRAGE_sag"
    series = replace(series, series_description="T1 MPRAGE / sag: Kopf ä?*")
    assert series_output_stem(series) == "12343_hucheng_20220711_6_T1_MPRAGE_sag_Kopf_a"
    bare = replace(series, patient_id="", study_date="", series_number=None,
                   series_description="")
    assert series_output_stem(bare) == "noid_nodate_nonumber_CT"
    long = replace(series, series_description="x" * 200)
    assert len(series_output_stem(long)) == len("12343_hucheng_20220711_6_") + 64


def test_clashing_stems_get_a_uid_tag_in_any_order(tmp_path: Path) -> None:
    for name in ("one", "two"):
        write_series(tmp_path / name, _slices(), description="T1")
    write_series(tmp_path / "three", _slices(), description="t1")  # clashes ignoring case
    write_series(tmp_path / "four", _slices(), description="T2")
    series = find_series(tmp_path).series
    stems = unique_output_stems(series)
    assert len(set(stems)) == 4
    assert "PAT01_20240131_7_T2" in stems
    tagged = [s for s in stems if not s.endswith("T2")]
    assert all(len(s.rsplit("_", 1)[1]) == 8 for s in tagged)
    by_uid = dict(zip((s.series_instance_uid for s in series), stems, strict=True))
    reversed_stems = unique_output_stems(series[::-1])
    assert dict(zip((s.series_instance_uid for s in series[::-1]), reversed_stems,
                    strict=True)) == by_uid
    with pytest.raises(ValueError, match="appears more than once"):
        unique_output_stems([series[0], series[0]])


def test_sidecar(tmp_path: Path) -> None:
    write_series(tmp_path / "s", _slices(5), description="head")
    (series,) = find_series(tmp_path / "s").series
    sidecar = series_sidecar(series, {"threshold": [-200, 3000], "closing_radius": 2},
                             notes=["resampled onto a regular grid"])
    assert json.loads(json.dumps(sidecar)) == sidecar
    assert sidecar["StudyInstanceUID"] == series.study_instance_uid
    assert sidecar["SeriesInstanceUID"] == series.series_instance_uid
    assert sidecar["SeriesDescription"] == "head"
    assert sidecar["SourceFiles"] == 5
    assert sidecar["SourceImages"] == 5
    assert sidecar["Parameters"] == {"threshold": [-200, 3000], "closing_radius": 2}
    assert sidecar["Notes"] == ["resampled onto a regular grid"]
    assert sidecar["GeneratedBy"]["Name"] == "nimask"


def test_missing_pydicom_names_the_package(tmp_path: Path) -> None:
    """Without pydicom (import blocked in a fresh interpreter) the error says what to install."""
    code = (
        "import sys; sys.modules['pydicom'] = None\n"
        "from nimask.io.dicom import find_series\n"
        "from nimask.exceptions import MissingDependencyError\n"
        "try:\n    find_series(sys.argv[1])\n"
        "except MissingDependencyError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                          check=True)
    assert done.stdout.strip() == (
        "MissingDependencyError reading DICOM needs the package 'pydicom', a requirement of "
        "nimask that is not installed here: pip install pydicom"
    )
