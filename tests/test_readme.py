"""README.md runs as written, and the four option lists agree with each other.

Every ```python block of the README is saved as a script and run by a real ``python script.py``
process, in order, in one empty temporary folder (the README's first block makes ``scans/`` from
the bundled sample and ``ct/`` from a phantom there). Every ``nimask ...`` command of a
```console or ```bash block (after a ``$`` prompt or a ``&&``) runs as a real process in the same
folder. Each must succeed, and the outputs the README promises must then exist.
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from nimask import cli, sample_brain_mask_path, sample_path
from nimask.batch.run import mask_dataset
from nimask.core.pipeline import brain_mask, compute_mask
from nimask.volume import generate_brain_mask_dataset

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def _blocks(language: str | tuple[str, ...]) -> list[str]:
    names = (language,) if isinstance(language, str) else language
    return [m.group(2) for m in _FENCE.finditer(README.read_text(encoding="utf-8"))
            if m.group(1) in names]


def _nimask_commands() -> list[list[str]]:
    """Each ``nimask ...`` command of the console/bash blocks, as an argument list."""
    commands = []
    for block in _blocks(("console", "bash")):
        for line in block.splitlines():
            line = line.removeprefix("$ ").strip()
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0] == "nimask":
                    commands.append(words[1:])
    return commands


def _nimask_executable() -> list[str]:
    script = Path(sys.executable).with_name("nimask")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "nimask"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=240,
                          check=False, env=env)


# Files the README says its blocks write (relative to the folder they run in).
PROMISED = [
    "scans/sample_t1.nii.gz",
    "ct/head_ct.nii.gz",
    "masks/sample_t1_mask.nii.gz",
    "brains/head_ct_mask.nii.gz",
    "brains/report.csv",
    "brains/qc/index.html",
    "report.csv",
    "qc/index.html",
    "ct_masks/head_ct_mask.nii.gz",
    "ct.json",
    "ct_brains/head_ct_mask.nii.gz",
    "ct_brains/qc/index.html",
    "nimask-demo/masks/sample_t1_mask.nii.gz",
    "nimask-demo/report.csv",
    "nimask-demo/qc/index.html",
    # the cohort commands
    "any_masks/sample_t1_mask.nii.gz",
    "any_masks/head_ct_mask.nii.gz",
    "tree_masks/sub-01/anat/sub-01_T1w_mask.nii.gz",
    "nrrd_masks/sample_t1_mask.nrrd",
    "dicom_masks/SAMPLE01_20240101_1_sample_T1_mask.nii.gz",
    "dicom_masks/SAMPLE01_20240101_1_sample_T1_mask.json",
    "derivatives/nimask/dataset_description.json",
    "derivatives/nimask/sub-01/anat/sub-01_desc-head_mask.nii.gz",
    "derivatives/nimask/sub-01/anat/sub-01_desc-head_mask.json",
]


def test_readme_blocks_are_found() -> None:
    python_blocks = _blocks("python")
    commands = _nimask_commands()
    assert len(python_blocks) == 5
    assert ["demo", "nimask-demo/"] in commands
    assert len(commands) == 10


@pytest.mark.slow
def test_readme_blocks_run_and_write_what_they_promise(tmp_path: Path) -> None:
    outputs = []
    for i, block in enumerate(_blocks("python")):
        script = tmp_path / f"readme_block_{i}.py"
        script.write_text(block, encoding="utf-8")
        run = _run([sys.executable, str(script)], tmp_path)
        assert run.returncode == 0, f"python block {i}:\n{block}\n{run.stderr}"
        outputs.append(run.stdout)
        script.unlink()
    for args in _nimask_commands():
        run = _run([*_nimask_executable(), *args], tmp_path)
        assert run.returncode == 0, f"nimask {' '.join(args)}:\n{run.stdout}\n{run.stderr}"
        outputs.append(run.stdout)

    missing = [p for p in PROMISED if not (tmp_path / p).is_file()]
    assert not missing
    # The printed lines the README shows.
    assert "Total brain masks generated: 1" in README.read_text(encoding="utf-8")
    assert outputs[1] == "Total brain masks generated: 1\n"
    status, output, volume, unit, flags = outputs[2].split(maxsplit=4)
    assert flags.strip() == "[]"
    assert (status, output, unit) == ("written", "brains/head_ct_mask.nii.gz", "mL")
    assert int(volume) > 0
    assert outputs[3] == "True True\n"
    assert outputs[5].startswith("nimask: 1 mask written, 0 skipped, 0 failed")  # nimask demo
    assert "Usage: nimask mask" in outputs[9]  # nimask mask --help
    # The masks are masks: uint8 {0, 1} on the input's grid.
    for mask_path, input_path in (("masks/sample_t1_mask.nii.gz", "scans/sample_t1.nii.gz"),
                                  ("ct_brains/head_ct_mask.nii.gz", "ct/head_ct.nii.gz")):
        mask, image = nib.load(tmp_path / mask_path), nib.load(tmp_path / input_path)
        data = np.asanyarray(mask.dataobj)
        assert data.dtype == np.uint8
        assert set(np.unique(data)) == {0, 1}
        assert mask.shape == image.shape
        assert np.allclose(mask.affine, image.affine)


def test_readme_figures_for_the_bundled_t1() -> None:
    """The share of the reference brain in the default mask, and its Dice, as the README says."""
    lines = README.read_text(encoding="utf-8").splitlines()
    text = " ".join(line.lstrip(">").strip() for line in lines)  # the warning is a quote
    found = re.search(r"the default mask holds ([\d.]+) % of the reference brain, "
                      r"plus scalp and skull \(Dice ([\d.]+)\)", text)
    assert found is not None
    share, dice = found.groups()
    image = sitk.ReadImage(str(sample_path()))
    mask = sitk.GetArrayFromImage(brain_mask(image)).astype(bool)
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_brain_mask_path()))).astype(bool)
    inside = np.count_nonzero(mask & brain)
    assert f"{100 * inside / np.count_nonzero(brain):.2f}" == share
    assert f"{2 * inside / (np.count_nonzero(mask) + np.count_nonzero(brain)):.2f}" == dice


def test_readme_test_command_is_the_one_ci_runs() -> None:
    """The README's second command is what ``.ci/run`` runs (inside a time bound)."""
    first_block = _blocks("bash")[0].splitlines()
    assert first_block[0] == "pip install . && nimask demo nimask-demo/"
    test_command = first_block[1]
    assert test_command == 'pip install -e ".[test]" && python -m pytest'
    ci_lines = [line.strip().replace('"${bound[@]}" ', "")
                for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert test_command in ci_lines


# --- The option lists -----------------------------------------------------------------------

def _params(function: object) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(function).parameters)  # type: ignore[arg-type]


