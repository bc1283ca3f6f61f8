"""The ``nimask`` command: parse, call :func:`nimask.mask_dataset`, print a summary.

Exit codes: 0 every file succeeded, 1 at least one file failed (the others are
written) or the report/QC page could not be written after the masks were,
2 usage error (bad option, missing input folder, no ``.nii.gz``, an output,
report or QC folder that cannot be written, found before any work),
130 interrupted (Ctrl-C; no partial mask is left).
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import click
from tqdm import tqdm

from ._version import __version__
from .batch import mask_bids, mask_dataset
from .batch.allocator import keep_freed_memory
from .core import preset_names
from .core.refine import validate_opening_radius
from .data import sample_folder
from .evidence import report_format
from .evidence.qc import LAYOUTS
from .evidence.ratings import (
    is_ratings_file,
    parse_rating_choice,
    rated_inputs,
    read_input_list,
    read_ratings,
)
from .exceptions import InputFolderError, OutputError, ParameterError, ReportError
from .io import OUTPUT_FORMATS, volume_format
from .io.nifti import safe_text
from .records import STATUSES, FileResult

__all__ = ["main"]

MAX_FLAGGED_LINES = 10


class _Handler(logging.Handler):
    """One line per record on stderr, printed above a progress bar if any."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(f"{record.levelname.lower()}: {self.format(record)}", file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _logging(quiet: bool, debug: bool) -> Iterator[None]:
    """Send nimask's log records to stderr for one run, then restore the logger."""
    logger = logging.getLogger("nimask")
    saved = (logger.level, logger.propagate)
    handler = _Handler()
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.ERROR if quiet else logging.DEBUG if debug else logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _check_report(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    if value is not None:
        try:
            report_format(value)
        except ParameterError as exc:
            raise click.BadParameter(str(exc)) from exc
    return value


def _summary(results: list[FileResult], seconds: float, output_dir: Path,
             report: Path | None, qc: Path | None) -> None:
    count = {s: sum(r.status == s for r in results) for s in STATUSES}
    flagged = [r for r in results if r.flags]
    masks = "mask" if count["written"] == 1 else "masks"
    click.echo(f"nimask: {count['written']} {masks} written, {count['skipped']} skipped, "
               f"{count['failed']} failed, {count['ignored']} ignored in {seconds:.1f} s; "
               f"{len(flagged)} flagged")
    names = [Path(r.input).name for r in results]
    # File names, unless two inputs share one (nested trees): then the inputs as given.
    short = len(set(names)) == len(names)
    for r in flagged[:MAX_FLAGGED_LINES]:
        shown = safe_text(Path(r.input).name if short else r.input)
        click.echo(f"  flagged {shown}: {', '.join(r.flags)}")
    if len(flagged) > MAX_FLAGGED_LINES:
        click.echo(f"  ... and {len(flagged) - MAX_FLAGGED_LINES} more (see the report)")
    click.echo(f"masks:  {output_dir}")
    if report is not None:
        click.echo(f"report: {report}")
    if qc is not None:
        click.echo(f"QC:     {qc / 'index.html'}")


def _run(input_dir: Path | list[Path], output_dir: Path, *, quiet: bool, debug: bool,
         scheduler: str | None = None, runner: Callable[..., list[FileResult]] | None = None,
         **options: Any) -> None:
    """Run one batch; ``options`` are keywords of ``runner`` (default :func:`mask_dataset`)."""
    runner = runner or mask_dataset
    start = time.perf_counter()
    options["progress"] = False if quiet else options.get("progress")
    try:
        with _logging(quiet, debug), contextlib.ExitStack() as stack:
            # this process is the nimask command's own: freed volume buffers are
            # kept for the next volume (nimask.batch.allocator)
            keep_freed_memory()
            if scheduler is not None:
                from .batch.cluster import open_executor  # imports Dask only here

                options.update(workers=1, executor=stack.enter_context(open_executor(scheduler)))
            results = runner(input_dir, output_dir, **options)
    except ReportError as exc:
        # Every mask is written: not a usage error.
        if not quiet:
            _summary(list(exc.results), time.perf_counter() - start, output_dir, None,
                     None)
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (InputFolderError, ParameterError, OutputError) as exc:
        raise click.UsageError(str(exc)) from exc
    except KeyboardInterrupt:
        click.echo("nimask: interrupted (no partial mask left)", err=True)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        click.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for details)", err=True)
        sys.exit(1)
    if not quiet:
        _summary(results, time.perf_counter() - start, output_dir, options.get("report"),
                 options.get("qc_dir"))
    if any(r.status == "failed" for r in results):
        sys.exit(1)


