"""Spatial domains of a section in one call: :func:`find_domains` writes ``obs['domain']``.

What a method does is its settings class's business (:mod:`cluster.settings`, one class per method
in :data:`cluster.DOMAIN_METHODS`): :func:`find_domains` asks the settings instance it is handed
for the representation, the spatial embedding and the head, and writes the results. It never
looks a method up by name, so any :class:`~cluster.settings.DomainMethod` subclass runs, registered
or not.

Defaults are set for imaging (single-cell) resolution (:data:`cluster.settings.NEIGHBOURHOOD_CELLS`,
``bench/neighbourhood_scale.py``): the networks are the originals' (``anchors.md`` §3), the graphs
are sized to a neighbourhood of about 25 cells (STAGATE and the neighbour-average reference 24-NN,
GraphST 12-NN over its two hops; upstream's Visium graphs, 6-NN and 3-NN, stay reachable; a radius
depends on the units of the coordinates, so it is opt-in); STAGATE's mixture runs on its 30-d
embedding, GraphST's on PCA(20) of its embedding; CellCharter on a Delaunay graph
(99th-percentile edge cut), full-covariance mixture.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from .settings import DomainConfig, EpochCallback, RunContext

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["DomainConfig", "DomainResult", "expression", "find_domains", "obsm_features", "output_key", "score_domains"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DomainResult:
    labels: np.ndarray  # int domain per cell, 0 = largest
    embedding: np.ndarray | None  # the spatial model's embedding (None for the non-spatial baselines)
    info: dict[str, float] = field(default_factory=dict)


def expression(adata: AnnData, *, target_sum: float | Literal["median"] = "median", n_top_genes: int = 3000) -> np.ndarray:
    """Log-normalised expression of the most variable genes (all genes of a targeted panel).

    Counts, or normalised / log-normalised values declared in ``uns['ssl_st']`` (``ssl-st cluster
    --values``, ``values:`` of a grid dataset), become the same log1p values through
    :func:`ssl_st.pp.log_expression`; "median" is the median library size of counts, a fixed target
    for normalised values (so that their scale does not matter). Genes are chosen by
    :func:`highly_variable_genes` when there are more than ``n_top_genes``.
    """
    from ssl_st.pp import expression_matrix, log_normalized

    matrix, values = expression_matrix(adata)
    logged = log_normalized(matrix, values, target_sum)
    if logged.shape[1] > n_top_genes:
        logged = logged[:, highly_variable_genes(matrix if values.is_counts else None, logged, n_top_genes)]
    return logged.toarray()


def highly_variable_genes(counts, logged, n_top_genes: int) -> np.ndarray:
    """Sorted column indices of the ``n_top_genes`` most variable genes, as scanpy ranks them: by
    ``seurat_v3`` on ``counts`` (the variance of standardised counts after a loess fit of variance on
    mean: what STAGATE's and GraphST's tutorials run), else, for data declared normalised, by
    ``seurat``'s normalised dispersion of the ``logged`` values (seurat_v3 needs counts)."""
    import anndata as ad
    import scanpy as sc

    if counts is not None:
        table = sc.pp.highly_variable_genes(ad.AnnData(counts), flavor="seurat_v3", n_top_genes=n_top_genes,
                                            inplace=False)
    else:
        table = sc.pp.highly_variable_genes(ad.AnnData(logged), flavor="seurat", n_top_genes=n_top_genes, inplace=False)
    return np.flatnonzero(table["highly_variable"].to_numpy())


def obsm_features(adata: AnnData, key: str) -> np.ndarray:
    """``obsm[key]`` as float32, checked: an embedding that replaces the genes."""
    if key not in adata.obsm:
        have = ", ".join(adata.obsm) or "none"
        raise KeyError(f"obsm['{key}'] not found (obsm has: {have}); embed the data first (ssl-st embed) or use --input X")
    x = np.asarray(adata.obsm[key], dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"obsm['{key}'] has NaN or infinite values")
    return x


def find_domains(
    adata: AnnData,
    config: DomainConfig,
    *,
    seed: int = 0,
    device: str = "auto",
    key_added: str = "domain",
    spatial_key: str = "spatial",
    progress: EpochCallback | None = None,
) -> DomainResult:
    """Cluster ``adata`` into spatial domains with ``config.settings``' method.

    Writes ``obs[key_added]`` (categorical), ``obsm['X_<method>']`` for the spatial models, the
    graph in ``obsp['spatial_connectivities']``/``['spatial_distances']`` and the settings and run
    facts in ``uns[key_added]``. ``progress`` is called after every training epoch.
    """
    import pandas as pd

    method = config.settings
    if method.needs_coordinates and spatial_key not in adata.obsm:
        raise KeyError(f"obsm['{spatial_key}'] not found: {method.name} needs cell coordinates")
    run = RunContext(seed=seed, device=device, spatial_key=spatial_key, library_key=config.library_key, progress=progress)
    start = time.perf_counter()
    x = method.representation(adata, config.use_rep, seed=seed)
    info: dict[str, float] = {"n_features": float(x.shape[1])}
    embedding = method.spatial_embedding(adata, x, run, info)
    if embedding is not None:
        adata.obsm[f"X_{method.name}"] = embedding
    head_input = method.head_input(x, embedding, seed=seed)
    start_head = time.perf_counter()
    result = method.make_head().cut(head_input, config.n_domains, resolution=method.resolution, seed=seed)
    info.update(result.info)
    info["n_found"] = float(result.n_found)
    info["model_s"] = start_head - start
    info["head_s"] = time.perf_counter() - start_head
    adata.obs[key_added] = pd.Categorical(result.labels.astype(str), categories=sorted({str(v) for v in result.labels}, key=int))
    adata.uns[key_added] = {"params": config.params(), "seed": seed, "info": info}
    log.info("%s: %d domains in %.1f s", method.name, result.n_found, time.perf_counter() - start)
    return DomainResult(result.labels, embedding, info)


def output_key(labels: str | None, preferred: str = "domain") -> str:
    """Where to write found domains without overwriting a ground-truth column of the same name."""
    return preferred if labels != preferred else f"{preferred}_found"


def score_domains(
    adata: AnnData, *, key: str = "domain", labels: str | None = None, spatial_key: str = "spatial",
    library_key: str | None = None,
) -> dict[str, float]:
    """Metrics of ``obs[key]``: spatial continuity always, agreement with ``obs[labels]`` if given.

    With ``library_key`` the metrics are computed per slice and averaged, as the study reported
    them (a domain map is judged against its own section, not the pooled coordinates).
    """
    import pandas as pd

    from .metrics import domain_metrics

    if key not in adata.obs:
        raise KeyError(f"obs['{key}'] not found; run find_domains first")
    if labels is not None and labels not in adata.obs:
        raise KeyError(f"obs['{labels}'] not found (obs has: {', '.join(adata.obs.columns)}); pass --labels COLUMN")
    coords = np.asarray(adata.obsm[spatial_key], dtype=float)
    groups = adata.obs[library_key].to_numpy() if library_key else np.zeros(adata.n_obs)
    per_slice = []
    for group in pd.unique(groups):
        mask = groups == group
        truth = adata.obs[labels].to_numpy()[mask] if labels else None
        per_slice.append(domain_metrics(coords[mask], adata.obs[key].to_numpy()[mask], truth))
    return {name: float(np.mean([m[name] for m in per_slice])) for name in per_slice[0]}