def _cli_params() -> dict[str, click.Parameter]:
    command = cli.main.commands["mask"]
    return {p.name: p for p in command.params if p.name is not None}


# Documented exceptions: parameters that exist on one side only, and why.
ONLY_IN_DOCUMENTED_FUNCTION = {"debug"}  # prints the count; mask_dataset returns the results
# Re-running rated cases (QC review) is mask_dataset's and the command's, not the drop-in's.
ONLY_IN_MASK_DATASET = {"only", "ratings"}
# Cases built by the caller (files, lists, trees) and DICOM: mask_dataset's and the command's.
ONLY_IN_MASK_DATASET |= {"cases", "dicom"}
BATCH_ONLY = {"nii_folder", "output_path", "workers", "progress", "report", "qc_dir",
              "skip_existing", "executor", "qc_layout", "only", "ratings", "pattern",
              "recursive", "output_format", "cases", "dicom"}  # folders, files and runs
ONLY_IN_PIPELINE = {"image"}
CLI_NAMES = {"nii_folder": "inputs", "output_path": "output_dir", "executor": "scheduler"}
# only= and ratings= come from a file: --only-rated RATINGS CSV, or --inputs-from FILE.
CLI_FOR = {"only": {"only_rated", "inputs_from"}, "ratings": {"only_rated", "inputs_from"},
           "cases": {"inputs"}}  # INPUTS... (folders, files, lists) become the cases
CLI_ONLY = {"quiet", "debug"}  # --debug is verbose logging, not the documented debug print
# Defaults that differ on purpose: --workers 0 means "every usable CPU", as workers=None does.
CLI_DEFAULTS = {"workers": 0}


def test_option_lists_agree(tmp_path: Path) -> None:
    documented = _params(generate_brain_mask_dataset)
    batch = _params(mask_dataset)
    pure = _params(brain_mask)

    # generate_brain_mask_dataset == mask_dataset + debug, same order, kinds and defaults.
    assert ([n for n in documented if n not in ONLY_IN_DOCUMENTED_FUNCTION]
            == [n for n in batch if n not in ONLY_IN_MASK_DATASET])
    for name, param in batch.items():
        if name in ONLY_IN_MASK_DATASET:
            continue
        assert documented[name].kind == param.kind, name
        assert documented[name].default == param.default, name
    assert list(documented)[4] == "debug"
    assert documented["debug"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD

    # brain_mask and compute_mask: the same parameters.
    assert _params(compute_mask) == pure

    # The pure pipeline's options are mask_dataset's, minus the batch ones.
    assert set(pure) - ONLY_IN_PIPELINE == set(batch) - BATCH_ONLY
    for name in set(pure) - ONLY_IN_PIPELINE:
        assert pure[name].kind == batch[name].kind, name
        assert pure[name].default == batch[name].default, name
    # Keyword-only after the documented parameters, everywhere.
    for params, positional in ((batch, 4), (documented, 5), (pure, 3)):
        kinds = [p.kind for p in params.values()]
        assert all(k is inspect.Parameter.POSITIONAL_OR_KEYWORD for k in kinds[:positional])
        assert all(k is inspect.Parameter.KEYWORD_ONLY for k in kinds[positional:])

    # The command line: one option per mask_dataset keyword (renamed where documented).
    options = _cli_params()
    expected = set(CLI_ONLY)
    for name in batch:
        expected |= CLI_FOR.get(name, {CLI_NAMES.get(name, name)})
    assert set(options) == expected
    # Defaults: the values the command receives when no option is given.
    command = cli.main.commands["mask"]
    given = command.make_context("mask", [str(tmp_path), str(tmp_path / "out")]).params
    for name, param in batch.items():
        if name in ("nii_folder", "output_path", *CLI_FOR):
            continue  # the two arguments; only/ratings are read from the files given
        cli_name = CLI_NAMES.get(name, name)
        assert given[cli_name] == CLI_DEFAULTS.get(name, param.default), name


def test_cli_choices_are_the_api_values() -> None:
    from nimask.core.presets import preset_names
    from nimask.core.refine import FILL_HOLES_MODES

    options = _cli_params()
    assert isinstance(options["preset"].type, click.Choice)
    assert list(options["preset"].type.choices) == preset_names()
    assert isinstance(options["fill_holes"].type, click.Choice)
    assert tuple(options["fill_holes"].type.choices) == FILL_HOLES_MODES
