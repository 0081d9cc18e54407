"""The report's figures, drawn from rows of the result store (``ResultStore.table().to_pandas()``).

Two halves, kept apart so that a figure never computes a score: *selection* turns store rows into
small tidy tables (one value per seed, the ``summary`` view's mean ± sd, the study's published figure
where the cell is one of the study's), and *drawing* puts those tables on matplotlib axes. The mean
± sd comes from the same ``summary`` view as ``ssl-st query --view summary`` and the run's table, so
the figure and the numbers beside it cannot disagree.

Every figure is returned as PNG bytes and SVG text (:class:`Figure`), for the page and for files.
matplotlib runs on the Agg backend: no display, no GUI toolkit, the same pixels on every machine.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import published
from .query import LOWER_IS_BETTER
from .store import DONE

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

# modes in the order a reader compares them: frozen encoders, then trained, then the baselines
MODE_ORDER = ("zero-shot", "fine-tune", "supervised", "pca")
MODE_COLOURS = {"zero-shot": "#1f77b4", "fine-tune": "#ff7f0e", "supervised": "#2ca02c", "pca": "#7f7f7f"}
OTHER_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#d62728")
STUDY_COLOUR = "#d62728"
CELL_TYPE_METRICS = ("macro_f1", "weighted_f1", "accuracy")
DOMAIN_METRICS = ("ari", "nmi", "chaos", "pas")
NO_MODEL = "-"


@dataclass(frozen=True)
class Figure:
    """One drawn figure: ``name`` is its file stem (``figures/<name>.png``), ``caption`` says how to read it."""

    section: str  # the page section it belongs to: cell-type, domains, tuning, imputation, training
    name: str
    title: str
    caption: str
    png: bytes
    svg: str | None  # None for pictures of thousands of points or cells, which are raster images anyway


@dataclass(frozen=True)
class Group:
    """One column of a dot plot: a model × mode (or method × input), its per-seed values, the summary
    view's mean and sd (sd None with one seed) and the study's published figure, if any."""

    label: str
    colour: str
    seeds: tuple[tuple[int, float], ...]
    mean: float
    sd: float | None
    study: float | None = None


# -- selection: store rows -> tidy tables ---------------------------------------------------------------

def scores(frame: pd.DataFrame) -> pd.DataFrame:
    """The scores of done cells (``kind = 'metric'``, NaN left out, as the summary view leaves them)."""
    rows = frame[(frame["status"] == DONE) & (frame["kind"] == "metric")]
    return rows[rows["value"].notna()]


def info(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The ``kind = 'info'`` rows named ``metric`` of done cells (context such as ``tune_score``)."""
    rows = frame[(frame["status"] == DONE) & (frame["kind"] == "info") & (frame["metric"] == metric)]
    return rows[rows["value"].notna()]


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``summary`` view (:data:`grid.query.VIEWS`) over ``frame``: mean ± sd over seeds per
    task x dataset x model x mode x metric, computed by the same SQL as every other summary."""
    import duckdb

    from .query import create_views

    con = duckdb.connect()
    con.register("results", frame)
    create_views(con)
    return con.execute("SELECT * FROM summary").df()


def _mode_rank(mode: str) -> tuple[int, str]:
    return (MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER), mode)


def _colour(mode: str, others: dict[str, str]) -> str:
    if mode in MODE_COLOURS:
        return MODE_COLOURS[mode]
    return others.setdefault(mode, OTHER_COLOURS[len(others) % len(OTHER_COLOURS)])


def groups(
    frame: pd.DataFrame,
    table: pd.DataFrame,
    *,
    task: str,
    dataset: str,
    metric: str,
    label: Callable[[str, str], str],
    study: Callable[[str | None, str], float | None],
) -> list[Group]:
    """The dot-plot columns of ``metric`` in one task x dataset, ordered by mode then model.

    ``label(model, mode)`` names a column; ``study(config_json, mode)`` is the published figure of a
    cell (None where the study has none). ``table`` is :func:`summary` of ``frame``.
    """
    rows = scores(frame)
    rows = rows[(rows["task"] == task) & (rows["dataset"] == dataset) & (rows["metric"] == metric)]
    rows = rows.assign(model=rows["model"].fillna(NO_MODEL))
    means = table[(table["task"] == task) & (table["dataset"] == dataset) & (table["metric"] == metric)]
    means = means.assign(model=means["model"].fillna(NO_MODEL)).set_index(["model", "mode"])
    others: dict[str, str] = {}
    out = []
    for (model, mode), cells in sorted(rows.groupby(["model", "mode"]), key=lambda kv: (_mode_rank(kv[0][1]), kv[0][0])):
        # one value per seed, as the summary view counts them (cells of one seed averaged first)
        per_seed = cells.groupby("seed")["value"].mean().sort_index()
        shown = means.loc[(model, mode)]
        sd = shown["sd"]
        marks = {study(c, mode) for c in cells["config"].unique()} - {None}
        out.append(Group(
            label=label(model, mode), colour=_colour(mode, others),
            seeds=tuple((int(s), float(v)) for s, v in per_seed.items()),
            mean=float(shown["mean"]), sd=None if sd != sd or sd is None else float(sd),
            study=marks.pop() if len(marks) == 1 else None,  # cells that disagree on the study's figure: none
        ))
    return out


def pairs(frame: pd.DataFrame, *, task: str, dataset: str) -> list[tuple[str, str, int, float, float]]:
    """(model, mode, seed, tune_score, ari) of each tuned cell of one task x dataset: the label-free
    score a search maximised beside the ARI it reached (both recorded by the tune-clustering task)."""
    tune = info(frame, "tune_score").set_index("cell_id")["value"]
    ari = scores(frame)
    ari = ari[(ari["task"] == task) & (ari["dataset"] == dataset) & (ari["metric"] == "ari")]
    out = []
    for row in ari.itertuples():
        if row.cell_id in tune.index:
            out.append((row.model or NO_MODEL, row.mode, int(row.seed), float(tune[row.cell_id]), float(row.value)))
    return out


def is_oracle(mode: str) -> bool:
    """Whether a tuned mode searched with the labels (``method/oracle``; the task records ``oracle = 1``)."""
    return mode.endswith("/oracle")


# -- drawing: tidy tables -> matplotlib ---------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display; the same output anywhere
    import matplotlib.pyplot as plt

    return plt


def _render(fig, section: str, name: str, title: str, caption: str, *, svg: bool = True) -> Figure:
    """PNG and (``svg``) SVG of ``fig``, then closed: a report of many figures must not hold them all.
    Maps, UMAPs and confusion matrices skip the SVG: their points and cells are rasterised anyway, and
    the second rendering was a third of the report's time."""
    plt = _pyplot()
    png, vector = io.BytesIO(), io.StringIO()
    try:
        fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
        if svg:  # SVG metadata carries a date by default; without it the same store draws the same file
            fig.savefig(vector, format="svg", bbox_inches="tight", metadata={"Date": None})
    finally:
        plt.close(fig)
    return Figure(section=section, name=name, title=title, caption=caption, png=png.getvalue(),
                  svg=vector.getvalue() if svg else None)


