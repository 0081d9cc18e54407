"""One writer per results directory: ``<results>/.ssl-st.lock``.

Two runs on one results directory compute every cell twice, rebuild the shared artifacts under each
other's readers, and leave a store that depends on which one wrote last. ``ssl-st run`` therefore
holds an exclusive ``flock`` on the lock file for its whole life; the file itself holds who took it
(JSON: host, pid, started_at, command), so that the second run can name the first.

The kernel drops a ``flock`` when its process dies, kill -9 included, so a lock file whose flock is
free is stale whatever it says, and is taken over with a note. Where ``flock`` is not supported (some
NFS mounts answer ENOLCK), the record decides: a holder on this host is alive if its PID is; a
holder on another host cannot be checked from here and is respected until its owner removes the file.

The file is emptied, never deleted, on release: deleting it would let a process that opened the old
file before the deletion and one that creates a new file hold "the" lock at the same time.
Stdlib only: ``ssl-st plan`` reads the holder without importing anything heavy.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCK_NAME = ".ssl-st.lock"
# flock failing with these means "not supported here", not "held by someone else"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class LockHeld(RuntimeError):
    """Another live process holds the results directory."""

    def __init__(self, path: Path, holder: dict[str, Any], how: str) -> None:
        self.path, self.holder = path, holder
        host, pid = holder.get("host", "?"), holder.get("pid", "?")
        here = host == socket.gethostname()
        stop = f"stop it (kill {pid})" if here else f"stop it on {host} (kill {pid} there)"
        super().__init__(
            f"{path.parent} is in use by another run: {describe(holder)} ({how}). Only one `ssl-st run` may "
            f"write a results directory at a time: wait for that run to finish (`ssl-st status` shows its "
            f"progress), {stop} and rerun this command to resume, or pass another --results directory"
            + ("" if here else f"; if that run is gone and {host} cannot be reached, delete {path}")
        )


def describe(holder: dict[str, Any]) -> str:
    started = holder.get("started_at")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    text = f"host {holder.get('host', '?')}, PID {holder.get('pid', '?')}, started {when}"
    return text + (f": {holder['command']}" if holder.get("command") else "")


@dataclass
class RunLock:
    """A held lock; ``note`` says whose stale lock was taken over, if any."""

    path: Path
    fd: int | None
    holder: dict[str, Any]
    note: str | None = None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if read_holder(self.path) == self.holder:  # in fallback mode another run may have taken over
                os.ftruncate(self.fd, 0)
        finally:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_path(results: str | Path) -> Path:
    return Path(results) / LOCK_NAME


def read_holder(path: Path) -> dict[str, Any] | None:
    """The recorded holder, or None for an empty, missing or unreadable record."""
    try:
        record = json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def acquire(results: str | Path, command: str = "") -> RunLock:
    """Take the results directory for this process, or raise :class:`LockHeld` at once."""
    path = lock_path(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time(), "command": command}
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        previous = read_holder(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                record = read_holder(path)
                if not record:  # taken a moment ago, not written yet
                    time.sleep(0.2)
                    record = read_holder(path)
                raise LockHeld(path, record or previous or {}, "it holds the lock") from None
            if exc.errno not in _UNSUPPORTED:
                raise
            _check_without_flock(path, previous)  # no flock here: judge the record itself
        else:
            previous = read_holder(path)  # reread under the lock: the record is now stable
        note = None
        if previous and previous.get("pid") != me["pid"]:
            note = f"took over the lock of a run that is gone ({describe(previous)}); its finished cells are kept"
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        return RunLock(path, fd, me, note)
    except BaseException:
        os.close(fd)
        raise


def _check_without_flock(path: Path, previous: dict[str, Any] | None) -> None:
    if not previous:
        return
    if previous.get("host") != socket.gethostname():
        raise LockHeld(path, previous, "this file system does not support flock, and a run on another host cannot be checked from here")
    if _alive(previous.get("pid")) and previous.get("pid") != os.getpid():
        raise LockHeld(path, previous, "its process is alive")


def holder(results: str | Path) -> dict[str, Any] | None:
    """Who holds the results directory now (None if nobody): for ``plan`` and ``status``."""
    path = lock_path(results)
    if not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return read_holder(path) or {}
            record = read_holder(path)  # no flock: same rule as acquire
            if record and (record.get("host") != socket.gethostname() or _alive(record.get("pid"))):
                return record
            return None
        return None  # the flock was free: any record is stale
    finally:
        os.close(fd)


_HELD: dict[Path, RunLock] = {}


def hold(results: str | Path, command: str = "") -> RunLock:
    """:func:`acquire` for a CLI command: held until the interpreter exits (the kernel drops it
    sooner if the process dies). A command run in-process again (tests) first releases what this
    process's previous command on ``results`` left held: commands in one process run one at a time."""
    path = lock_path(results).resolve()
    if (previous := _HELD.pop(path, None)) is not None:
        previous.release()
    taken = _HELD[path] = acquire(results, command)
    if len(_HELD) == 1:
        atexit.register(_release_all)
    return taken


def _release_all() -> None:
    while _HELD:
        _HELD.popitem()[1].release()
