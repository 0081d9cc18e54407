"""SQL over the result store: every cell file exposed as one read-only DuckDB table named ``results``.

The SQL can read the results and nothing else. Only query statements run (SELECT, WITH, DESCRIBE,
SUMMARIZE): no ``COPY ... TO``, ``EXPORT DATABASE``, ``ATTACH``, ``INSTALL``, ``LOAD``, ``SET`` or
``PRAGMA`` -- a query that overwrote a cell file would silently change the record. The connection
has ``enable_external_access = false`` except for the cell files themselves (``allowed_paths``),
then ``lock_configuration = true``, so a query cannot read any other file (``read_csv``, ``glob``,
...) nor turn that back on. ``allowed_paths`` would let a COPY write the cell files, which is why the
connection is never handed out: :func:`fetch` and :func:`query` check every statement first.
DuckDB scans the files itself, with projection pushdown: 1M rows in 1,000 files answer in well
under a second (``bench/cli_startup.py``).

Every cell file is written with the same columns (:data:`grid.store.COLUMNS`), so the files are read
in that one schema without reconciling them by name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .store import COLUMNS, ResultStore, sql_list

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

T = TypeVar("T")


def _sandboxed(files: list[Path]) -> duckdb.DuckDBPyConnection:
    import duckdb

    con = duckdb.connect()
    if files:
        listed = sql_list(files)
        con.execute(f"CREATE VIEW results AS SELECT * FROM read_parquet({listed})")
        # DuckDB's own scan (fast, with projection and filter pushdown) may open these files and no others
        con.execute(f"SET allowed_paths = {listed}")
    else:  # an empty store is still queryable, with the right columns
        columns = ", ".join(f"CAST(NULL AS {sql}) AS {name}" for name, sql in COLUMNS.items())
        con.execute(f"CREATE VIEW results AS SELECT {columns} WHERE false")
    # Python objects are not the results either: no replacement scans of the caller's variables.
    con.execute("SET python_enable_replacements = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _only_queries(sql: str) -> None:
    """Refuse every statement but a query: the allowed cell files could otherwise be written
    (``COPY ... TO``, ``ATTACH``), and settings, extensions and exports are not the results."""
    import duckdb

    for statement in duckdb.extract_statements(sql):
        if statement.type != duckdb.StatementType.SELECT:
            kind = statement.type.name
            raise duckdb.PermissionException(
                f"{kind} statements are not allowed: ssl-st query only reads the results (SELECT, WITH, "
                "DESCRIBE, SUMMARIZE)"
            )


def _run(results: str | Path, sql: str, consume: Callable[[Any], T]) -> T:
    """``consume(cursor)`` of ``sql`` on the results; a cell file found damaged on the way is
    quarantined and the SQL run again on the rest (no footer pre-scan: a healthy store stays fast)."""
    import duckdb

    if not sql.strip():
        raise ValueError("the SQL is empty")
    _only_queries(sql)
    store = ResultStore(results)
    files = store.files()
    try:
        return consume(_sandboxed(files).execute(sql))
    except duckdb.Error as exc:
        # only a failed read of the files is worth checking them one by one: SQL errors (a typo, a
        # refused statement) would cost a read of the whole store before being reported
        sql_errors = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
                      duckdb.PermissionException, duckdb.ConversionException)
        if not files or isinstance(exc, sql_errors):
            raise
        readable = store.check()
        if readable == files:  # every file reads: the error is the SQL's
            raise
    return consume(_sandboxed(readable).execute(sql))


def _rows(cursor: duckdb.DuckDBPyConnection | None) -> tuple[list[str], list[tuple[Any, ...]]]:
    if cursor is None or cursor.description is None:  # a statement without a result (only a comment, a SET)
        return [], []
    return [d[0] for d in cursor.description], cursor.fetchall()


def fetch(results: str | Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql`` against ``results``: column names and rows (no pandas: the CLI's path).

    Raises ``duckdb.Error`` for SQL that fails or is refused, ``ValueError`` for empty SQL.
    """
    return _run(results, sql, _rows)


def query(results: str | Path, sql: str) -> pd.DataFrame:
    """Run ``sql`` against ``results`` as a DataFrame; raises ``duckdb.Error`` (``ValueError`` if empty)."""
    return _run(results, sql, lambda cursor: cursor.df())
