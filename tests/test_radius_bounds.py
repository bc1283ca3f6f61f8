"""Absurd closing and opening radii are rejected before any work, with the bound."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _nifti_fixtures import ramp, write

from nimask import mask_dataset
from nimask.batch import MaskSettings
from nimask.core.masking import MAX_RADIUS_VOXELS
from nimask.exceptions import ParameterError

WINDOW = (20.0, 60.0)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """Two 12x10x8 volumes with 2 x 2 x 3 mm voxels."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        write(folder / name, ramp())
    return folder


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"closing_radius": 40},
         "closing_radius=40 voxels is larger than the volume's largest size, 12 voxels "
         "(shape 12x10x8): a ball's radius may not exceed the volume's largest size "
         "(every input is too small for it; first: a.nii.gz)"),
        ({"closing_radius": 200}, "closing_radius=200 voxels is larger than the volume's "),
        ({"closing_radius": 3, "closing_radius_mm": 1e6},
         "closing_radius_mm=1e+06 mm is 5e+05 voxels along x (spacing 2 mm), larger than "
         "the volume's largest size, 12 voxels (shape 12x10x8)"),
        ({"closing_radius": 10**30},
         f"closing_radius must be at most {MAX_RADIUS_VOXELS} voxels (the largest size of a "
         f"NIfTI-1 volume: a larger ball fits no volume), got {10**30}"),
        ({"opening_radius": 13}, "opening_radius=13 voxels is larger than the volume's "),
        ({"opening_radius": "100mm"}, "opening_radius=100 mm is 50 voxels along x"),
        ({"opening_radius": str(10**30)}, f"opening_radius must be at most {MAX_RADIUS_VOXELS}"),
    ],
)
def test_absurd_radius_is_rejected_before_any_work(
    small: Path, tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(ParameterError) as info:
        mask_dataset(small, out, WINDOW, **kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)
    assert not out.exists()  # rejected before anything was created


def test_only_the_volumes_too_small_for_the_ball_fail(small: Path, tmp_path: Path) -> None:
    write(small / "big.nii.gz", np.pad(ramp(), 10))  # 32 x 30 x 28
    out = tmp_path / "out"
    results = {Path(r.input).name: r for r in mask_dataset(small, out, WINDOW, 20, workers=1)}
    assert results["big.nii.gz"].status == "written"
    for name in ("a.nii.gz", "b.nii.gz"):
        assert results[name].status == "failed"
        assert results[name].error == (
            "closing_radius=20 voxels is larger than the volume's largest size, 12 voxels "
            "(shape 12x10x8): a ball's radius may not exceed the volume's largest size")
    assert os.listdir(out) == ["big_mask.nii.gz"]


def test_radius_bound_of_the_settings() -> None:
    settings = MaskSettings.create(None, 12)
    assert settings.radius_problem((12, 1, 1), (1.0, 1.0, 1.0)) is None  # one-voxel-thick
    assert settings.radius_problem((11, 11, 11), (1.0, 1.0, 1.0)) is not None
    mm = MaskSettings.create(None, 3, 10.0)
    assert mm.radius_problem((20, 20, 5), (0.5, 0.5, 5.0)) is None  # 20 voxels in x and y
    assert mm.radius_problem((19, 19, 5), (0.5, 0.5, 5.0)) == (
        "closing_radius_mm=10 mm is 20 voxels along x (spacing 0.5 mm), larger than the "
        "volume's largest size, 19 voxels (shape 19x19x5): a ball's radius may not exceed "
        "the volume's largest size")
    assert mm.radius_problem((4, 4, 4), (0.0, 1.0, 1.0)) is None  # fails when read instead
