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
from typing import TYPE_CHECKING

from ssl_st import __version__

if TYPE_CHECKING:
    import pyarrow as pa

    from .plan import Cell

DONE, FAILED = "done", "failed"

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


def arrow_schema() -> pa.Schema:
    """:data:`COLUMNS` as an Arrow schema (pyarrow is imported only by what reads or writes files)."""
    import pyarrow as pa

    types = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(),
             "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC")}
    return pa.schema([(name, types[sql]) for name, sql in COLUMNS.items()])


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
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(
            [{**common, "metric": m, "value": v, "kind": k} for m, v, k in rows], schema=arrow_schema()
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

    def glob(self) -> str:
        """The pattern of every cell file, for ``read_parquet``."""
        return str(self.cells_dir / "*.parquet")

    def statuses(self) -> dict[str, str]:
        """``cell_id -> status`` of every recorded cell (two columns of each file, in one scan)."""
        if not self.files():
            return {}
        import duckdb

        pattern = self.glob().replace("'", "''")
        rows = duckdb.connect().execute(
            f"SELECT cell_id, any_value(status) FROM read_parquet('{pattern}') GROUP BY cell_id"
        ).fetchall()
        return dict(rows)

    def table(self) -> pa.Table:
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = self.files()
        schema = arrow_schema()
        if not files:
            return schema.empty_table()
        return pa.concat_tables([pq.read_table(p, schema=schema) for p in files])
