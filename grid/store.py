"""The Parquet result store: one file per finished cell, in long format, written atomically.

``<results>/cells/<cell_id>.parquet`` holds every metric of one cell (or, for a failed cell, one row
with ``status = 'failed'`` and its error), so a crash can never leave half a cell behind, and the set
of files *is* the record of what is done. Query the whole directory as one table with DuckDB
(:mod:`grid.query`) or ``pyarrow.dataset``.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ssl_st import __version__

from .plan import Cell

DONE, FAILED = "done", "failed"

SCHEMA = pa.schema(
    [
        ("cell_id", pa.string()),
        ("dataset", pa.string()),
        ("task", pa.string()),
        ("model", pa.string()),
        ("mode", pa.string()),
        ("seed", pa.int64()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("kind", pa.string()),  # "metric" (a score) or "info" (context: n_test, gene coverage, ...)
        ("status", pa.string()),
        ("error", pa.string()),
        ("duration_s", pa.float64()),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        ("host", pa.string()),
        ("ssl_st_version", pa.string()),
        ("config", pa.string()),  # the cell's resolved content, JSON
    ]
)


class ResultStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"

    def path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.parquet"

    def files(self) -> list[Path]:
        return sorted(self.cells_dir.glob("*.parquet")) if self.cells_dir.is_dir() else []

    def write(
        self,
        cell: Cell,
        records: Iterable[tuple[str, float, str]] | None,
        *,
        duration_s: float,
        error: str | None = None,
    ) -> Path:
        """Record a finished cell: its metric records, or (``error`` set) one failed row."""
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
            "error": error,
            "duration_s": duration_s,
            "finished_at": finished,
            "host": socket.gethostname(),
            "ssl_st_version": __version__,
            "config": json.dumps(cell.content, sort_keys=True),
        }
        table = pa.Table.from_pylist(
            [{**common, "metric": m, "value": v, "kind": k} for m, v, k in rows], schema=SCHEMA
        )
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{cell.cell_id}.", suffix=".tmp", dir=self.cells_dir)
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, self.path(cell.cell_id))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.path(cell.cell_id)

    def statuses(self) -> dict[str, str]:
        """``cell_id -> status`` of every recorded cell (reads two columns of each file)."""
        out: dict[str, str] = {}
        for path in self.files():
            table = pq.read_table(path, columns=["cell_id", "status"])
            if table.num_rows:
                out[table["cell_id"][0].as_py()] = table["status"][0].as_py()
        return out

    def table(self) -> pa.Table:
        files = self.files()
        if not files:
            return SCHEMA.empty_table()
        return pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in files])
