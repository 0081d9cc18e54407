"""SQL over the result store: every cell file exposed as one DuckDB view named ``results``.

Every cell file is written with the same columns (:data:`grid.store.COLUMNS`), so the files are
scanned as one table without reconciling schemas by name (``union_by_name`` costs ~2.5x on a large
store). The view is read-only in effect: the results are files, and SQL sees them only through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .store import COLUMNS, ResultStore

if TYPE_CHECKING:
    import duckdb
    import pandas as pd


def connection(results: str | Path) -> duckdb.DuckDBPyConnection:
    import duckdb

    store = ResultStore(results)
    con = duckdb.connect()
    if store.files():
        pattern = store.glob().replace("'", "''")
        con.execute(f"CREATE VIEW results AS SELECT * FROM read_parquet('{pattern}')")
    else:  # an empty store is still queryable, with the right columns
        columns = ", ".join(f"CAST(NULL AS {sql}) AS {name}" for name, sql in COLUMNS.items())
        con.execute(f"CREATE VIEW results AS SELECT {columns} WHERE false")
    return con


def fetch(results: str | Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql`` against the ``results`` view: column names and rows (no pandas: the CLI's path)."""
    cursor = connection(results).execute(sql)
    columns = [d[0] for d in cursor.description or []]
    return columns, cursor.fetchall()


def query(results: str | Path, sql: str) -> pd.DataFrame:
    """Run ``sql`` against the ``results`` view as a DataFrame; raises ``duckdb.Error``."""
    return connection(results).execute(sql).df()
