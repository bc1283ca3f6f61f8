"""``nimask bids``: BIDS datasets in, a valid BIDS derivatives dataset out.

Every path written is checked against the BIDS schema's file rules for derivatives
(``rules.files.deriv``) and common files, through ``bidsschematools``; pybids indexes the
output as a derivatives dataset.  The raw datasets are built in the tests from the real
volumes of the shared data (small ones) or from the box phantom.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner
from conftest import box_volume, make_image

from nimask import __version__, mask_bids, mask_dataset
from nimask.batch.bids import default_desc
from nimask.batch.settings import MaskSettings
from nimask.cli import main
from nimask.exceptions import InputFolderError, OutputError, ParameterError
from nimask.io.bids import find_bids_anat

bst_schema = pytest.importorskip("bidsschematools.schema")
bst_rules = pytest.importorskip("bidsschematools.rules")

WINDOW = (50.0, 150.0)


def _dataset(root: Path, files: dict[str, sitk.Image | Path | dict[str, object]]) -> Path:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "test", "BIDSVersion": "1.10.0"}))
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Path):
            shutil.copy(source, path)
        elif isinstance(source, dict):
            path.write_text(json.dumps(source))
        else:
            sitk.WriteImage(source, str(path))
    return root


def _box() -> sitk.Image:
    return make_image(box_volume())


@pytest.fixture
def phantom_ds(tmp_path: Path) -> Path:
    return _dataset(tmp_path / "ds", {
        "sub-01/anat/sub-01_T1w.nii.gz": _box(),
        "sub-01/anat/sub-01_acq-fast_run-2_T2w.nii": _box(),
        "sub-01/anat/sub-01_FLAIR.nii.gz": _box(),
        "sub-01/anat/sub-01_T1w.json": {"EchoTime": 0.003},  # a sidecar: never an input
        "sub-02/ses-pre/anat/sub-02_ses-pre_T1w.nii.gz": _box(),
        "sub-02/ses-post/anat/sub-02_ses-post_T1w.nii.gz": _box(),
        "sub-02/ses-post/anat/sub-02_ses-post_CT.nii.gz": _box(),
        "sub-03/anat/sub-03_T1w.nii.gz": _box(),
        "sub-03/func/sub-03_task-rest_bold.nii.gz": _box(),  # not anatomical
    })


def _derivative_rules() -> list[re.Pattern[str]]:
    schema = bst_schema.load_schema()
    rules = [*bst_rules.regexify_filename_rules(schema.rules.files.deriv, schema, level=2),
             *bst_rules.regexify_filename_rules(schema.rules.files.common, schema, level=2)]
    return [re.compile(rule["regex"]) for rule in rules]


def _invalid_paths(root: Path) -> list[str]:
    """Files of ``root`` that no BIDS derivative/common file rule matches.

    Dot files are not part of a dataset; paths listed in ``.bidsignore`` are skipped.
    """
    ignore = []
    if (root / ".bidsignore").is_file():
        ignore = [line for line in (root / ".bidsignore").read_text().splitlines() if line]
    rules = _derivative_rules()
    bad = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir() or path.name.startswith("."):
            continue
        if any(rel == i or rel.startswith(i.rstrip("/") + "/") for i in ignore):
            continue
        if not any(rule.match(rel) for rule in rules):
            bad.append(rel)
    return bad


def test_schema_check_can_fail() -> None:
    rules = _derivative_rules()
    good = "sub-01/ses-1/anat/sub-01_ses-1_run-2_desc-brain_mask.nii.gz"
    assert any(rule.match(good) for rule in rules)
    for bad in ("sub-01/anat/sub-01_T1w_mask.nii.gz", "sub-01/anat/sub-01_desc-head_T1w.png",
                "sub-01/anat/sub-01_desc-head_mask_qc.png", "report.csv"):
        assert not any(rule.match(bad) for rule in rules), bad


def test_bids_run_writes_a_valid_derivatives_dataset(phantom_ds: Path, tmp_path: Path) -> None:
    out = phantom_ds / "derivatives" / "nimask"
    results = mask_bids(phantom_ds, out, "participant", threshold=WINDOW, closing_radius=1,
                        workers=1, report=out / "logs" / "report.csv", qc_dir=out / "qc",
                        command="nimask bids ds out participant")
    masks = {
        "sub-01/anat/sub-01_desc-head_mask.nii.gz": "sub-01/anat/sub-01_T1w.nii.gz",
        "sub-01/anat/sub-01_acq-fast_run-2_desc-headT2w_mask.nii.gz":
            "sub-01/anat/sub-01_acq-fast_run-2_T2w.nii",
        "sub-01/anat/sub-01_desc-headFLAIR_mask.nii.gz": "sub-01/anat/sub-01_FLAIR.nii.gz",
        "sub-02/ses-post/anat/sub-02_ses-post_desc-headCT_mask.nii.gz":
            "sub-02/ses-post/anat/sub-02_ses-post_CT.nii.gz",
        "sub-02/ses-post/anat/sub-02_ses-post_desc-head_mask.nii.gz":
            "sub-02/ses-post/anat/sub-02_ses-post_T1w.nii.gz",
        "sub-02/ses-pre/anat/sub-02_ses-pre_desc-head_mask.nii.gz":
            "sub-02/ses-pre/anat/sub-02_ses-pre_T1w.nii.gz",
        "sub-03/anat/sub-03_desc-head_mask.nii.gz": "sub-03/anat/sub-03_T1w.nii.gz",
    }
    assert sorted((Path(r.output).relative_to(out).as_posix(), r.status, r.mask_voxels)
                  for r in results) == sorted((m, "written", 840) for m in masks)
    assert {Path(r.output).relative_to(out).as_posix(): r.input for r in results} == {
        m: str(phantom_ds / src) for m, src in masks.items()}
    for mask, source in masks.items():
        sidecar = json.loads((out / mask.replace(".nii.gz", ".json")).read_text())
        assert sidecar["Type"] == "Head"
        assert sidecar["Sources"] == [f"bids:raw:{source}"]
        assert sidecar["RawSources"] == [source]
        assert sidecar["nimask"]["provenance"] == f"nimask {__version__} thr=50:150 r=1"
        assert sidecar["nimask"]["threshold"] == [50.0, 150.0]
        image = nib.load(str(out / mask))
        raw = nib.load(str(phantom_ds / source))
        np.testing.assert_allclose(image.affine, raw.affine, atol=1e-6)
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"] == [{
        "Name": "nimask", "Version": __version__,
        "Description": "Brain/head threshold masks (SimpleITK); command: "
                       "nimask bids ds out participant"}]
    assert description["DatasetLinks"] == {"raw": phantom_ds.resolve().as_uri()}
    assert (out / ".bidsignore").read_text() == "logs/report.csv\nqc/\n"
    assert _invalid_paths(out) == []
    assert (out / "qc" / "sub-02" / "ses-pre" / "anat" / "sub-02_ses-pre_desc-head_qc.png"
            ).is_file()


def test_pybids_indexes_the_masks(phantom_ds: Path, tmp_path: Path) -> None:
    bids = pytest.importorskip("bids")
    out = tmp_path / "derivs"
    mask_bids(phantom_ds, out, threshold=WINDOW, closing_radius=1, workers=1)
    layout = bids.BIDSLayout(phantom_ds, derivatives=out, validate=False)
    assert len(layout.derivatives) == 1
    # scope="nimask": the pipeline named in GeneratedBy (the folder is called "derivs")
    found = layout.get(scope="nimask", suffix="mask", desc="head", extension=".nii.gz")
    assert sorted(f.relpath for f in found) == [
        "sub-01/anat/sub-01_desc-head_mask.nii.gz",
        "sub-02/ses-post/anat/sub-02_ses-post_desc-head_mask.nii.gz",
        "sub-02/ses-pre/anat/sub-02_ses-pre_desc-head_mask.nii.gz",
        "sub-03/anat/sub-03_desc-head_mask.nii.gz"]
    [t2] = layout.get(scope="nimask", suffix="mask", desc="headT2w", extension=".nii.gz")
    assert t2.get_entities()["run"] == 2
    assert t2.get_entities()["acquisition"] == "fast"
    assert t2.get_metadata()["Type"] == "Head"


def test_labels_choose_participants_and_sessions(phantom_ds: Path, tmp_path: Path) -> None:
    scan = find_bids_anat(phantom_ds, participant_label=["sub-02"], session_label="pre")
    assert [c.label for c in scan.cases] == ["sub-02/ses-pre/anat/sub-02_ses-pre_T1w.nii.gz"]
    scan = find_bids_anat(phantom_ds, participant_label=["01", "03"], desc="brain")
    assert [c.stem for c in scan.cases] == [
        "sub-01/anat/sub-01_desc-brainFLAIR", "sub-01/anat/sub-01_desc-brain",
        "sub-01/anat/sub-01_acq-fast_run-2_desc-brainT2w", "sub-03/anat/sub-03_desc-brain"]
    with pytest.raises(InputFolderError, match=r"participant label.*not found.*: 04 "):
        find_bids_anat(phantom_ds, participant_label=["01", "04"])
    with pytest.raises(InputFolderError, match=r"session label.*not found.*: mid"):
        find_bids_anat(phantom_ds, participant_label="02", session_label=["pre", "mid"])
    with pytest.raises(ParameterError, match="not a BIDS sub label"):
        find_bids_anat(phantom_ds, participant_label="0-1")
    with pytest.raises(InputFolderError, match="not a BIDS dataset"):
        find_bids_anat(phantom_ds / "sub-01")


def test_bad_names_are_set_aside(tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds", {
        "sub-01/anat/sub-01_T1w.nii.gz": _box(),
        "sub-01/anat/sub-02_T1w.nii.gz": _box(),
        "sub-01/anat/sub-01_inv-1_T1w.nii.gz": _box(),
        "sub-01/anat/sub-01_run-1_acq-x_T1w.nii.gz": _box(),
    })
    scan = find_bids_anat(ds)
    assert [c.label for c in scan.cases] == ["sub-01/anat/sub-01_T1w.nii.gz"]
    assert [(p.name, why) for p, why in scan.ignored] == [
        ("sub-01_inv-1_T1w.nii.gz", "entities inv cannot appear in a BIDS mask name; mask it "
                                    "with 'nimask mask' instead"),
        ("sub-01_run-1_acq-x_T1w.nii.gz", "entities are not in BIDS order"),
        ("sub-02_T1w.nii.gz", "not a BIDS file name of sub-01 (it must start with sub-01_)"),
    ]


def test_bids_run_refuses_what_it_must(phantom_ds: Path, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="analysis level must be 'participant'"):
        mask_bids(phantom_ds, tmp_path / "o", "group")
    with pytest.raises(OutputError, match="must not be BIDS_DIR"):
        mask_bids(phantom_ds, phantom_ds)
    other = tmp_path / "other"
    other.mkdir()
    (other / "dataset_description.json").write_text(json.dumps(
        {"Name": "x", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "fmriprep"}]}))
    with pytest.raises(OutputError, match="was not written by nimask"):
        mask_bids(phantom_ds, other)
    assert sorted(os.listdir(other)) == ["dataset_description.json"]
    with pytest.raises(ParameterError, match="output_format is not an option of a BIDS run"):
        mask_bids(phantom_ds, tmp_path / "o", output_format="nrrd")


def test_skip_existing_resumes_a_bids_run(phantom_ds: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    mask_bids(phantom_ds, out, participant_label="01", threshold=WINDOW, closing_radius=1)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    results = mask_bids(phantom_ds, out, threshold=WINDOW, closing_radius=1,
                        skip_existing=True)
    assert sorted(r.status for r in results) == ["skipped"] * 3 + ["written"] * 4
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # same bytes: not rewritten
    assert _invalid_paths(out) == []


def test_desc_follows_the_preset(phantom_ds: Path, tmp_path: Path) -> None:
    scan = find_bids_anat(phantom_ds, participant_label="03")
    assert scan.cases[0].sidecar == {"Type": "Head",
                                     "Sources": ["bids:raw:sub-03/anat/sub-03_T1w.nii.gz"],
                                     "RawSources": ["sub-03/anat/sub-03_T1w.nii.gz"]}
    results = mask_bids(phantom_ds, tmp_path / "out", participant_label="03",
                        preset="ct-brain", workers=1)
    assert [Path(r.output).name for r in results] == ["sub-03_desc-brain_mask.nii.gz"]
    sidecar = json.loads((tmp_path / "out" / "sub-03" / "anat" / "sub-03_desc-brain_mask.json"
                          ).read_text())
    assert sidecar["Type"] == "Brain"
    assert sidecar["nimask"]["preset"] == "ct-brain"
    results = mask_bids(phantom_ds, tmp_path / "out2", participant_label="03", desc="brain")
    assert [Path(r.output).name for r in results] == ["sub-03_desc-brain_mask.nii.gz"]


def test_cli_bids_app(phantom_ds: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(main, [
        "bids", str(phantom_ds), str(out), "participant", "--participant-label", "01", "sub-03",
        "--threshold", "50", "150", "--closing-radius", "1", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("nimask: 4 masks written, 0 skipped, 0 failed")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*_mask.nii.gz")) == [
        "sub-01/anat/sub-01_acq-fast_run-2_desc-headT2w_mask.nii.gz",
        "sub-01/anat/sub-01_desc-headFLAIR_mask.nii.gz",
        "sub-01/anat/sub-01_desc-head_mask.nii.gz",
        "sub-03/anat/sub-03_desc-head_mask.nii.gz"]
    res = CliRunner().invoke(main, ["bids", str(phantom_ds), str(out), "group"])
    assert res.exit_code == 2
    res = CliRunner().invoke(main, ["bids", str(phantom_ds), str(out), "participant",
                                    "--participant_label", "09"])
    assert res.exit_code == 2
    assert "participant label(s) not found" in res.output


@pytest.mark.slow
def test_real_volumes_in_a_bids_dataset(shared_data: Path, tmp_path: Path) -> None:
    ds = _dataset(tmp_path / "ds", {
        "sub-01/anat/sub-01_T1w.nii.gz": shared_data / "itk_t1_2x2x3mm.nii.gz",
        "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii": shared_data / "small_bigendian_anatomical.nii",
        "sub-03/anat/sub-03_CT.nii.gz": shared_data / "invesalius_ct_head_hu.nii.gz",
        "sub-04/anat/sub-04_T1w.nii.gz": shared_data / "bad_4d_fmri_example4d.nii.gz",
    })
    out = ds / "derivatives" / "nimask"
    results = mask_bids(ds, out, workers=2, report=out / "report.json")
    by_input = {Path(r.input).name: r for r in results}
    assert by_input["sub-04_T1w.nii.gz"].status == "failed"
    assert "4D volume with 2 time points" in by_input["sub-04_T1w.nii.gz"].error
    # The masks equal those of the folder mode on the same volumes, voxel for voxel.
    plain = mask_dataset([shared_data / "itk_t1_2x2x3mm.nii.gz",
                          shared_data / "small_bigendian_anatomical.nii",
                          shared_data / "invesalius_ct_head_hu.nii.gz"], tmp_path / "plain",
                         workers=2)
    pairs = {"sub-01_T1w.nii.gz": "itk_t1_2x2x3mm_mask.nii.gz",
             "sub-02_ses-1_T1w.nii": "small_bigendian_anatomical_mask.nii.gz",
             "sub-03_CT.nii.gz": "invesalius_ct_head_hu_mask.nii.gz"}
    assert [r.status for r in plain] == ["written"] * 3
    for source, reference in pairs.items():
        res = by_input[source]
        assert res.status == "written"
        np.testing.assert_array_equal(np.asanyarray(nib.load(res.output).dataobj),
                                      np.asanyarray(nib.load(tmp_path / "plain" / reference
                                                             ).dataobj))
    assert Path(by_input["sub-03_CT.nii.gz"].output).name == "sub-03_desc-headCT_mask.nii.gz"
    assert not list(out.rglob("sub-04*_mask.nii.gz"))
    assert _invalid_paths(out) == []
    assert (out / ".bidsignore").read_text() == "report.json\n"


@pytest.mark.parametrize(("preset", "desc"), [
    (None, "head"), ("ct-head", "head"), ("mri-head", "head"), ("nidataset", "head"),
    ("ct-brain", "brain"), ("mri-brain", "brain"),
])
def test_desc_is_brain_only_for_the_presets_that_remove_the_skull(preset: str | None,
                                                                  desc: str) -> None:
    settings = MaskSettings.create(None, 3, None, preset=preset)
    assert default_desc(settings) == desc
    assert settings.segment_kind == desc