_quiet = click.option("-q", "--quiet", is_flag=True, help="Only errors: no progress, no summary.")
_debug = click.option(
    "-v", "--debug", is_flag=True,
    help="Verbose logs (a line per file) and tracebacks on errors; unlike the API's "
         "debug=True, which only prints 'Total brain masks generated: N'.")
_workers = click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                        help="Worker processes; 0 = every usable CPU, 1 = in-process.")


@click.group("nimask", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nimask")
def main() -> None:
    """Brain/head threshold masks for folders of NIfTI volumes (SimpleITK).

    \b
    Examples:
      nimask demo nimask-demo/
      nimask mask scans/ masks/ --report report.csv --qc qc/
      nimask mask ct/ ct_masks/ --threshold -500 3000 --workers 2
      nimask mask ct/ brains/ --preset ct-brain --qc qc/
    """


def _check_opening(ctx: click.Context, param: click.Parameter,
                   value: str | None) -> int | str | None:
    if value is None:
        return None
    radius: int | str = int(value) if value.strip().isdigit() else value
    try:
        validate_opening_radius(radius)
    except ParameterError as exc:
        text = str(exc).replace("opening_radius", "it")
        raise click.BadParameter(
            f"{text}; give voxels (e.g. 2) or millimetres (e.g. 2.5mm)") from exc
    return radius


def _inputs(paths: tuple[Path, ...]) -> list[Path]:
    """Check that every INPUT exists (the last argument is OUTPUT_DIR, never an input)."""
    if not paths:
        raise click.UsageError(
            "Missing argument 'OUTPUT_DIR' (nimask mask INPUT... OUTPUT_DIR: the last "
            "path is the output folder)")
    for path in paths:
        if not path.exists():
            kind = "File" if volume_format(path) is not None else "Directory"
            raise click.BadParameter(f"{kind} '{path}' does not exist.",
                                     param_hint="'INPUT...'")
    return list(paths)


def _batch_options(command: Callable[..., None]) -> Callable[..., None]:
    """The mask and run options shared by ``nimask mask`` and ``nimask bids``."""
    options = [
        click.option("--threshold", nargs=2, type=float, metavar="LOW HIGH",
                     help="Inclusive intensity window (negative HU work); default: Otsu per "
                          "volume."),
        click.option("--closing-radius", type=click.IntRange(min=0), default=3,
                     show_default=True,
                     help="Ball radius (voxels) of the morphological closing; 0 = none."),
        click.option("--closing-radius-mm", type=click.FloatRange(min=0), metavar="MM",
                     help="Closing ball round in millimetres (replaces --closing-radius)."),
        click.option("--preset", type=click.Choice(preset_names()),
                     help="Documented recipe; explicit options override its values."),
        click.option("--fill-holes", type=click.Choice(["off", "3d", "slices", "both"]),
                     help="Fill holes in 3D and/or slice by slice (opt-in)."),
        click.option("--largest-component/--no-largest-component", default=None,
                     help="Keep only the largest face-connected component (opt-in)."),
        click.option("--opening-radius", metavar="N|Rmm", callback=_check_opening,
                     help="Erosion/dilation around the largest-component step, voxels or "
                          "e.g. 2mm."),
        click.option("--exclude-above-window/--no-exclude-above-window", default=None,
                     help="After closing, drop voxels above the window's upper bound "
                          "(opt-in)."),
        click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
                     callback=_check_report, help="Per-file report, .csv or .json (by suffix)."),
        click.option("--qc", "qc_dir", type=click.Path(file_okay=False, path_type=Path),
                     help="Folder for one QC picture per case and index.html."),
        click.option("--qc-layout", type=click.Choice(LAYOUTS), default="mid",
                     show_default=True,
                     help="QC pictures: three mid-slices, or a mosaic over the mask's extent."),
        click.option("--skip-existing", is_flag=True,
                     help="Keep complete masks made by this version with the same parameters."),
        _workers,
        click.option("--scheduler", metavar="ADDRESS|local",
                     help="Run on Dask (tcp://host:8786, or 'local'); needs nimask[dask]."),
        click.option("--progress/--no-progress", default=None,
                     help="Progress bar on stderr (default: only on a terminal)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command("mask", short_help="Mask volumes (folders, files, trees) into OUTPUT_DIR.")
@click.argument("inputs", nargs=-1, metavar="INPUT...",
                type=click.Path(path_type=Path))
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@_batch_options
@click.option("--only-rated", nargs=2, metavar="RATINGS CSV",
              help="Run only the inputs rated e.g. 'bad' (or 'bad,unsure') in a ratings.csv "
                   "exported by the QC page; the report and page show the earlier rating.")
@click.option("--inputs-from", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Run only the inputs listed in this file (a CSV with an 'input' column, "
                   "e.g. ratings.csv or a report, or one name a line); a ratings file's "
                   "verdicts are shown as earlier ratings.")
@click.option("--pattern", default="*.nii.gz", show_default=True, metavar="GLOB",
              help="Volumes to take in INPUT folders (case-insensitive; '/' or '**' match "
                   "relative paths, e.g. 'sub-*/anat/*_T1w.nii.gz', '**/*.nrrd').")
@click.option("--recursive", is_flag=True,
              help="Search sub-folders too; the masks mirror the input tree.")
@click.option("--output-format", type=click.Choice(list(OUTPUT_FORMATS)), default="nii.gz",
              show_default=True,
              help="Mask format; 'same' = each input's own format; 'dicom-seg' = with "
                   "--dicom, a DICOM SEG per series (<name>_seg.dcm) beside its NIfTI mask "
                   "(needs nimask[dicom]).")
@click.option("--dicom", is_flag=True,
              help="INPUT folders are DICOM exports: one mask per image series.")
@_quiet
@_debug
def mask_command(inputs: tuple[Path, ...], output_dir: Path,
                 threshold: tuple[float, float] | None,
                 opening_radius: int | str | None, workers: int, scheduler: str | None,
                 only_rated: tuple[str, str] | None, inputs_from: Path | None,
                 **options: Any) -> None:
    """Mask INPUT (folders and/or volume files); write the masks into OUTPUT_DIR.

    The last argument is always OUTPUT_DIR.  A folder's volumes matching
    --pattern give OUTPUT_DIR/<name>_mask.nii.gz (with --recursive, the
    sub-folders are mirrored: OUTPUT_DIR/<sub>/<name>_mask.nii.gz); a file
    gives OUTPUT_DIR/<name>_mask.nii.gz.  Formats read: .nii.gz, .nii, .nrrd,
    .nhdr, .mha, .mhd, .mnc.

    \b
    Examples:
      nimask mask scans/ masks/
      nimask mask ct/ ct_masks/ --threshold -500 3000 --report ct.json --qc ct_qc/
      nimask mask ct/ ct_masks/ --closing-radius-mm 3 --skip-existing
      nimask mask ct/ ct_masks/ --preset ct-brain --qc qc2/ --only-rated bad ratings.csv
      nimask mask cohort/ masks/ --recursive
      nimask mask slicer/ masks/ --pattern '*.nrrd' --output-format same
      nimask mask a.nii b.mha c.nrrd masks/
      nimask mask export/ masks/ --dicom
    Exit status: 0 all written, 1 some file failed (or the report could not be
    written after the masks), 2 usage error, 130 interrupted.
    """
    paths = _inputs(inputs)
    keywords = _batch_keywords(threshold, opening_radius, workers, scheduler)
    if only_rated is not None and inputs_from is not None:
        raise click.UsageError("--only-rated and --inputs-from exclude each other")
    try:
        if only_rated is not None:
            wanted, path = parse_rating_choice(only_rated[0]), Path(only_rated[1])
            table = read_ratings(path)
            options.update(only=rated_inputs(table, wanted), ratings=table)
            if not options["only"]:
                click.echo(f"nimask: no input rated {' or '.join(wanted)} in {path}; "
                           "nothing to run")
                return
        elif inputs_from is not None:
            options["only"] = read_input_list(inputs_from)
            if is_ratings_file(inputs_from):
                options["ratings"] = read_ratings(inputs_from)
    except ParameterError as exc:
        raise click.BadParameter(str(exc), param_hint="--only-rated / --inputs-from") from exc
    _run(paths[0] if len(paths) == 1 else paths, output_dir, **keywords, **options)


def _batch_keywords(threshold: tuple[float, float] | None, opening_radius: int | str | None,
                    workers: int, scheduler: str | None) -> dict[str, Any]:
    """The keywords whose command-line form differs from the API's."""
    if scheduler is not None and workers != 0:
        raise click.UsageError("--workers and --scheduler exclude each other: "
                               "the scheduler's workers run the files")
    return {"threshold": threshold or None, "opening_radius": opening_radius,
            "workers": workers or None, "scheduler": scheduler}


class _BidsCommand(click.Command):
    """Takes BIDS-Apps labels as ``--participant-label 01 02`` (several values, one option)."""

    VARIADIC: ClassVar[dict[str, str]] = {"--participant-label": "--participant-label",
                "--participant_label": "--participant-label",
                "--session-label": "--session-label", "--session_label": "--session-label"}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        current: str | None = None
        for arg in args:
            if arg in self.VARIADIC:
                current = self.VARIADIC[arg]
                out.append(current)  # click reports a missing value if none follows
                continue
            if current is not None and not arg.startswith("-"):
                if out[-1] != current:
                    out.append(current)
                out.append(arg)
                continue
            current = None
            out.append(arg)
        return super().parse_args(ctx, out)


@main.command("bids", cls=_BidsCommand,
              short_help="BIDS App: mask BIDS_DIR's anatomical images into OUTPUT_DIR.")
@click.argument("bids_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("analysis_level", type=click.Choice(["participant"]))
@click.option("--participant-label", "participant_label", multiple=True, metavar="LABEL...",
              help="Only these participants (01 or sub-01); several may follow the option.")
@click.option("--session-label", "session_label", multiple=True, metavar="LABEL...",
              help="Only these sessions (1 or ses-1); several may follow the option.")
@click.option("--desc", metavar="LABEL",
              help="desc label of the masks; default: brain with --preset ct-brain, else head.")
@_batch_options
@_quiet
@_debug
def bids_command(bids_dir: Path, output_dir: Path, analysis_level: str,
                 participant_label: tuple[str, ...], session_label: tuple[str, ...],
                 threshold: tuple[float, float] | None, opening_radius: str | None,
                 workers: int, scheduler: str | None, **options: Any) -> None:
    """BIDS App: mask the anatomical images of BIDS_DIR into OUTPUT_DIR (derivatives).

    Masks sub-XX/[ses-YY/]anat/*_{T1w,T2w,FLAIR,CT}.nii[.gz] into
    OUTPUT_DIR/sub-XX/[ses-YY/]anat/sub-XX[_ses-YY]..._desc-head_mask.nii.gz
    (desc-brain with --preset ct-brain; the suffix is added to desc for non-T1w
    images: desc-headT2w) with a JSON sidecar each, and writes
    OUTPUT_DIR/dataset_description.json.  A --report or --qc inside OUTPUT_DIR
    is listed in OUTPUT_DIR/.bidsignore.

    \b
    Examples:
      nimask bids /data/ds /data/ds/derivatives/nimask participant
      nimask bids ds/ out/ participant --participant-label 01 02 --session-label pre
      nimask bids ct_ds/ out/ participant --preset ct-brain --skip-existing
    Exit status: 0 all written, 1 some file failed (or the report could not be
    written after the masks), 2 usage error, 130 interrupted.
    """
    command = " ".join(shlex.quote(a) for a in ["nimask", *sys.argv[1:]])
    _run(bids_dir, output_dir, runner=mask_bids, analysis_level=analysis_level,
         participant_label=list(participant_label) or None,
         session_label=list(session_label) or None, command=command,
         **_batch_keywords(threshold, opening_radius, workers, scheduler), **options)


@main.command("demo")
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@_workers
@_quiet
@_debug
def demo_command(output_dir: Path, workers: int, quiet: bool, debug: bool) -> None:
    """Mask the bundled sample T1: OUTPUT_DIR/masks, report.csv and qc/.

    \b
    Example:
      nimask demo nimask-demo/
    """
    _run(sample_folder(), output_dir / "masks", report=output_dir / "report.csv",
         qc_dir=output_dir / "qc", workers=workers or None, quiet=quiet, debug=debug)
