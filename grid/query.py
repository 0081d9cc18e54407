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

Results on object storage (``s3://bucket/prefix``, :mod:`grid.remote`) are read the same way, except
that DuckDB scans a pyarrow dataset over the cell objects (it reads through the store's filesystem;
no local path is allowed at all).

Every cell file is written with the same columns (:data:`grid.store.COLUMNS`), so the files are read
in that one schema without reconciling them by name.

Beside ``results``, the connection has the views of :data:`VIEWS` (``summary``, ``best``,
``failures``), which ``ssl-st query --view`` shows and any SQL can read (``SELECT * FROM summary
WHERE metric = 'macro_f1'``); the run's report (:mod:`grid.report`) takes its mean ± sd from the same
``summary``. From Python, :func:`results` answers as a DataFrame and :func:`results_relation` as a
DuckDB relation (both also as ``grid.results`` and ``grid.results_relation``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .store import COLUMNS, ObjectResultStore, ResultStore, open_store, sql_list, sql_text

if TYPE_CHECKING:
    import duckdb
    import pyarrow.dataset as ds

    from .remote import Location
    import pandas as pd
    import pyarrow as pa

T = TypeVar("T")

View = Literal["summary", "best", "failures"]

# Scores where lower is better (spatial continuity: distance to the nearest same-domain cell, share
# of cells outvoted by their neighbours); every other score is better higher.
LOWER_IS_BETTER = ("chaos", "pas")
_LOWER = "(" + ", ".join(sql_text(m) for m in LOWER_IS_BETTER) + ")"

# The named views over ``results``, defined once: the CLI's --view, the Python entry points, any SQL
# and the run's report all read these. A score is a ``kind = 'metric'`` row of a done cell; a NaN
# score (undefined, e.g. a silhouette of one domain) is left out of the mean, as pandas leaves it out.
# Cells of one task x dataset x model x mode x seed are averaged first (two cell ids share those when
# an earlier config differed in other settings), so each seed counts once; ``sd`` is the sample
# standard deviation over seeds (n - 1), NULL with one seed. The sums run in seed order: a parallel scan
# would otherwise add the same values in another order from run to run, and change the last digit.
VIEWS: dict[str, str] = {
    "summary": """
        WITH per_seed AS (
            SELECT task, dataset, model, mode, metric, seed, avg(value ORDER BY cell_id) AS value
            FROM results
            WHERE status = 'done' AND kind = 'metric' AND value IS NOT NULL AND NOT isnan(value)
            GROUP BY task, dataset, model, mode, metric, seed
        )
        SELECT task, dataset, model, mode, metric, count(*) AS n_seeds, avg(value ORDER BY seed) AS mean,
               stddev_samp(value ORDER BY seed) AS sd
        FROM per_seed
        GROUP BY task, dataset, model, mode, metric
        ORDER BY task, dataset, model, mode, metric""",
    # per task x dataset x metric, the model/mode whose mean is best (every one of them on a tie)
    "best": f"""
        SELECT task, dataset, metric, model, mode, n_seeds, mean, sd,
               CASE WHEN metric IN {_LOWER} THEN 'lower' ELSE 'higher' END AS better
        FROM summary
        QUALIFY rank() OVER (
            PARTITION BY task, dataset, metric
            ORDER BY CASE WHEN metric IN {_LOWER} THEN -mean ELSE mean END DESC) = 1
        ORDER BY task, dataset, metric, model, mode""",
    # every failed cell, with the first line of its error (the whole traceback is in results.error)
    "failures": r"""
        SELECT task, dataset, model, mode, seed, cell_id,
               rtrim(regexp_extract(coalesce(error, ''), '^\s*([^\r\n]*)', 1)) AS error
        FROM results
        WHERE status = 'failed'
        ORDER BY task, dataset, model, mode, seed, cell_id""",
}


class ResultsError(ValueError):
    """The results cannot answer: no such directory, an unknown view, SQL that fails. The message
    names the directory, the view or the SQL's error."""


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """Define :data:`VIEWS` on ``con``, which must have a table or view named ``results``."""
    for name, body in VIEWS.items():
        con.execute(f"CREATE VIEW {name} AS {body}")


def view_sql(view: str) -> str:
    """The SQL that shows ``view``; :class:`ResultsError` naming it if it is not one of :data:`VIEWS`."""
    if view not in VIEWS:
        raise ResultsError(f"unknown view {view!r}; the views are {', '.join(VIEWS)}")
    return f"SELECT * FROM {view}"


def _sandboxed(files: list[Path], objects: ds.Dataset | None = None) -> duckdb.DuckDBPyConnection:
    """The read-only connection over ``files``, or over ``objects`` (the cell objects of a store on
    object storage, as a pyarrow dataset: DuckDB scans it through the store's filesystem, and no
    file of this machine needs to be allowed)."""
    import duckdb

    con = duckdb.connect()
    if objects is not None and files:
        con.register("cell_objects", objects)
        con.execute("CREATE VIEW results AS SELECT * FROM cell_objects")
    elif files:
        listed = sql_list(files)
        con.execute(f"CREATE VIEW results AS SELECT * FROM read_parquet({listed})")
        # DuckDB's own scan (fast, with projection and filter pushdown) may open these files and no others
        con.execute(f"SET allowed_paths = {listed}")
    else:  # an empty store is still queryable, with the right columns
        columns = ", ".join(f"CAST(NULL AS {sql}) AS {name}" for name, sql in COLUMNS.items())
        con.execute(f"CREATE VIEW results AS SELECT {columns} WHERE false")
    create_views(con)
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


def _connect(store: ResultStore | ObjectResultStore, files: list) -> duckdb.DuckDBPyConnection:
    if isinstance(store, ObjectResultStore):
        return _sandboxed(files, store.dataset(files))
    return _sandboxed(files)


def _run(results: str | Path | Location, sql: str, consume: Callable[[Any], T]) -> T:
    """``consume(cursor)`` of ``sql`` on the results; a cell file found damaged on the way is
    quarantined and the SQL run again on the rest (no footer pre-scan: a healthy store stays fast)."""
    import duckdb

    if not sql.strip():
        raise ValueError("the SQL is empty")
    _only_queries(sql)
    store = open_store(results)
    files = store.files()
    try:
        return consume(_connect(store, files).execute(sql))
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
    return consume(_connect(store, readable).execute(sql))


def _rows(cursor: duckdb.DuckDBPyConnection | None) -> tuple[list[str], list[tuple[Any, ...]]]:
    if cursor is None or cursor.description is None:  # a statement without a result (only a comment, a SET)
        return [], []
    return [d[0] for d in cursor.description], cursor.fetchall()


def fetch(results: str | Path | Location, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql`` against ``results``: column names and rows (no pandas: the CLI's path).

    Raises ``duckdb.Error`` for SQL that fails or is refused, ``ValueError`` for empty SQL.
    """
    return _run(results, sql, _rows)


def query(results: str | Path | Location, sql: str) -> pd.DataFrame:
    """Run ``sql`` against ``results`` as a DataFrame; raises ``duckdb.Error`` (``ValueError`` if empty)."""
    return _run(results, sql, lambda cursor: cursor.df())


def _arrow_table(cursor: duckdb.DuckDBPyConnection | None) -> pa.Table:
    """The result as an Arrow table; a table without columns for a statement without a result."""
    import warnings

    import pyarrow as pa

    if cursor is None or cursor.description is None:
        return pa.table({})
    fetch_table = getattr(cursor, "to_arrow_table", None) or cursor.fetch_arrow_table  # DuckDB >= 1.4 / older
    with warnings.catch_warnings():  # DuckDB 2 notes that a DB-API result costs one more copy: it is small
        warnings.simplefilter("ignore", UserWarning)
        return fetch_table()


def arrow(results: str | Path | Location, sql: str) -> pa.Table:
    """Run ``sql`` against ``results`` as an Arrow table (no columns if the SQL returns no result);
    raises ``duckdb.Error`` (``ValueError`` if empty)."""
    return _run(results, sql, _arrow_table)


# -- the Python entry points ----------------------------------------------------------------------------

def _results_root(results_dir: str | Path) -> Path | Location:
    """``results_dir`` as a directory or a location on object storage that holds results, or
    :class:`ResultsError` naming it."""
    from .remote import LocationError, parse

    try:
        root = parse(results_dir)
    except LocationError as exc:
        raise ResultsError(str(exc).removeprefix("--results ")) from None
    if not isinstance(root, Path):
        if not root.exists():
            raise ResultsError(f"{root}: no results stored there; `ssl-st run --results {root}` writes them")
        return root
    if not root.exists():
        raise ResultsError(f"{root}: no such results directory; `ssl-st run` writes one (--results)")
    if not root.is_dir() or ((root / "cells").exists() and not (root / "cells").is_dir()):
        raise ResultsError(f"{root}: not a results directory (the directory `ssl-st run --results` writes)")
    return root


def _answer(results_dir: str | Path, view: View | None, sql: str | None) -> pa.Table:
    import duckdb

    root = _results_root(results_dir)
    if view is not None and sql is not None:
        raise ResultsError("pass view= or sql=, not both; the SQL can read the view itself (SELECT ... FROM summary)")
    if view is not None:
        statement = view_sql(view)
    elif sql is not None:
        statement = sql
    else:
        raise ResultsError(f"pass view= ({', '.join(VIEWS)}) or sql= (over the table results and those views)")
    try:
        table = arrow(root, statement)
    except (duckdb.Error, ValueError) as exc:
        raise ResultsError(f"query over {root} failed: {exc}") from exc
    if table.num_columns == 0:
        raise ResultsError(f"query over {root} returned no result (no statement, or one that returns "
                           "nothing); pass a SELECT")
    return table


def results(results_dir: str | Path, view: View | None = None, sql: str | None = None) -> pd.DataFrame:
    """The results under ``results_dir`` as a DataFrame: one of :data:`VIEWS` (``view="summary"``)
    or your own ``sql`` over ``results`` and those views (exactly one of the two).

    >>> grid.results("results", view="summary")                                    # doctest: +SKIP
    >>> grid.results("results", sql="SELECT * FROM best WHERE metric = 'macro_f1'")  # doctest: +SKIP

    Raises :class:`ResultsError` (a ``ValueError``) naming the directory or view that cannot answer,
    or carrying DuckDB's message for SQL that fails or is refused (only queries run).
    """
    return _answer(results_dir, view, sql).to_pandas()


def results_relation(results_dir: str | Path, view: View | None = None, sql: str | None = None) -> duckdb.DuckDBPyRelation:
    """:func:`results` as a DuckDB relation, to go on in DuckDB (``.filter``, ``.aggregate``,
    ``.pl()``, ...). The answer is read once and held in memory on a connection of its own, not on
    the connection that reads the cell files (which is never handed out: see the module's notes)."""
    import duckdb

    return duckdb.connect().from_arrow(_answer(results_dir, view, sql))
