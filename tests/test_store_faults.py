"""The result store under faults: damaged cell files, leftover temporary files, permissions, terminal
escapes in errors, SQL that tries to write or read beyond the results, and wrong --results paths.

No Ray: cell files are written with :meth:`ResultStore.write` from stand-in cells.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grid.config import load_config
from grid.plan import expand
from grid.query import _sandboxed, fetch, query
from grid.store import ResultStore

from .conftest import run_cli_here, tiny_config


def _cell(i: int) -> SimpleNamespace:
    return SimpleNamespace(cell_id=f"{i:016x}", dataset="merscope", task="cell-type", model="rm",
                           mode="pca", seed=i, content={"i": i})


def _store(root: Path, n: int = 4, rows: int = 50, warnings: list[str] | None = None) -> ResultStore:
    store = ResultStore(root, **({"warn": warnings.append} if warnings is not None else {}))
    for i in range(n):
        store.write(_cell(i), [(f"m{j}", float(j), "metric") for j in range(rows)], duration_s=1.0)
    return store


def test_details_are_written_before_the_rows_and_never_outlive_a_rerun(tmp_path):
    """A cell's details go down atomically before its row file; a rerun that keeps fewer kinds, or
    fails, leaves none of the earlier run's behind; a writer killed mid-write leaves only a
    temporary file, which the next run sweeps."""
    from grid import details

    store = ResultStore(tmp_path)
    cell = _cell(1)
    kept = {details.PREDICTIONS: details.predictions(["c1", "c2"], ["a", "b"], ["a", "b"]),
            details.EMBEDDING: details.embedding_sample(["c1"], ["a"], [[0.5, 1.5]])}
    store.write(cell, [("macro_f1", 1.0, "metric")], duration_s=1.0, details=kept)
    assert store.details(cell.cell_id, details.PREDICTIONS).equals(kept[details.PREDICTIONS])
    assert details.embedding_matrix(store.details(cell.cell_id, details.EMBEDDING)).tolist() == [[0.5, 1.5]]
    assert store.details_path(cell.cell_id, details.EMBEDDING).stat().st_mtime_ns <= store.path(cell.cell_id).stat().st_mtime_ns
    store.write(cell, [("macro_f1", 1.0, "metric")], duration_s=1.0, details={details.PREDICTIONS: kept[details.PREDICTIONS]})
    assert store.details(cell.cell_id, details.EMBEDDING) is None
    store.write(cell, None, duration_s=1.0, error="boom")
    assert sorted(store.details_dir.iterdir()) == []
    # damaged details are left out with a warning, never fatal
    warnings: list[str] = []
    store = ResultStore(tmp_path, warn=warnings.append)
    store.details_path(cell.cell_id, details.DOMAINS).write_bytes(b"not parquet")
    assert store.details(cell.cell_id, details.DOMAINS) is None and "unreadable cell details" in warnings[0]
    leftover = store.details_dir / f".{cell.cell_id}.domains.0123.tmp"
    leftover.write_bytes(b"half")
    assert leftover in store.sweep()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _damage_a_page(path: Path) -> None:
    """Overwrite the data but keep the footer: only a read of the pages can tell."""
    data = bytearray(path.read_bytes())
    data[100 : len(data) // 2] = b"\xff" * (len(data) // 2 - 100)
    path.write_bytes(bytes(data))


# -- 1. one damaged cell file -----------------------------------------------------------------------

def test_a_truncated_cell_is_quarantined_and_the_rest_still_reads(tmp_path):
    warnings: list[str] = []
    store = _store(tmp_path / "results", warnings=warnings)
    bad = store.path(_cell(1).cell_id)
    _truncate(bad)
    damaged = bad.read_bytes()
    assert set(store.statuses()) == {_cell(i).cell_id for i in (0, 2, 3)}
    moved = tmp_path / "results" / "quarantine" / bad.name
    assert not bad.exists() and moved.read_bytes() == damaged
    assert len(warnings) == 1 and str(bad) in warnings[0] and "\n" not in warnings[0]
    assert "magic" in warnings[0].lower() or "parquet" in warnings[0].lower()  # the reason
    assert store.quarantined() == [moved]

    # the same cell damaged again: the earlier copy is kept, the new one gets a timestamp
    store.write(_cell(1), [("m", 1.0, "metric")], duration_s=1.0)
    _truncate(bad)
    assert len(store.table()) == 3 * 50
    names = [p.name for p in store.quarantined()]
    assert len(names) == 2 and bad.name in names and all(n.startswith(_cell(1).cell_id) for n in names)


def test_table_query_and_connection_survive_damaged_cells(tmp_path):
    results = tmp_path / "results"
    warnings: list[str] = []
    store = _store(results, warnings=warnings)
    _damage_a_page(store.path(_cell(0).cell_id))  # footer intact: the fast footer scan passes
    assert set(store.table().column("cell_id").to_pylist()) == {_cell(i).cell_id for i in (1, 2, 3)}
    assert len(warnings) == 1

    _damage_a_page(store.path(_cell(1).cell_id))
    columns, rows = fetch(results, "SELECT count(DISTINCT cell_id) AS n, count(*) AS rows FROM results")
    assert columns == ["n", "rows"] and rows == [(2, 100)]
    assert len(ResultStore(results).quarantined()) == 2

    _truncate(store.path(_cell(2).cell_id))
    assert fetch(results, "SELECT count(*) FROM results")[1] == [(50,)]
    assert query(results, "SELECT DISTINCT cell_id FROM results")["cell_id"].tolist() == [_cell(3).cell_id]


def test_a_file_with_other_columns_is_quarantined_when_a_scan_fails(tmp_path):
    store = _store(tmp_path / "results", warnings=[])
    pq.write_table(pa.table({"x": [1, 2]}), store.cells_dir / "foreign.parquet")
    assert set(store.statuses()) == {_cell(i).cell_id for i in range(4)}
    assert [p.name for p in store.quarantined()] == ["foreign.parquet"]


def test_an_unmovable_damaged_file_is_left_out_with_a_warning(tmp_path):
    warnings: list[str] = []
    store = _store(tmp_path / "results", warnings=warnings)
    _truncate(store.path(_cell(3).cell_id))
    (tmp_path / "results" / "quarantine").write_text("in the way")  # the move fails
    assert set(store.statuses()) == {_cell(i).cell_id for i in range(3)}
    assert store.path(_cell(3).cell_id).exists() and "could not move" in warnings[0]
    assert len(store.table()) == 3 * 50


def test_status_and_plan_do_not_crash_on_a_truncated_cell(tmp_path):
    config = tiny_config(tmp_path)
    cells = expand(load_config(config)).cells
    results = tmp_path / "results"
    store = ResultStore(results)
    for cell in cells:
        store.write(cell, [("macro_f1", 0.5, "metric")], duration_s=1.0)
    _truncate(store.path(cells[0].cell_id))

    shown = run_cli_here("status", str(config), "--results", str(results))
    assert shown.returncode == 0, shown.stderr
    assert "Traceback" not in shown.stderr
    assert f"done: {len(cells) - 1}  failed: 0  pending: 1  quarantined: 1" in shown.stdout
    warning = [line for line in shown.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and cells[0].cell_id in warning[0] and "quarantine" in warning[0]
    assert (results / "quarantine" / f"{cells[0].cell_id}.parquet").is_file()

    _truncate(store.path(cells[1].cell_id))  # plan meets a damaged file of its own
    planned = run_cli_here("plan", str(config), "--results", str(results), "--list", check=True)
    assert "Traceback" not in planned.stderr and cells[1].cell_id in planned.stderr
    rows = {c.cell_id: [line for line in planned.stdout.splitlines() if c.cell_id in line] for c in cells[:3]}
    assert ["pending" in r[0] for r in rows.values()] == [True, True, False]
    # what `run` decides from: the damaged cells are pending, so they are computed again
    assert not {cells[0].cell_id, cells[1].cell_id} & ResultStore(results).statuses().keys()


# -- 2. leftover temporary files ----------------------------------------------------------------------

def test_sweep_removes_leftover_temporary_files(tmp_path):
    store = _store(tmp_path / "results", n=1)
    old = store.cells_dir / f".{_cell(5).cell_id}.abc123.tmp"
    young = store.cells_dir / f".{_cell(6).cell_id}.def456.tmp"
    old.write_bytes(b"half a cell")
    young.write_bytes(b"being written")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert store.sweep(min_age_s=300) == [old]
    assert young.exists() and not old.exists()
    assert store.sweep() == [young]  # under the run lock every temporary file is a leftover
    assert [p.name for p in store.cells_dir.iterdir()] == [f"{_cell(0).cell_id}.parquet"]
    assert ResultStore(tmp_path / "nothing").sweep() == []


# -- 3. permissions ------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_cell_files_honour_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = _store(tmp_path / "results", n=1).path(_cell(0).cell_id)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


# -- 4. terminal escapes -------------------------------------------------------------------------------

def test_stored_errors_have_no_terminal_escapes(tmp_path):
    store = ResultStore(tmp_path / "results")
    error = ("\x1b[36mray::run_cell()\x1b[39m (pid=1)\n\x1b[1;31mValueError\x1b[0m: no_such_column "
             "\x1b]8;;file:///x.py\x1b\\x.py\x1b]8;;\x1b\\\x1b(B\x1b[m")
    store.write(_cell(0), None, duration_s=1.0, error=error)
    stored = store.table().column("error").to_pylist()[0]
    assert stored == "ray::run_cell() (pid=1)\nValueError: no_such_column x.py"


# -- 5. SQL reads the results and nothing else -------------------------------------------------------

@pytest.fixture()
def results(tmp_path):
    _store(tmp_path / "results", n=2, rows=3)
    return tmp_path / "results"


def _refused(results: Path, sql: str) -> str:
    with pytest.raises(duckdb.Error) as caught:
        fetch(results, sql)
    return str(caught.value)


def test_query_cannot_copy_over_a_cell_or_anywhere(results, tmp_path):
    cell = ResultStore(results).files()[0]
    before = cell.read_bytes()
    for target in (cell, tmp_path / "elsewhere.csv"):
        _refused(results, f"COPY (SELECT * FROM results LIMIT 1) TO '{target}'")
    assert cell.read_bytes() == before and not (tmp_path / "elsewhere.csv").exists()
    _refused(results, f"EXPORT DATABASE '{tmp_path / 'dump'}'")
    assert not (tmp_path / "dump").exists()

    shown = run_cli_here("query", f"COPY (SELECT * FROM results LIMIT 1) TO '{cell}' (FORMAT parquet)", "--results", str(results))
    assert shown.returncode == 2 and "not allowed" in shown.stderr and cell.read_bytes() == before
    # nor from inside a query
    _refused(results, f"SELECT * FROM query('COPY (SELECT 1) TO ''{cell}'' (FORMAT parquet, USE_TMP_FILE false)')")
    assert cell.read_bytes() == before


@pytest.mark.parametrize("sql", [
    "ATTACH '{tmp}/other.db' AS other",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SELECT * FROM read_csv('{tmp}/secret.csv')",
    "SELECT * FROM read_parquet('{tmp}/secret.parquet')",
    "SELECT * FROM '{tmp}/secret.parquet'",
    "SELECT * FROM glob('{tmp}/*')",
    "SELECT * FROM read_text('{tmp}/secret.csv')",
])
def test_query_cannot_reach_other_files_or_extensions(results, tmp_path, sql):
    (tmp_path / "secret.csv").write_text("a\n1\n")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "secret.parquet")
    # refused, not failing for another reason (no network, extension not installed): statements that
    # are not queries by the statement check, file functions by the connection's disabled file access
    message = _refused(results, sql.format(tmp=tmp_path))
    assert ("not allowed" if not sql.startswith("SELECT") else "disabled") in message
    assert not (tmp_path / "other.db").exists()
    if not sql.startswith("SELECT"):  # and the sandboxed connection alone refuses them too
        with pytest.raises(duckdb.Error, match="disabled|locked"):
            _sandboxed(ResultStore(results).files()).execute(sql.format(tmp=tmp_path))
        assert not (tmp_path / "other.db").exists()


@pytest.mark.parametrize("sql", ["SET enable_external_access = true", "RESET enable_external_access",
                                 "SET lock_configuration = false", "PRAGMA enable_external_access = true"])
def test_query_cannot_turn_file_access_back_on(results, sql):
    assert "not allowed" in _refused(results, sql)
    with pytest.raises(duckdb.Error, match="locked"):  # the sandboxed connection alone refuses it too
        _sandboxed(ResultStore(results).files()).execute(sql)
    assert fetch(results, "SELECT count(*) AS n FROM results") == (["n"], [(6,)])


def test_query_empty_sql_is_a_clear_error(results):
    for sql in ("", "   \n"):
        shown = run_cli_here("query", sql, "--results", str(results))
        assert shown.returncode == 2 and "SQL: empty" in shown.stderr and "Traceback" not in shown.stderr
    comment = run_cli_here("query", "--results", str(results), "--", "-- nothing")
    assert comment.returncode == 2 and "no result" in comment.stderr and "Traceback" not in comment.stderr


# -- 6. --results that is missing or not a directory ------------------------------------------------

def test_read_only_commands_refuse_a_missing_or_non_directory_results(tmp_path):
    config = tiny_config(tmp_path)
    missing, a_file = tmp_path / "missing", tmp_path / "results.txt"
    a_file.write_text("not a store")
    for command in (["status", str(config)], ["query", "SELECT count(*) FROM results"]):
        for path, words in ((missing, "ssl-st run"), (a_file, "not a directory")):
            shown = run_cli_here(*command, "--results", str(path))
            assert shown.returncode == 2, (command, path, shown.stdout, shown.stderr)
            assert str(path) in shown.stderr and words in shown.stderr and "Traceback" not in shown.stderr
    planned = run_cli_here("plan", str(config), "--results", str(a_file))
    assert planned.returncode == 2 and "not a directory" in planned.stderr
    fresh = run_cli_here("plan", str(config), "--results", str(missing))
    assert fresh.returncode == 0, fresh.stderr  # nothing run yet: every cell pending
    assert not missing.exists()
