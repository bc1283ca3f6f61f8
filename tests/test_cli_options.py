"""CLI options added with the performance, reliability, preset and cluster work."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner

import nimask.batch.cluster
from nimask import cli, mask_dataset
from nimask.data.phantoms import ct_head_phantom


def _ct_folder(folder: Path, count: int = 2, shape: tuple[int, int, int] = (40, 36, 20)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        tmp = folder / "tmp.nii.gz"
        sitk.WriteImage(ct_head_phantom(shape, spacing=(0.9, 0.9, 3.0), seed=i), str(tmp))
        tmp.rename(folder / f"ct_{i:02d}.nii.gz")
    return folder


def _invoke(args: list[str]):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli.main, args)


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_closing_radius_mm_matches_api(tmp_path: Path) -> None:
    src = _ct_folder(tmp_path / "in")
    res = _invoke(["mask", str(src), str(tmp_path / "cli"), "--closing-radius-mm", "4.5",
                   "--threshold", "0", "100", "--workers", "1"])
    assert res.exit_code == 0, res.output
    mask_dataset(src, tmp_path / "api", (0, 100), closing_radius_mm=4.5, workers=1)
    assert _bytes(tmp_path / "cli") == _bytes(tmp_path / "api")
    descrip = nib.load(tmp_path / "cli" / "ct_00_mask.nii.gz").header["descrip"]
    assert descrip.tobytes().rstrip(b"\0").endswith(b"thr=0:100 r=4.5mm")


def test_preset_and_steps_match_api(tmp_path: Path) -> None:
    src = _ct_folder(tmp_path / "in")
    res = _invoke(["mask", str(src), str(tmp_path / "cli"), "--preset", "ct-brain",
                   "--opening-radius", "1", "--fill-holes", "slices", "--no-largest-component",
                   "--workers", "1", "--report", str(tmp_path / "r.csv")])
    assert res.exit_code == 0, res.output
    results = mask_dataset(src, tmp_path / "api", preset="ct-brain", opening_radius=1,
                           fill_holes="slices", largest_component=False, workers=1)
    assert _bytes(tmp_path / "cli") == _bytes(tmp_path / "api")
    assert results[0].preset == "ct-brain"
    assert results[0].opening_radius == "1"
    assert results[0].fill_holes == "slices"
    assert results[0].largest_component is False
    report = (tmp_path / "r.csv").read_text()
    assert "ct-brain" in report


def test_opening_radius_in_mm(tmp_path: Path) -> None:
    src = _ct_folder(tmp_path / "in", count=1)
    res = _invoke(["mask", str(src), str(tmp_path / "cli"), "--preset", "ct-brain",
                   "--opening-radius", "2mm", "--workers", "1"])
    assert res.exit_code == 0, res.output
    mask_dataset(src, tmp_path / "api", preset="ct-brain", opening_radius="2mm", workers=1)
    assert _bytes(tmp_path / "cli") == _bytes(tmp_path / "api")


def test_skip_existing(tmp_path: Path) -> None:
    src = _ct_folder(tmp_path / "in")
    out = tmp_path / "out"
    assert _invoke(["mask", str(src), str(out), "--workers", "1"]).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    res = _invoke(["mask", str(src), str(out), "--skip-existing", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "nimask: 0 masks written, 2 skipped, 0 failed" in res.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    res = _invoke(["mask", str(src), str(out), "--skip-existing", "--closing-radius", "1"])
    assert "nimask: 2 masks written, 0 skipped, 0 failed" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--closing-radius-mm", "-1"], "Invalid value for '--closing-radius-mm'"),
        (["--preset", "brain"], "Invalid value for '--preset'"),
        (["--fill-holes", "2d"], "Invalid value for '--fill-holes'"),
        (["--opening-radius", "two"], "Invalid value for '--opening-radius'"),
        (["--scheduler", "local", "--workers", "2"], "--workers and --scheduler exclude"),
        (["--preset", "nidataset", "--closing-radius-mm", "2"], "closing_radius_mm is not"),
    ],
)
def test_new_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    src = _ct_folder(tmp_path / "in", count=1)
    res = _invoke(["mask", str(src), str(tmp_path / "out"), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unreachable_scheduler_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    src = _ct_folder(tmp_path / "in", count=1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(nimask.batch.cluster, "CONNECT_TIMEOUT", 1.5)
    res = _invoke(["mask", str(src), str(tmp_path / "out"), "--scheduler",
                   f"tcp://127.0.0.1:{port}"])
    assert res.exit_code == 1, res.output
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in res.output
    assert "Traceback" not in res.output


@pytest.mark.slow
def test_sigint_exits_130_and_leaves_no_partial_mask(tmp_path: Path) -> None:
    src = _ct_folder(tmp_path / "in", count=40, shape=(96, 96, 48))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nimask", "mask", str(src), str(out), "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.is_dir() and any(out.glob("*_mask.nii.gz"))):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "nimask: interrupted (no partial mask left)" in stderr
    assert "written before interruption" in stderr
    assert "Traceback" not in stderr
    names = sorted(os.listdir(out))
    assert names, "at least one mask was written before the interruption"
    assert len(names) < 40
    for name in names:  # only complete masks, no temporaries
        assert name.endswith("_mask.nii.gz"), name
        assert np.asarray(nib.load(out / name).dataobj).shape == (96, 96, 48)