def draw_dots(ax: Axes, columns: list[Group], *, ylabel: str) -> bool:
    """Each seed a dot (spread sideways so equal values stay visible), the mean as a bar with ± sd
    whiskers, the study's figure a red star. True when some column carries a study mark."""
    import numpy as np

    marked = False
    for x, col in enumerate(columns):
        values = np.array([v for _, v in col.seeds])
        spread = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(x + spread, values, s=22, color=col.colour, alpha=0.75, zorder=3, edgecolor="white", linewidth=0.5)
        ax.errorbar(x + 0.3, col.mean, yerr=col.sd if col.sd is not None else None, fmt="_", markersize=14,
                    color="black", capsize=3, zorder=4)
        if col.study is not None:
            ax.scatter(x - 0.32, col.study, marker="*", s=110, color=STUDY_COLOUR, zorder=5,
                       label="study (seed 42)" if not marked else None)
            marked = True
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([c.label for c in columns], rotation=45, ha="right", fontsize=8)
    ax.set_xlim(-0.7, len(columns) - 0.3)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if marked:
        ax.legend(loc="best", fontsize=8)
    return marked


def _slug(*parts: str) -> str:
    import re

    return "__".join(re.sub(r"[^A-Za-z0-9_-]+", "_", p).strip("_") or "x" for p in parts)


def _model_mode(model: str, mode: str) -> str:
    return mode if model == NO_MODEL else f"{model}\n{mode}"


