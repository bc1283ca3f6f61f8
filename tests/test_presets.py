"""Presets: override rules, provenance, reports, defaults unchanged, real volumes."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from nimask import brain_mask, compute_mask, generate_brain_mask_dataset, mask_dataset
from nimask.batch.settings import MaskSettings
from nimask.core.masking import threshold_mask
from nimask.core.presets import CT_HEAD_UPPER, preset_names, resolve
from nimask.core.refine import Refinements
from nimask.data.sample import sample_path
from nimask.exceptions import ParameterError
from nimask.io.nifti import read_volume


def mask_array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


@pytest.fixture(scope="module")
def sample_image() -> sitk.Image:
    return read_volume(sample_path()).image


# ------------------------------------------------------------ override rules


def test_preset_names() -> None:
    assert preset_names() == ["ct-brain", "ct-head", "mri-head", "mri-brain", "nidataset"]


def test_resolve_without_preset_is_the_documented_pipeline() -> None:
    assert resolve() == (None, Refinements())
    assert resolve(None, (1, 2)) == ((1.0, 2.0), Refinements())
    # explicit "off" values are the documented pipeline too
    window, ref = resolve(fill_holes=False, largest_component=False, opening_radius=0,
                          exclude_above_window=False)
    assert (window, ref.active) == (None, False)


def test_preset_values_apply_when_arguments_are_left_at_none() -> None:
    window, ref = resolve("ct-brain")
    assert window == (0.0, 100.0)
    assert ref == Refinements(fill_holes="3d", largest_component=True,
                              exclude_above_window=True, opening_radius=2.0,
                              opening_unit="mm", hu_check=True, preset="ct-brain")
    window, ref = resolve("ct-head")
    assert window == (-500.0, CT_HEAD_UPPER)
    assert (ref.fill_holes, ref.largest_component, ref.opening_text) == ("3d", True, "")
    window, ref = resolve("mri-head")
    assert window is None
    assert (ref.fill_holes, ref.largest_component, ref.hu_check) == ("both", True, False)
    window, ref = resolve("NIDataset")
    assert window is None
    assert (ref.compat, ref.fill_holes, ref.largest_component) == ("nidataset", "3d", True)


def test_explicit_arguments_override_the_preset() -> None:
    window, ref = resolve("ct-brain", (10, 80), fill_holes=False, largest_component=False,
                          opening_radius=3, exclude_above_window=False)
    assert window == (10.0, 80.0)
    assert ref == Refinements(opening_radius=3, hu_check=True, preset="ct-brain")
    # only what is given changes
    window, ref = resolve("ct-brain", opening_radius="4mm")
    assert window == (0.0, 100.0)
    assert (ref.opening_text, ref.fill_holes, ref.largest_component) == ("4mm", "3d", True)
    window, ref = resolve("mri-head", fill_holes="slices")
    assert ref.fill_holes == "slices"


def test_closing_radius_is_never_set_by_a_preset(sample_image: sitk.Image) -> None:
    assert MaskSettings.create(None, 3, preset="ct-brain").closing_radius == 3
    assert MaskSettings.create(None, 5, preset="ct-brain").closing_radius == 5
    assert MaskSettings.create(None, 0, preset="nidataset").closing_radius == 0
    out0 = compute_mask(sample_image, None, 0, preset="mri-head")
    assert not any(step.startswith("closing") for step in out0.steps)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "ct"}, "unknown preset 'ct'; choose one of ct-brain, ct-head"),
        ({"preset": 3}, "unknown preset 3"),
        ({"fill_holes": "2d"}, "fill_holes must be"),
        ({"largest_component": 1}, "largest_component must be True or False"),
        ({"exclude_above_window": "yes"}, "exclude_above_window must be True or False"),
        ({"opening_radius": -2}, "opening_radius must be"),
        ({"threshold": (5, 1)}, "threshold low must be <= high"),
    ],
)
def test_invalid_arguments_raise_before_any_work(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ParameterError, match=message.replace("(", r"\(")):
        mask_dataset(tmp_path / "missing", tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------- provenance


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({}, "otsu r=3"),
        ({"threshold": (-500, 3000), "closing_radius": 2}, "thr=-500:3000 r=2"),
        ({"preset": "ct-brain"},
         "thr=0:100 r=3 open=2mm fill=3d lcc xab preset=ct-brain"),
        ({"preset": "ct-head"}, "thr=-500:1000000 r=3 fill=3d lcc preset=ct-head"),
        ({"preset": "mri-head", "threshold": (10, 90)},
         "thr=10:90 r=3 fill=both lcc preset=mri-head"),
        ({"preset": "nidataset"}, "nid-otsu r=3 compat=nidataset fill=3d lcc preset=nidataset"),
        ({"largest_component": True, "opening_radius": 2}, "otsu r=3 open=2 lcc"),
    ],
)
def test_provenance(kwargs: dict[str, object], text: str) -> None:
    from nimask import __version__

    provenance = MaskSettings.create(**kwargs).provenance()  # type: ignore[arg-type]
    assert provenance == f"nimask {__version__} {text}"
    assert len(provenance) <= 79


def test_provenance_drops_trailing_tokens_to_fit() -> None:
    settings = MaskSettings.create((-123456.789, 987654.321), 12, preset="ct-brain",
                                   opening_radius="12.25mm")
    text = settings.provenance()
    assert len(text) <= 79
    assert text.endswith("fill=3d lcc xab")
    assert "preset=" not in text


# ---------------------------------------------------------- defaults unchanged


def test_documented_call_is_unchanged(sample_image: sitk.Image) -> None:
    # The plain ITK chain the documented pipeline is defined by.
    reference = sitk.BinaryMorphologicalClosing(
        threshold_mask(sample_image).mask, [3] * 3, sitk.sitkBall, 1, True)
    expected = mask_array(reference)
    assert (mask_array(brain_mask(sample_image)) == expected).all()
    assert (mask_array(brain_mask(sample_image, None, 3, fill_holes=False,
                                  largest_component=False, opening_radius=0)) == expected).all()
    outcome = compute_mask(sample_image)
    assert (outcome.steps, outcome.hu_warning, outcome.components_dropped) == ((), None, None)


def test_default_report_and_header_unchanged(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(sample_path(), folder / "t1.nii.gz")
    [res] = mask_dataset(folder, tmp_path / "out", progress=False)
    assert (res.preset, res.fill_holes, res.steps, res.opening_radius) == ("", "", "", "")
    assert (res.largest_component, res.hu_warning, res.components_dropped) == (None, None, None)
    descrip = nib.load(res.output).header["descrip"].tobytes().rstrip(b"\0").decode()
    assert descrip.endswith(" otsu r=3")


# ------------------------------------------------------------ dataset layer


def test_preset_through_the_documented_function(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(sample_path(), folder / "t1.nii.gz")
    with caplog.at_level(logging.WARNING):
        generate_brain_mask_dataset(folder, tmp_path / "out", debug=True, preset="ct-brain",
                                    progress=False)
    assert capsys.readouterr().out == "Total brain masks generated: 1\n"
    # An MRI is not HU: the ct-* presets warn.
    assert "does not look like CT in Hounsfield units" in caplog.text
    header = nib.load(tmp_path / "out" / "t1_mask.nii.gz").header
    assert header["descrip"].tobytes().rstrip(b"\0").decode().endswith(
        "thr=0:100 r=3 open=2mm fill=3d lcc xab preset=ct-brain")


def test_file_result_records_each_step(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(sample_path(), folder / "t1.nii.gz")
    [res] = mask_dataset(folder, tmp_path / "out", preset="ct-brain", progress=False)
    assert res.status == "written"
    assert (res.preset, res.fill_holes, res.largest_component, res.opening_radius,
            res.exclude_above_window) == ("ct-brain", "3d", True, "2mm", True)
    assert res.hu_warning is True
    assert any("Hounsfield" in note for note in res.notes)
    names = [step.split()[0] for step in res.steps.split("; ")]
    assert names == ["threshold", "erode", "largest-component", "dilate", "closing",
                     "exclude-above", "fill-holes", "largest-component"]
    assert res.as_dict()["steps"] == res.steps
    written = np.asarray(nib.load(res.output).dataobj)
    assert int(written.sum()) == res.mask_voxels


def test_hu_check_quiet_on_a_ct_like_phantom() -> None:
    a = np.full((20, 20, 20), -1000, np.int16)
    a[4:16, 4:16, 4:16] = 1200      # skull
    a[6:14, 6:14, 6:14] = 35        # brain
    image = sitk.GetImageFromArray(a)
    outcome = compute_mask(image, preset="ct-brain", opening_radius=0)
    assert outcome.hu_warning is None
    assert int(mask_array(outcome.mask).sum()) == 512
    shifted = sitk.GetImageFromArray((a + 1024).astype(np.int16))  # raw stored values
    assert "no voxel below -500" in (compute_mask(shifted, preset="ct-head").hu_warning or "")


def test_ct_head_drops_a_separate_head_holder() -> None:
    a = np.full((32, 30, 30), -1000, np.int16)
    a[5:20, 5:20, 5:20] = 40                  # head (a box: the closing keeps it)
    a[8:17, 8:17, 8:17] = -900                # a closed air cavity (filled)
    a[27:30, 3:27, 3:27] = 300                # holder, 7 voxels below the head
    outcome = compute_mask(sitk.GetImageFromArray(a), preset="ct-head")
    arr = mask_array(outcome.mask)
    assert int(arr.sum()) == 15 ** 3
    assert arr[24:27].sum() == 0
    assert outcome.components_dropped == 1


@pytest.mark.slow
def test_presets_in_worker_processes(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.nii.gz", "b.nii.gz"):
        shutil.copy(sample_path(), folder / name)
    serial = mask_dataset(folder, tmp_path / "serial", preset="mri-head", progress=False)
    pooled = mask_dataset(folder, tmp_path / "pooled", preset="mri-head", workers=2,
                          progress=False)
    for one, two in zip(serial, pooled, strict=True):
        assert two.status == "written"
        assert (two.steps, two.preset) == (one.steps, "mri-head")
        assert np.array_equal(np.asarray(nib.load(one.output).dataobj),
                              np.asarray(nib.load(two.output).dataobj))


# ------------------------------------------------------------ real volumes


def test_nidataset_preset_on_the_sample(sample_image: sitk.Image) -> None:
    # nidataset 0.9.1 on the bundled sample gives 244 455 mask voxels with Otsu
    # t = 83.8476562 (benchmarks/nidataset_agreement.py: 0 voxels differ).
    outcome = compute_mask(sample_image, preset="nidataset")
    assert outcome.otsu_threshold == pytest.approx(83.84765625, abs=0)
    assert int(mask_array(outcome.mask).sum()) == 244455


@pytest.mark.slow
def test_ct_brain_lies_inside_the_skull(shared_data: Path) -> None:
    data = shared_data
    image = read_volume(data / "invesalius_ct_head_hu.nii.gz").image
    bone = sitk.ReadImage(str(data / "invesalius_ct_bonethresh_mask.nii.gz"))
    outcome = compute_mask(image, preset="ct-brain")
    assert outcome.hu_warning is None
    mask = outcome.mask
    volume_ml = mask_array(mask).sum() * np.prod(image.GetSpacing()) / 1000
    assert 1000 < volume_ml < 1800
    eroded = mask_array(sitk.BinaryErode(mask, [1] * 3, sitk.sitkBall, 0, 1, False)).astype(bool)
    inside = mask_array(mask).astype(bool)
    labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(bone, True))
    # No voxel of the skull (bone components reaching outside the brain mask)
    # is inside the eroded brain mask.  Bone-mask voxels that are there belong
    # to components enclosed by the brain (an intracranial calcification), and
    # are few.
    hit = np.unique(labels[eroded & (labels > 0)])
    for label in hit:
        assert inside[labels == label].all(), f"skull component {label} inside the brain mask"
    assert np.count_nonzero(eroded & (labels > 0)) < 50
    # Without the closing guard the closing bridges the skull base: the
    # guard is what keeps the mask inside.
    unguarded = compute_mask(image, preset="ct-brain", exclude_above_window=False).mask
    unguarded_eroded = mask_array(sitk.BinaryErode(unguarded, [1] * 3, sitk.sitkBall, 0, 1,
                                                   False)).astype(bool)
    assert np.count_nonzero(unguarded_eroded & (labels > 0)) > 100


@pytest.mark.slow
def test_nidataset_preset_on_the_real_ct(shared_data: Path) -> None:
    data = shared_data
    image = read_volume(data / "invesalius_ct_head_hu.nii.gz").image
    # nidataset 0.9.1: 454 785 voxels, Otsu t = 496.556641 (0 voxels differ).
    outcome = compute_mask(image, preset="nidataset")
    assert outcome.otsu_threshold == pytest.approx(496.556640625, abs=0)
    assert int(mask_array(outcome.mask).sum()) == 454785
