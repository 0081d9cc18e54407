"""The report's pictures of what cells kept beside their rows (:mod:`grid.details`): confusion matrices
of the cell-type cells, domain maps next to the truth, and UMAPs of the frozen embeddings.

As in :mod:`grid.figures`, selection (rows and details -> small tables) stays apart from drawing, and
every number in a title comes from the cell's own rows. UMAPs are scanpy's (``pp.neighbors`` then
``tl.umap``, seeded) on a seeded sample of at most ``umap_cells`` of the cells a zero-shot cell kept;
they are cached under ``$SSL_ST_CACHE/umap`` by the sample's content, so a report is redrawn in
seconds. Maps and UMAPs are drawn by ``scanpy.pl.embedding``. A store written before cells kept
details draws none of these, and says so on the page.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import details
from .figures import NO_MODEL, Figure, _mode_rank, _model_mode, _pyplot, _render, _slug
from .store import DONE, write_atomically

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

ReadDetails = Callable[[str, str], "pd.DataFrame | None"]
"""``read(cell_id, kind)``: a cell's details of one kind, or None (the store's ``details`` method)."""

UMAP_NEIGHBOURS = 15
UMAP_EPOCHS = 200  # umap-learn's own choice for large data; its 500 for small data buys little here
UMAP_VERSION = "1"  # part of the cache key: bump when the computation above changes
OTHER_DOMAIN = "#bbbbbb"


def done_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per done cell (task, dataset, model with ``-`` for none, mode, seed), in store order."""
    cells = frame[frame["status"] == DONE].drop_duplicates("cell_id")
    cells = cells[["cell_id", "task", "dataset", "model", "mode", "seed"]].copy()
    cells["model"] = cells["model"].fillna(NO_MODEL)
    return cells.reset_index(drop=True)


def cell_values(frame: pd.DataFrame, metrics: tuple[str, ...]) -> dict[tuple[str, str], float]:
    """``(cell_id, metric) -> value`` of ``metrics``, read from the rows once for a whole figure."""
    rows = frame[frame["metric"].isin(metrics) & frame["value"].notna()].drop_duplicates(["cell_id", "metric"])
    return {(c, m): float(v) for c, m, v in zip(rows["cell_id"], rows["metric"], rows["value"])}


