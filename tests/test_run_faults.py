"""Faults of a run: requests no node can satisfy, tasks that wait, workers killed for memory, and
config values that used to pass validation and crash ``ssl-st run``. Every run must end."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from grid import ray_exec
from grid.config import load_config
from grid.plan import expand
from grid.resources import Resources
from grid.schema import ConfigError
from grid.store import ResultStore
from grid.tasks import CellOutput

from .conftest import run_cli, tiny_config


def _config_with(tmp_path: Path, extra: str = "", replace: tuple[str, str] | None = None) -> Path:
    path = tiny_config(tmp_path)
    text = path.read_text() + extra
    if replace:
        text = text.replace(*replace, 1)
    path.write_text(text)
    return path


class _Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.advanced: list[tuple[str, str]] = []

    def start(self, total: int, artifacts: int) -> None:
        pass

    def advance(self, cell, status: str, duration_s: float) -> None:
        self.advanced.append((cell.cell_id, status))

    def note(self, message: str) -> None:
        self.notes.append(message)


# ---- config values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key"),
    [("pretrain: {cpus: -1}", "cpus"), ("cell-type: {gpus: -0.5}", "gpus"), ("data: {memory_gb: -2}", "memory_gb")],
)
def test_negative_resources_are_config_errors_at_their_line(tmp_path, line, key):
    config = _config_with(tmp_path, f"resources:\n  {line}\n")
    with pytest.raises(ConfigError) as info:
        load_config(config)
    (problem,) = info.value.problems
    assert problem.line == config.read_text().splitlines().index(f"  {line}") + 1
    assert problem.field == f"resources.{line.split(':')[0]}.{key}"
    assert "cannot be negative" in problem.message or "must be positive" in problem.message


def test_retries_default_and_validation(tmp_path):
    assert load_config(tiny_config(tmp_path)).retries == 1
    assert load_config(_config_with(tmp_path, "retries: 0\n")).retries == 0
    with pytest.raises(ConfigError, match=r"retries: retries must be 0 or more"):
        load_config(_config_with(tmp_path, "retries: -1\n"))


def test_demo_dataset_size_has_a_ceiling(tmp_path):
    config = _config_with(tmp_path, replace=("n_cells: 500}", "n_cells: 2000000}"))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    (problem,) = info.value.problems
    assert problem.line == 6 and problem.field == "datasets[1].n_cells"
    assert "at most 200,000 cells" in problem.message


def test_options_bound_retries_and_never_retry_exceptions():
    options = ray_exec._options(Resources(cpus=2, memory_gb=1.5), retries=3)
    assert options["max_retries"] == 3 and options["retry_exceptions"] is False
    assert options["memory"] == int(1.5 * 1024**3)


# ---- requests no node can satisfy -----------------------------------------------------------


def test_unschedulable_stage_exits_2_in_seconds_on_the_embedded_ray(tmp_path):
    # Its own embedded Ray (no --address): that is where nothing can ever add a node.
    config = _config_with(tmp_path, "resources:\n  pretrain: {cpus: 4, gpus: 1}\n  cell-type: {memory_gb: 100000}\n")
    results = tmp_path / "results"
    # a run that waited for a node instead would outlive the timeout and fail the test
    run = run_cli("run", str(config), "--results", str(results), "--num-cpus", "1", timeout=180)
    assert run.returncode == 2, run.stderr
    assert "stage 'pretrain' asks for {cpus: 4, gpus: 1}" in run.stderr
    assert "stage 'cell-type' asks for {cpus: 1, memory_gb: 100000}" in run.stderr
    assert "largest node has 1 CPUs, 0 GPUs" in run.stderr and "nothing was submitted" in run.stderr
    assert not ResultStore(results).files()


@pytest.mark.ray
def test_execute_refuses_before_submitting_anything(tmp_path, ray_address):
    config = _config_with(tmp_path, "resources:\n  data: {cpus: 3}\n")
    plan = expand(load_config(config))
    store = ResultStore(tmp_path / "results")
    with pytest.raises(ray_exec.Unschedulable, match=r"stage 'data' asks for \{cpus: 3\}.*2 CPUs"):
        ray_exec.execute(plan, plan.cells, tmp_path / "results", store, _Notes())
    assert not store.files()
    # stages whose artifacts are already built are not asked for: nothing would run there
    assert ray_exec.unschedulable(plan, [], tmp_path / "results") == []


@pytest.mark.ray
def test_watchdog_says_why_tasks_wait(ray_address):
    import ray

    @ray.remote(num_cpus=3)
    def too_big() -> None:
        pass

    ref = too_big.remote()
    try:
        deadline = time.monotonic() + 30
        while not (demand := ray_exec._demand()) and time.monotonic() < deadline:
            time.sleep(0.2)
        line = ray_exec.waiting_line(demand, ray_exec._node_shapes(), running=1)
        assert line is not None and line.startswith("waiting: 1 task pending")
        assert "infeasible: no node with 3 CPUs" in line
        notes = _Notes()
        watchdog = ray_exec._Watchdog(notes.note, every=0)
        watchdog.tick(running=1)
        assert notes.notes and "no node with 3 CPUs" in notes.notes[0]
    finally:
        ray.cancel(ref, force=True)
    assert ray_exec.waiting_line([({"CPU": 1.0}, 2)], [{"CPU": 2.0, "GPU": 0.0, "memory": 1e9}], 2) == (
        "waiting: 2 tasks pending (2 waiting for 1 CPUs to free up); 2 cells not finished"
    )


def test_watchdog_failures_never_reach_the_run(monkeypatch):
    def broken() -> list:
        raise RuntimeError("GCS unreachable")

    monkeypatch.setattr(ray_exec, "_demand", broken)
    notes = _Notes()
    watchdog = ray_exec._Watchdog(notes.note, every=0)
    watchdog.tick(running=3)
    watchdog.tick(running=3)
    assert notes.notes == []


def _run_one_cell(tmp_path: Path, monkeypatch, run_cell, extra: str):
    """Execute the grid's first pca cell with ``run_cell`` as its remote task (artifacts taken as built)."""
    import ray

    @ray.remote
    def fake_build(artifact, root, rebuild, roles, *inputs) -> str:
        return str(Path(root) / artifact.key)

    monkeypatch.setattr(ray_exec, "_build_artifact", fake_build)
    monkeypatch.setattr(ray_exec, "_run_cell", run_cell)
    plan = expand(load_config(_config_with(tmp_path, extra)))
    cell = next(c for c in plan.cells if c.mode == "pca")
    store = ResultStore(tmp_path / "results")
    progress = _Notes()
    summary = ray_exec.execute(plan, [cell], tmp_path / "results", store, progress)
    return cell, store, progress, summary


