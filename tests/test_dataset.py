"""The documented function and the dataset layer: discovery, naming, errors, outputs."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import box_volume, make_image

import nimask
from nimask import generate_brain_mask_dataset, mask_dataset
from nimask.exceptions import InputFolderError, ParameterError
from nimask.io.discovery import find_inputs, output_name
from nimask.volume import generate_brain_mask_dataset as volume_function


@pytest.fixture
def two_boxes(write_nifti: Callable[..., Path]) -> Path:
    write_nifti(make_image(box_volume()), "b_scan.nii.gz")
    write_nifti(make_image(box_volume(np.float32)), "A_scan.NII.GZ")
    return write_nifti(make_image(box_volume()), "c.nii").parent


def test_documented_signature() -> None:
    assert volume_function is generate_brain_mask_dataset
    params = list(inspect.signature(generate_brain_mask_dataset).parameters.values())
    documented = [
        ("nii_folder", inspect.Parameter.empty),
        ("output_path", inspect.Parameter.empty),
        ("threshold", None),
        ("closing_radius", 3),
        ("debug", False),
    ]
    assert [(p.name, p.default) for p in params[:5]] == documented
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params[:5])
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[5:])
    assert generate_brain_mask_dataset.__annotations__["return"] in (None, "None")


def test_masks_every_nii_gz_with_documented_names(two_boxes: Path, tmp_path: Path) -> None:
    (two_boxes / "notes.txt").write_text("not an image")
    (two_boxes / "folder.nii.gz").mkdir()
    (two_boxes / "sub").mkdir()
    sitk.WriteImage(make_image(box_volume()), str(two_boxes / "sub" / "deep.nii.gz"))
    out = tmp_path / "deep" / "er" / "masks"
    assert generate_brain_mask_dataset(str(two_boxes), str(out), (50, 150), 1) is None
    assert sorted(p.name for p in out.iterdir()) == ["A_scan_mask.nii.gz", "b_scan_mask.nii.gz"]
    for source in ("A_scan.NII.GZ", "b_scan.nii.gz"):
        src = sitk.ReadImage(str(two_boxes / source))
        mask = sitk.ReadImage(str(out / f"{source[:-7]}_mask.nii.gz"))
        assert mask.GetPixelID() == sitk.sitkUInt8
        assert mask.GetSize() == src.GetSize()
        assert mask.GetOrigin() == src.GetOrigin()
        assert mask.GetSpacing() == src.GetSpacing()
        assert mask.GetDirection() == src.GetDirection()
        values = sitk.GetArrayFromImage(mask)
        assert int(values.sum()) == 840
        assert set(np.unique(values).tolist()) == {0, 1}


def test_find_inputs_sorted_and_filtered(two_boxes: Path) -> None:
    (two_boxes / "._b_scan.nii.gz").write_bytes(b"\0\5\26\7")
    (two_boxes / ".b_scan_mask.nii.gz.nimask-tmp-abc.nii.gz").write_bytes(b"")
    assert [p.name for p in find_inputs(two_boxes)] == ["A_scan.NII.GZ", "b_scan.nii.gz"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("scan_001.nii.gz", "scan_001_mask.nii.gz"),
        ("Scan.NII.GZ", "Scan_mask.nii.gz"),
        ("sub.ject.v2.nii.gz", "sub.ject.v2_mask.nii.gz"),
        ("pätient 7.nii.gz", "pätient 7_mask.nii.gz"),
    ],
)
def test_output_name(name: str, expected: str) -> None:
    assert output_name(name) == expected


def test_pathlike_accepted(two_boxes: Path, tmp_path: Path) -> None:
    results = mask_dataset(two_boxes, tmp_path / "o", None, 0)
    assert [Path(r.output).name for r in results] == ["A_scan_mask.nii.gz", "b_scan_mask.nii.gz"]
    assert all(r.status == "written" for r in results)
    assert [r.threshold_mode for r in results] == ["otsu", "otsu"]
    assert all(r.otsu_threshold is not None for r in results)


@pytest.mark.parametrize("case", ["missing", "file", "empty", "only_nii"])
def test_file_not_found_errors(tmp_path: Path, case: str) -> None:
    target = tmp_path / "scans"
    if case == "file":
        target.write_text("x")
    elif case == "empty":
        target.mkdir()
    elif case == "only_nii":
        target.mkdir()
        sitk.WriteImage(make_image(box_volume()), str(target / "x.nii"))
    message = {
        "missing": "input folder does not exist",
        "file": "input path is not a folder",
        "empty": "no .nii.gz files in input folder",
        "only_nii": "no .nii.gz files in input folder",
    }[case]
    with pytest.raises(FileNotFoundError, match=message) as info:
        generate_brain_mask_dataset(target, tmp_path / "out")
    assert isinstance(info.value, InputFolderError)
    assert str(target) in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": (3, 1)}, "threshold low must be <= high"),
        ({"threshold": [1, 2, 3]}, "exactly two values"),
        ({"closing_radius": -2}, "closing_radius must be >= 0"),
        ({"closing_radius": True}, "closing_radius must be an integer"),
        ({"closing_radius": 2.0}, "closing_radius must be an integer"),
        ({"workers": 0}, "workers must be a positive integer"),
    ],
)
def test_value_errors_before_any_work(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    out = tmp_path / "out"
    # Even with a missing input folder the parameter error comes first.
    with pytest.raises(ValueError, match=message) as info:
        generate_brain_mask_dataset(tmp_path / "missing", out, **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ParameterError)
    assert not out.exists()


def test_debug_summary_counts_written_masks(
    two_boxes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (two_boxes / "broken.nii.gz").write_bytes(b"garbage")
    generate_brain_mask_dataset(two_boxes, tmp_path / "out", (50, 150), 3, debug=True)
    assert capsys.readouterr().out == "Total brain masks generated: 2\n"
    generate_brain_mask_dataset(two_boxes, tmp_path / "out2", (50, 150), 3)
    assert capsys.readouterr().out == ""


def test_failing_file_is_logged_and_batch_goes_on(
    two_boxes: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (two_boxes / "broken.nii.gz").write_bytes(b"garbage that is not gzip nor nifti")
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR, logger="nimask"):
        results = mask_dataset(two_boxes, out, (50, 150), 1)
    assert [r.status for r in results] == ["written", "written", "failed"]
    assert results[2].error == "not a NIfTI file: only 34 bytes"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["broken.nii.gz: failed, no mask written: not a NIfTI file: only 34 bytes"]
    # No partial or temporary file for the failing volume.
    assert sorted(p.name for p in out.iterdir()) == ["A_scan_mask.nii.gz", "b_scan_mask.nii.gz"]


def test_progress_bar_on_stderr(
    two_boxes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mask_dataset(two_boxes, tmp_path / "a", (50, 150), 0, progress=True)
    captured = capsys.readouterr()
    assert "2/2" in captured.err
    assert "nimask" in captured.err
    assert captured.out == ""
    mask_dataset(two_boxes, tmp_path / "b", (50, 150), 0)  # not a terminal: no bar
    assert "2/2" not in capsys.readouterr().err


def test_workers_give_identical_bytes(two_boxes: Path, tmp_path: Path) -> None:
    one = mask_dataset(two_boxes, tmp_path / "w1", None, 2, workers=1)
    two = mask_dataset(two_boxes, tmp_path / "w2", None, 2, workers=2)
    assert [r.status for r in one] == [r.status for r in two] == ["written", "written"]
    for a, b in zip(one, two, strict=True):
        assert Path(a.output).read_bytes() == Path(b.output).read_bytes()
        assert Path(a.input).name == Path(b.input).name


def test_output_path_is_a_file(two_boxes: Path, tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(OSError, match="output path exists and is not a folder"):
        generate_brain_mask_dataset(two_boxes, target)
    assert target.read_text() == "x"


def test_rerun_overwrites_by_default(two_boxes: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    mask_dataset(two_boxes, out, (50, 150), 0)
    mask_dataset(two_boxes, out, (100, 150), 1)
    descrip = nib.load(out / "b_scan_mask.nii.gz").header["descrip"].tobytes().rstrip(b"\0")
    assert descrip == b"nimask 0.1.0 thr=100:150 r=1"


def test_public_names() -> None:
    for name in nimask.__all__:
        assert hasattr(nimask, name), name
    assert nimask.sample_path().is_file()
    assert nimask.sample_brain_mask_path().is_file()
    assert [p.name for p in find_inputs(nimask.sample_folder())] == ["sample_t1.nii.gz"]
