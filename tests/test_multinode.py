"""The grid on more than one Ray node: Ray's own multi-node test cluster (``ray.cluster_utils``),
whose head is the shared test instance; the grid tests share two worker nodes (one of which the
last removes), removed when the module is done.

Cells are real (PCA baselines on small generated sections); a thin remote wrapper around the grid's
own cell task records where and when each attempt ran. A Ray Train run over two nodes that survives
losing one: ``tests/test_shard_cli.py`` (``ssl-st pretrain --workers 2``, one worker per node)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from grid import ray_exec
from grid.config import load_config
from grid.plan import expand
from grid.store import ResultStore

from .conftest import tiny_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SMALL = 80 * 1024**2  # Ray's minimum object store


class _Quiet:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def start(self, total: int, artifacts: int) -> None:
        pass

    def advance(self, cell, status: str, duration_s: float) -> None:
        pass

    def note(self, message: str) -> None:
        self.notes.append(message)


def _traced_cells(monkeypatch, trace: Path, hold_s: float) -> None:
    """Run the grid's real cell task, after noting the node and the time span of each attempt."""
    import ray

    real = ray_exec._run_cell._function

    @ray.remote
    def traced(cell, workdir, keys, *paths):
        node = ray.get_runtime_context().get_node_id()
        started = time.time()
        with open(trace, "a") as fh:
            fh.write(f"start {cell.cell_id} {node} {started}\n")
        time.sleep(hold_s)  # long enough for the test to see cells side by side, or to kill a node under them
        out = real(cell, workdir, keys, *paths)
        with open(trace, "a") as fh:
            fh.write(f"end {cell.cell_id} {node} {started} {time.time()}\n")
        return out

    monkeypatch.setattr(ray_exec, "_run_cell", traced)


def _spans(trace: Path, kind: str) -> list[list[str]]:
    return [line.split()[1:] for line in trace.read_text().splitlines() if line.startswith(kind + " ")]


def _pca_cells(tmp_path: Path, resources: str):
    config = tiny_config(tmp_path)
    config.write_text(config.read_text() + resources)
    plan = expand(load_config(config))
    return plan, [c for c in plan.cells if c.mode == "pca"]


@pytest.fixture(scope="module")
def two_nodes(ray_cluster):
    """Two worker nodes beside the head, shared by the two grid tests below (a node's start and its
    workers' imports are most of each test): ``accel`` has one unit of an accelerator-like custom
    resource, ``plain`` none; both have one unit of ``pool``, which the head lacks. The second test
    removes ``plain``."""
    accel = ray_cluster.add_node(num_cpus=2, resources={"accel": 1, "pool": 1}, object_store_memory=SMALL)
    plain = ray_cluster.add_node(num_cpus=2, resources={"pool": 1}, object_store_memory=SMALL)
    ray_cluster.wait_for_nodes()
    nodes = {"accel": accel, "plain": plain}
    yield nodes
    for node in nodes.values():
        ray_cluster.remove_node(node)


def test_cells_go_only_where_their_declared_resource_is_and_share_it(tmp_path, two_nodes, monkeypatch):
    accel, plain = two_nodes["accel"], two_nodes["plain"]
    trace = tmp_path / "trace"
    _traced_cells(monkeypatch, trace, hold_s=1.5)
    plan, cells = _pca_cells(tmp_path, "resources:\n  cell-type: {cpus: 0.5, custom: {accel: 0.5}}\n")
    store = ResultStore(tmp_path / "results")
    summary = ray_exec.execute(plan, cells, tmp_path / "results", store, _Quiet())
    assert (summary.done, summary.failed) == (len(cells), 0)
    ends = _spans(trace, "end")
    assert {node for _, node, _, _ in ends} == {accel.node_id}  # none on the plain node or the head
    spans = [(float(a), float(b)) for _, _, a, b in ends]
    most = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    assert most <= 2  # half a unit each: two at a time on the one node that has it
    assert plain.node_id not in {node for _, node, _ in _spans(trace, "start")}


def test_losing_a_node_mid_grid_loses_no_cell(tmp_path, ray_cluster, two_nodes, monkeypatch):
    # cells run only on the two worker nodes (one unit of "pool" each); "plain" is removed while its cells run
    keep, doomed = two_nodes["accel"], two_nodes["plain"]
    trace = tmp_path / "trace"
    _traced_cells(monkeypatch, trace, hold_s=2.0)
    plan, cells = _pca_cells(tmp_path, "retries: 2\nresources:\n  cell-type: {cpus: 1, custom: {pool: 1}}\n")
    store = ResultStore(tmp_path / "results")
    progress = _Quiet()
    outcome: dict[str, object] = {}
    worker = threading.Thread(target=lambda: outcome.update(
        summary=ray_exec.execute(plan, cells, tmp_path / "results", store, progress)))
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        trace.exists() and any(node == doomed.node_id for _, node, _ in _spans(trace, "start"))
    ):
        time.sleep(0.2)
    ray_cluster.remove_node(two_nodes.pop("plain"))
    worker.join(timeout=300)
    assert not worker.is_alive()
    summary = outcome["summary"]
    assert (summary.done, summary.failed) == (len(cells), 0), store.table().to_pandas()["error"].dropna().tolist()
    frame = store.table().to_pandas()
    assert sorted(frame["cell_id"].unique()) == sorted(c.cell_id for c in cells)
    assert (frame["status"] == "done").all()
    # every cell is recorded once: one file per cell, and its metrics are not doubled
    assert len(store.files()) == len(cells)
    assert not frame.duplicated(["cell_id", "metric"]).any()
    assert any(n.startswith("retrying ") for n in progress.notes)  # the lost cells ran again elsewhere
    assert {node for _, node, _, _ in _spans(trace, "end")} == {keep.node_id}


SHIPPED = """
import sys, ray
from grid import ray_exec
ray_exec.connect(sys.argv[1])

@ray.remote(num_cpus=0)
def where():
    import cluster, grid, ssl_st
    return [m.__file__ for m in (ssl_st, cluster, grid)]

print("\\n".join(ray.get(where.remote())))
"""


def test_a_joined_cluster_runs_the_drivers_code_not_what_its_nodes_have_installed(tmp_path, ray_address):
    import subprocess
    import sys

    from .conftest import REPO

    done = subprocess.run([sys.executable, "-c", SHIPPED, ray_address], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    files = done.stdout.split()
    assert len(files) == 3
    for name, file in zip(("ssl_st", "cluster", "grid"), files):
        # unpacked from the job's runtime_env, not imported from the install on the node
        assert "runtime_resources" in file and f"/{name}/__init__.py" in file, file
        assert not file.startswith(str(REPO))
