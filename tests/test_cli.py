"""The ``nimask`` command: options, exit codes, messages, and parity with the Python API."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from nimask import __version__, cli, mask_dataset, sample_path

SUMMARY = re.compile(
    r"^nimask: (\d+) masks? written, (\d+) skipped, (\d+) failed, (\d+) ignored in [0-9.]+ s; "
    r"(\d+) flagged$",
    re.MULTILINE,
)


def _ct_like(folder: Path, names: tuple[str, ...] = ("a.nii.gz", "b.nii.gz")) -> Path:
    """Small int16 'CT' volumes: air -1000, a head of 40 HU, a skull of 1000 HU."""
    folder.mkdir(parents=True, exist_ok=True)
    z, y, x = np.mgrid[0:14, 0:16, 0:18]
    for i, name in enumerate(names):
        r = np.sqrt((x - 9) ** 2 + (y - 8) ** 2 + ((z - 7) * 1.5) ** 2)
        data = np.full(r.shape, -1000, np.int16)
        data[r < 6 + i * 0.5] = 1000
        data[r < 4.5 + i * 0.5] = 40
        nib.save(nib.Nifti1Image(data.T.copy(), np.diag([1.0, 1.0, 1.5, 1.0])), folder / name)
    return folder


def _bad(folder: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), folder / "z4d.nii.gz")


def _invoke(args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli.main, args)


def test_version_and_help() -> None:
    res = _invoke(["--version"])
    assert res.exit_code == 0
    assert res.stdout == f"nimask, version {__version__}\n"
    res = _invoke(["--help"])
    assert res.exit_code == 0
    assert "nimask demo nimask-demo/" in res.stdout
    for command in ("mask", "demo"):
        res = _invoke([command, "-h"])
        assert res.exit_code == 0
        assert f"nimask {command} " in res.stdout
    assert "--threshold -500 3000" in _invoke(["mask", "--help"]).stdout


def test_mask_with_every_option_json(tmp_path: Path) -> None:
    src = _ct_like(tmp_path / "in")
    res = _invoke([
        "mask", str(src), str(tmp_path / "out"), "--threshold", "-500", "3000",
        "--closing-radius", "1", "--report", str(tmp_path / "r.json"),
        "--qc", str(tmp_path / "qc"), "--workers", "1", "--no-progress",
    ])
    assert res.exit_code == 0, res.output
    assert SUMMARY.search(res.stdout).groups() == ("2", "0", "0", "0", "0")  # type: ignore[union-attr]
    assert f"masks:  {tmp_path / 'out'}" in res.stdout
    assert f"report: {tmp_path / 'r.json'}" in res.stdout
    assert f"QC:     {tmp_path / 'qc' / 'index.html'}" in res.stdout
    assert res.stderr == ""
    files = json.loads((tmp_path / "r.json").read_text())["files"]
    assert [(f["threshold_low"], f["threshold_high"], f["closing_radius"]) for f in files] == [
        (-500.0, 3000.0, 1)] * 2
    assert sorted(p.name for p in (tmp_path / "qc").iterdir()) == [
        "a_qc.png", "b_qc.png", "index.html"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_mask.nii.gz", "b_mask.nii.gz"]


def test_cli_and_api_masks_are_byte_identical(tmp_path: Path) -> None:
    src = _ct_like(tmp_path / "in")
    res = _invoke(["mask", str(src), str(tmp_path / "cli"), "--threshold", "-500", "3000",
                   "--closing-radius", "2", "-q"])
    assert res.exit_code == 0
    mask_dataset(src, tmp_path / "api", (-500, 3000), 2)
    res = _invoke(["mask", str(src), str(tmp_path / "cli_otsu"), "-q"])
    assert res.exit_code == 0
    mask_dataset(src, tmp_path / "api_otsu")
    for cli_dir, api_dir in (("cli", "api"), ("cli_otsu", "api_otsu")):
        for name in ("a_mask.nii.gz", "b_mask.nii.gz"):
            assert (tmp_path / cli_dir / name).read_bytes() == (
                tmp_path / api_dir / name).read_bytes()


def test_failed_file_exit_1_one_line_error(tmp_path: Path) -> None:
    src = _ct_like(tmp_path / "in")
    _bad(src)
    res = _invoke(["mask", str(src), str(tmp_path / "out"), "--report", str(tmp_path / "r.csv")])
    assert res.exit_code == 1
    assert res.stderr == (
        "error: z4d.nii.gz: failed, no mask written: 4D volume with 2 time points "
        "(shape [4, 4, 4, 2]); nimask masks 3D volumes: split the series first\n"
    )
    assert "Traceback" not in res.output
    assert SUMMARY.search(res.stdout).groups()[:3] == ("2", "0", "1")  # type: ignore[union-attr]
    with open(tmp_path / "r.csv", newline="") as fh:
        assert [r["status"] for r in csv.DictReader(fh)] == ["written", "written", "failed"]
    assert (tmp_path / "out" / "a_mask.nii.gz").is_file()


def test_quiet_prints_nothing_but_errors(tmp_path: Path) -> None:
    src = _ct_like(tmp_path / "in")
    res = _invoke(["mask", str(src), str(tmp_path / "out"), "--quiet"])
    assert (res.exit_code, res.stdout, res.stderr) == (0, "", "")
    _bad(src)
    res = _invoke(["mask", str(src), str(tmp_path / "out2"), "-q"])
    assert res.exit_code == 1
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: z4d.nii.gz: failed, no mask written: 4D volume")


def test_debug_is_verbose(tmp_path: Path) -> None:
    src = _ct_like(tmp_path / "in")
    res = _invoke(["mask", str(src), str(tmp_path / "out"), "-v"])
    assert res.exit_code == 0
    assert "info: a.nii.gz -> a_mask.nii.gz (written)" in res.stderr


def test_flags_in_summary(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    data = np.zeros((10, 10, 10), np.int16)
    data[0:4, 2:6, 2:6] = 100  # touches the x- face
    nib.save(nib.Nifti1Image(data, np.eye(4)), src / "edge.nii.gz")
    res = _invoke(["mask", str(src), str(tmp_path / "out"), "--threshold", "50", "200"])
    assert res.exit_code == 0
    assert SUMMARY.search(res.stdout).groups() == ("1", "0", "0", "0", "1")  # type: ignore[union-attr]
    assert "  flagged edge.nii.gz: touches_border\n" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["mask", "{tmp}/missing", "{tmp}/out"], "Directory '{tmp}/missing' does not exist"),
        (["mask", "{tmp}/empty", "{tmp}/out"], "no .nii.gz files in input folder"),
        (["mask", "{tmp}/in", "{tmp}/out", "--threshold", "10", "5"], "low must be <= high"),
        (["mask", "{tmp}/in", "{tmp}/out", "--threshold", "10"], "requires 2 arguments"),
        (["mask", "{tmp}/in", "{tmp}/out", "--closing-radius", "-1"], "-1 is not in the range"),
        (["mask", "{tmp}/in", "{tmp}/out", "--report", "{tmp}/r.txt"], "must end in .csv or .json"),
        (["mask", "{tmp}/in", "{tmp}/out", "--workers", "-2"], "-2 is not in the range"),
        (["mask", "{tmp}/in", "{tmp}/file.txt"], "Directory '{tmp}/file.txt' is a file"),
        (["mask", "{tmp}/in"], "Missing argument 'OUTPUT_DIR'"),
        (["bogus"], "No such command 'bogus'"),
        (["mask", "{tmp}/in", "{tmp}/out", "--closing-radius", "x"], "Usage: nimask mask"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    _ct_like(tmp_path / "in", ("a.nii.gz",))
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    res = _invoke([a.format(tmp=tmp_path) for a in args])
    assert res.exit_code == 2
    assert message.format(tmp=tmp_path) in " ".join(res.stderr.split())
    assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_unexpected_error_one_line_unless_debug(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cli, "mask_dataset", boom)
    src = _ct_like(tmp_path / "in", ("a.nii.gz",))
    res = _invoke(["mask", str(src), str(tmp_path / "out")])
    assert res.exit_code == 1
    assert res.stderr == "error: RuntimeError: disk on fire (run with --debug for details)\n"
    res = _invoke(["mask", str(src), str(tmp_path / "out"), "--debug"])
    assert isinstance(res.exception, RuntimeError)


def test_logger_is_restored_after_a_run(tmp_path: Path) -> None:
    import logging

    logger = logging.getLogger("nimask")
    before = (logger.level, logger.propagate, list(logger.handlers))
    _invoke(["mask", str(_ct_like(tmp_path / "in", ("a.nii.gz",))), str(tmp_path / "o"), "-q"])
    assert (logger.level, logger.propagate, list(logger.handlers)) == before


def test_demo(tmp_path: Path) -> None:
    res = _invoke(["demo", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert SUMMARY.search(res.stdout).groups()[:3] == ("1", "0", "0")  # type: ignore[union-attr]
    assert (tmp_path / "d" / "masks" / "sample_t1_mask.nii.gz").is_file()
    assert (tmp_path / "d" / "qc" / "sample_t1_qc.png").is_file()
    assert (tmp_path / "d" / "qc" / "index.html").is_file()
    with open(tmp_path / "d" / "report.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert Path(row["input"]) == sample_path()
    assert row["status"] == "written"
    assert row["threshold_mode"] == "otsu"


@pytest.mark.slow
def test_workers_match_in_process(tmp_path: Path) -> None:
    src = _ct_like(tmp_path / "in", ("a.nii.gz", "b.nii.gz", "c.nii.gz"))
    res = _invoke(["mask", str(src), str(tmp_path / "w2"), "--workers", "2", "--qc",
                   str(tmp_path / "qc")])
    assert res.exit_code == 0, res.output
    res0 = _invoke(["mask", str(src), str(tmp_path / "w0"), "--workers", "0", "-q"])
    assert res0.exit_code == 0
    mask_dataset(src, tmp_path / "w1")
    for name in ("a", "b", "c"):
        ref = (tmp_path / "w1" / f"{name}_mask.nii.gz").read_bytes()
        assert (tmp_path / "w2" / f"{name}_mask.nii.gz").read_bytes() == ref
        assert (tmp_path / "w0" / f"{name}_mask.nii.gz").read_bytes() == ref
        assert (tmp_path / "qc" / f"{name}_qc.png").is_file()


def _script() -> str:
    found = shutil.which("nimask", path=str(Path(sys.executable).parent)) or shutil.which("nimask")
    if found is None:
        pytest.skip("the nimask console script is not installed")
    return found


@pytest.mark.slow
def test_subprocess_python_m_and_script(tmp_path: Path) -> None:
    src = _ct_like(tmp_path / "in")
    _bad(src)
    proc = subprocess.run(
        [sys.executable, "-m", "nimask", "mask", str(src), str(tmp_path / "m"),
         "--threshold", "-500", "3000"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 1
    assert SUMMARY.search(proc.stdout).groups()[:3] == ("2", "0", "1")  # type: ignore[union-attr]
    assert proc.stderr.startswith("error: z4d.nii.gz: failed, no mask written: 4D volume")
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([_script(), "demo", str(tmp_path / "demo")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "demo" / "qc" / "index.html").is_file()
    proc = subprocess.run([_script(), "mask", str(tmp_path / "nope"), str(tmp_path / "o")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_real_data_3d_written_4d_failed(tmp_path: Path, shared_data: Path) -> None:
    data = shared_data
    src = tmp_path / "in"
    src.mkdir()
    names = ["itk_t1_2x2x3mm.nii.gz", "invesalius_ct_head_hu.nii.gz",
             "bad_4d_singleton_dipy_S0_10slices.nii.gz", "bad_4d_fmri_example4d.nii.gz"]
    for name in names:
        shutil.copy(data / name, src / name)
    res = _invoke(["mask", str(src), str(tmp_path / "out"), "--threshold", "-500", "3000",
                   "--report", str(tmp_path / "r.csv"), "--qc", str(tmp_path / "qc")])
    assert res.exit_code == 1
    assert SUMMARY.search(res.stdout).groups()[:3] == ("3", "0", "1")  # type: ignore[union-attr]
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: bad_4d_fmri_example4d.nii.gz: failed, no mask written: 4D volume with 2 "
        "time points (shape [128, 96, 24, 2]); nimask masks 3D volumes: split the series first"
    ]
    assert "Traceback" not in res.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(n.replace(".nii.gz", "_mask.nii.gz") for n in names
                             if n != "bad_4d_fmri_example4d.nii.gz")
    with open(tmp_path / "r.csv", newline="") as fh:
        rows = {Path(r["input"]).name: r for r in csv.DictReader(fh)}
    assert rows["bad_4d_fmri_example4d.nii.gz"]["status"] == "failed"
    ct = rows["invesalius_ct_head_hu.nii.gz"]
    # the head holder arc lies apart from the head: two more large components
    assert "multiple_large_components" in ct["flags"].split(";")
    assert float(ct["volume_ml"]) == pytest.approx(
        int(ct["mask_voxels"]) * 0.957 * 0.957 * 1.5 / 1000, rel=1e-3)
    assert len(list((tmp_path / "qc").glob("*_qc.png"))) == 3
