"""How fast the CLI answers: start-up of the read-only commands, and a query over a large store.

Usage: python bench/cli_startup.py [--files 1000] [--rows-per-file 1000] [--repeats 3]

Every figure is the best of ``--repeats`` runs of a fresh ``ssl-st`` process (as a user types it),
next to a baseline measured in the same run: a bare ``python -c pass`` for start-up, and DuckDB
alone (in-process, no CLI) scanning the same files for the query. The ratios are what to compare
across machines; the absolute times depend on how busy the machine is (measure it alone).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUERY = "SELECT task, mode, count(*) AS n, avg(value) AS mean FROM results WHERE kind = 'metric' GROUP BY ALL ORDER BY ALL"


def best_of(repeats: int, command: list[str], cwd: Path) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if result.returncode not in (0, 1):  # status exits 1 when cells failed
            raise SystemExit(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr}")
    return min(times)


def write_store(results: Path, n_files: int, rows: int) -> None:
    """``n_files`` cell files of ``rows`` metric rows each, in the store's exact schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from grid.store import arrow_schema

    cells = results / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    schema = arrow_schema()
    for i in range(n_files):
        table = pa.table({
            "cell_id": [f"{i:016x}"] * rows, "dataset": ["merscope"] * rows, "task": [f"task{i % 3}"] * rows,
            "model": ["random-mask"] * rows, "mode": ["zero-shot" if i % 2 else "pca"] * rows, "seed": [i % 5] * rows,
            "metric": [f"m{j}" for j in range(rows)], "value": [float(j) for j in range(rows)], "kind": ["metric"] * rows,
            "status": ["done"] * rows, "error": [None] * rows, "duration_s": [1.0] * rows,
            "finished_at": pa.array([0] * rows, pa.timestamp("us", tz="UTC")), "host": ["bench"] * rows,
            "ssl_st_version": ["0"] * rows, "config": ["{}"] * rows,
        }, schema=schema)
        pq.write_table(table, cells / f"{i:016x}.parquet")


def duckdb_alone(results: Path, repeats: int, union_by_name: bool) -> float:
    import duckdb

    option = ", union_by_name = true" if union_by_name else ""
    sql = QUERY.replace("FROM results", f"FROM read_parquet('{results / 'cells' / '*.parquet'}'{option})")
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        duckdb.connect().execute(sql).fetchall()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rows-per-file", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "grid"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "experiments.yaml").write_text((REPO / "experiments.yaml").read_text())
        (work / "results" / "cells").mkdir(parents=True)  # an empty store (a missing one is an error)
        bare = best_of(args.repeats, [sys.executable, "-c", "pass"], work)
        print(f"python -c pass (baseline)      {bare:6.2f} s")
        for name, command in (("--help", ["--help"]), ("plan (demo config)", ["plan"]),
                              ("status (empty store)", ["status"]), ("query (empty store)", ["query", QUERY])):
            seconds = best_of(args.repeats, cli + command, work)
            print(f"ssl-st {name:24s} {seconds:6.2f} s  ({seconds / bare:4.1f}x bare python)")
        write_store(work / "results", args.files, args.rows_per_file)
        n_rows = args.files * args.rows_per_file
        alone = duckdb_alone(work / "results", args.repeats, union_by_name=False)
        by_name = duckdb_alone(work / "results", args.repeats, union_by_name=True)
        print(f"DuckDB alone, {n_rows:,} rows in {args.files} files: {alone:.2f} s (union_by_name: {by_name:.2f} s)")
        for name, command in (("query (large store)", ["query", QUERY]), ("status (large store)", ["status"])):
            seconds = best_of(args.repeats, cli + command, work)
            print(f"ssl-st {name:24s} {seconds:6.2f} s  ({seconds / alone:4.1f}x DuckDB alone)")


if __name__ == "__main__":
    main()
