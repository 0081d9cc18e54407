"""Stop an embedded Ray's processes when the ``ssl-st`` process that started it dies.

Ray ties its GCS and raylet to the driver, but the raylet's two agents (dashboard and runtime-env)
only notice their raylet is gone and then try to report that to the dead GCS, with a fixed 60 s
timeout and retries: after a ``kill -9`` of ``ssl-st run`` they lingered for a minute or more,
holding ports and memory. ``python -m grid.reaper`` runs beside the driver, reading a pipe that only
the driver holds; end of file means the driver has exited (cleanly or not), and the reaper then ends
what is left of the instance it was shown.

Only processes of that instance are touched: the driver's children as they were when the reaper
started (matched by pid *and* start time, so a reused pid is safe) and any process whose
``RAY_RAYLET_PID`` names that instance's raylet (workers and agents started later).
"""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

GRACE_S = 3.0  # after a clean exit ray.shutdown() has already stopped everything: nothing is left to find


def start(driver_pid: int | None = None) -> None:
    """Start the reaper for the Ray processes this process started (call after ``ray.init``), and
    return once it has recorded them: a driver killed before that would leave them all behind.

    The pipe's write end is left open on purpose for the rest of this process's life: it is not
    inheritable, so Ray's own processes never hold it, and the kernel closes it when we exit."""
    read_end, write_end = os.pipe()
    reaper = subprocess.Popen(
        [sys.executable, "-m", "grid.reaper", str(driver_pid or os.getpid())],
        stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C in the terminal goes to the driver, which shuts Ray down itself
        close_fds=True,
    )
    os.close(read_end)
    _KEEP_OPEN.append(write_end)
    reaper.stdout.readline()  # "ready", or end of file if it could not start: nothing to wait for then
    reaper.stdout.close()


_KEEP_OPEN: list[int] = []  # the write ends above: closing one would tell the reaper we died


def _key(proc: psutil.Process) -> tuple[int, float]:
    return proc.pid, proc.create_time()


def instance_processes(driver_pid: int) -> tuple[list[psutil.Process], int | None]:
    """The driver's Ray processes now (not this reaper), and the raylet's pid."""
    me = os.getpid()
    children = [p for p in psutil.Process(driver_pid).children(recursive=True) if p.pid != me]
    raylet = next((p.pid for p in children if p.name() == "raylet"), None)
    return children, raylet


def leftovers(known: dict[tuple[int, float], psutil.Process], raylet: int | None) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if _key(proc) in known:
                found.append(proc)
            elif raylet is not None and proc.environ().get("RAY_RAYLET_PID") == str(raylet):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def main(driver_pid: int) -> None:
    children, raylet = instance_processes(driver_pid)
    known = {}
    for proc in children:
        try:
            known[_key(proc)] = proc
        except psutil.NoSuchProcess:
            continue
    print("ready", flush=True)
    sys.stdout.close()
    sys.stdin.buffer.read()  # returns at end of file: the driver has exited
    psutil.wait_procs(list(known.values()), timeout=GRACE_S)
    procs = leftovers(known, raylet)
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


if __name__ == "__main__":
    main(int(sys.argv[1]))
