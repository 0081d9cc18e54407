"""The named views over the results (summary, best, failures): their numbers, ``ssl-st query --view``
and ``--format parquet``, and the Python entry points ``grid.results`` / ``grid.results_relation``.

No Ray: the store is written with :meth:`ResultStore.write` from stand-in cells with known scores.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from itertools import count
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pyarrow.parquet as pq
import pytest

import grid
from grid.query import VIEWS, ResultsError
from grid.report import format_cell, summarize
from grid.store import ResultStore

from .conftest import REPO, run_cli_here

SEEDS = (1, 2, 3)
# (task, dataset, model, mode) -> metric -> one score per seed of SEEDS (values exact in binary)
SCORES: dict[tuple[str, str, str | None, str], dict[str, list[float]]] = {
    ("cell-type", "merscope", "rm", "zero-shot"): {"macro_f1": [0.5, 0.75, 1.0], "accuracy": [0.5, 0.5, 0.5],
                                                   "asw": [0.25, 0.75, math.nan]},  # NaN: left out
    ("cell-type", "merscope", None, "pca"): {"macro_f1": [0.25, 0.5, 0.75], "accuracy": [0.25, 0.5, 0.75]},
    ("cell-type", "xenium", "rm", "zero-shot"): {"macro_f1": [0.125, 0.25, 0.375], "accuracy": [0.5, 0.75, 1.0]},
    ("cell-type", "xenium", None, "pca"): {"macro_f1": [0.5, 0.5, 1.0], "accuracy": [0.25, 0.25, 0.25]},
    # spatial domains: chaos is better lower, ari higher
    ("domains", "merscope", "a", "cluster"): {"chaos": [0.25, 0.25, 0.25], "ari": [0.5, 0.5, 0.5]},
    ("domains", "merscope", "b", "cluster"): {"chaos": [0.5, 0.75, 1.0], "ari": [0.75, 0.75, 0.75]},
}
FAILED = ("cell-type", "xenium", None, "pca", 4)  # a fourth seed that failed
ERROR = "\n  ValueError: genes do not overlap  \nTraceback (most recent call last):\n  File 'x.py'\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("views") / "results"
    store = ResultStore(root)
    ids = count()

    def cell(task: str, dataset: str, model: str | None, mode: str, seed: int) -> SimpleNamespace:
        return SimpleNamespace(cell_id=f"{next(ids):016x}", task=task, dataset=dataset, model=model, mode=mode,
                               seed=seed, content={"seed": seed})

    for key, metrics in SCORES.items():
        for i, seed in enumerate(SEEDS):
            rows = [(metric, values[i], "metric") for metric, values in metrics.items()]
            rows.append(("n_test", 100.0 + seed, "info"))  # context, not a score
            store.write(cell(*key, seed), rows, duration_s=1.0)
    failed = cell(*FAILED)
    store.write(failed, None, duration_s=1.0, error=ERROR)
    return root


def _expected_summary() -> list[dict]:
    rows = []
    for (task, dataset, model, mode), metrics in SCORES.items():
        for metric, values in metrics.items():
            kept = [v for v in values if not math.isnan(v)]
            rows.append({"task": task, "dataset": dataset, "model": model, "mode": mode, "metric": metric,
                         "n_seeds": len(kept), "mean": statistics.mean(kept), "sd": statistics.stdev(kept)})
    return rows


def _key(row: dict) -> tuple:
    return tuple(row[c] for c in ("task", "dataset", "model", "mode", "metric"))


def _records(frame) -> list[dict]:
    return [{k: (None if v is None or v != v else v) for k, v in r.items()} for r in frame.to_dict("records")]


# -- the views' numbers --------------------------------------------------------------------------------

def test_summary_is_mean_and_sample_sd_over_the_seeds_of_each_score(store):
    frame = grid.results(store, view="summary")
    assert list(frame.columns) == ["task", "dataset", "model", "mode", "metric", "n_seeds", "mean", "sd"]
    got = {_key(r): r for r in _records(frame)}
    expected = {_key(r): r for r in _expected_summary()}
    assert got.keys() == expected.keys()  # scores only: no n_test (info), nothing of the failed cell
    for key, want in expected.items():
        assert got[key]["n_seeds"] == want["n_seeds"], key
        assert got[key]["mean"] == pytest.approx(want["mean"], rel=1e-12, abs=1e-15), key
        assert got[key]["sd"] == pytest.approx(want["sd"], rel=1e-12, abs=1e-15), key
    assert got[("cell-type", "xenium", None, "pca", "macro_f1")]["sd"] == pytest.approx(math.sqrt(1 / 12), rel=1e-12)
    assert got[("cell-type", "merscope", "rm", "zero-shot", "asw")]["n_seeds"] == 2  # the NaN seed is out


def test_the_run_report_shows_the_summary_views_numbers(store):
    """One mean ± sd: the report of `ssl-st run` is the summary view, pivoted."""
    frame = ResultStore(store).table().to_pandas()
    report = summarize(frame)
    view = {_key(r): r for r in _records(grid.results(store, view="summary"))}
    assert len(report) == len(SCORES)
    for r in report.to_dict("records"):
        model = None if r["model"] == "-" else r["model"]
        for metric in ("macro_f1", "accuracy", "chaos", "ari"):
            if f"{metric}_mean" in r and r[f"{metric}_mean"] == r[f"{metric}_mean"]:
                shown = view[(r["task"], r["dataset"], model, r["mode"], metric)]
                assert (r[f"{metric}_mean"], r[f"{metric}_sd"]) == (shown["mean"], shown["sd"])
                assert r["n_seeds"] == shown["n_seeds"] == 3
    pca = report[(report["dataset"] == "merscope") & (report["mode"] == "pca")].iloc[0]
    assert pca["model"] == "-" and format_cell(pca["macro_f1_mean"], pca["macro_f1_sd"]) == "0.500 ± 0.250"


def test_best_takes_the_highest_mean_or_the_lowest_where_lower_is_better_and_keeps_ties(store):
    frame = grid.results(store, view="best")
    assert list(frame.columns) == ["task", "dataset", "metric", "model", "mode", "n_seeds", "mean", "sd", "better"]
    best: dict[tuple, list[tuple]] = {}
    for r in _records(frame):
        best.setdefault((r["task"], r["dataset"], r["metric"]), []).append((r["model"], r["mode"], r["mean"], r["sd"]))
    assert best[("cell-type", "merscope", "macro_f1")] == [("rm", "zero-shot", 0.75, 0.25)]
    # a tie: both, pca (sd 0.25) and zero-shot (sd 0)
    assert sorted(best[("cell-type", "merscope", "accuracy")], key=str) == sorted(
        [(None, "pca", 0.5, 0.25), ("rm", "zero-shot", 0.5, 0.0)], key=str)
    (model, mode, mean, sd), = best[("cell-type", "xenium", "macro_f1")]
    assert (model, mode, sd) == (None, "pca", pytest.approx(math.sqrt(1 / 12), rel=1e-12))
    assert mean == pytest.approx(2 / 3, rel=1e-12)
    assert best[("cell-type", "xenium", "accuracy")] == [("rm", "zero-shot", 0.75, 0.25)]
    assert best[("domains", "merscope", "chaos")] == [("a", "cluster", 0.25, 0.0)]  # lower is better
    assert best[("domains", "merscope", "ari")] == [("b", "cluster", 0.75, 0.0)]
    assert dict(zip(frame["metric"], frame["better"]))["chaos"] == "lower"
    assert dict(zip(frame["metric"], frame["better"]))["ari"] == "higher"


def test_failures_list_each_failed_cell_with_the_first_line_of_its_error(store):
    frame = grid.results(store, view="failures")
    assert list(frame.columns) == ["task", "dataset", "model", "mode", "seed", "cell_id", "error"]
    (row,) = _records(frame)
    assert (row["task"], row["dataset"], row["model"], row["mode"], row["seed"]) == FAILED
    assert row["error"] == "ValueError: genes do not overlap"
    assert ResultStore(store).statuses()[row["cell_id"]] == "failed"


def test_sql_reads_the_views_too_and_an_empty_store_has_their_columns(store, tmp_path):
    frame = grid.results(store, sql="SELECT metric, n_seeds FROM summary WHERE dataset = 'xenium' AND mode = 'pca' "
                                    "ORDER BY metric")
    assert frame.to_dict("list") == {"metric": ["accuracy", "macro_f1"], "n_seeds": [3, 3]}
    (tmp_path / "empty").mkdir()
    for view in VIEWS:
        assert grid.results(tmp_path / "empty", view=view).empty


# -- the Python entry points --------------------------------------------------------------------------

def test_results_relation_is_a_duckdb_relation_of_the_same_answer(store):
    relation = grid.results_relation(store, view="summary")
    assert isinstance(relation, duckdb.DuckDBPyRelation)
    assert relation.filter("metric = 'chaos'").order("model").project("model, mean").fetchall() == [("a", 0.25), ("b", 0.75)]
    assert relation.df().equals(grid.results(store, view="summary"))


def test_entry_points_name_what_cannot_answer(store, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ResultsError, match="nowhere: no such results directory"):
        grid.results(missing, view="summary")
    with pytest.raises(ResultsError, match="unknown view 'sumary'.*summary, best, failures"):
        grid.results(store, view="sumary")  # type: ignore[arg-type]
    with pytest.raises(ResultsError, match=r"query over .*results failed: .*nope"):
        grid.results_relation(store, sql="SELECT nope FROM results")
    with pytest.raises(ResultsError, match="not allowed"):  # only queries run, here too
        grid.results(store, sql=f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'")
    with pytest.raises(ResultsError, match="not both"):
        grid.results(store, view="summary", sql="SELECT 1")
    with pytest.raises(ResultsError, match="view= .* or sql="):
        grid.results(store)
    assert issubclass(grid.ResultsError, ValueError) and not (tmp_path / "x.csv").exists()


def test_importing_grid_stays_light_until_results_is_used():
    code = ("import sys, grid; before = {m.split('.')[0] for m in sys.modules}; grid.results; "
            "after = {m.split('.')[0] for m in sys.modules}; print(sorted(before & {'duckdb', 'pandas', 'pyarrow', 'numpy'}), "
            "'duckdb' in after or 'grid.query' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "True"]


# -- ssl-st query --view / --format parquet -------------------------------------------------------------

def test_cli_views_as_csv_json_and_parquet(store, tmp_path):
    shown = run_cli_here("query", "--view", "summary", "--results", str(store), "--format", "csv", check=True)
    lines = shown.stdout.splitlines()
    assert lines[0] == "task,dataset,model,mode,metric,n_seeds,mean,sd"
    assert "cell-type,merscope,rm,zero-shot,macro_f1,3,0.75,0.25" in lines
    assert "cell-type,merscope,,pca,macro_f1,3,0.5,0.25" in lines  # no model: empty
    assert len(lines) == 1 + len(_expected_summary())

    best = json.loads(run_cli_here("query", "--view", "best", "-r", str(store), "-f", "json", check=True).stdout)
    assert {(r["model"], r["mode"]) for r in best if r["dataset"] == "merscope" and r["metric"] == "accuracy"} == {
        (None, "pca"), ("rm", "zero-shot")}

    out = tmp_path / "summary.parquet"
    written = run_cli_here("query", "--view", "summary", "--results", str(store), "--format", "parquet", "--out", str(out),
                      check=True)
    assert written.stdout == "" and f"wrote {len(_expected_summary())} rows to {out}" in written.stderr
    assert pq.read_table(out).to_pandas().equals(grid.results(store, view="summary"))
    assert [p.name for p in tmp_path.iterdir()] == ["summary.parquet"]  # no temporary file left behind


def test_cli_refuses_bad_combinations_naming_the_flags(store, tmp_path):
    cases = [
        (["query", "SELECT 1", "--view", "summary"], ("SQL", "--view", "not both")),
        (["query"], ("SQL", "--view")),
        (["query", "--view", "worst"], ("--view", "worst")),
        (["query", "--view", "summary", "--format", "parquet"], ("--format parquet", "--out")),
        (["query", "--view", "summary", "--format", "csv", "--out", str(tmp_path / "x.parquet")], ("--out", "--format csv")),
        (["query", "--view", "summary", "--format", "parquet", "--out", str(store / "cells" / "x.parquet")],
         ("--out", "inside the store")),
    ]
    for args, words in cases:
        shown = run_cli_here(*args, "--results", str(store))
        assert shown.returncode == 2, (args, shown.stdout, shown.stderr)
        assert all(w in shown.stderr for w in words), (args, shown.stderr)
        assert "Traceback" not in shown.stderr
    assert not list(tmp_path.iterdir()) and not (store / "cells" / "x.parquet").exists()


def test_status_shows_the_failures_views_first_line(store):
    shown = run_cli_here("status", "--results", str(store))
    assert shown.returncode == 1, shown.stderr
    assert "failed: 1" in shown.stdout and "ValueError: genes do not overlap" in shown.stdout
    assert "Traceback (most recent" not in shown.stdout
