"""Summaries of finished cells: mean ± sd over seeds for each task x dataset x model x mode."""

from __future__ import annotations

import pandas as pd

from ssl_st.metrics import CLASSIFICATION_METRICS

from .store import DONE

GROUP = ["task", "dataset", "model", "mode"]
# Spatial domains: agreement with the ground truth, then spatial continuity (lower is smoother).
CLUSTERING_METRICS = ("ari", "nmi", "chaos", "pas")


def summarize(frame: pd.DataFrame, metrics: tuple[str, ...] = CLASSIFICATION_METRICS + CLUSTERING_METRICS) -> pd.DataFrame:
    """One row per task x dataset x model x mode, with ``<metric>_mean``, ``<metric>_sd`` and ``n_seeds``.

    The numbers are the ``summary`` view's (:data:`grid.query.VIEWS`, what ``ssl-st query --view
    summary`` shows), run on ``frame`` (rows of the store); here an sd of one seed shows as 0.
    """
    import duckdb

    from .query import create_views

    con = duckdb.connect()
    con.register("results", frame)
    create_views(con)
    scores = con.execute("SELECT * FROM summary").df()
    scores = scores[scores["metric"].isin(metrics)].copy()
    if scores.empty:
        return pd.DataFrame(columns=[*GROUP, "n_seeds"])
    scores["model"] = scores["model"].fillna("-")
    out = scores.groupby(GROUP, sort=False)["n_seeds"].max().to_frame()
    for metric in (m for m in metrics if m in set(scores["metric"])):
        one = scores[scores["metric"] == metric].set_index(GROUP)
        out[f"{metric}_mean"] = one["mean"]
        out[f"{metric}_sd"] = one["sd"]
        out[f"{metric}_sd"] = out[f"{metric}_sd"].fillna(0.0)
    coverage = frame[frame["metric"] == "vocabulary_coverage"].assign(model=lambda f: f["model"].fillna("-"))
    if not coverage.empty:
        out["coverage"] = coverage.groupby(GROUP, sort=False)["value"].mean()
    # rows in the order the cells come (the config's order), not the view's
    done = frame[(frame["status"] == DONE) & frame["metric"].isin(metrics)].assign(model=lambda f: f["model"].fillna("-"))
    order = done.drop_duplicates(GROUP)[GROUP]
    return order.merge(out.reset_index(), on=GROUP, how="left").reset_index(drop=True)


def format_cell(mean: float, sd: float) -> str:
    return f"{mean:.3f} ± {sd:.3f}"
