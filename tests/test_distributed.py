"""Batches on user executors and Dask clusters: same results, same guarantees as locally."""

from __future__ import annotations

import copy
import dataclasses
import logging
import socket
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import SimpleITK as sitk

import nimask
from nimask import generate_brain_mask_dataset, mask_dataset
from nimask.batch.case import process_file
from nimask.batch.cluster import RemoteTask, open_executor, run_task
from nimask.batch.settings import MaskSettings
from nimask.data.phantoms import ct_head_phantom, mri_head_phantom
from nimask.exceptions import (
    MissingDependencyError,
    NimaskError,
    ParameterError,
    SchedulerError,
)
from nimask.io.nifti import TEMP_MARKER, temporary_tag
from nimask.records import FileResult

OBLIQUE_Z30 = (0.8660254037844387, -0.5, 0.0, 0.5, 0.8660254037844387, 0.0, 0.0, 0.0, 1.0)


def _make_inputs(folder: Path) -> Path:
    """Seven inputs: five CT heads (one oblique), one T1 head, one broken file."""
    folder.mkdir(parents=True)
    for seed in range(4):
        image = ct_head_phantom((56, 52, 36), seed=seed)
        sitk.WriteImage(image, str(folder / f"ct_{seed}.nii.gz"))
    sitk.WriteImage(
        ct_head_phantom((48, 48, 30), direction=OBLIQUE_Z30, seed=9),
        str(folder / "ct_oblique.nii.gz"),
    )
    sitk.WriteImage(mri_head_phantom((50, 50, 34), seed=3), str(folder / "t1.nii.gz"))
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    return folder


def _comparable(results: list[FileResult], *, cohort: bool = True) -> list[dict[str, Any]]:
    """Result rows without timings (and without cohort-relative fields if ``cohort=False``)."""
    rows = []
    for res in results:
        row = res.as_dict()
        del row["seconds"]
        if not cohort:  # the z-score and flags depend on which files are in the batch
            del row["coverage_z"], row["flags"]
        rows.append(row)
    return rows


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_inputs(tmp_path_factory.mktemp("dist") / "in")


@pytest.fixture(scope="module")
def local_run(inputs: Path) -> tuple[list[FileResult], dict[str, bytes]]:
    """The reference: the same folder masked in-process."""
    out = inputs.parent / "local"
    results = mask_dataset(inputs, out, progress=False)
    assert [r.status for r in results] == ["failed"] + ["written"] * 6
    return results, _folder_bytes(out)


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a real Dask cluster ------------------------------------------------------------------


