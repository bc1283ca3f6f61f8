"""Freed volume buffers kept for the next volume, in nimask's own processes only."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from nimask import mask_dataset
from nimask.data.phantoms import ct_head_phantom

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="the thresholds are glibc's")

# A fresh interpreter allocates a 64 MiB block with malloc, writes every page,
# frees it, and does so again: the page faults of the second round say whether
# the freed block was kept (a few) or given back to the kernel (one per page).
_PROBE = """
import ctypes, json, resource, sys
if sys.argv[1] == "kept":
    from nimask.batch.allocator import keep_freed_memory
    assert keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
faults = []
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


def _second_round_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True,
                         text=True, check=True).stdout
    first, second = json.loads(out)
    assert first >= (64 << 20) // 4096 // 2  # fresh pages the first time, either way
    return int(second)


@glibc
def test_freed_blocks_are_kept_only_after_the_call() -> None:
    pages = (64 << 20) // 4096
    assert _second_round_faults("as-is") >= pages // 2  # glibc's default: unmapped, faulted again
    assert _second_round_faults("kept") < pages // 50  # reused: almost no fresh page


def _volumes(folder: Path, count: int) -> Path:
    folder.mkdir()
    for i in range(count):
        sitk.WriteImage(ct_head_phantom((24, 22, 16), seed=i), str(folder / f"v{i}.nii.gz"))
    return folder


@glibc
def test_pool_workers_keep_freed_memory(tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    src = _volumes(tmp_path / "in", 3)
    with caplog.at_level(logging.DEBUG, logger="nimask"):
        results = mask_dataset(src, tmp_path / "out", workers=2, progress=False)
    assert [r.status for r in results] == ["written"] * 3
    kept = [r for r in caplog.records if "keeps freed volume buffers" in r.getMessage()]
    # one line from each worker process, forwarded to this one; none of this process
    assert len(kept) == 2
    assert "glibc mmap threshold 256 MiB, trim threshold 512 MiB" in kept[0].getMessage()
    pids = {int(r.getMessage().split()[1]) for r in kept}
    assert len(pids) == 2
    assert os.getpid() not in pids


@glibc
def test_in_process_run_leaves_the_callers_allocator_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = _volumes(tmp_path / "in", 2)
    with caplog.at_level(logging.DEBUG, logger="nimask"):
        results = mask_dataset(src, tmp_path / "out", workers=1, progress=False)
    assert [r.status for r in results] == ["written"] * 2
    assert not [r for r in caplog.records if "freed volume buffers" in r.getMessage()]


@glibc
def test_the_command_keeps_freed_memory_in_its_own_process(tmp_path: Path) -> None:
    src = _volumes(tmp_path / "in", 2)
    res = subprocess.run([sys.executable, "-m", "nimask", "mask", str(src),
                          str(tmp_path / "out"), "--workers", "1", "-v"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if "keeps freed volume buffers" in line]
    assert len(lines) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "v0_mask.nii.gz", "v1_mask.nii.gz"]
