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

from .conftest import REPO, run_cli, tiny_config

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
def test_a_second_run_on_the_same_results_exits_2_at_once(tmp_path, ray_address):
    config = tiny_config(tmp_path, epochs=20)  # long enough for the second run to start meanwhile
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(
        [sys.executable, "-m", "grid", "run", str(config), "--results", str(results), "--address", ray_address],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.monotonic() + 120
    while not (results / "artifacts").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.perf_counter()
    second = run_cli("run", str(config), "--results", str(results), "--address", ray_address)
    assert second.returncode == 2, second.stderr
    assert time.perf_counter() - started < 30
    assert f"PID {first.pid}" in second.stderr and "one `ssl-st run`" in second.stderr.replace("\n", " ")
    shown = run_cli("plan", str(config), "--results", str(results), check=True)
    assert f"PID {first.pid}" in shown.stdout
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    assert "took over" not in stderr
    assert set(ResultStore(results).statuses().values()) == {"done"}

    # a holder killed with -9 leaves its record behind; the next run takes over and says so
    helper = _helper(results)
    helper.send_signal(signal.SIGKILL)
    helper.wait(timeout=30)
    after = run_cli("run", str(config), "--results", str(results), "--address", ray_address, check=True)
    assert "nothing to run" in after.stderr and f"PID {helper.pid}" in after.stderr and "took over" in after.stderr
