"""One writer per results directory: a second run is refused at once, naming the first; a lock whose
holder died (kill -9 included) is taken over with a note."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from grid import lock
from grid.lock import LockHeld, acquire
from grid.store import ResultStore

from .conftest import REPO, run_cli, run_cli_here

HOLDER = """
import sys, time
from grid.lock import acquire
held = acquire(sys.argv[1], command="helper")
print("held", flush=True)
time.sleep(600)
"""


def _helper(results):
    """A process that takes the lock through the API and keeps it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(results)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_is_named_and_a_killed_one_is_taken_over(tmp_path):
    proc = _helper(tmp_path)
    try:
        with pytest.raises(LockHeld) as info:
            acquire(tmp_path)
        message = str(info.value)
        assert f"PID {proc.pid}" in message and socket.gethostname() in message and "helper" in message
        assert lock.holder(tmp_path)["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert lock.holder(tmp_path) is None  # the kernel dropped the flock with the process
    with acquire(tmp_path, command="second") as taken:
        assert taken.note and f"PID {proc.pid}" in taken.note
        assert json.loads((tmp_path / ".ssl-st.lock").read_text())["pid"] == os.getpid()
    with acquire(tmp_path) as again:  # a clean release leaves nothing to take over
        assert again.note is None


def test_without_flock_a_holder_on_this_host_is_judged_by_its_pid(tmp_path, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock.fcntl, "flock", no_flock)
    path = tmp_path / ".ssl-st.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        path.write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid, "started_at": time.time()}))
        with pytest.raises(LockHeld, match=f"PID {sleeper.pid}"):
            acquire(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    with acquire(tmp_path) as taken:  # its process is gone
        assert f"PID {sleeper.pid}" in taken.note
    path.write_text(json.dumps({"host": "elsewhere.example", "pid": 1, "started_at": time.time()}))
    with pytest.raises(LockHeld, match="on elsewhere.example") as info:
        acquire(tmp_path)
    assert "delete" in str(info.value)  # the way out when that host is gone for good


@pytest.mark.ray
def test_a_second_run_on_the_same_results_exits_2_at_once(tmp_path, ray_address, tiny_run):
    import ray

    # The first run: the session's tiny grid (conftest.tiny_run) less two cells, so that it has work
    # for Ray. It must hold the results while the second starts: a task of this process takes every
    # CPU of the shared Ray first, so the first run's cells wait (as on a busy cluster) until this
    # test lets them go, however fast or slow the machine is.
    config = tiny_run.config
    results = tiny_run.copy_results(tmp_path / "results")
    store = ResultStore(results)
    missing = sorted(store.statuses())[:2]
    for cell_id in missing:
        store.path(cell_id).unlink()
    started_flag, release = tmp_path / "busy", tmp_path / "release"
    cpus = int(ray.cluster_resources()["CPU"])
    busy = ray.remote(num_cpus=cpus)(_occupy).remote(str(started_flag), str(release))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = None
    try:
        deadline = time.monotonic() + 120
        while not started_flag.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started_flag.exists(), "the task that takes the CPUs did not start"
        first = subprocess.Popen(
            [sys.executable, "-m", "grid", "run", str(config), "--results", str(results), "--address", ray_address],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        )
        while (lock.holder(results) or {}).get("pid") != first.pid and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (lock.holder(results) or {}).get("pid") == first.pid, "the first run did not take the results"

        # the first run cannot end while the CPUs are held: a second run that waited for it would
        # outlive the timeout and fail the test
        second = run_cli("run", str(config), "--results", str(results), "--address", ray_address, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"PID {first.pid}" in second.stderr and "one `ssl-st run`" in second.stderr.replace("\n", " ")
        shown = run_cli_here("plan", config, "--results", results, check=True)
        assert f"PID {first.pid}" in shown.stdout
        assert first.poll() is None, first.stderr.read()  # it held the results all along: its cells still wait
    except BaseException:
        if first is not None:
            first.kill()
        raise
    finally:
        release.touch()
        ray.get(busy, timeout=120)
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert f"running {len(missing)} of" in stderr
    assert "took over" not in stderr
    assert set(ResultStore(results).statuses().values()) == {"done"}

    # a holder killed with -9 leaves its record behind; the next run takes over and says so
    helper = _helper(results)
    helper.send_signal(signal.SIGKILL)
    helper.wait(timeout=30)
    after = run_cli_here("run", config, "--results", results, "--address", ray_address, check=True)
    assert "nothing to run" in after.stderr and f"PID {helper.pid}" in after.stderr and "took over" in after.stderr


def _occupy(started: str, release: str) -> None:
    """Hold the CPUs this task was given until ``release`` exists (at most 5 minutes)."""
    from pathlib import Path

    Path(started).touch()
    deadline = time.monotonic() + 300
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