# ---- workers killed for memory --------------------------------------------------------------


def test_out_of_memory_error_names_usage_and_the_fix():
    import ray

    message = (
        "Task was killed due to the node running low on memory.\n"
        "Memory on the node (IP: 10.0.0.5, ID: abc) was 7.52GB used / 7.70GB limit (0.976)\n"
        "(task ID: 1, name=cell:x, pid=42, actual memory used=6.10GB, worker ID=w)"
    )
    text = ray_exec._describe(ray.exceptions.OutOfMemoryError(message), "cell-type", Resources())
    first = text.splitlines()[0]
    assert first.startswith("out of memory: ")
    assert "the killed worker used 6.10GB" in first and "7.52GB of 7.70GB" in first
    assert "resources: cell-type: {memory_gb: 10}" in first  # 1.5 x what it used, rounded up


@pytest.mark.ray
def test_a_killed_worker_is_retried_as_configured_then_says_memory(tmp_path, ray_address):
    import ray

    attempts = tmp_path / "attempts"

    @ray.remote
    def suicide(path: str) -> None:
        with open(path, "a") as fh:
            fh.write("x")
        os.kill(os.getpid(), signal.SIGKILL)

    ref = suicide.options(**ray_exec._options(Resources(), retries=1)).remote(str(attempts))
    with pytest.raises(ray.exceptions.RayError) as info:
        ray.get(ref, timeout=120)
    assert attempts.read_text() == "xx"  # the first try and one retry, no more
    text = ray_exec._describe(info.value, "fine-tune", Resources(memory_gb=3))
    assert text.startswith("killed: ") and "memory" in text.splitlines()[0]
    assert "resources: fine-tune: {memory_gb: 5}" in text


@pytest.mark.ray
def test_a_cell_whose_worker_is_killed_becomes_a_failed_row_and_the_run_ends(tmp_path, ray_address, monkeypatch):
    import ray

    @ray.remote
    def killed_cell(cell, workdir, keys, *paths):
        os.kill(os.getpid(), signal.SIGKILL)

    cell, store, progress, summary = _run_one_cell(tmp_path, monkeypatch, killed_cell, "retries: 0\n")
    assert (summary.done, summary.failed) == (0, 1)
    assert progress.advanced == [(cell.cell_id, "failed")]
    row = store.table().to_pandas().iloc[0]
    assert row["status"] == "failed" and row["error"].startswith("killed: ")
    assert "memory" in row["error"].splitlines()[0] and "resources: cell-type: {memory_gb: N}" in row["error"]


def test_run_refuses_a_results_path_that_is_a_file_before_starting_ray(tmp_path):
    config = tiny_config(tmp_path)
    (tmp_path / "results").write_text("not a directory")
    done = run_cli("run", str(config), "--results", str(tmp_path / "results"), timeout=60)
    assert done.returncode == 2 and "not a directory" in done.stderr
    assert "Traceback" not in done.stderr


