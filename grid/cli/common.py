"""What every ``ssl-st`` command shares: the Typer app, the consoles and the error exit.

Command modules import from here, and :mod:`grid.cli` imports the command modules, so there is no
import cycle. Nothing here imports the science; each command imports what it runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

app = typer.Typer(
    help="Measure how single-cell SSL models transfer to spatial transcriptomics, as a resumable grid.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (CI logs, `| less`) gets a wide, stable layout instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


# Options several commands take, declared once.
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the initialisation and of every random choice.")]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="Cache directory (default: $SSL_ST_CACHE or ~/.cache/ssl-st).")]
EndpointOpt = Annotated[str | None, typer.Option(help="Hub endpoint (default: $HF_ENDPOINT or https://huggingface.co).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Download again even if a verified copy is cached.")]
ValuesOpt = Annotated[str | None, typer.Option(
    "--values", help="What the expression is: counts (default; else what the file records), normalized or log-normalized.")]
TargetSumOpt = Annotated[float | None, typer.Option(
    "--target-sum", help="With --values normalized|log-normalized: the sum each cell was scaled to, if known.")]
# How `data import` and `data shard` read what an instrument or portal produced (ssl_st.io.read).
FormatOpt = Annotated[str | None, typer.Option("--format", help="xenium, merscope or h5ad (default: guessed).")]
LabelsOpt = Annotated[Path | None, typer.Option(help="xenium/merscope: CSV of cell id -> label (into obs['cell_type']).")]
LabelColumnOpt = Annotated[str | None, typer.Option(help="xenium/merscope: the labels CSV's label column (default: Cluster, cell_type, ...).")]
LabelKeyOpt = Annotated[str | None, typer.Option(help="h5ad: obs column of labels, checked (default: none checked).")]
SpatialKeyOpt = Annotated[str | None, typer.Option(help="h5ad: obsm key of coordinates.")]
CountsLayerOpt = Annotated[str | None, typer.Option(help="h5ad: layer with the expression (or raw, X; default: the raw counts).")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` and return the exit to raise (2: bad input)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def read_h5ad(path: Path, what: str, *, values: str | None = None, target_sum: float | None = None,
              expression: bool = True) -> Any:
    """An AnnData file given on the command line, or a clear exit 2.

    With ``expression`` its expression values are declared and checked as every reader does it
    (:func:`ssl_st.io.declare_values`): ``values``/``target_sum`` from ``--values``/``--target-sum``,
    else what the file records, else counts; undeclared non-integers exit 2 naming ``--values``.
    """
    import anndata as ad

    if not path.is_file():
        raise fail(f"{path}: no such file ({what})")
    try:
        adata = ad.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many types for a truncated or foreign file
        raise fail(f"{path}: not a readable h5ad file ({type(exc).__name__}: {exc}); {what} must be AnnData .h5ad") from None
    if expression:
        from ssl_st.io import DataError, declare_values

        try:
            declare_values(adata, values, target_sum, file=path)
        except DataError as exc:
            raise fail(str(exc.spelled("cli"))) from None
    return adata


def progress_columns(*extra: ProgressColumn) -> tuple[ProgressColumn, ...]:
    """The columns of every bar ssl-st draws: what, bar, N/M, elapsed, time remaining, then ``extra``."""
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), *extra)


def _fields(fields: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                     for name, value in fields.items())


@contextmanager
def epoch_progress(description: str, total: int | None, *, console: Console | None = None) -> Iterator[Callable[..., None]]:
    """Show a training loop's epochs: yields ``advance(epoch, **fields)`` (``epoch`` counts from 1;
    ``fields`` such as ``loss=0.12`` are shown beside the bar).

    On a terminal: a bar with epoch N/M, elapsed time and time remaining. Elsewhere (CI logs, pipes):
    a line at every tenth of ``total``, ``stagate: epoch 40/400 (10%), loss 0.52, 0:00:05 elapsed, eta
    0:00:45``. ``total`` None (a loop that does not say) shows the count alone.
    """
    console = console or err
    if console.is_terminal:
        with Progress(*progress_columns(TextColumn("{task.fields[info]}")), console=console) as bar:
            task = bar.add_task(f"{description}, epochs", total=total, info="")
            yield lambda epoch, **fields: bar.update(task, completed=epoch, info=_fields(fields))
        return
    start = time.monotonic()
    step = max(1, (total or 10) // 10)

    def advance(epoch: int, **fields: Any) -> None:
        if epoch % step and epoch != total:
            return
        elapsed = time.monotonic() - start
        of = f"/{total} ({epoch / total:.0%})" if total else ""
        eta = f", eta {_clock(elapsed / epoch * (total - epoch))}" if total else ""
        info = f", {_fields(fields)}" if fields else ""
        console.print(f"{description}: epoch {epoch}{of}{info}, {_clock(elapsed)} elapsed{eta}",
                      highlight=False, markup=False, soft_wrap=True)

    yield advance


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def pull_files(files: dict, names: list[str] | None, cache_dir: Path | None, endpoint: str | None, force: bool) -> None:
    """Download ``names`` (default: all) of ``files`` with checksums, printing where each one is."""
    from ssl_st import hub

    unknown = [n for n in names or [] if n not in files]
    if unknown:
        raise fail(f"unknown name(s) {', '.join(unknown)}; choose from {', '.join(files)}")

    def progress(name: str, done: int, total: int | None) -> None:
        if total and done == total:
            err.print(f"  {name}: {done / 1e6:.1f} MB", highlight=False)

    try:
        paths = hub.pull([files[n] for n in names or files], cache_dir=cache_dir, endpoint=endpoint, force=force, progress=progress)
    except hub.HubError as exc:
        raise fail(str(exc)) from None
    for name, path in paths.items():
        out.print(f"{name}: {path}", soft_wrap=True, highlight=False)
