"""SQL over the result store: every cell file exposed as one DuckDB view named ``results``."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from .store import SCHEMA, ResultStore


def connection(results: str | Path) -> duckdb.DuckDBPyConnection:
    store = ResultStore(results)
    con = duckdb.connect()
    if store.files():
        pattern = str(store.cells_dir / "*.parquet").replace("'", "''")
        con.execute(f"CREATE VIEW results AS SELECT * FROM read_parquet('{pattern}', union_by_name = true)")
    else:  # an empty store is still queryable, with the right columns
        con.register("_empty", SCHEMA.empty_table())
        con.execute("CREATE VIEW results AS SELECT * FROM _empty")
    return con


def query(results: str | Path, sql: str) -> pd.DataFrame:
    """Run ``sql`` against the ``results`` view; raises ``duckdb.Error`` with DuckDB's message."""
    return connection(results).execute(sql).df()