# ---- attempts: bounded, and with more memory each time when asked ----------------------------


def test_each_attempt_asks_for_more_memory_up_to_the_largest_node():
    node = [{"CPU": 4.0, "GPU": 0.0, "memory": 10 * 1024**3}]
    declared = Resources(cpus=2, memory_gb=3)
    assert ray_exec.attempt_resources(declared, 1, 2.0, node) == declared
    assert ray_exec.attempt_resources(declared, 2, 2.0, node).memory_gb == 6
    assert ray_exec.attempt_resources(declared, 3, 2.0, node).memory_gb == 10  # capped: 12 GB fits no node
    assert ray_exec.attempt_resources(declared, 3, 1.0, node) == declared  # factor 1: the same request
    assert ray_exec.attempt_resources(Resources(cpus=2), 3, 2.0, node) == Resources(cpus=2)  # nothing declared
    # a node too small for the CPUs does not count as room
    mixed = node + [{"CPU": 1.0, "GPU": 0.0, "memory": 64 * 1024**3}]
    assert ray_exec.attempt_resources(declared, 3, 2.0, mixed).memory_gb == 10


def test_retry_memory_factor_below_one_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="retry_memory_factor must be 1 or more"):
        load_config(_config_with(tmp_path, "retry_memory_factor: 0.5\n"))


def test_the_watchdog_counts_cells_on_a_retry():
    line = ray_exec.waiting_line([], [{"CPU": 2.0, "GPU": 0.0, "memory": 1e9}], running=3, retrying=1)
    assert line == "waiting: 1 cell on a retry after its worker died; 3 cells not finished"


@pytest.mark.ray
def test_a_killed_cell_is_rerun_with_more_memory_and_the_run_says_so(tmp_path, ray_address, monkeypatch):
    import ray

    attempts = tmp_path / "attempts"

    @ray.remote
    def dies_once(cell, workdir, keys, *paths):
        memory = ray.get_runtime_context().get_assigned_resources().get("memory", 0) / 1024**3
        with open(attempts, "a") as fh:
            fh.write(f"{memory:g}\n")
        if len(attempts.read_text().splitlines()) == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return CellOutput([("macro_f1", 0.5, "metric")]), 0.1

    extra = "retries: 2\nretry_memory_factor: 2\nresources:\n  cell-type: {memory_gb: 0.25}\n"
    cell, store, progress, summary = _run_one_cell(tmp_path, monkeypatch, dies_once, extra)
    assert (summary.done, summary.failed) == (1, 0), store.table().to_pandas()["error"].iloc[0]
    assert attempts.read_text().splitlines() == ["0.25", "0.5"]
    assert any(n.startswith(f"retrying {cell.label()}: its worker died") and "attempt 2 of 3" in n
               and "now with memory_gb: 0.5 (was 0.25)" in n for n in progress.notes), progress.notes


@pytest.mark.ray
def test_tune_trials_no_node_can_place_are_refused_before_the_run(tmp_path, ray_address):
    config = _config_with(tmp_path, """\
  - name: tuned
    kind: tune-clustering
    datasets: [merscope]
    methods: [gmm]
    inputs: [expression]
    n_domains: 4
    tuning: {space: {pca_components: {low: 10, high: 20, integer: true}}, num_samples: 2, cpus_per_trial: 16}
""")
    plan = expand(load_config(config))
    cells = [c for c in plan.cells if c.stage == "tune-clustering"]
    problems = ray_exec.unschedulable(plan, cells, tmp_path / "results")
    assert len(problems) == 1, problems
    assert problems[0].startswith("task 'tuned' starts Tune trials that ask for {cpus: 16} each")
    assert "tuning.cpus_per_trial" in problems[0]


def _read_only_mount_works() -> bool:
    import shutil
    import subprocess

    if not shutil.which("unshare"):
        return False
    probe = "d=$(mktemp -d) && mount -t tmpfs -o ro tmpfs $d && ! touch $d/x 2>/dev/null"
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", probe],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _read_only_mount_works(), reason="needs unshare with user and mount namespaces")
def test_run_refuses_an_unwritable_results_path_before_starting_ray(tmp_path):
    # Before: an 84-line traceback after Ray had started and cells had been computed.
    import subprocess
    import sys

    from .conftest import REPO

    config = tiny_config(tmp_path)
    shelf = tmp_path / "shelf"  # a read-only file system, as a user's shared results volume might be
    shelf.mkdir()
    script = (f"mount -t tmpfs -o ro tmpfs {shelf} && exec {sys.executable} -m grid run {config} "
              f"--results {shelf}/results")
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2, done.stderr
    assert f"{shelf}: not writable by this user; pass a --results directory you can write to" in done.stderr
    assert "Traceback" not in done.stderr and "running" not in done.stderr
