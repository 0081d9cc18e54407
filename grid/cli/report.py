"""``ssl-st report``: the result store as one self-contained HTML page plus its figures (PNG, SVG).

Reads the store (and, given one, the config, to count pending cells) and draws with matplotlib, and
with scanpy where cells kept embeddings or domain maps (UMAPs are cached, so a redraw takes seconds);
imports nothing of the models, so it answers however far the grid has run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..details import EMBEDDING_SAMPLE, UMAP_CELLS
from .common import app, err, fail, out
from .experiments import DEFAULT_RESULTS, ResultsOpt, _read_store, _root

DEFAULT_OUT = Path("report")
SCORE_METRICS = ("macro_f1", "weighted_f1", "accuracy")  # ssl_st.metrics.CLASSIFICATION_METRICS (not imported: light)



def check_out(out_dir: Path, results: object, option: str = "--out") -> None:
    """Refuse an ``--out`` whose replacement would destroy something: the report folder is swapped in
    whole, so it may only replace a folder that is empty or an earlier report (has index.html), and
    never the results themselves or a folder holding them."""
    from ..page import INDEX

    if out_dir.exists() and not out_dir.is_dir():
        raise fail(f"{option} {out_dir}: a file is there; pass a folder for the report (it is created if missing)")
    if isinstance(results, Path):
        target, store = out_dir.resolve(), results.resolve()
        if target == store or target in store.parents:
            raise fail(f"{option} {out_dir}: that folder holds the results ({results}), which the report would replace; "
                       f"pass another folder, e.g. {option} report")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / INDEX).is_file():
        raise fail(f"{option} {out_dir}: a folder with other files in it (no {INDEX}); the report replaces its folder "
                   "whole, so pass a new folder or an earlier report's")


def _planned(config: Path):  # -> tuple[str, tuple[Cell, ...]]
    """The config's name and planned cells, or exit 2 naming the file and what is wrong with it."""
    from ..config import load_config
    from ..plan import expand
    from ..schema import ConfigError

    try:
        cfg = load_config(config)
        return cfg.name, expand(cfg).cells
    except (ConfigError, ValueError) as exc:
        raise fail(f"{exc}\n(the report reads the config only to count pending cells; leave CONFIG out to report "
                   "the store alone)") from None


@app.command()
def report(
    config: Annotated[Path | None, typer.Argument(
        help="Experiment config: pending cells are counted against it (default: none; done/failed only).")] = None,
    results: ResultsOpt = DEFAULT_RESULTS,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Report folder: index.html and figures/ (replaced whole).")] = DEFAULT_OUT,
    metrics: Annotated[list[str] | None, typer.Option(
        "--metric", help=f"Cell-type score to plot; repeat for more ({', '.join(SCORE_METRICS)}; default macro_f1).")] = None,
    umap_cells: Annotated[int, typer.Option(
        "--umap-cells", help=f"Cells per UMAP, a seeded sample of what each zero-shot cell kept (at most {EMBEDDING_SAMPLE:,}).",
    )] = UMAP_CELLS,
) -> None:
    """One self-contained HTML page of the results (status, failures, figures, summary), offline-ready."""
    metrics = check_options(metrics, umap_cells)
    root = _root(results)
    store = _read_store(root, must_exist=True)
    check_out(out_dir, root)
    name, planned = _planned(config) if config is not None else (None, None)
    index = write_report(store, root, out_dir, results_text=results, config_name=name, planned=planned,
                         metrics=metrics, umap_cells=umap_cells)
    out.print(str(index), soft_wrap=True, highlight=False)


def check_options(metrics: list[str] | None, umap_cells: int) -> list[str]:
    """The metrics to plot (default macro-F1), or exit 2 naming the bad option."""
    metrics = metrics or ["macro_f1"]
    if unknown := [m for m in metrics if m not in SCORE_METRICS]:
        raise fail(f"--metric {unknown[0]}: not a cell-type score; choose from {', '.join(SCORE_METRICS)}")
    if not 3 <= umap_cells <= EMBEDDING_SAMPLE:
        raise fail(f"--umap-cells {umap_cells}: give 3 to {EMBEDDING_SAMPLE:,} (cells keep a sample of at most that many)")
    return metrics


def write_report(store, root, out_dir: Path, *, results_text: str, config_name: str | None = None, planned=None,
                 metrics: list[str] | None = None, umap_cells: int = UMAP_CELLS) -> Path:
    """Draw the report of ``store`` (at ``root``) into ``out_dir`` (checked by :func:`check_out`);
    says how long it took on stderr. The page's path. Shared by ``report`` and ``run --report``."""
    import time

    from ..detail_figures import umap_cache
    from ..page import gather, write
    from ..remote import display

    start = time.monotonic()
    frame = store.table().to_pandas()
    page = gather(frame, results=str(root) if isinstance(root, Path) else display(results_text),
                  config_name=config_name, planned=planned, metrics=metrics or ["macro_f1"],
                  results_dir=root if isinstance(root, Path) else None, read=store.details, umap_cells=umap_cells,
                  umap_cache=umap_cache(), note=lambda message: err.print(message, highlight=False))
    index = write(page, out_dir)
    err.print(f"report: {len(page.figures)} figure(s), {len(page.failures)} failed cell(s), "
              f"{time.monotonic() - start:.1f} s", highlight=False)
    return index
