"""``ssl-st plan | run | status | query``: an experiment grid from its config to its results.

``plan``, ``status`` and ``query`` read a config and the store without importing the science (torch,
Ray, sklearn, torch-geometric), so they answer at once; ``run`` imports Ray and what its cells need.
"""

from __future__ import annotations

import os

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ..schema import ConfigError
from ..store import DONE, FAILED, ObjectResultStore, ResultStore, open_store
from .common import app, err, fail, out

if TYPE_CHECKING:
    from ..config import ExperimentConfig
    from ..plan import Cell, Plan
    from ..remote import Location

ConfigArg = Annotated[Path, typer.Argument(help="Experiment matrix (YAML).")]
# A string, not a Path: Path would fold the '//' of an object-store URI.
ResultsOpt = Annotated[str, typer.Option(
    "--results", "-r", help="Results directory (Parquet store and artifacts), or an object-store URI such as "
                            "s3://bucket/prefix for a cluster whose nodes share no disk.")]
DEFAULT_CONFIG = Path("experiments.yaml")
DEFAULT_RESULTS = "results"


def _root(results: str) -> Path | Location:
    """``--results`` as a local directory or a location on object storage (:mod:`grid.remote`), or
    exit 2 naming the option and the fix. Messages show the location without its credentials."""
    from ..remote import LocationError, parse

    try:
        return parse(results)
    except LocationError as exc:
        raise fail(str(exc)) from None


def _load(config: Path) -> tuple[ExperimentConfig, Plan]:
    """The config and its plan, or exit 2 with every problem, including those that only the plan
    shows (a task without cells, a label column an h5ad file lacks)."""
    from ..config import load_config
    from ..plan import expand, plan_problems

    try:
        cfg = load_config(config)
        grid_plan = expand(cfg)
        problems = plan_problems(grid_plan, config)
        if problems:
            raise ConfigError(str(config), problems)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    return cfg, grid_plan