def _grid(plt, n: int, *, ncols: int, size: float, extra_width: float = 0.0):
    nrows = -(-n // ncols)
    ncols = min(ncols, n)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols + extra_width, size * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


# -- confusion matrices ---------------------------------------------------------------------------------

def confusion(predictions: list[pd.DataFrame]) -> pd.DataFrame:
    """Counts of (true, predicted) pooled over ``predictions`` (one per seed), each row divided by its
    total: row ``t`` is where the test cells of type ``t`` went. Classes are every label seen."""
    import pandas as pd

    pooled = pd.concat(predictions, ignore_index=True)
    classes = sorted(set(pooled["true"]) | set(pooled["predicted"]))
    counts = pd.crosstab(pd.Categorical(pooled["true"], classes), pd.Categorical(pooled["predicted"], classes),
                         dropna=False)
    return counts.div(counts.sum(axis=1).where(lambda s: s > 0), axis=0).fillna(0.0)


def confusion_figures(frame: pd.DataFrame, read: ReadDetails) -> list[Figure]:
    """Per task x dataset with predictions: one row-normalised confusion matrix per model × mode,
    pooled over its seeds."""
    plt = _pyplot()
    cells = done_cells(frame)
    values = cell_values(frame, ("macro_f1",))
    figures = []
    for (task, dataset), group in cells.groupby(["task", "dataset"], sort=False):
        panels = []
        for (model, mode), chosen in sorted(group.groupby(["model", "mode"]), key=lambda kv: (_mode_rank(kv[0][1]), kv[0][0])):
            kept = [p for p in (read(c, details.PREDICTIONS) for c in chosen["cell_id"]) if p is not None and len(p)]
            if kept:
                f1 = [values[c, "macro_f1"] for c in chosen["cell_id"] if (c, "macro_f1") in values]
                panels.append((_model_mode(model, mode).replace("\n", " · "), confusion(kept), len(kept), f1))
        if not panels:
            continue
        fig, axes = _grid(plt, len(panels), ncols=4, size=3.1)
        image = None
        for i, (ax, (label, matrix, n_seeds, f1)) in enumerate(zip(axes, panels)):
            image = ax.imshow(matrix.to_numpy(), vmin=0.0, vmax=1.0, cmap="Blues")
            ticks = range(len(matrix))
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
            first_column, last_row = i % 4 == 0, i >= len(panels) - 4
            ax.set_xticklabels(matrix.columns if last_row else [], rotation=90, fontsize=5)
            ax.set_yticklabels(matrix.index if first_column else [], fontsize=5)
            score = f"macro-F1 {sum(f1) / len(f1):.3f}" if f1 else "no macro-F1"
            ax.set_title(f"{label}\n{score} · {n_seeds} seed(s)", fontsize=8)
            if first_column:
                ax.set_ylabel("true type", fontsize=7)
            if last_row:
                ax.set_xlabel("predicted type", fontsize=7)
        fig.colorbar(image, ax=axes, shrink=0.6, label="fraction of the true type's test cells")
        fig.suptitle(f"{task} · {dataset}: confusion matrices", fontsize=11)
        caption = (f"Where the test cells of {dataset} ({task}) went, per model × mode: row t is the true type t, "
                   "each row sums to 1, pooled over the seeds' test splits (the kNN's predictions, the study's "
                   "headline; for fine-tune and supervised, kNN on the trained encoder's embedding). The title gives "
                   "the mean macro-F1 of the same cells.")
        figures.append(_render(fig, "cell-type", _slug("confusion", task, dataset), f"{task} · {dataset} · confusion",
                               caption, svg=False))
    return figures


# -- spatial domain maps --------------------------------------------------------------------------------

def aligned(domain: pd.Series, truth: pd.Series) -> pd.Series:
    """``domain`` renamed to the true domain each one overlaps most, one to one (Hungarian matching
    on the contingency table), so that matching domains share a colour; the rest become ``other N``."""
    import numpy as np
    import pandas as pd
    from scipy.optimize import linear_sum_assignment

    table = pd.crosstab(domain.to_numpy(), truth.to_numpy())
    rows, cols = linear_sum_assignment(-table.to_numpy())
    names = {table.index[r]: table.columns[c] for r, c in zip(rows, cols)}
    extra = [d for d in table.index if d not in names]
    names.update({d: f"other {i + 1}" for i, d in enumerate(sorted(extra, key=str))})
    return pd.Series(np.array([names[d] for d in domain.to_numpy()], dtype=object), index=domain.index)


def _palette(n: int) -> list[str]:
    from scanpy.plotting.palettes import default_20, default_102

    return list(default_20 if n <= 20 else default_102)[:n]


def _draw_embedding(ax, xy: np.ndarray, values: pd.Series, colours: dict[str, str], *, basis: str, title: str,
                    legend: bool, size: float) -> None:
    """``values`` (categories) on the 2-D ``xy`` with scanpy's embedding plot, in fixed colours."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scanpy as sc

    categories = [c for c in colours if c in set(values)]
    obs = pd.DataFrame({"value": pd.Categorical(values.to_numpy(), categories=categories)},
                       index=[str(i) for i in range(len(values))])
    adata = ad.AnnData(obs=obs, obsm={f"X_{basis}": np.asarray(xy, dtype=np.float32)})
    adata.uns["value_colors"] = [colours[c] for c in categories]
    sc.pl.embedding(adata, basis=basis, color="value", ax=ax, show=False, title=title, frameon=False, size=size,
                    legend_loc="right margin" if legend else None, legend_fontsize=6)
    ax.title.set_fontsize(8)
    ax.set_aspect("equal", adjustable="datalim")


def domain_map_figures(frame: pd.DataFrame, read: ReadDetails) -> list[Figure]:
    """Per task x dataset with domain maps: the truth and every method × input of the first seed."""
    plt = _pyplot()
    cells = done_cells(frame)
    values = cell_values(frame, ("ari", "chaos", "pas"))
    figures = []
    for (task, dataset), group in cells.groupby(["task", "dataset"], sort=False):
        maps = [(row, read(row.cell_id, details.DOMAINS)) for row in group.sort_values("seed", kind="stable").itertuples()]
        maps = [(row, m) for row, m in maps if m is not None and len(m)]
        if not maps:
            continue
        seed = min(row.seed for row, _ in maps)
        # the genes first, then each model's embedding; methods in the order the store lists them
        inputs = {m: i for i, m in enumerate(sorted(dict.fromkeys(group["model"]), key=lambda m: m != NO_MODEL))}
        methods = {m: i for i, m in enumerate(dict.fromkeys(group["mode"]))}
        maps = sorted(((row, m) for row, m in maps if row.seed == seed),
                      key=lambda pair: (inputs[pair[0].model], methods[pair[0].mode]))
        truth = next((m["truth"] for _, m in maps if m["truth"].notna().all()), None)
        panels = []
        if truth is not None:
            panels.append(("truth", maps[0][1][["x", "y"]].to_numpy(), truth))
        for row, m in maps:
            shown = aligned(m["domain"], m["truth"]) if truth is not None and m["truth"].notna().all() else m["domain"]
            score = " · ".join(f"{name} {values[row.cell_id, metric]:.3f}" for name, metric in
                               (("ARI", "ari"), ("CHAOS", "chaos"), ("PAS", "pas")) if (row.cell_id, metric) in values)
            source = "expression" if row.model == NO_MODEL else row.model
            panels.append((f"{row.mode} · {source}\n{score}", m[["x", "y"]].to_numpy(), shown))
        names = sorted(set(truth)) if truth is not None else []
        others = sorted({str(v) for _, _, p in panels for v in p} - set(names), key=str)
        palette = _palette(len(names) + len(others))
        colours = {**dict(zip(names, palette)), **{o: (OTHER_DOMAIN if o.startswith("other") else palette[len(names) + i])
                                                  for i, o in enumerate(others)}}
        fig, axes = _grid(plt, len(panels), ncols=4, size=3.0, extra_width=1.2)
        size = max(4.0, 60000 / max(len(p[1]) for p in panels))
        for i, (ax, (title, xy, values)) in enumerate(zip(axes, panels)):
            _draw_embedding(ax, xy, values, colours, basis="spatial", title=title, legend=i == 0, size=size)
        fig.suptitle(f"{task} · {dataset}: spatial domains (seed {seed})", fontsize=11, y=1.02)
        caption = (f"Domains of {dataset} ({task}) on the section's coordinates, seed {seed}: the ground truth first, "
                   "then each method × input (expression, or a model's zero-shot embedding), with that cell's ARI, "
                   "CHAOS and PAS. Each method's domains are matched one to one to the true domains they overlap most "
                   "and take their colours; unmatched domains are grey.")
        figures.append(_render(fig, "domains", _slug("domain-maps", task, dataset), f"{task} · {dataset} · domain maps",
                               caption, svg=False))
    return figures


# -- UMAPs of the frozen embeddings ---------------------------------------------------------------------

def umap_coordinates(values: np.ndarray, cache: Path | None, note: Callable[[str], None] | None = None,
                     what: str = "") -> np.ndarray:
    """scanpy's UMAP of ``values`` (seeded), read from ``cache`` when this exact sample was drawn
    before; ``note(message)`` hears of each one computed (seconds each)."""
    import numpy as np

    key = hashlib.sha256(f"{UMAP_VERSION}:{values.shape}:{UMAP_NEIGHBOURS}:{UMAP_EPOCHS}:".encode()
                         + np.ascontiguousarray(values, dtype=np.float32).tobytes()).hexdigest()[:32]
    path = cache / f"{key}.npy" if cache is not None else None
    if path is not None and path.is_file():
        try:
            cached = np.load(path)
            if cached.shape == (len(values), 2):
                return cached
        except (OSError, ValueError):  # a damaged cache file is recomputed
            pass
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    if note is not None:
        note(f"UMAP of {what} ({len(values):,} cells)")
    adata = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(values))]),
                       obsm={"X_embedding": np.asarray(values, dtype=np.float32)})
    sc.pp.neighbors(adata, use_rep="X_embedding", n_neighbors=min(UMAP_NEIGHBOURS, len(values) - 1), random_state=0)
    sc.tl.umap(adata, random_state=0, maxiter=UMAP_EPOCHS)
    coordinates = np.asarray(adata.obsm["X_umap"], dtype=np.float32)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, lambda f: np.save(f, coordinates))
        except OSError:  # a read-only cache only costs time
            pass
    return coordinates


def warm_up() -> None:
    """Import scanpy and draw a UMAP of a few random points: numba compiles UMAP's code on first use
    in a fresh environment (about 30 s on two cores), which ``ssl-st run --report`` does in a
    background thread while the cells run rather than after them. Never raises."""
    try:
        import numpy as np

        umap_coordinates(np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32), None)
    except Exception:  # noqa: BLE001 - a warm-up that fails costs only the time it would have saved
        pass


def umap_cache() -> Path:
    from ssl_st.hub import cache_root

    return cache_root() / "umap"


def umap_figures(frame: pd.DataFrame, read: ReadDetails, *, umap_cells: int = details.UMAP_CELLS,
                 cache: Path | None = None, note: Callable[[str], None] | None = None) -> list[Figure]:
    """Per dataset: a UMAP of each model's frozen (zero-shot) embedding, coloured by cell type. The
    embedding does not depend on the seed, so one cell per dataset × model is drawn (its first seed)."""
    plt = _pyplot()
    cells = done_cells(frame)
    cells = cells[cells["mode"] == "zero-shot"].sort_values("seed", kind="stable")
    figures = []
    for dataset, group in cells.groupby("dataset", sort=False):
        panels = []
        for model in dict.fromkeys(group["model"]):
            sample = next((s for s in (read(c, details.EMBEDDING) for c in group[group["model"] == model]["cell_id"])
                           if s is not None and len(s) > 2), None)
            if sample is None:
                continue
            sample = sample.iloc[details.sample_rows(len(sample), umap_cells)].reset_index(drop=True)
            xy = umap_coordinates(details.embedding_matrix(sample), cache, note, f"{dataset} by {model}")
            panels.append((model, xy, sample["label"]))
        if not panels:
            continue
        labels = sorted({str(v) for _, _, p in panels for v in p})
        colours = dict(zip(labels, _palette(len(labels))))
        fig, axes = _grid(plt, len(panels), ncols=4, size=3.0, extra_width=1.6)
        n = max(len(p[1]) for p in panels)
        for i, (ax, (model, xy, values)) in enumerate(zip(axes, panels)):
            _draw_embedding(ax, xy, values, colours, basis="umap", title=f"{model} (zero-shot)",
                            legend=i == len(panels) - 1, size=max(3.0, 30000 / n))
        fig.suptitle(f"{dataset}: frozen embeddings by cell type", fontsize=11, y=1.03)
        caption = (f"UMAP of each model's frozen embedding of {dataset} (the zero-shot input of kNN), on a seeded sample "
                   f"of up to {n:,} cells, coloured by cell type; scanpy, {UMAP_NEIGHBOURS} neighbours, seed 0. Types "
                   "that stay apart here are the ones kNN can tell apart.")
        figures.append(_render(fig, "embeddings", _slug("umap", dataset), f"{dataset} · embeddings", caption, svg=False))
    return figures
