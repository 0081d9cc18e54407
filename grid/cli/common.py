"""What every ``ssl-st`` command shares: the Typer app, the consoles and the error exit.

Command modules import from here, and :mod:`grid.cli` imports the command modules, so there is no
import cycle. Nothing here imports the science; each command imports what it runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

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


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` and return the exit to raise (2: bad input)."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def read_h5ad(path: Path, what: str) -> Any:
    """An AnnData file given on the command line, or a clear exit 2."""
    import anndata as ad

    if not path.is_file():
        raise fail(f"{path}: no such file ({what})")
    try:
        return ad.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many types for a truncated or foreign file
        raise fail(f"{path}: not a readable h5ad file ({type(exc).__name__}: {exc}); {what} must be AnnData .h5ad") from None


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
