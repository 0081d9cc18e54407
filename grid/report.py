"""Summaries of finished cells: mean ± sd over seeds for each task x dataset x model x mode."""

from __future__ import annotations

import pandas as pd

from ssl_st.metrics import CLASSIFICATION_METRICS

from .store import DONE

GROUP = ["task", "dataset", "model", "mode"]
# Spatial domains: agreement with the ground truth, then spatial continuity (lower is smoother).
CLUSTERING_METRICS = ("ari", "nmi", "chaos", "pas")


def summarize(frame: pd.DataFrame, metrics: tuple[str, ...] = CLASSIFICATION_METRICS + CLUSTERING_METRICS) -> pd.DataFrame:
    """One row per task x dataset x model x mode, with ``<metric>_mean``, ``<metric>_sd`` and ``n_seeds``."""
    scores = frame[(frame["status"] == DONE) & frame["metric"].isin(metrics)].copy()
    if scores.empty:
        return pd.DataFrame(columns=[*GROUP, "n_seeds"])
    scores["model"] = scores["model"].fillna("-")
    wide = scores.pivot_table(index=[*GROUP, "seed"], columns="metric", values="value", sort=False).reset_index()
    grouped = wide.groupby(GROUP, sort=False)
    out = grouped.size().rename("n_seeds").to_frame()
    for metric in (m for m in metrics if m in wide.columns):
        out[f"{metric}_mean"] = grouped[metric].mean()
        out[f"{metric}_sd"] = grouped[metric].std(ddof=1).fillna(0.0)
    coverage = frame[frame["metric"] == "vocabulary_coverage"].assign(model=lambda f: f["model"].fillna("-"))
    if not coverage.empty:
        out["coverage"] = coverage.groupby(GROUP, sort=False)["value"].mean()
    # rows in the order the cells come (the config's order), not pivot's
    order = scores.drop_duplicates(GROUP)[GROUP]
    return order.merge(out.reset_index(), on=GROUP, how="left").reset_index(drop=True)


def format_cell(mean: float, sd: float) -> str:
    return f"{mean:.3f} ± {sd:.3f}"
