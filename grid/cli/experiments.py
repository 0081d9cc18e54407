"""``ssl-st plan | run | status | query``: an experiment grid from its config to its results.

``plan``, ``status`` and ``query`` read a config and the store without importing the science (torch,
Ray, sklearn, torch-geometric), so they answer at once; ``run`` imports Ray and what its cells need.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ..schema import ConfigError
from ..store import DONE, FAILED, ResultStore
from .common import app, err, fail, out

if TYPE_CHECKING:
    from ..config import ExperimentConfig
    from ..plan import Cell, Plan

ConfigArg = Annotated[Path, typer.Argument(help="Experiment matrix (YAML).")]
ResultsOpt = Annotated[Path, typer.Option("--results", "-r", help="Results directory (Parquet store and artifacts).")]
DEFAULT_CONFIG = Path("experiments.yaml")
DEFAULT_RESULTS = Path("results")


def _load(config: Path) -> tuple[ExperimentConfig, Plan]:
    from ..config import load_config
    from ..plan import expand

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    return cfg, expand(cfg)


def _status_of(plan: Plan, store: ResultStore) -> dict[str, str]:
    recorded = store.statuses()
    return {c.cell_id: recorded.get(c.cell_id, "pending") for c in plan.cells}


@app.command()
def plan(
    config: ConfigArg = DEFAULT_CONFIG,
    results: ResultsOpt = DEFAULT_RESULTS,
    list_cells: Annotated[bool, typer.Option("--list", help="List every cell with its id.")] = False,
) -> None:
    """Show the expanded matrix and what is already done."""
    cfg, grid_plan = _load(config)
    status = _status_of(grid_plan, ResultStore(results))
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
    built = sum(a.is_built(results) for a in grid_plan.artifacts.values())
    out.print(f"artifacts: {built}/{len(grid_plan.artifacts)} built (datasets and models, shared by cells)")


@app.command()
def run(
    config: ConfigArg = DEFAULT_CONFIG,
    results: ResultsOpt = DEFAULT_RESULTS,
    address: Annotated[str | None, typer.Option(help="Existing Ray cluster (e.g. ray://head:10001 or host:6379); default: embedded local Ray.")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Also rerun cells recorded as failed.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rerun every cell and rebuild the datasets and models it uses.")] = False,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the embedded local Ray (default: all).")] = None,
) -> None:
    """Run every cell not yet done (resume is the default), then print the results table."""
    from ..progress import make_progress

    cfg, grid_plan = _load(config)
    store = ResultStore(results)
    status = _status_of(grid_plan, store)
    wanted = {"pending"} | ({FAILED} if retry_failed else set())
    todo = [c for c in grid_plan.cells if force or status[c.cell_id] in wanted]
    skipped_failed = sum(s == FAILED for s in status.values()) if not (force or retry_failed) else 0
    if todo:
        from .. import ray_exec

        try:
            ray_exec.connect(address, num_cpus=num_cpus)
        except ConnectionError as exc:
            raise fail(str(exc)) from None
        err.print(f"{cfg.name}: running {len(todo)} of {len(grid_plan.cells)} cells -> {results}")
        try:
            with make_progress(err) as progress:
                summary = ray_exec.execute(grid_plan, todo, results, store, progress, rebuild=force)
        except KeyboardInterrupt:
            raise fail("interrupted; finished cells are saved, run the same command again to resume", 130) from None
        err.print(f"finished in {summary.wall_s:.1f} s: {summary.done} done, {summary.failed} failed")
    else:
        err.print(f"{cfg.name}: all {len(grid_plan.cells)} cells are recorded; nothing to run (use --force to rerun)")
    _print_summary(grid_plan, store)
    failed_now = sum(s == FAILED for s in _status_of(grid_plan, store).values())
    if skipped_failed:
        err.print(f"{skipped_failed} failed cells were not retried (use --retry-failed); see `ssl-st status`")
    if failed_now:
        raise typer.Exit(1)


def _print_summary(grid_plan: Plan, store: ResultStore) -> None:
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
    store = ResultStore(results)
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
    out.print(f"done: {done}  failed: {failed}  pending: {pending}" + (f"  (not in config: {stale})" if stale else ""))
    if not failed:
        return
    from ..query import fetch

    _, rows = fetch(results, "SELECT cell_id, task, dataset, model, mode, seed, error FROM results "
                             "WHERE status = 'failed' ORDER BY task, dataset, model, mode, seed")
    table = Table(title="failed cells", title_justify="left")
    for column in ("cell_id", "cell", "error"):
        table.add_column(column, overflow="fold")
    for cell_id, task, dataset, model, mode, seed, error in rows:
        first = error.strip().splitlines()[0] if error and error.strip() else ""
        table.add_row(cell_id, f"{task}/{dataset}/{model or '-'}/{mode}/seed={seed}", first)
    out.print(table)
    out.print("rerun them with: ssl-st run --retry-failed; full tracebacks: ssl-st query \"SELECT error FROM results WHERE status='failed'\"")
    raise typer.Exit(1)


def _text(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command("query")
def query_cmd(
    sql: Annotated[str, typer.Argument(help="SQL over the table `results` (DuckDB dialect).")],
    results: ResultsOpt = DEFAULT_RESULTS,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")] = "table",
) -> None:
    """SQL over the results, exposed as a table named `results`."""
    import duckdb

    from ..query import fetch

    if fmt not in ("table", "csv", "json"):
        raise fail(f"--format must be table, csv or json; got '{fmt}'")
    try:
        columns, rows = fetch(results, sql)
    except duckdb.Error as exc:
        raise fail(f"query failed: {exc}") from None
    if fmt == "csv":
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
