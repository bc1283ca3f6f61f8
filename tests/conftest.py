"""Shared fixtures: real data location, synthetic volumes with real-world geometry."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import settings

# CI runs the property tests with a fixed seed so that a landing never depends on luck;
# locally each run explores new examples (run with CI=true to replay CI's).
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

REPO = Path(__file__).resolve().parents[1]

# An oblique direction (rotation of 20 degrees about z then 10 degrees about x).
_a, _b = math.radians(20), math.radians(10)
_rz = np.array([[math.cos(_a), -math.sin(_a), 0], [math.sin(_a), math.cos(_a), 0], [0, 0, 1]])
_rx = np.array([[1, 0, 0], [0, math.cos(_b), -math.sin(_b)], [0, math.sin(_b), math.cos(_b)]])
OBLIQUE = tuple(float(v) for v in (_rz @ _rx).ravel())
SPACING = (0.7, 1.1, 2.5)
ORIGIN = (-10.0, 20.5, 3.25)


def shared_data_dir() -> Path | None:
    """``$NIMASK_SHARED_DATA``, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("NIMASK_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for path in candidates:
        if (path / "MANIFEST.tsv").is_file():
            return path
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real volumes; the test is skipped when it is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("real data not found: set NIMASK_SHARED_DATA or put shared/ beside the repo")
    return path


def make_image(
    array_zyx: np.ndarray,
    spacing: Sequence[float] = SPACING,
    origin: Sequence[float] = ORIGIN,
    direction: Sequence[float] = OBLIQUE,
) -> sitk.Image:
    """A SimpleITK image from a (z, y, x) array with the given geometry."""
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def box_volume(dtype: type = np.int16) -> np.ndarray:
    """(z, y, x) = (12, 20, 30) zeros with a 6x10x14 box of 100 and a 1-voxel hole of 0.

    Hand-computable: the window (50, 150) selects 6*10*14 - 1 = 839 voxels, and
    any closing radius >= 1 fills the hole, giving 840.
    """
    array = np.zeros((12, 20, 30), dtype=dtype)
    array[3:9, 5:15, 8:22] = 100
    array[6, 10, 15] = 0
    return array


@pytest.fixture
def write_nifti(tmp_path: Path) -> Callable[..., Path]:
    """Write a SimpleITK image (or a nibabel image) into ``tmp_path/<folder>/<name>``."""

    def _write(image: sitk.Image | nib.Nifti1Image, name: str, folder: str = "in") -> Path:
        out = tmp_path / folder
        out.mkdir(exist_ok=True)
        path = out / name
        # ITK and nibabel pick the format from a lower-case suffix: write, then rename.
        lower = out / (".tmp" + (".nii.gz" if name.lower().endswith(".nii.gz") else ".nii"))
        if isinstance(image, sitk.Image):
            sitk.WriteImage(image, str(lower))
        else:
            nib.save(image, str(lower))
        lower.rename(path)
        return path

    return _write


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A loud banner when the browser tests of the QC page could not run."""
    reasons = set()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        if isinstance(longrepr, tuple) and "BROWSER TESTS SKIPPED" in str(longrepr[2]):
            reasons.add(str(longrepr[2]).removeprefix("Skipped: "))
    if reasons:
        terminalreporter.write_sep("!", "BROWSER TESTS SKIPPED: the QC page was not tested",
                                   red=True, bold=True)
        for reason in sorted(reasons):
            terminalreporter.write_line(reason, red=True)