@pytest.mark.slow
def test_local_dask_cluster_matches_local_run(
    inputs: Path,
    local_run: tuple[list[FileResult], dict[str, bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    local_results, local_masks = local_run
    (tmp_path / "in").symlink_to(inputs)
    with open_executor("local", n_workers=2) as executor:
        # Relative paths from another working directory than the workers': they get
        # absolute paths, the results keep the paths as given.
        monkeypatch.chdir(tmp_path)
        results = mask_dataset("in", "masks", executor=executor, progress=True)
        generate_brain_mask_dataset("in", "again", executor=executor, debug=True)
    captured = capsys.readouterr()

    expected = _comparable(local_results)
    for row in expected:
        row["input"] = str(Path("in") / Path(row["input"]).name)
        if row["output"]:  # failed rows have none
            row["output"] = str(Path("masks") / Path(row["output"]).name)
    assert _comparable(results) == expected
    assert results[0].error.startswith("the gzip stream is corrupt (")
    assert _folder_bytes(tmp_path / "masks") == local_masks  # byte-identical, nothing else
    assert _folder_bytes(tmp_path / "again") == local_masks
    assert "Total brain masks generated: 6" in captured.out
    assert "7/7" in captured.err  # the progress bar followed the futures


def _die_at_rename_factory(marker: Path | None) -> Callable[..., FileResult]:
    """A task that kills its worker process after writing the temporary mask, before renaming.

    With ``marker``, only the first attempt dies (the marker records it).
    """

    def die_at_rename(fn: Callable[[RemoteTask], FileResult], task: RemoteTask) -> FileResult:
        import os as os_
        import signal

        if marker is None or not marker.exists():
            if marker is not None:
                marker.touch()

            def kill(*_args: object) -> None:
                os_.kill(os_.getpid(), signal.SIGKILL)

            os_.replace = kill  # type: ignore[assignment]  # only this worker process dies
        return fn(task)

    return die_at_rename


class _PoisonExecutor(Executor):
    """Delegates to a Dask client's executor; the task of ``poison`` kills its worker mid-write.

    The poisoned task needs the worker resource ``poison`` and the others ``clean``, so
    that no other task waits on a worker that dies (a worker restarted by its nanny keeps
    its resources).
    """

    def __init__(self, inner: Executor, poison: str, marker: Path | None) -> None:
        self.inner, self.poison, self.marker = inner, poison, marker

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if args[0].input_path.name == self.poison:
            die = _die_at_rename_factory(self.marker)
            return self.inner.submit(die, fn, *args, resources={"poison": 1})
        return self.inner.submit(fn, *args, resources={"clean": 1})


@pytest.mark.slow
def test_worker_killed_mid_write(
    inputs: Path,
    local_run: tuple[list[FileResult], dict[str, bytes]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import dask
    from distributed import LocalCluster

    local_results, local_masks = local_run
    config = {"distributed.scheduler.allowed-failures": 1}  # KilledWorker at the second death
    caplog.set_level(logging.INFO, logger="nimask")
    with dask.config.set(config), LocalCluster(
        n_workers=0, processes=True, threads_per_worker=1, host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        # Two worker processes, as LocalCluster(n_workers=2) starts, with distinct resources.
        template = next(iter(cluster.new_worker_spec().values()))
        for name, resources in ((0, {"poison": 1}), (1, {"clean": 1})):
            cluster.worker_spec[name] = copy.deepcopy(template)
            cluster.worker_spec[name]["options"]["resources"] = resources
        cluster.scale(2)
        with open_executor(cluster.scheduler_address) as executor:
            # 1. The worker dies on every attempt: Dask gives up (KilledWorker) at the
            #    second death and only that file fails.
            always = mask_dataset(
                inputs, tmp_path / "always",
                executor=_PoisonExecutor(executor, "ct_2.nii.gz", None),
            )
            # 2. The worker dies on the first attempt only: Dask runs the task again on the
            #    worker its nanny restarted.
            once = mask_dataset(
                inputs, tmp_path / "once",
                executor=_PoisonExecutor(executor, "ct_2.nii.gz", tmp_path / "died-once"),
            )

    by_name = {Path(r.input).name: r for r in always}
    assert by_name["ct_2.nii.gz"].status == "failed"
    assert by_name["ct_2.nii.gz"].error.startswith("worker failed: KilledWorker")
    others = [r for r in always if Path(r.input).name != "ct_2.nii.gz"]
    expected_others = [
        row for row in _comparable(local_results, cohort=False)
        if Path(row["input"]).name != "ct_2.nii.gz"
    ]
    assert [
        dict(row, output=Path(row["output"]).name) for row in _comparable(others, cohort=False)
    ] == [
        dict(row, output=Path(row["output"]).name) for row in expected_others
    ]
    # Nothing partial: the complete masks of the other files, no temporary left.
    assert _folder_bytes(tmp_path / "always") == {
        k: v for k, v in local_masks.items() if k != "ct_2_mask.nii.gz"
    }

    assert (tmp_path / "died-once").exists()
    assert [r.status for r in once] == [r.status for r in local_results]
    assert _folder_bytes(tmp_path / "once") == local_masks

    # Each killed worker had written its temporary (two deaths in the first batch, one in
    # the second); the end of each batch removed them.
    removed = [m for m in caplog.messages
               if m.startswith(f"removed leftover temporary file {TEMP_MARKER}")
               and f"-{temporary_tag('ct_2_mask.nii.gz')}-" in m]
    assert len(removed) == 3
    assert all(TEMP_MARKER in m for m in removed)


def test_unreachable_scheduler_fails_fast_with_a_clear_message() -> None:
    address = f"tcp://127.0.0.1:{_unused_port()}"
    with pytest.raises(SchedulerError) as info, open_executor(address, connect_timeout=1.5):
        pytest.fail("connected to an address where no scheduler listens")
    message = str(info.value)
    assert message.startswith(f"cannot reach the Dask scheduler at {address} within 1.5 s")
    assert "Timed out trying to connect" in message
    assert isinstance(info.value, ConnectionError)


@pytest.mark.parametrize(
    ("scheduler", "kwargs", "message"),
    [
        ("http://127.0.0.1:1", {}, "not a Dask scheduler address: 'http://127.0.0.1:1'"),
        ("", {}, "scheduler must be 'local' or an address"),
        ("tcp://127.0.0.1:1", {"n_workers": 2}, "n_workers applies only to scheduler='local'"),
        ("local", {"n_workers": 0}, "n_workers must be a positive integer"),
        ("local", {"connect_timeout": 0}, "connect_timeout must be a positive number"),
    ],
)
def test_open_executor_rejects_bad_arguments(
    scheduler: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ParameterError, match="^" + message.replace("(", r"\(")), open_executor(
        scheduler, **kwargs
    ):
        pytest.fail("opened an executor from bad arguments")


def test_missing_dask_tells_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails
    with pytest.raises(MissingDependencyError) as info, open_executor("local"):
        pytest.fail("opened an executor without Dask")
    assert str(info.value).startswith(
        'running on a Dask scheduler needs Dask: pip install "nimask[dask]"'
    )
    assert isinstance(info.value, ImportError)
    assert isinstance(info.value, NimaskError)


@pytest.mark.slow
def test_import_nimask_does_not_import_dask() -> None:
    code = (
        "import sys, nimask, nimask.volume, nimask.batch.cluster\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


# --- the worker-side task: storage checks, ITK threads -------------------------------------


def _task(inputs: Path, out: Path, probe: str | None = "probe", **changes: Any) -> RemoteTask:
    out.mkdir(exist_ok=True)
    if probe is not None:
        (out / probe).touch()
    path = inputs / "ct_0.nii.gz"
    task = RemoteTask(
        input_path=path,
        output_dir=out,
        settings=MaskSettings.create(None, 3),
        input_size=path.stat().st_size,
        probe_name="probe",
        nimask_version=nimask.__version__,
        submitter=("another process", -1),
    )
    return dataclasses.replace(task, **changes)


def test_run_task_writes_the_same_mask_as_process_file(inputs: Path, tmp_path: Path) -> None:
    task = _task(inputs, tmp_path / "out")
    (tmp_path / "ref").mkdir()
    expected = process_file(task.input_path, tmp_path / "ref", task.settings)
    got = run_task(task)
    assert got.status == "written"
    assert dataclasses.replace(got, seconds=0) == dataclasses.replace(
        expected, output=got.output, seconds=0
    )
    assert Path(got.output).read_bytes() == Path(expected.output).read_bytes()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing input", "input not visible on worker {host}: {input}"),
        (
            "other input",
            "input differs on worker {host}: {input} has {size} bytes there and 7 bytes on the "
            "submitting machine (inputs must be on storage every worker shares)",
        ),
        (
            "other output folder",
            "output folder not shared with worker {host}: {out} "
            "(outputs must be on storage every worker shares)",
        ),
        (
            "other version",
            "nimask {version} on worker {host} differs from nimask 0.0.1 that submitted the "
            "batch: install the same version everywhere",
        ),
    ],
)
def test_run_task_fails_a_file_the_worker_cannot_see(
    inputs: Path, tmp_path: Path, case: str, message: str
) -> None:
    out = tmp_path / "out"
    changes: dict[str, Any] = {
        "missing input": {"input_path": tmp_path / "elsewhere" / "ct_0.nii.gz"},
        "other input": {"input_size": 7},
        "other output folder": {},
        "other version": {"nimask_version": "0.0.1"},
    }[case]
    task = _task(inputs, out, probe=None if case == "other output folder" else "probe", **changes)
    res = run_task(task)
    assert res.status == "failed"
    assert res.error == message.format(
        host=socket.gethostname(), input=task.input_path, out=out,
        size=(inputs / "ct_0.nii.gz").stat().st_size, version=nimask.__version__,
    )
    assert res.output == ""  # no mask for a failed file
    left = [] if case == "other output folder" else ["probe"]
    assert sorted(p.name for p in out.iterdir()) == left


def test_run_task_sets_one_itk_thread_only_in_worker_processes(
    inputs: Path, tmp_path: Path
) -> None:
    from nimask.batch.cluster import _PROCESS_TOKEN

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    try:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(3)
        run_task(_task(inputs, tmp_path / "a", submitter=_PROCESS_TOKEN))
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 3  # the caller's process
        run_task(_task(inputs, tmp_path / "b"))
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 1  # a worker process
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


# --- any concurrent.futures executor -------------------------------------------------------


class _FaultyExecutor(Executor):
    """A thread pool where one file's input vanishes, one task is lost and one cancelled."""

    def __init__(self, inner: Executor, folder: Path) -> None:
        self.inner, self.folder = inner, folder

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        name = args[0].input_path.name
        future: Future[Any] = Future()
        if name == "ct_1.nii.gz":
            future.set_exception(OSError("connection to the worker lost"))
            return future
        if name == "ct_3.nii.gz":
            future.cancel()
            future.set_running_or_notify_cancel()
            return future
        if name == "t1.nii.gz":  # as if the worker did not see the input
            hidden = self.folder / ".hidden"
            hidden.mkdir(exist_ok=True)
            args[0].input_path.rename(hidden / name)
        return self.inner.submit(fn, *args, **kwargs)


def test_executor_failures_fail_only_their_files(inputs: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for path in inputs.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    with ThreadPoolExecutor(2) as pool:
        results = mask_dataset(folder, tmp_path / "out", executor=_FaultyExecutor(pool, folder))
    assert [(Path(r.input).name, r.status) for r in results] == [
        ("broken.nii.gz", "failed"),
        ("ct_0.nii.gz", "written"),
        ("ct_1.nii.gz", "failed"),
        ("ct_2.nii.gz", "written"),
        ("ct_3.nii.gz", "failed"),
        ("ct_oblique.nii.gz", "written"),
        ("t1.nii.gz", "failed"),
    ]
    assert results[2].error == "worker failed: OSError: connection to the worker lost"
    assert results[4].error == "worker failed: CancelledError"
    assert results[6].error == (
        f"input not visible on worker {socket.gethostname()}: {folder / 't1.nii.gz'}"
    )
    assert [r.output for r in results if r.status == "failed"] == [""] * 4
    assert all(r.output == str(tmp_path / "out" / Path(r.output).name)
               for r in results if r.status == "written")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ct_0_mask.nii.gz", "ct_2_mask.nii.gz", "ct_oblique_mask.nii.gz",
    ]


def test_executor_arguments_are_checked_before_any_work(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ParameterError, match=r"^executor must be a concurrent\.futures\.Executor"):
        mask_dataset(inputs, out, executor="tcp://127.0.0.1:8786")  # type: ignore[arg-type]
    with ThreadPoolExecutor(1) as pool, pytest.raises(
        ParameterError, match=r"^workers=2 conflicts with executor"
    ):
        mask_dataset(inputs, out, workers=2, executor=pool)
    assert not out.exists()
