"""Batches give the same files and results whatever the number of workers."""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from _nifti_fixtures import ramp, write

from nimask.batch import run as dataset
from nimask.batch.pool import usable_cpus
from nimask.batch.run import mask_dataset
from nimask.volume import generate_brain_mask_dataset


def _make_inputs(folder: Path, count: int) -> list[str]:
    folder.mkdir()
    rng = np.random.default_rng(11)
    names = []
    for i in range(count):
        shape = (20 + i, 18, 16)
        data = rng.normal(100.0, 10.0, size=shape).astype(np.float32)
        data[4:-4, 4:-4, 3:-3] += 400.0
        data[8:10, 8:10, 7:9] = 90.0  # a hole for the closing
        name = f"vol_{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.2, 2.0, 1.0])), folder / name)
        names.append(name)
    # one file that fails: truncated gzip
    bad = folder / "vol_99.nii.gz"
    bad.write_bytes((folder / names[0]).read_bytes()[:300])
    return [*names, bad.name]


def test_default_workers_is_every_usable_cpu() -> None:
    for func in (mask_dataset, generate_brain_mask_dataset):
        assert inspect.signature(func).parameters["workers"].default is None
    assert dataset._validate_workers(None) == usable_cpus()


def test_in_process_batch_restores_itk_threads(tmp_path: Path) -> None:
    _make_inputs(tmp_path / "in", 1)
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    mask_dataset(tmp_path / "in", tmp_path / "out", workers=1)
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == before


@pytest.mark.slow
def test_two_workers_give_the_same_bytes_and_results(tmp_path: Path) -> None:
    names = _make_inputs(tmp_path / "in", 5)
    one = mask_dataset(tmp_path / "in", tmp_path / "w1", workers=1)
    two = mask_dataset(tmp_path / "in", tmp_path / "w2", workers=2)
    assert [Path(r.input).name for r in one] == names
    assert [Path(r.input).name for r in two] == names
    assert [r.status for r in two] == ["written"] * 5 + ["failed"]
    for a, b in zip(one, two, strict=True):
        assert (a.status, a.error, a.mask_voxels, a.otsu_threshold) == (
            b.status, b.error, b.mask_voxels, b.otsu_threshold)
    written = sorted(p.name for p in (tmp_path / "w1").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "w2").iterdir())
    assert len(written) == 5
    for name in written:
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()


@pytest.mark.slow
def test_workers_log_through_the_callers_logging(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker's own log records (here the preset's HU check, logged while the
    # volume is masked) reach the caller's handlers, whatever the start method.
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        write(folder / f"{name}.nii.gz", ramp((20, 18, 12)))
    with caplog.at_level(logging.WARNING, logger="nimask"):
        results = mask_dataset(folder, tmp_path / "out", preset="ct-head", workers=2)
    assert [r.status for r in results] == ["written", "written"]
    from_workers = [r for r in caplog.records if r.name == "nimask.core.refine"]
    assert [r.getMessage() for r in from_workers] == [
        "volume does not look like CT in Hounsfield units: no voxel below -500 (no air) and "
        "no voxel above 300 (no bone); intensity range 0..99 (preset ct-head)"] * 2
    assert all(r.process != os.getpid() for r in from_workers)
