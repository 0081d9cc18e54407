"""The Parquet result store: one file per finished cell, in long format, written atomically.

``<results>/cells/<cell_id>.parquet`` holds every metric of one cell (or, for a failed cell, one row
with ``status = 'failed'`` and its error), so a crash can never leave half a cell behind, and the set
of files *is* the record of what is done. ``<results>/details/<cell_id>.<kind>.parquet`` holds what
the report draws from (:mod:`grid.details`), written before the row file. Query the whole directory as one table with DuckDB
(:mod:`grid.query`) or ``pyarrow.dataset``.

On object storage (``--results s3://bucket/prefix``) the same layout holds objects:
:class:`ObjectResultStore`, which :func:`open_store` picks for a :class:`grid.remote.Location`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ssl_st import __version__

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds

    from .plan import Cell
    from .remote import Location

DONE, FAILED = "done", "failed"

# Terminal control sequences (colours, cursor moves, hyperlinks) that Ray and rich put in tracebacks:
# stored errors are read in tables, CSV and JSON, where they are noise.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[@-Z\\-_])")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


# column -> SQL type; every cell file has exactly these columns, in this order
COLUMNS: dict[str, str] = {
    "cell_id": "VARCHAR",
    "dataset": "VARCHAR",
    "task": "VARCHAR",
    "model": "VARCHAR",
    "mode": "VARCHAR",
    "seed": "BIGINT",
    "metric": "VARCHAR",
    "value": "DOUBLE",
    "kind": "VARCHAR",  # "metric" (a score) or "info" (context: n_test, gene coverage, ...)
    "status": "VARCHAR",
    "error": "VARCHAR",
    "duration_s": "DOUBLE",
    "finished_at": "TIMESTAMP WITH TIME ZONE",
    "host": "VARCHAR",
    "ssl_st_version": "VARCHAR",
    "config": "VARCHAR",  # the cell's resolved content, JSON
}


def sql_text(value: str | Path) -> str:
    """``value`` as a quoted SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_list(paths: list[Path]) -> str:
    """``paths`` as a SQL list of string literals (absolute paths)."""
    return "[" + ", ".join(sql_text(p.resolve()) for p in paths) + "]"


