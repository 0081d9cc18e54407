"""The embedded Ray that ``ssl-st run`` starts on a laptop: its memory monitor and its clean-up.

These are the only tests that start a Ray instance of their own (in a child process, one CPU):
what they check belongs to the instance ``grid.ray_exec.connect`` starts, which the shared test
instance is not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from .conftest import REPO, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="Ray's memory monitor is Linux-only")]

# A cell that grows until Ray's memory monitor kills it; were it never killed it would return a
# row, and the test would see a done cell.
MEMORY_KILL = """
import json, sys, time
from pathlib import Path
import numpy as np
import ray
from grid import ray_exec
from grid.config import load_config
from grid.plan import expand
from grid.store import ResultStore
from grid.tasks import CellOutput

config, results, attempts = sys.argv[1:4]

@ray.remote
def fake_build(artifact, root, rebuild, roles, *inputs):
    return str(Path(root) / artifact.key)

@ray.remote
def hog(cell, workdir, keys, *paths):
    with open(attempts, "a") as fh:
        fh.write("x")
    blocks = []
    for _ in range(40):  # up to 8 GB, 200 MB at a time, every page touched
        blocks.append(np.ones(25 * 2**20))
        time.sleep(0.1)
    return CellOutput([("macro_f1", 0.5, "metric")]), 1.0

class Notes:
    def start(self, total, artifacts): pass
    def advance(self, cell, status, duration_s): pass
    def note(self, message): print(message, flush=True)

ray_exec._build_artifact, ray_exec._run_cell = fake_build, hog
plan = expand(load_config(config))
cell = next(c for c in plan.cells if c.mode == "pca")
ray_exec.connect(num_cpus=1, retries=plan.config.retries)
store = ResultStore(Path(results))
summary = ray_exec.execute(plan, [cell], Path(results), store, Notes())
row = store.table().to_pandas().iloc[0]
print(json.dumps({"done": summary.done, "failed": summary.failed, "status": row["status"], "error": row["error"]}))
"""


def test_a_cell_killed_by_rays_memory_monitor_is_retried_as_configured_then_a_row_naming_memory(tmp_path):
    # Before: Ray reran a task its memory monitor killed without bound (7 times in 6 minutes with
    # max_retries=1), printed nothing, and the run never ended.
    config = tiny_config(tmp_path)
    config.write_text(config.read_text() + "retries: 1\n")
    memory = psutil.virtual_memory()
    used = (memory.total - memory.available) / memory.total
    threshold = min(0.9, used + 1.5 * 1024**3 / memory.total)  # 1.5 GB above what is in use now
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_memory_usage_threshold": f"{threshold:.3f}",
           "RAY_memory_monitor_refresh_ms": "100"}
    attempts = tmp_path / "attempts"
    done = subprocess.run([sys.executable, "-c", MEMORY_KILL, str(config), str(tmp_path / "results"), str(attempts)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert (outcome["done"], outcome["failed"], outcome["status"]) == (0, 1, "failed"), outcome
    assert attempts.read_text() == "xx"  # the first attempt and one retry, no more
    first = outcome["error"].splitlines()[0]
    assert first.startswith("out of memory: Ray's memory monitor killed the worker (the killed worker used ")
    assert "(after 2 attempts)" in first and "resources: cell-type: {memory_gb:" in first
    assert any(line.startswith("retrying ") and "out of memory; attempt 2 of 2" in line for line in done.stdout.splitlines())


EMBEDDED = """
import os, sys, time, ray
from grid import ray_exec
ray_exec.connect(num_cpus=1)

@ray.remote
def busy(path, probe):  # a busy worker, as in a run, that imports a module first
    sys.path.insert(0, probe)
    import bytecode_probe
    open(path, "w").close()
    time.sleep(600)

ref = busy.remote(sys.argv[1], sys.argv[2])
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
print("ready", flush=True)
time.sleep(600)
"""


def test_kill_9_of_the_driver_leaves_no_ray_process_behind(tmp_path):
    # Before: Ray's dashboard and runtime-env agents outlived a kill -9 of `ssl-st run` for a minute
    # or more (they report their raylet's death to the GCS that died with it, with a 60 s timeout).
    # Also: the embedded instance's workers keep the byte code they compile, even where the
    # environment says not to (PYTHONDONTWRITEBYTECODE): before, a `pip install --no-compile`
    # (the README's) left every worker of every run compiling torch's 1,000 modules again.
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "bytecode_probe.py").write_text("VALUE = 1\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    driver = subprocess.Popen([sys.executable, "-c", EMBEDDED, str(tmp_path / "busy"), str(probe)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env)
    wanted = {"raylet", "gcs_server", "ray::DashboardAgent", "ray::RuntimeEnvAgent"}
    try:
        assert driver.stdout.readline().strip() == "ready"  # its worker runs a task
        deadline = time.monotonic() + 30
        while True:  # the agents come up beside the raylet, maybe after the worker
            ray_procs = [p for p in psutil.Process(driver.pid).children(recursive=True)
                         if "reaper" not in " ".join(p.cmdline())]
            names = {p.name() for p in ray_procs}
            if wanted <= names or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert wanted <= names, names
        assert list((probe / "__pycache__").glob("bytecode_probe.*.pyc")), "the worker did not keep its byte code"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + 30
    while (alive := [p for p in ray_procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, f"still running 30 s after the driver died: {[p.name() for p in alive]}"
