"""The spatial-clustering and tune-clustering cells: a section, an input, a method, a seed.

A model input is the model's zero-shot embedding of the section, computed here (it is cheap next to
the clustering) and put where the genes were, as the study did for STAGATE-RM and GraphST-RM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anndata as ad

from cluster import DomainConfig, find_domains, score_domains
from cluster.domains import output_key
from cluster.tune import Parameter, TuneSettings, tune_domains
from ssl_st.models import SSLModel
from ssl_st.tasks import CellTypeConfig
from ssl_st.tasks.celltype import checked_input

from .plan import Cell

Row = tuple[str, float, str]


def _domain_config(cell: Cell) -> DomainConfig:
    task = cell.content["task"]
    use_rep = f"X_{cell.model}" if cell.model else "X"
    return DomainConfig(method=cell.content["method"], n_domains=task["n_domains"], use_rep=use_rep, **task["clustering"])


def _tune_settings(cell: Cell) -> TuneSettings:
    tuning = dict(cell.content["task"]["tuning"])
    space = {}
    for name, p in tuning.pop("space").items():
        space[name] = Parameter(**{**p, "choices": tuple(p["choices"]) if p.get("choices") is not None else None})
    return TuneSettings(space=space, **tuning)


def _embed(adata: ad.AnnData, cell: Cell, model_path: Path, device: str) -> list[Row]:
    """Write the model's embedding of ``adata`` to ``obsm['X_<model>']``; returns coverage rows."""
    model = SSLModel.load(model_path)
    task = cell.content["task"]
    config = CellTypeConfig(target_sum=1e4 if task["normalize"] == "cp10k" else "median", min_coverage=task["min_coverage"])
    inputs, coverage = checked_input(adata, model.vocabulary, config)
    adata.obsm[f"X_{cell.model}"] = model.embed(inputs, device=device)
    return [("genes_mapped", float(coverage.mapped_genes), "info"), ("vocabulary_coverage", coverage.vocabulary_fraction, "info")]


def run_clustering_cell(cell: Cell, paths: dict[str, Path], *, workdir: Path, device: str = "auto") -> list[Row]:
    adata = ad.read_h5ad(paths[cell.data])
    rows: list[Any] = _embed(adata, cell, paths[cell.trained_model], device) if cell.model else []
    config = _domain_config(cell)
    labels = cell.content["dataset"]["label_key"]  # None: no ground truth, label-free metrics only
    key = output_key(labels)
    if labels is not None and labels not in adata.obs:
        raise KeyError(
            f"domain label column '{labels}' not found in obs (columns: {', '.join(map(str, adata.obs.columns))}); "
            "set domain_key on the dataset or label_key on the task (a demo section built before simulator v2 "
            "calls it 'domain': rebuild it with ssl-st run --force)"
        )
    if cell.content["objective"] is None:
        result = find_domains(adata, config, seed=cell.seed, device=device, key_added=key)
        info = result.info
    else:
        settings = _tune_settings(cell)
        outcome = tune_domains(
            adata, config, settings, objective=cell.content["objective"], storage=workdir,
            labels=labels, seed=cell.seed,
        )
        # The best settings are rerun so that the reported domains are reproducible from the record.
        result = find_domains(adata, outcome.best, seed=cell.seed, device=device, key_added=key)
        info = {**result.info, "tune_score": outcome.score, "tune_trials": float(len(outcome.trials)),
                "tune_resumed": float(outcome.resumed), "oracle": float(outcome.objective == "oracle")}
        info.update({f"tuned_{name}": float(getattr(outcome.best, name)) for name in settings.space})
    metrics = score_domains(adata, key=key, labels=labels, library_key=config.library_key)
    rows += [(name, value, "metric") for name, value in metrics.items() if name != "n_domains"]
    rows += [(name, float(value), "info") for name, value in info.items()]
    return rows