def arrow_schema() -> pa.Schema:
    """:data:`COLUMNS` as an Arrow schema (pyarrow is imported only by what reads or writes files)."""
    import pyarrow as pa

    types = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(),
             "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC")}
    return pa.schema([(name, types[sql]) for name, sql in COLUMNS.items()])


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _same_file(path: Path, before: os.stat_result) -> bool:
    try:
        now = path.stat()
    except FileNotFoundError:
        return False
    return (now.st_ino, now.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` whole or not at all: ``write(f)`` fills a temporary file beside it
    (``.<stem>.<random>.tmp``), which reaches the disk before it is renamed over ``path``. On any
    error the temporary file is removed and ``path`` is as it was. Returns ``path``."""
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}.tmp")
    # 0o666 through the umask, like any file the user creates (mkstemp's 0600 hid the results from
    # the group on shared storage); O_EXCL so two writers never share a temporary file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            # on disk before the rename: a power cut must not leave a named but truncated file
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def cell_table(
    cell: Cell,
    records: Iterable[tuple[str, float, str]] | None,
    *,
    duration_s: float,
    error: str | None = None,
) -> pa.Table:
    """A finished cell's rows in the store's schema: its metric records, or (``error`` set) one
    failed row; a cell that returned no metrics is a failure too, never an empty file."""
    status = FAILED if error is not None else DONE
    rows = [(None, None, None)] if error is not None else list(records or [])
    if not rows:
        rows, status, error = [(None, None, None)], FAILED, "the task returned no metrics"
    finished = datetime.now(timezone.utc)
    common = {
        "cell_id": cell.cell_id,
        "dataset": cell.dataset,
        "task": cell.task,
        "model": cell.model,
        "mode": cell.mode,
        "seed": cell.seed,
        "status": status,
        "error": strip_ansi(error) if error is not None else None,
        "duration_s": duration_s,
        "finished_at": finished,
        "host": socket.gethostname(),
        "ssl_st_version": __version__,
        "config": json.dumps(cell.content, sort_keys=True),
    }
    import pyarrow as pa

    return pa.Table.from_pylist(
        [{**common, "metric": m, "value": v, "kind": k} for m, v, k in rows], schema=arrow_schema()
    )


class ResultStore:
    """The cell files under ``root``.

    Reading never fails on one damaged file: a cell file that cannot be read (truncated by a crash or
    a full disk, not Parquet, other columns) is moved to ``<root>/quarantine/`` with a warning, and is
    then simply absent, so ``ssl-st run`` computes that cell again. Reads take one scan over every file
    and check files one by one only when that scan fails, so a healthy store costs nothing extra.
    """

    def __init__(self, root: str | Path, *, warn: Callable[[str], None] = _warn) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self.details_dir = self.root / "details"
        self.quarantine_dir = self.root / "quarantine"
        self.warn = warn
        # unreadable files that could not be moved (a read-only store): left out of this store's reads
        self.skipped: set[Path] = set()

    def path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.parquet"

    def files(self) -> list[Path]:
        if not self.cells_dir.is_dir():
            return []
        return sorted(p for p in self.cells_dir.glob("*.parquet") if p not in self.skipped)

    def quarantined(self) -> list[Path]:
        """The cell files moved aside as unreadable (kept for inspection; nothing reads them)."""
        if not self.quarantine_dir.is_dir():
            return []
        return sorted(p for p in self.quarantine_dir.iterdir() if p.is_file())

    def details_path(self, cell_id: str, kind: str) -> Path:
        return self.details_dir / f"{cell_id}.{kind}.parquet"

    def write(
        self,
        cell: Cell,
        records: Iterable[tuple[str, float, str]] | None,
        *,
        duration_s: float,
        error: str | None = None,
        details: dict[str, pd.DataFrame] | None = None,
    ) -> Path:
        """Record a finished cell: its metric records, or (``error`` set) one failed row, after its
        ``details`` (each written atomically; an earlier run's details of this cell are removed), so
        that a cell with rows has the details it was written with."""
        import pyarrow.parquet as pq

        from .details import KINDS, to_parquet_bytes

        table = cell_table(cell, records, duration_s=duration_s, error=error)
        details = {} if error is not None else (details or {})
        for kind in KINDS:
            if kind not in details:
                self.details_path(cell.cell_id, kind).unlink(missing_ok=True)
        if details:
            self.details_dir.mkdir(parents=True, exist_ok=True)
        for kind, frame in details.items():
            data = to_parquet_bytes(frame)
            write_atomically(self.details_path(cell.cell_id, kind), lambda f, data=data: f.write(data))
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        return write_atomically(self.path(cell.cell_id), lambda f: pq.write_table(table, f))

    def details(self, cell_id: str, kind: str) -> pd.DataFrame | None:
        """The ``kind`` details of a cell (:mod:`grid.details`), or None: none written (an older
        store, a failed cell) or unreadable (warned about; the report draws without them)."""
        import pyarrow.parquet as pq

        path = self.details_path(cell_id, kind)
        if not path.is_file():
            return None
        try:
            return pq.read_table(path).to_pandas()
        except Exception as exc:  # noqa: BLE001 - a damaged file raises OSError, ArrowInvalid, ...
            self.warn(f"{path}: unreadable cell details ({_one_line(f'{type(exc).__name__}: {exc}')}); left out of "
                      "the report; `ssl-st run --force` rewrites them")
            return None

    def sweep(self, min_age_s: float = 0.0) -> list[Path]:
        """Delete the temporary files that writers killed mid-write left in ``cells/``; the deleted paths.

        A temporary file belongs to a write in progress until it is renamed, so this is safe only when
        no other process writes to the store: ``ssl-st run`` calls it at start while it holds the
        store's lock, and then every temporary file is a leftover. Without that lock, pass a
        ``min_age_s`` longer than a cell write takes (a write lasts well under a second).
        """
        removed, now = [], time.time()
        for tmp in [*self.cells_dir.glob(".*.tmp"), *self.details_dir.glob(".*.tmp")]:
            try:
                if now - tmp.stat().st_mtime >= min_age_s:
                    tmp.unlink()
                    removed.append(tmp)
            except FileNotFoundError:  # its writer finished (renamed it) meanwhile
                continue
        return removed

    def glob(self) -> str:
        """The pattern of every cell file, for ``read_parquet``."""
        return str(self.cells_dir / "*.parquet")

    # -- reading, with quarantine ---------------------------------------------------------------

    def unreadable(self, path: Path) -> str | None:
        """Why ``path`` is not a whole cell file with the store's columns, or None when it is."""
        import pyarrow.parquet as pq

        try:
            schema = pq.read_table(path).schema  # every page: a damaged one inside must show here
        except Exception as exc:  # noqa: BLE001 - a damaged file raises OSError, ArrowInvalid, ...
            return _one_line(f"{type(exc).__name__}: {exc}")
        if not schema.equals(arrow_schema(), check_metadata=False):
            return f"its columns are ({', '.join(schema.names)}), not the store's"
        return None

    def quarantine(self, path: Path, reason: str) -> Path | None:
        """Move an unreadable cell file to ``quarantine/`` (same name, a timestamp added if taken)."""
        try:
            self.quarantine_dir.mkdir(parents=True, exist_ok=True)
            target = self.quarantine_dir / path.name
            if target.exists():  # an earlier copy of this cell is kept too: never overwrite evidence
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
                target = target.with_name(f"{path.stem}.{stamp}{path.suffix}")
            os.rename(path, target)
        except FileNotFoundError:  # another reader moved it first
            return None
        except OSError as exc:
            self.skipped.add(path)
            self.warn(f"{path}: unreadable cell file ({reason}); left out, could not move it to "
                      f"{self.quarantine_dir} ({_one_line(str(exc))}); move or delete it so `ssl-st run` recomputes the cell")
            return None
        self.warn(f"{path}: unreadable cell file ({reason}); moved to {target}, `ssl-st run` recomputes the cell")
        return target

    def check(self) -> list[Path]:
        """Check every cell file on its own, quarantine the unreadable ones; the readable files."""
        readable = []
        for path in self.files():
            try:
                before = path.stat()
            except FileNotFoundError:
                continue
            reason = self.unreadable(path)
            if reason is None:
                readable.append(path)
            elif _same_file(path, before):  # not replaced by a writer (with a whole file) meanwhile
                self.quarantine(path, reason)
        return readable

    def _parquet(self, files: list[Path]) -> str:
        """``read_parquet`` over ``files``: the glob when it is the whole store (a short statement)."""
        if not self.skipped and files == self.files():
            return f"read_parquet({sql_text(self.glob())})"
        return f"read_parquet({sql_list(files)})"

    def _scan(self, select: str) -> tuple[list[Path], list[tuple]]:
        """``select`` (``{cells}`` stands for the cell files) in one DuckDB scan; if the scan fails,
        check the files one by one, quarantine the unreadable and scan the rest. The files it read."""
        import duckdb

        files = self.files()
        if not files:
            return [], []
        try:
            return files, duckdb.connect().execute(select.format(cells=self._parquet(files))).fetchall()
        except duckdb.Error:  # which file, and why, is found below; a second failure is no file's fault
            files = self.check()
        if not files:
            return [], []
        return files, duckdb.connect().execute(select.format(cells=self._parquet(files))).fetchall()

    def statuses(self) -> dict[str, str]:
        """``cell_id -> status`` of every recorded cell (two columns of each file, in one scan)."""
        return dict(self._scan("SELECT cell_id, any_value(status) FROM {cells} GROUP BY cell_id")[1])

    def dataset(self, files: list[Path] | None = None) -> ds.Dataset:
        """``files`` (default: every cell file) as one pyarrow dataset in the store's schema."""
        import pyarrow.dataset as ds

        files = self.files() if files is None else files
        return ds.dataset([str(p) for p in files], schema=arrow_schema(), format="parquet")

    def table(self) -> pa.Table:
        files = self.files()
        try:
            return self.dataset(files).to_table()
        except Exception:  # noqa: BLE001 - a damaged file raises OSError, ArrowInvalid, ...; found below
            return self.dataset(self.check()).to_table()


class ObjectResultStore:
    """The same store on object storage (:mod:`grid.remote`): one object per cell under
    ``<location>/cells/``, written by the driver in one PUT, which is whole or absent as the local
    rename is, so there are no temporary files to sweep. Reads go through pyarrow datasets on the
    location's filesystem (DuckDB scans those in :mod:`grid.query`); an unreadable object (written by
    something else) is moved to ``quarantine/`` with a warning, as a local file is."""

    def __init__(self, location: Location, *, warn: Callable[[str], None] = _warn) -> None:
        self.location = location
        self.cells_dir = location.url("cells")  # URIs, for messages
        self.quarantine_dir = location.url("quarantine")
        self.warn = warn
        self.skipped: set[str] = set()  # unreadable objects that could not be moved

    def path(self, cell_id: str) -> str:
        """The cell's object, as a path on the location's filesystem."""
        return self.location.path("cells", f"{cell_id}.parquet")

    def files(self) -> list[str]:
        return [i.path for i in self.location.list("cells") if i.path.endswith(".parquet") and i.path not in self.skipped]

    def quarantined(self) -> list[str]:
        return [i.path for i in self.location.list("quarantine")]

    def details_path(self, cell_id: str, kind: str) -> str:
        return self.location.path("details", f"{cell_id}.{kind}.parquet")

    def write(
        self,
        cell: Cell,
        records: Iterable[tuple[str, float, str]] | None,
        *,
        duration_s: float,
        error: str | None = None,
        details: dict[str, pd.DataFrame] | None = None,
    ) -> str:
        """Record a finished cell (see :meth:`ResultStore.write`): serialised whole in memory first,
        then one PUT, so a failure leaves no object rather than part of one; details first."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .details import KINDS, to_parquet_bytes

        details = {} if error is not None else (details or {})
        for kind in KINDS:
            if kind not in details:
                self.location.delete(self.details_path(cell.cell_id, kind))
        for kind, frame in details.items():
            self.location.write_bytes(self.details_path(cell.cell_id, kind), to_parquet_bytes(frame))
        sink = pa.BufferOutputStream()
        pq.write_table(cell_table(cell, records, duration_s=duration_s, error=error), sink)
        path = self.path(cell.cell_id)
        self.location.write_bytes(path, sink.getvalue().to_pybytes())
        return path

    def sweep(self, min_age_s: float = 0.0) -> list[str]:
        """Nothing to sweep: an interrupted PUT leaves no object."""
        return []

    def details(self, cell_id: str, kind: str) -> pd.DataFrame | None:
        """As :meth:`ResultStore.details`, from the cell's details object."""
        import io

        import pyarrow.parquet as pq

        path = self.details_path(cell_id, kind)
        data = self.location.read_bytes(path)
        if data is None:
            return None
        try:
            return pq.read_table(io.BytesIO(data)).to_pandas()
        except Exception as exc:  # noqa: BLE001 - a damaged object raises OSError, ArrowInvalid, ...
            self.warn(f"{self.location.url('details', path.rsplit('/', 1)[-1])}: unreadable cell details "
                      f"({_one_line(f'{type(exc).__name__}: {exc}')}); left out of the report")
            return None

    def unreadable(self, path: str) -> str | None:
        import pyarrow.parquet as pq

        try:
            schema = pq.read_table(path, filesystem=self.location.filesystem).schema
        except Exception as exc:  # noqa: BLE001 - a damaged object raises OSError, ArrowInvalid, ...
            return _one_line(f"{type(exc).__name__}: {exc}")
        if not schema.equals(arrow_schema(), check_metadata=False):
            return f"its columns are ({', '.join(schema.names)}), not the store's"
        return None

    def quarantine(self, path: str, reason: str) -> str | None:
        name = path.rsplit("/", 1)[-1]
        target = self.location.path("quarantine", name)
        if self.location.info(target).is_file:  # never overwrite evidence
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            target = self.location.path("quarantine", name.replace(".parquet", f".{stamp}.parquet"))
        try:
            self._move(path, target)
        except FileNotFoundError:  # another reader moved it first
            return None
        except OSError as exc:
            self.skipped.add(path)
            self.warn(f"{path}: unreadable cell object ({reason}); left out, could not move it to "
                      f"{self.quarantine_dir} ({_one_line(str(exc))}); delete it so `ssl-st run` recomputes the cell")
            return None
        self.warn(f"{path}: unreadable cell object ({reason}); moved to {target}, `ssl-st run` recomputes the cell")
        return target

    def _move(self, path: str, target: str) -> None:
        try:
            self.location.filesystem.move(path, target)
        except FileNotFoundError:
            if not self.location.info(path).is_file:
                raise
            # a filesystem with folders (not S3) wants quarantine/ to exist first
            self.location.filesystem.create_dir(self.location.path("quarantine"), recursive=True)
            self.location.filesystem.move(path, target)

    def check(self) -> list[str]:
        """Check every cell object on its own, quarantine the unreadable ones; the readable ones."""
        readable = []
        for path in self.files():
            before = self.location.info(path).mtime
            reason = self.unreadable(path)
            if reason is None:
                readable.append(path)
            elif self.location.info(path).mtime == before:  # not replaced by the writer meanwhile
                self.quarantine(path, reason)
        return readable

    def dataset(self, files: list[str] | None = None) -> ds.Dataset:
        import pyarrow.dataset as ds

        files = self.files() if files is None else files
        return ds.dataset(files, schema=arrow_schema(), format="parquet", filesystem=self.location.filesystem)

    def _read(self, columns: list[str] | None = None) -> pa.Table:
        try:
            return self.dataset().to_table(columns=columns)
        except Exception:  # noqa: BLE001 - a damaged object raises OSError, ArrowInvalid, ...; found below
            return self.dataset(self.check()).to_table(columns=columns)

    def statuses(self) -> dict[str, str]:
        table = self._read(["cell_id", "status"])
        return dict(zip(table["cell_id"].to_pylist(), table["status"].to_pylist()))

    def table(self) -> pa.Table:
        return self._read()


def open_store(results: str | Path | Location, *, warn: Callable[[str], None] = _warn) -> ResultStore | ObjectResultStore:
    """The store at ``results``: a local directory, or a :class:`grid.remote.Location` (a URI string
    is parsed; :class:`grid.remote.LocationError` if no filesystem reads it)."""
    from .remote import Location, parse

    root = parse(results) if isinstance(results, str) else results
    if isinstance(root, Location):
        return ObjectResultStore(root, warn=warn)
    return ResultStore(root, warn=warn)
