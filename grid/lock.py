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

Results on object storage (``--results s3://...``) have no flock: there the lock is an object with a
heartbeat, best effort (:func:`acquire_remote`, and the notes above it say what it guarantees).
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
import secrets
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .remote import Location

LOCK_NAME = ".ssl-st.lock"
# flock failing with these means "not supported here", not "held by someone else"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class LockHeld(RuntimeError):
    """Another live process holds the results directory."""

    def __init__(self, path: Path | str, holder: dict[str, Any], how: str, *, results: str | None = None,
                 if_gone: str | None = None) -> None:
        self.path, self.holder = path, holder
        host, pid = holder.get("host", "?"), holder.get("pid", "?")
        here = host == socket.gethostname()
        stop = f"stop it (kill {pid})" if here else f"stop it on {host} (kill {pid} there)"
        if if_gone is None and not here:
            if_gone = f"if that run is gone and {host} cannot be reached, delete {path}"
        super().__init__(
            f"{results or Path(path).parent} is in use by another run: {describe(holder)} ({how}). Only one `ssl-st run` may "
            f"write a results directory at a time: wait for that run to finish (`ssl-st status` shows its "
            f"progress), {stop} and rerun this command to resume, or pass another --results directory"
            + (f"; {if_gone}" if if_gone else "")
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


def holder(results: str | Path | Location) -> dict[str, Any] | None:
    """Who holds the results directory now (None if nobody): for ``plan`` and ``status``."""
    if not isinstance(results, (str, Path)):
        record = _remote_record(results)
        return record if record and _remote_stale(record) is None else None
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


_HELD: dict[Path | str, RunLock | RemoteLock] = {}


def hold(results: str | Path | Location, command: str = "") -> RunLock | RemoteLock:
    """:func:`acquire` (:func:`acquire_remote` for a location on object storage) for a CLI command:
    held until the interpreter exits (the kernel drops a local lock sooner if the process dies; a
    remote one expires without heartbeats). A command run in-process again (tests) first releases
    what this process's previous command on ``results`` left held: commands in one process run one
    at a time."""
    remote = not isinstance(results, (str, Path))
    key = results.url(LOCK_NAME) if remote else lock_path(results).resolve()
    if (previous := _HELD.pop(key, None)) is not None:
        previous.release()
    taken = _HELD[key] = acquire_remote(results, command) if remote else acquire(results, command)
    if len(_HELD) == 1:
        atexit.register(release_held)
    return taken


def release_held() -> None:
    """Release every lock :func:`hold` keeps for this process: at its exit, or after a command run
    in-process (the tests' ``run_cli_here``)."""
    while _HELD:
        _HELD.popitem()[1].release()


# ---- results on object storage --------------------------------------------------------------------
#
# An object store has no flock, and pyarrow's filesystems cannot make a conditional PUT (S3's
# If-None-Match), so this lock is best effort, stated plainly: the holder's record (host, pid, a random
# token) is the object ``<results>/.ssl-st.lock``, rewritten every REMOTE_HEARTBEAT_S by a thread of the
# run. A record is stale when its host is this one and its PID is gone, or when its heartbeat is older
# than REMOTE_STALE_S (a run on another host that died). Two runs that start within the same second can
# both write the record; each reads it back after REMOTE_SETTLE_S, and only the one that reads its own
# token goes on (S3 reads are strongly consistent), which closes that window except against a writer
# slower than REMOTE_SETTLE_S between its read and its write.

REMOTE_HEARTBEAT_S = 30.0
REMOTE_STALE_S = 120.0
REMOTE_SETTLE_S = 0.5


@dataclass
class RemoteLock:
    """A held lock on object storage; ``note`` says whose stale lock was taken over, if any."""

    location: Location
    holder: dict[str, Any]
    note: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _beat: threading.Thread | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return self.location.path(LOCK_NAME)

    def start(self) -> None:
        self._beat = threading.Thread(target=self._heartbeat, name="ssl-st-lock-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(REMOTE_HEARTBEAT_S):
            try:
                record = _remote_record(self.location)
                if (record or {}).get("token") != self.holder["token"]:
                    print(f"warning: lost the lock on {self.location} to {describe(record or {})}: another run "
                          "took it over while this one sent no heartbeat", file=sys.stderr, flush=True)
                    return
                self.holder["heartbeat_at"] = time.time()
                self.location.write_bytes(self.path, json.dumps(self.holder).encode())
            except OSError:  # the store is unreachable for a moment: the next beat tries again
                continue

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=10)
        try:
            if (_remote_record(self.location) or {}).get("token") == self.holder["token"]:
                self.location.delete(self.path)
        except OSError:  # unreachable: the record goes stale REMOTE_STALE_S after its last heartbeat
            pass

    def __enter__(self) -> RemoteLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _remote_record(location: Location) -> dict[str, Any] | None:
    data = location.read_bytes(location.path(LOCK_NAME))
    try:
        record = json.loads(data or b"null")
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _remote_stale(record: dict[str, Any]) -> str | None:
    """Why the record's run is gone, or None if it may be alive."""
    if record.get("host") == socket.gethostname():
        return None if _alive(record.get("pid")) else "its process is gone"
    beat = record.get("heartbeat_at", record.get("started_at"))
    age = time.time() - beat if isinstance(beat, (int, float)) else float("inf")
    return f"no heartbeat for {age:.0f} s" if age > REMOTE_STALE_S else None


def acquire_remote(location: Location, command: str = "") -> RemoteLock:
    """Take the results on object storage for this process, or raise :class:`LockHeld` (best
    effort: see the notes above :data:`REMOTE_HEARTBEAT_S`)."""
    url = location.url(LOCK_NAME)
    if_gone = (f"if that run is gone, its lock expires {REMOTE_STALE_S:.0f} s after its last heartbeat; "
               f"to take it at once, delete {url}")
    previous, note = _remote_record(location), None
    if previous:
        why = _remote_stale(previous)
        if why is None:
            raise LockHeld(url, previous, "its lock on the store is live", results=str(location), if_gone=if_gone)
        note = f"took over the lock of a run that is gone ({describe(previous)}; {why}); its finished cells are kept"
    now = time.time()
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": now, "command": command,
          "token": secrets.token_hex(8), "heartbeat_at": now}
    location.write_bytes(location.path(LOCK_NAME), json.dumps(me).encode())
    time.sleep(REMOTE_SETTLE_S)
    record = _remote_record(location)
    if (record or {}).get("token") != me["token"]:
        raise LockHeld(url, record or {}, "it took the lock at the same moment", results=str(location), if_gone=if_gone)
    taken = RemoteLock(location, me, note)
    taken.start()
    return taken
