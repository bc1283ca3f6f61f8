"""The ``nimask`` command: parse, call :func:`nimask.mask_dataset`, print a summary.

Exit codes: 0 every file succeeded, 1 at least one file failed (the others are
written), 2 usage error (bad option, missing input folder, no ``.nii.gz``),
130 interrupted (Ctrl-C; no partial mask is left).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from ._version import __version__
from .batch import mask_dataset
from .core import preset_names
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
from .exceptions import InputFolderError, OutputError, ParameterError
from .records import FileResult

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
    count = {s: sum(r.status == s for r in results) for s in ("written", "skipped", "failed")}
    flagged = [r for r in results if r.flags]
    click.echo(f"nimask: {count['written']} masks written, {count['skipped']} skipped, "
               f"{count['failed']} failed in {seconds:.1f} s; {len(flagged)} flagged")
    for r in flagged[:MAX_FLAGGED_LINES]:
        click.echo(f"  flagged {Path(r.input).name}: {', '.join(r.flags)}")
    if len(flagged) > MAX_FLAGGED_LINES:
        click.echo(f"  ... and {len(flagged) - MAX_FLAGGED_LINES} more (see the report)")
    click.echo(f"masks:  {output_dir}")
    if report is not None:
        click.echo(f"report: {report}")
    if qc is not None:
        click.echo(f"QC:     {qc / 'index.html'}")


def _run(input_dir: Path, output_dir: Path, *, quiet: bool, debug: bool,
         scheduler: str | None = None, **options: Any) -> None:
    """Run one batch; ``options`` are :func:`mask_dataset` keywords."""
    start = time.perf_counter()
    options["progress"] = False if quiet else options.get("progress")
    try:
        with _logging(quiet, debug), contextlib.ExitStack() as stack:
            if scheduler is not None:
                from .batch.cluster import open_executor  # imports Dask only here

                options.update(workers=1, executor=stack.enter_context(open_executor(scheduler)))
            results = mask_dataset(input_dir, output_dir, **options)
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
_debug = click.option("-v", "--debug", is_flag=True, help="Verbose logs; tracebacks on errors.")
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


@main.command("mask")
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--threshold", nargs=2, type=float, metavar="LOW HIGH",
              help="Inclusive intensity window (negative HU work); default: Otsu per volume.")
@click.option("--closing-radius", type=click.IntRange(min=0), default=3, show_default=True,
              help="Ball radius (voxels) of the morphological closing; 0 = none.")
@click.option("--closing-radius-mm", type=click.FloatRange(min=0), metavar="MM",
              help="Closing ball round in millimetres (replaces --closing-radius).")
@click.option("--preset", type=click.Choice(preset_names()),
              help="Documented recipe; explicit options override its values.")
@click.option("--fill-holes", type=click.Choice(["off", "3d", "slices", "both"]),
              help="Fill holes in 3D and/or slice by slice (opt-in).")
@click.option("--largest-component/--no-largest-component", default=None,
              help="Keep only the largest face-connected component (opt-in).")
@click.option("--opening-radius", metavar="N|Rmm",
              help="Erosion/dilation around the largest-component step, voxels or e.g. 2mm.")
@click.option("--exclude-above-window/--no-exclude-above-window", default=None,
              help="After closing, drop voxels above the window's upper bound (opt-in).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), callback=_check_report,
              help="Per-file report, .csv or .json (by suffix).")
@click.option("--qc", "qc_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for one QC picture per case and index.html.")
@click.option("--qc-layout", type=click.Choice(LAYOUTS), default="mid", show_default=True,
              help="QC pictures: three mid-slices, or a mosaic over the mask's extent.")
@click.option("--only-rated", nargs=2, metavar="RATINGS CSV",
              help="Run only the inputs rated e.g. 'bad' (or 'bad,unsure') in a ratings.csv "
                   "exported by the QC page; the report and page show the earlier rating.")
@click.option("--inputs-from", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Run only the inputs listed in this file (a CSV with an 'input' column, "
                   "e.g. ratings.csv or a report, or one name a line); a ratings file's "
                   "verdicts are shown as earlier ratings.")
@click.option("--skip-existing", is_flag=True,
              help="Keep complete masks made by this version with the same parameters.")
@_workers
@click.option("--scheduler", metavar="ADDRESS|local",
              help="Run on Dask (tcp://host:8786, or 'local'); needs nimask[dask].")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: only on a terminal).")
@_quiet
@_debug
def mask_command(input_dir: Path, output_dir: Path, threshold: tuple[float, float] | None,
                 opening_radius: str | None, workers: int, scheduler: str | None,
                 only_rated: tuple[str, str] | None, inputs_from: Path | None,
                 **options: Any) -> None:
    """Write INPUT_DIR/<name>.nii.gz's mask to OUTPUT_DIR/<name>_mask.nii.gz.

    \b
    Examples:
      nimask mask scans/ masks/
      nimask mask ct/ ct_masks/ --threshold -500 3000 --report ct.json --qc ct_qc/
      nimask mask ct/ ct_masks/ --closing-radius-mm 3 --skip-existing
      nimask mask ct/ ct_masks/ --preset ct-brain --qc qc2/ --only-rated bad ratings.csv
    Exit status: 0 all written, 1 some file failed, 2 usage error, 130 interrupted.
    """
    if scheduler is not None and workers != 0:
        raise click.UsageError("--workers and --scheduler exclude each other: "
                               "the scheduler's workers run the files")
    radius: int | str | None = opening_radius
    if opening_radius is not None and opening_radius.isdigit():
        radius = int(opening_radius)
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
    _run(input_dir, output_dir, threshold=threshold or None, opening_radius=radius,
         workers=workers or None, scheduler=scheduler, **options)


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