def _method_input(model: str, mode: str) -> str:
    return f"{mode}\n{'expression' if model == NO_MODEL else model}"


def _task_datasets(frame: pd.DataFrame, metric: str) -> list[tuple[str, str]]:
    rows = scores(frame)
    rows = rows[rows["metric"] == metric]
    return list(dict.fromkeys(zip(rows["task"], rows["dataset"])))  # in the store's order


def cell_type_figures(frame: pd.DataFrame, metrics: Iterable[str] = ("macro_f1",)) -> list[Figure]:
    """Per task x dataset with cell-type scores: ``metrics`` (default macro-F1) by model × mode."""
    plt = _pyplot()
    table = summary(frame)
    figures = []
    for metric in metrics:
        for task, dataset in _task_datasets(frame, metric):
            columns = groups(frame, table, task=task, dataset=dataset, metric=metric, label=_model_mode,
                             study=lambda config, mode, m=metric: published.cell_type_score(config, mode, m))
            fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * len(columns) + 1.5), 3.6))
            marked = draw_dots(ax, columns, ylabel=metric)
            ax.set_title(f"{task} · {dataset}: {metric}", fontsize=10)
            caption = (f"{metric} on {dataset} ({task}) by model × mode: each dot one seed, the black bar the mean "
                       "± sd over seeds.")
            if marked:
                caption += " Red stars: the study's published seed-42 figure for the same file, checkpoint and mode."
            figures.append(_render(fig, "cell-type", _slug("cell-type", task, dataset, metric), f"{task} · {dataset} · {metric}", caption))
    return figures


def domain_figures(frame: pd.DataFrame) -> list[Figure]:
    """Per task x dataset with domain scores: ARI (and NMI, CHAOS, PAS where recorded) by method × input."""
    plt = _pyplot()
    table = summary(frame)
    figures = []
    for task, dataset in dict.fromkeys(td for m in DOMAIN_METRICS for td in _task_datasets(frame, m)):
        present = [m for m in DOMAIN_METRICS if (task, dataset) in _task_datasets(frame, m)]
        panels = [groups(frame, table, task=task, dataset=dataset, metric=m, label=_method_input,
                         study=lambda config, mode, m=m: published.domain_score(config, mode, m)) for m in present]
        width = max(4.0, 0.5 * max(len(p) for p in panels) + 1.5)
        fig, axes = plt.subplots(1, len(present), figsize=(width * len(present), 3.8), squeeze=False)
        marked = False
        for ax, metric, columns in zip(axes[0], present, panels):
            marked |= draw_dots(ax, columns, ylabel=metric)
            better = "lower" if metric in LOWER_IS_BETTER else "higher"
            ax.set_title(f"{metric} ({better} is better)", fontsize=10)
        fig.suptitle(f"{task} · {dataset}: spatial domains", fontsize=11)
        caption = (f"Spatial domains of {dataset} ({task}) by method × input ({', '.join(present)}): each dot one "
                   "seed, the black bar the mean ± sd. CHAOS and PAS are better lower.")
        if marked:
            caption += " Red stars: the study's mean over slices (seed 42) for the same method and input."
        figures.append(_render(fig, "domains", _slug("domains", task, dataset), f"{task} · {dataset} · spatial domains", caption))
    return figures


def tuning_figures(frame: pd.DataFrame) -> list[Figure]:
    """Per tuned task x dataset: each cell's best label-free score against the ARI it reached,
    oracle searches (which saw the labels) marked apart."""
    plt = _pyplot()
    tuned = info(frame, "tune_score")
    figures = []
    for task, dataset in dict.fromkeys(zip(tuned["task"], tuned["dataset"])):
        points = pairs(frame, task=task, dataset=dataset)
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(5.0, 3.8))
        for oracle, marker, name in ((False, "o", "label-free search"), (True, "D", "oracle (saw the labels)")):
            chosen = [p for p in points if is_oracle(p[1]) == oracle]
            if chosen:
                ax.scatter([p[3] for p in chosen], [p[4] for p in chosen], marker=marker, s=36, label=name,
                           color=STUDY_COLOUR if oracle else MODE_COLOURS["zero-shot"], alpha=0.8, edgecolor="black",
                           linewidth=0.4)
        ax.set_xlabel("best trial's score (what the search maximised)")
        ax.set_ylabel("ARI of the reported domains")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{task} · {dataset}: tuning", fontsize=10)
        caption = (f"Tuned domain maps of {dataset} ({task}): each point one cell (method, input, seed), the search's "
                   "best score against the ARI of the domains it chose. Diamonds are oracle searches, an upper bound "
                   "a label-free search cannot claim.")
        figures.append(_render(fig, "tuning", _slug("tuning", task, dataset), f"{task} · {dataset} · tuning", caption))
    return figures


