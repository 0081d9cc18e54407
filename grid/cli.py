"""The ``ssl-st`` command line: plan, run, status and query an experiment grid.

Exit codes: 0 success; 1 some cells failed (they are recorded as rows); 2 bad input (config, SQL,
paths); 130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .config import ExperimentConfig, load_config
from .plan import Cell, Plan, expand
from .schema import ConfigError
from .store import DONE, FAILED, ResultStore

app = typer.Typer(
    help="Measure how single-cell SSL models transfer to spatial transcriptomics, as a resumable grid.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (CI logs, `| less`) gets a wide, stable layout instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

ConfigArg = Annotated[Path, typer.Argument(help="Experiment matrix (YAML).")]
ResultsOpt = Annotated[Path, typer.Option("--results", "-r", help="Results directory (Parquet store and artifacts).")]
DEFAULT_CONFIG = Path("experiments.yaml")
DEFAULT_RESULTS = Path("results")


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _load(config: Path) -> tuple[ExperimentConfig, Plan]:
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
    root = results
    built = sum(a.is_built(root) for a in grid_plan.artifacts.values())
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
    from .progress import make_progress

    cfg, grid_plan = _load(config)
    store = ResultStore(results)
    status = _status_of(grid_plan, store)
    wanted = {"pending"} | ({FAILED} if retry_failed else set())
    todo = [c for c in grid_plan.cells if force or status[c.cell_id] in wanted]
    skipped_failed = sum(s == FAILED for s in status.values()) if not (force or retry_failed) else 0
    if todo:
        from . import ray_exec

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
    from .report import format_cell, summarize

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
    if failed:
        from .query import query

        rows = query(results, "SELECT cell_id, task, dataset, model, mode, seed, error FROM results WHERE status = 'failed' ORDER BY task, dataset, model, mode, seed")
        table = Table(title="failed cells", title_justify="left")
        for column in ("cell_id", "cell", "error"):
            table.add_column(column, overflow="fold")
        for r in rows.itertuples(index=False):
            first = (r.error or "").strip().splitlines()[0] if r.error else ""
            table.add_row(r.cell_id, f"{r.task}/{r.dataset}/{r.model or '-'}/{r.mode}/seed={r.seed}", first)
        out.print(table)
        out.print("rerun them with: ssl-st run --retry-failed; full tracebacks: ssl-st query \"SELECT error FROM results WHERE status='failed'\"")
    if failed:
        raise typer.Exit(1)


@app.command("query")
def query_cmd(
    sql: Annotated[str, typer.Argument(help="SQL over the table `results` (DuckDB dialect).")],
    results: ResultsOpt = DEFAULT_RESULTS,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")] = "table",
) -> None:
    """SQL over the results, exposed as a table named `results`."""
    import duckdb

    from .query import query

    if fmt not in ("table", "csv", "json"):
        raise fail(f"--format must be table, csv or json; got '{fmt}'")
    try:
        frame = query(results, sql)
    except duckdb.Error as exc:
        raise fail(f"query failed: {exc}") from None
    if fmt == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif fmt == "json":
        sys.stdout.write(frame.to_json(orient="records", date_format="iso") + "\n")
    else:
        table = Table()
        for column in frame.columns:
            table.add_column(str(column))
        for row in frame.itertuples(index=False):
            table.add_row(*("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
        out.print(table)


# The model commands (embed, pretrain, models pull, data) and `cluster` register themselves on `app`.
from . import cli_cluster, cli_models  # noqa: E402,F401