def _hold_results(results: Path | Location) -> None:
    """Make this process the one writer of ``results`` until the command ends, or exit 2 naming the
    run that is (``grid.lock``); the kernel releases it if the process dies. Checked before Ray
    starts: a results path that cannot be written would otherwise fail after cells were computed."""
    import os

    if not isinstance(results, Path):
        from ..remote import LocationError, check_reachable

        try:
            check_reachable(results)
        except LocationError as exc:
            raise fail(str(exc)) from None
        _take(results)
        return
    existing = next((p for p in (results, *results.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise fail(f"{existing}: not a directory; --results must name a directory (it is created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise fail(f"{existing}: not writable by this user; pass a --results directory you can write to")
    _take(results)


def _take(results: Path | Location) -> None:
    from ..lock import LockHeld, hold
    from ..remote import display, is_uri

    # the record names this command; a URI's credentials stay out of it
    command = " ".join(["ssl-st", *(display(a) if is_uri(a) else a for a in sys.argv[1:])])
    try:
        lock = hold(results, command=command)
    except LockHeld as exc:
        raise fail(str(exc)) from None
    if lock.note:
        err.print(f"note: {lock.note}", highlight=False, soft_wrap=True)


def _status_of(plan: Plan, store: ResultStore | ObjectResultStore) -> dict[str, str]:
    recorded = store.statuses()
    return {c.cell_id: recorded.get(c.cell_id, "pending") for c in plan.cells}


def _read_store(results: Path | Location, *, must_exist: bool) -> ResultStore | ObjectResultStore:
    """The store a read-only command reads, or a clear exit 2: reading a file, or a directory that is not
    there, as an empty store hides a mistyped --results behind a plausible answer."""
    if not isinstance(results, Path):
        try:
            found = results.exists()
        except OSError as exc:
            raise fail(f"--results {results}: cannot reach the store ({str(exc).splitlines()[0]}); check the "
                       "credentials and the endpoint (AWS_ENDPOINT_URL)") from None
        if must_exist and not found:
            raise fail(f"{results}: no results stored there; run `ssl-st run --results {results}` first")
        return open_store(results)
    for path in (results, results / "cells"):
        if path.exists() and not path.is_dir():
            raise fail(f"{path}: not a directory; --results must name the results directory that `ssl-st run` writes")
    if must_exist and not results.exists():
        raise fail(f"{results}: no results here; run `ssl-st run` first, or pass --results DIR")
    return ResultStore(results)


@app.command()
def plan(
    config: ConfigArg = DEFAULT_CONFIG,
    results: ResultsOpt = DEFAULT_RESULTS,
    list_cells: Annotated[bool, typer.Option("--list", help="List every cell with its id.")] = False,
) -> None:
    """Show the expanded matrix and what is already done."""
    cfg, grid_plan = _load(config)
    results = _root(results)
    status = _status_of(grid_plan, _read_store(results, must_exist=False))  # not run yet: all pending
    table = Table(title=f"{cfg.name}: {len(grid_plan.cells)} cells", title_justify="left")
    if list_cells:
        for column in ("cell_id", "task", "dataset", "model", "mode", "seed", "status"):
            table.add_column(column)
        for c in grid_plan.cells:
            table.add_row(c.cell_id, c.task, c.dataset, c.model or "-", c.mode, str(c.seed), status[c.cell_id])
    else:
        for column in ("task", "dataset", "model", "mode", "seeds", "done", "failed", "pending"):
            table.add_column(column)
        groups: dict[tuple, list[Cell]] = {}
        for c in grid_plan.cells:
            groups.setdefault((c.task, c.dataset, c.model or "-", c.mode), []).append(c)
        for key, cells in groups.items():
            counts = [sum(status[c.cell_id] == s for c in cells) for s in (DONE, FAILED, "pending")]
            table.add_row(*key, str(len(cells)), *map(str, counts))
    out.print(table)
    from ..lock import describe, holder
    from ..plan import artifact_summary, resource_summary

    if isinstance(results, Path):
        summary = artifact_summary(list(grid_plan.artifacts.values()), results)
    else:
        from ..remote import artifact_summary as remote_summary

        summary = remote_summary(list(grid_plan.artifacts.values()), results)
    out.print(summary, soft_wrap=True, highlight=False)
    out.print(resource_summary(grid_plan), soft_wrap=True, highlight=False)
    if (running := holder(results)) is not None:
        out.print(f"a run is writing these results now ({describe(running)})", soft_wrap=True, highlight=False)


@app.command()
def run(
    config: ConfigArg = DEFAULT_CONFIG,
    results: ResultsOpt = DEFAULT_RESULTS,
    address: Annotated[str | None, typer.Option(help="Existing Ray cluster (e.g. ray://head:10001 or host:6379); default: $RAY_ADDRESS if set (ray job submit sets it), else a new embedded local Ray.")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Also rerun cells recorded as failed.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rerun every cell and rebuild the datasets and models it uses.")] = False,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the embedded local Ray (default: all).")] = None,
    report_dir: Annotated[Path | None, typer.Option(
        "--report", help="Then write the report here (as `ssl-st report`), failed cells or not.")] = None,
) -> None:
    """Run every cell not yet done (resume is the default), then print the results table."""
    from ..progress import make_progress

    cfg, grid_plan = _load(config)
    results_text, results = results, _root(results)
    if report_dir is not None:  # a bad --report stops the run before it starts, not after
        import threading

        from ..detail_figures import warm_up
        from .report import check_out

        check_out(report_dir, results, option="--report")
        threading.Thread(target=warm_up, name="report-warm-up", daemon=True).start()
    _hold_results(results)  # before reading the store and starting Ray: one writer per results directory
    store = open_store(results)
    if swept := store.sweep():  # with the lock held, every temporary file is a killed writer's leftover
        err.print(f"removed {len(swept)} temporary file(s) left by an interrupted run", highlight=False)
    status = _status_of(grid_plan, store)
    wanted = {"pending"} | ({FAILED} if retry_failed else set())
    todo = [c for c in grid_plan.cells if force or status[c.cell_id] in wanted]
    skipped_failed = sum(s == FAILED for s in status.values()) if not (force or retry_failed) else 0
    if todo:
        from .. import ray_exec
        from ..plan import download_problems

        # Files this machine has not pulled fail their builds; on an embedded Ray every build runs
        # here, so say so now. A cluster's nodes may have their own caches: there it is a warning.
        build_plan, build_root = _to_build_here(grid_plan, results)
        if missing := download_problems(build_plan, config, build_root):
            listing = "\n".join(str(p) for p in missing)
            if address is None and not os.environ.get("RAY_ADDRESS"):
                raise fail(f"{listing}\nnothing was run")
            err.print(f"{listing}\n(warning: each node that builds these needs the file)", highlight=False)
        try:
            joined = ray_exec.connect(address, num_cpus=num_cpus, retries=cfg.retries)
        except ConnectionError as exc:
            raise fail(str(exc)) from None
        err.print(f"{cfg.name}: running {len(todo)} of {len(grid_plan.cells)} cells -> {results}")
        try:
            with make_progress(err) as progress:
                # a cluster joined with --address may have an autoscaler that adds bigger nodes on demand
                summary = ray_exec.execute(grid_plan, todo, results, store, progress, rebuild=force,
                                           cluster_may_grow=joined)
        except ray_exec.Unschedulable as exc:
            raise fail(f"{exc}\nnothing was submitted") from None
        except KeyboardInterrupt:
            raise fail("interrupted; finished cells are saved, run the same command again to resume", 130) from None
        err.print(finished_line(summary.wall_s, done=summary.done, failed=summary.failed), highlight=False)
    else:
        err.print(f"{cfg.name}: all {len(grid_plan.cells)} cells are recorded; nothing to run (use --force to rerun)")
    _print_summary(grid_plan, store)
    failed_now = sum(s == FAILED for s in _status_of(grid_plan, store).values())
    if skipped_failed:
        err.print(f"{skipped_failed} failed cells were not retried (use --retry-failed); see `ssl-st status`")
    if report_dir is not None:
        from .report import write_report

        index = write_report(store, results, report_dir, results_text=results_text, config_name=cfg.name,
                             planned=grid_plan.cells)
        out.print(f"report: {index} (open it in a browser)", soft_wrap=True, highlight=False)
    if failed_now:
        raise typer.Exit(1)


def _to_build_here(grid_plan: Plan, results: Path | Location) -> tuple[Plan, Path]:
    """The plan and root against which ``download_problems`` finds the pulled files that builds on
    this machine would read: for results on object storage, the artifacts the store lacks, checked
    against this machine's cache (a build there reuses what the cache holds)."""
    if isinstance(results, Path):
        return grid_plan, results
    from dataclasses import replace

    from ..remote import cache_root, remote_state

    unbuilt = {k: a for k, a in grid_plan.artifacts.items() if remote_state(a, results)[0] != "built"}
    return replace(grid_plan, artifacts=unbuilt), cache_root(results.cache)


def finished_line(wall_s: float, *, done: int, failed: int) -> str:
    """The line a run ends with; failed cells come with where to read why."""
    line = f"finished in {wall_s:.1f} s: {done} done, {failed} failed"
    return line + ("; `ssl-st status` shows why each failed" if failed else "")


def _print_summary(grid_plan: Plan, store: ResultStore | ObjectResultStore) -> None:
    from ..report import format_cell, summarize

    frame = store.table().to_pandas()
    order = {c.cell_id: i for i, c in enumerate(grid_plan.cells)}  # rows follow the config's order
    frame = frame[frame["cell_id"].isin(order.keys())].sort_values("cell_id", key=lambda ids: ids.map(order))
    summary = summarize(frame)
    if summary.empty:
        out.print("no finished cells yet")
        return
    for task, rows in summary.groupby("task", sort=False):
        # each task shows its own metrics: classification scores or domain scores
        metrics = [c[: -len("_mean")] for c in rows.columns if c.endswith("_mean") and rows[c].notna().any()]
        where = "test split" if "macro_f1" in metrics else "whole section; chaos and pas: lower is smoother"
        table = Table(title=f"{task}: mean ± sd over seeds ({where})", title_justify="left")
        for column in ("dataset", "model", "mode", "seeds", *metrics, "gene coverage"):
            table.add_column(column, justify="left" if column in ("dataset", "model", "mode") else "right")
        for r in rows.to_dict("records"):
            scores = [format_cell(r[f"{m}_mean"], r[f"{m}_sd"]) for m in metrics]
            coverage = f"{r['coverage']:.1%}" if r.get("coverage") == r.get("coverage") and "coverage" in r else "-"
            table.add_row(r["dataset"], r["model"], r["mode"], str(r["n_seeds"]), *scores, coverage)
        out.print(table)


@app.command()
def status(
    config: Annotated[Path | None, typer.Argument(help="Experiment matrix; pending cells are counted against it.")] = None,
    results: ResultsOpt = DEFAULT_RESULTS,
) -> None:
    """Done / failed / pending counts and the errors of failed cells."""
    results = _root(results)
    store = _read_store(results, must_exist=True)
    recorded = store.statuses()
    config = config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if config is not None:
        _, grid_plan = _load(config)
        ids = {c.cell_id for c in grid_plan.cells}
        pending = len(ids - recorded.keys())
        stale = len(recorded.keys() - ids)
    else:
        pending, stale = 0, 0
    done = sum(s == DONE for s in recorded.values())
    failed = sum(s == FAILED for s in recorded.values())
    quarantined = len(store.quarantined())
    out.print(f"done: {done}  failed: {failed}  pending: {pending}" + (f"  (not in config: {stale})" if stale else "")
              + (f"  quarantined: {quarantined}" if quarantined else ""))
    if quarantined:
        out.print(f"quarantined cell files (unreadable, kept for inspection) are in {store.quarantine_dir}; "
                  "`ssl-st run` computes those cells again", soft_wrap=True, highlight=False)
    if not failed:
        return
    from ..query import fetch

    _, rows = fetch(results, "SELECT cell_id, task, dataset, model, mode, seed, error FROM failures")
    table = Table(title="failed cells", title_justify="left")
    for column in ("cell_id", "cell", "error"):
        table.add_column(column, overflow="fold")
    for cell_id, task, dataset, model, mode, seed, first_line in rows:
        table.add_row(cell_id, f"{task}/{dataset}/{model or '-'}/{mode}/seed={seed}", first_line)
    out.print(table)
    out.print("rerun them with: ssl-st run --retry-failed; full tracebacks: ssl-st query \"SELECT error FROM results WHERE status='failed'\"")
    raise typer.Exit(1)


def _text(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


FORMATS = ("table", "csv", "json", "parquet")


@app.command("query")
def query_cmd(
    sql: Annotated[str | None, typer.Argument(
        help="SQL over the table `results` and the views summary, best and failures (DuckDB dialect); "
             "not with --view.", show_default=False)] = None,
    results: ResultsOpt = DEFAULT_RESULTS,
    view: Annotated[str | None, typer.Option(
        "--view", help="A ready-made view instead of SQL: summary (mean ± sd over seeds), best (the best "
                       "model/mode per task, dataset and metric) or failures (failed cells, first line of the error).",
        show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv, json or parquet (parquet needs --out).")] = "table",
    out_file: Annotated[Path | None, typer.Option(
        "--out", "-o", help="With --format parquet: the file to write (whole or not at all).", show_default=False)] = None,
) -> None:
    """SQL over the results, exposed as a table named `results`, or one of its views (--view)."""
    import duckdb

    from ..query import VIEWS, arrow, fetch, view_sql

    if fmt not in FORMATS:
        raise fail(f"--format must be table, csv, json or parquet; got '{fmt}'")
    if view is not None and sql is not None:
        raise fail(f"pass either SQL or --view, not both; SQL can read the view itself, e.g. "
                   f"ssl-st query \"SELECT * FROM {view} WHERE ...\"")
    if view is None and sql is None:
        raise fail("pass SQL or --view (summary, best or failures), e.g. ssl-st query --view summary")
    if view is not None and view not in VIEWS:
        raise fail(f"--view must be summary, best or failures; got '{view}'")
    if fmt == "parquet" and out_file is None:
        raise fail("--format parquet needs --out FILE: Parquet is written to a file, not to the terminal")
    if out_file is not None and fmt != "parquet":
        raise fail(f"--out is for --format parquet; --format {fmt} goes to standard output (redirect it with >)")
    if sql is not None and not sql.strip():
        raise fail("SQL: empty; pass a query over the table `results`, e.g. ssl-st query \"SELECT * FROM results LIMIT 5\"")
    results = _root(results)
    store = _read_store(results, must_exist=True)
    if out_file is not None:
        check_out(out_file, store)
    statement = view_sql(view) if view is not None else sql
    try:
        if fmt == "parquet":
            answer = arrow(results, statement)
            columns = answer.column_names
        else:
            columns, rows = fetch(results, statement)
    except duckdb.Error as exc:
        raise fail(f"query failed: {exc}") from None
    if not columns:
        raise fail("SQL: returned no result (no statement, or one that returns nothing); pass a SELECT over `results`")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        from ..store import write_atomically

        try:
            write_atomically(out_file, lambda f: pq.write_table(answer, f))
        except OSError as exc:
            raise fail(f"{out_file}: could not write it ({exc.strerror or exc})") from None
        err.print(f"wrote {answer.num_rows} rows to {out_file}", highlight=False, soft_wrap=True)
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    elif fmt == "json":
        import json

        records = [dict(zip(columns, row)) for row in rows]
        sys.stdout.write(json.dumps(records, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v)) + "\n")
    else:
        table = Table()
        for column in columns:
            table.add_column(str(column))
        for row in rows:
            table.add_row(*map(_text, row))
        out.print(table)


def check_out(path: Path, store: ResultStore | ObjectResultStore) -> None:
    """``--out`` names a file that can be written and is not read as part of the results, or exit 2."""
    if path.is_dir():
        raise fail(f"{path}: a directory; --out must name the Parquet file to write")
    if not path.parent.is_dir():
        raise fail(f"{path.parent}: no such directory (--out {path}); create it first")
    if isinstance(store, ResultStore) and path.parent.resolve() in (store.cells_dir.resolve(), store.quarantine_dir.resolve()):
        raise fail(f"--out {path}: inside the store, where every .parquet file is read as a cell; write it elsewhere")