def imputation_figure(frame: pd.DataFrame) -> list[Figure]:
    """Hold-out Pearson r of imputed panels (``imputation_holdout_r``), per dataset: how well the
    imputer recovered genes hidden from it, beside the cell-type scores that used its output."""
    plt = _pyplot()
    rows = info(frame, "imputation_holdout_r")
    if rows.empty:
        return []
    # the imputation belongs to the dataset: every cell on it records the same number; one per dataset x seed
    per = rows.groupby(["dataset", "seed"])["value"].mean().reset_index()
    datasets = list(dict.fromkeys(per["dataset"]))
    fig, ax = plt.subplots(figsize=(max(3.5, 0.9 * len(datasets) + 1.5), 3.4))
    for x, name in enumerate(datasets):
        values = per[per["dataset"] == name]["value"].to_numpy()
        ax.scatter([x] * len(values), values, s=30, color=MODE_COLOURS["zero-shot"], zorder=3)
    ax.set_xticks(range(len(datasets)))
    ax.set_xticklabels(datasets, rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.7, len(datasets) - 0.3)
    ax.set_ylabel("hold-out Pearson r")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("imputation: held-out genes recovered", fontsize=10)
    caption = ("Mean Pearson r between the measured and the imputed values of genes held out from the imputer, per "
               "imputed dataset (one dot per seed that recorded it).")
    return [_render(fig, "imputation", _slug("imputation", "holdout-r"), "imputation hold-out r", caption)]


def training_curve_figures(results: Path) -> list[Figure]:
    """Loss curves (``loss/train``, ``loss/val`` per epoch) of every model the grid trained, read
    from the TensorBoard logs in ``<results>/artifacts/models/*/tensorboard``; none when there are none
    (a published checkpoint is imported, not trained, and a store elsewhere has no artifacts here)."""
    from .curves import read_curves

    plt = _pyplot()
    figures = []
    for model, curves in read_curves(results).items():
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(5.0, 3.4))
        for tag, points in sorted(curves.items()):
            ax.plot([s for s, _ in points], [v for _, v in points], marker=".", label=tag)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"training: {model}", fontsize=10)
        caption = f"Pretraining loss of {model} per epoch, from its TensorBoard log."
        figures.append(_render(fig, "training", _slug("training", model), f"training · {model}", caption))
    return figures


def all_figures(frame: pd.DataFrame, *, metrics: Iterable[str] = ("macro_f1",), results: Path | None = None,
                read: Callable[[str, str], pd.DataFrame | None] | None = None, umap_cells: int | None = None,
                umap_cache: Path | None = None, note: Callable[[str], None] | None = None) -> list[Figure]:
    """Every figure the rows support, in page order: with ``read`` (a store's ``details``), also the
    pictures of what cells kept (:mod:`grid.detail_figures`); with ``results`` (a local results
    directory), the training curves."""
    from . import detail_figures as pictures

    figures = cell_type_figures(frame, metrics)
    if read is not None:
        figures += pictures.confusion_figures(frame, read)
        figures += pictures.umap_figures(frame, read, umap_cells=umap_cells or pictures.details.UMAP_CELLS, cache=umap_cache,
                                         note=note)
    figures += domain_figures(frame)
    if read is not None:
        figures += pictures.domain_map_figures(frame, read)
    figures += tuning_figures(frame) + imputation_figure(frame)
    if results is not None:
        figures += training_curve_figures(results)
    return unique_names(figures)


def unique_names(figures: list[Figure]) -> list[Figure]:
    """``figures`` with a counter added to a repeated name, so that no file overwrites another (names
    are made of task and dataset names, which two configs could spell alike after cleaning)."""
    from dataclasses import replace

    seen: dict[str, int] = {}
    out = []
    for figure in figures:
        count = seen[figure.name] = seen.get(figure.name, 0) + 1
        out.append(figure if count == 1 else replace(figure, name=f"{figure.name}__{count}"))
    return out
