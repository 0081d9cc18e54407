"""Shared fixtures. One local Ray instance serves the whole test run (small, explicit resources);
CLI tests reach it with ``--address`` so they never start a second one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Ray Train's controller takes one report per poll, every 2 s by default: a test's short epochs would
# each wait for it. Set before the test cluster starts, so that every Ray process inherits it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
# Fewer process starts (each imports torch or pyarrow: seconds on 2 cores): no preemption-watcher actor
# per Ray Train worker group (the tests drain no node), and idle workers kept 10 s instead of 1 s, so
# that a streamed epoch's read tasks reuse the previous epoch's processes.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_idle_worker_killing_time_threshold_ms", "10000")

from grid.ray_exec import cache_bytecode
from ssl_st.threads import limit_threads

# The suite starts a few hundred Python processes (Ray workers, CLI runs), each importing this
# repository's modules, torch and Ray; where PYTHONDONTWRITEBYTECODE is set (CI's image), each one
# compiled them all again. As for `ssl-st run`'s embedded Ray: the first process to compile writes.
cache_bytecode()

# Tiny networks gain nothing from intra-op threads, and the Ray workers of the shared instance run
# beside this process on the same cores: one thread each (torch, and sklearn's BLAS/OpenMP pools,
# where small mixture fits stalled 100x without it) avoids oversubscription stalls.
limit_threads(1)

REPO = Path(__file__).resolve().parents[1]

# A small grid: enough cells to exercise scheduling, small enough to finish in seconds.
TINY_CONFIG = """\
name: tiny
seeds: [1, 2]
reference: atlas
datasets:
  - {{name: atlas, flavour: atlas, n_cells: 1200}}
  - {{name: merscope, flavour: merscope, n_cells: 500}}
  - {{name: xenium, flavour: xenium, n_cells: 500}}
{extra_datasets}models:
  - name: random-mask
    method: random-mask
    encoder: {{units: [64, 32, 16]}}
    pretrain: {{epochs: {epochs}, batch_size: 128}}
  - name: random-init
    method: random-init
    encoder: {{units: [64, 32, 16]}}
tasks:
  - name: cell-type
    modes: [zero-shot, pca]
    pca_components: 16
"""


def tiny_config(tmp_path: Path, *, epochs: int = 2, extra_datasets: str = "", name: str = "experiments.yaml") -> Path:
    path = tmp_path / name
    path.write_text(TINY_CONFIG.format(epochs=epochs, extra_datasets=extra_datasets))
    return path


@pytest.fixture(scope="session")
def ray_cluster():
    """The one Ray instance of the test run: a head node with 2 CPUs, started through Ray's own
    multi-node test cluster so that cluster tests can add and remove worker nodes beside it."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "object_store_memory": 256 * 1024**2, "include_dashboard": False},
    )
    ray.init(address=cluster.address, log_to_driver=False)
    from grid import reaper

    # The cluster's processes are not tied to this one (as `ray start`'s are not to the shell): if
    # pytest is killed (a CI timeout), the reaper ends them instead of leaving a cluster behind.
    reaper.start()
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_cluster):
    import ray

    return ray.get_runtime_context().gcs_address


def run_cli(*args: str, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``ssl-st`` in a fresh interpreter, as a user would."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "grid", *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(f"ssl-st {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@dataclass(frozen=True)
class CliResult:
    """What :func:`run_cli_here` returns: the fields of a CompletedProcess that tests read."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run_cli_here(*args: str | Path, check: bool = False) -> CliResult:
    """Run ``ssl-st`` in this process (Typer's test runner): the same app, output and exit codes as
    :func:`run_cli`, without a new interpreter. ``ssl-st run`` here finds Ray connected (the shared
    instance: ask for ``ray_address``) and keeps that connection, so its tasks run on this process's
    job, whose workers earlier tests started and imported the science in; a run in a fresh
    interpreter is a new job, which starts workers of its own. Keep :func:`run_cli` where the
    separate process is the point (killed, locked out, its exit status, the shipped code)."""
    from typer.testing import CliRunner

    from grid import lock
    from grid.cli import app

    args = tuple(map(str, args))
    if args[:1] == ("run",):
        import ray

        assert ray.is_initialized(), "run_cli_here('run', ...) joins the shared Ray: ask for the ray_address fixture"
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        # `ssl-st run` holds its results until the interpreter exits (grid.lock.hold): here that is
        # pytest's, so release at once, as the end of a CLI process would
        lock.release_held()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    done = CliResult(args, result.exit_code, result.stdout, result.stderr)
    if check and done.returncode != 0:
        raise AssertionError(f"ssl-st {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


@dataclass(frozen=True)
class TinyRun:
    """One finished ``ssl-st run`` of :func:`tiny_config` (epochs 2) on a fresh results directory."""

    config: Path
    results: Path
    first: CliResult

    def copy_results(self, to: Path) -> Path:
        """A copy of the finished results directory (file modification times kept), for a test to
        change: the original is shared by every test that asks for it."""
        shutil.copytree(self.results, to, copy_function=shutil.copy2)
        return to


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, ray_address) -> TinyRun:
    """The tiny grid run once for the session: tests that start from its finished store (rerun,
    query, damage and rebuild) copy it instead of each paying for the same run."""
    root = tmp_path_factory.mktemp("tiny-run")
    config = tiny_config(root)
    results = root / "results"
    # in this process: its job's workers import the science once for the tests that follow (a run in
    # a fresh interpreter: the lock, fault-injection and object-store tests)
    first = run_cli_here("run", str(config), "--results", str(results), "--address", ray_address, check=True)
    return TinyRun(config, results, first)


@pytest.fixture(scope="session")
def report_cache(tmp_path_factory) -> Path:
    """``$SSL_ST_CACHE`` of the report tests (their UMAPs are cached there), not the user's."""
    return tmp_path_factory.mktemp("report-cache")


@pytest.fixture(scope="session")
def report_results(tmp_path_factory) -> Path:
    """tests/report_store.py's store: every kind of figure data, one failed cell, no Ray."""
    from .report_store import build_store

    return build_store(tmp_path_factory.mktemp("report") / "results")


@pytest.fixture(scope="session")
def paper_report(report_results, report_cache) -> tuple[Path, str, str]:
    """``ssl-st report experiments/paper.yaml`` of ``report_results``, drawn once a session in this
    process, whose UMAP code numba has compiled already for the tiny run's report (the report in a
    fresh interpreter: tests/test_report.py's store without figure data): (its folder, the HTML, the
    command's stdout)."""
    from .report_store import PAPER

    out = report_results.parent / "report"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_ST_CACHE", str(report_cache))
        done = run_cli_here("report", PAPER, "--results", report_results, "--out", out, check=True)
    return out, (out / "index.html").read_text(encoding="utf-8"), done.stdout
