"""Kill the driver of a real ``ssl-st run`` at several moments; the store must end as an
uninterrupted run's would, and the run that finishes computes only the cells that were missing.

Each attempt is killed (SIGKILL: no cleanup code runs) at the next point, the last one runs to the
end. What is compared: the set of cells and every metric value (durations and timestamps aside),
that every file is whole, and that no temporary file is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from grid.config import load_config
from grid.plan import expand
from grid.store import ResultStore

from .conftest import REPO, run_cli_here

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _values(results: Path) -> dict[tuple, float]:
    table = ResultStore(results).table().to_pandas()
    assert (table["status"] == "done").all(), table[table["status"] != "done"]["error"].tolist()
    done = table[table["kind"].isin(["metric", "info"]) & ~table["metric"].str.endswith("_s")]
    return {(r.cell_id, r.metric): r.value for r in done.itertuples()}


def _kill_when(config: Path, results: Path, address: str, ready) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "grid", "run", str(config), "--results", str(results), "--address", address],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    deadline = time.monotonic() + 240
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the run ended (exit {proc.returncode}) before it could be killed"


def test_killed_runs_resume_to_the_same_store(tmp_path, ray_address, tiny_run):
    # the uninterrupted run to compare with is the session's (conftest.tiny_run: the same grid, run
    # once by `ssl-st run` on a fresh results directory); the killed runs use its config
    config = tiny_run.config
    expected = _values(tiny_run.results)

    results = tmp_path / "killed"
    store = ResultStore(results)
    artifacts = results / "artifacts"
    points = {
        "while building artifacts": lambda: artifacts.is_dir() and any(artifacts.rglob("*")),
        "after the first cell": lambda: len(store.files()) >= 1,
    }
    for name, ready in points.items():
        _kill_when(config, results, ray_address, ready)
        for path in store.files():  # whatever was written is whole
            assert pq.read_table(path).num_rows > 0, f"a half-written cell after a kill {name}"
    # the last kill landed mid-run: some cells recorded, not all (this was test_grid_run.py's
    # test_kill_9_then_resume_finishes_only_missing_cells, which ran the same grid on its own)
    recorded = {p.name: p.stat().st_mtime_ns for p in store.files()}
    total = len(expand(load_config(config)).cells)
    assert 0 < len(recorded) < total, "the kill should land mid-run"
    # the resume is `ssl-st run` in this process: what matters is what it finds on disk, and the
    # killed drivers above were separate processes
    resumed = run_cli_here("run", config, "--results", results, "--address", ray_address, check=True)

    # only the missing cells ran: the recorded ones were neither recomputed nor rewritten
    assert f"running {total - len(recorded)} of {total}" in resumed.stderr
    after = {p.name: p.stat().st_mtime_ns for p in store.files()}
    assert len(after) == total
    assert all(after[name] == mtime for name, mtime in recorded.items()), "finished cells were recomputed"
    assert set(store.statuses().values()) == {"done"}
    assert _values(results) == expected
    assert not list((results / "cells").glob(".*.tmp")), "temporary files were left behind"
