"""Spatial domains of a section in one call: :func:`find_domains` writes ``obs['domain']``.

Every method is the same three steps, which is what lets one config describe STAGATE, GraphST,
CellCharter and the non-spatial baselines, fed with genes or with any ``obsm`` embedding:

1. a *representation*: log-normalised expression (or its PCA), or an ``obsm`` entry as it is
   (the study's -RM / -GP / -BT variants put a 64-d SSL embedding where the genes were);
2. a *spatial model* on the neighbour graph: STAGATE or GraphST learn an embedding, CellCharter
   concatenates neighbourhood means; the baselines (gmm, kmeans, leiden) skip this step;
3. a *head* that cuts the result into domains: the mclust-EEE stand-in (a tied-covariance Gaussian
   mixture), k-means, or Leiden with a resolution searched to reach ``n_domains``.

Defaults follow the originals (``anchors.md`` §3): STAGATE 512/30 on a 6-NN graph (≈ the Visium
radius graph's degree; a radius depends on the units of the coordinates, so it is opt-in),
mixture on the 30-d embedding; GraphST on a 3-NN graph, mixture on PCA(20) of its embedding;
CellCharter on a Delaunay graph (99th-percentile edge cut), full-covariance mixture.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ssl_st.pp import normalize_log1p

from . import heads
from .graph import GraphMethod, spatial_neighbors

Method = Literal["stagate", "graphst", "cellcharter", "gmm", "kmeans", "leiden"]
Head = Literal["gmm", "kmeans", "leiden"]
METHODS: tuple[str, ...] = ("stagate", "graphst", "cellcharter", "gmm", "kmeans", "leiden")
SPATIAL_METHODS = frozenset({"stagate", "graphst", "cellcharter"})

# method -> (graph, k, head, mixture covariance)
_DEFAULTS: dict[str, tuple[GraphMethod, int, Head, str]] = {
    "stagate": ("knn", 6, "gmm", "tied"),
    "graphst": ("knn", 3, "gmm", "tied"),
    "cellcharter": ("delaunay", 6, "gmm", "full"),
    "gmm": ("knn", 6, "gmm", "tied"),
    "kmeans": ("knn", 6, "kmeans", "tied"),
    "leiden": ("knn", 6, "leiden", "tied"),
}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DomainSettings:
    """The knobs of a method; unset ones take the method's upstream defaults.

    Flat, and named as the CLI flags and the tuning space name them, so a tuned value drops
    straight in with :func:`dataclasses.replace`.
    """

    head: Head | None = None
    resolution: float | None = None  # leiden: fixed resolution instead of a search for n_domains
    graph: GraphMethod | None = None
    k: int | None = None  # knn graph
    radius: float | None = None  # radius graph, in the units of the coordinates
    percentile: float | None = None  # delaunay: drop edges above this length percentile
    library_key: str | None = None  # obs column of slices: graphs never cross them
    epochs: int | None = None  # stagate (1000) / graphst (600)
    learning_rate: float | None = None
    alpha: float | None = None  # graphst: weight of the reconstruction loss (10)
    beta: float | None = None  # graphst: weight of the contrastive loss (1)
    n_layers: int = 3  # cellcharter: neighbourhood rings (the study used 4)
    pca_components: int = 20  # expression for the baselines / cellcharter; GraphST's head
    n_top_genes: int = 3000
    target_sum: float | Literal["median"] = "median"  # the study normalised spatial data to the median


@dataclass(frozen=True, kw_only=True)
class DomainConfig(DomainSettings):
    """A method, what it reads and how many domains it cuts, plus its settings."""

    method: Method
    n_domains: int | None = None
    use_rep: str = "X"  # "X": expression from layers['counts'] (or X); otherwise an obsm key

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method '{self.method}'; choose one of {', '.join(METHODS)}")
        head = self.resolved_head
        if head in ("gmm", "kmeans") and self.n_domains is None:
            raise ValueError(f"method {self.method} with head {head} needs n_domains (the number of domains)")
        if head == "leiden" and self.n_domains is None and self.resolution is None:
            raise ValueError("leiden needs n_domains (a resolution is searched) or a fixed resolution")
        if self.n_domains is not None and self.n_domains < 2:
            raise ValueError("n_domains must be at least 2")
        if self.resolved_graph == "radius" and self.radius is None:
            raise ValueError("graph radius needs radius (in the units of obsm['spatial'])")

    @property
    def resolved_head(self) -> Head:
        return self.head or _DEFAULTS[self.method][2]

    @property
    def resolved_graph(self) -> GraphMethod:
        return self.graph or ("radius" if self.radius is not None else _DEFAULTS[self.method][0])


@dataclass(frozen=True)
class DomainResult:
    labels: np.ndarray  # int domain per cell, 0 = largest
    embedding: np.ndarray | None  # what the head clustered (None for the expression baselines' PCA)
    info: dict[str, float] = field(default_factory=dict)


def expression(adata: AnnData, *, target_sum: float | Literal["median"] = "median", n_top_genes: int = 3000) -> np.ndarray:
    """Log-normalised expression of the most variable genes (all genes of a targeted panel)."""
    counts = adata.layers["counts"] if "counts" in adata.layers else adata.X
    logged = normalize_log1p(sp.csr_matrix(counts), target_sum)
    if logged.shape[1] > n_top_genes:
        # Variance of the logged values ranks genes much as seurat_v3 does on panels and is cheap;
        # it only matters for whole-transcriptome inputs (Slide-seq), where HVGs cut the cost.
        mean = np.asarray(logged.mean(axis=0)).ravel()
        var = np.asarray(logged.multiply(logged).mean(axis=0)).ravel() - mean**2
        keep = np.sort(np.argsort(-var, kind="stable")[:n_top_genes])
        logged = logged[:, keep]
    return logged.toarray()


def representation(adata: AnnData, config: DomainConfig, *, seed: int = 0) -> np.ndarray:
    """The features the spatial model (or the baseline's head) sees."""
    if config.use_rep != "X":
        if config.use_rep not in adata.obsm:
            have = ", ".join(adata.obsm) or "none"
            raise KeyError(
                f"obsm['{config.use_rep}'] not found (obsm has: {have}); embed the data first "
                f"(ssl-st embed) or use --input X"
            )
        x = np.asarray(adata.obsm[config.use_rep], dtype=np.float32)
        if not np.isfinite(x).all():
            raise ValueError(f"obsm['{config.use_rep}'] has NaN or infinite values")
        return x
    x = expression(adata, target_sum=config.target_sum, n_top_genes=config.n_top_genes)
    if config.method == "graphst":  # GraphST's own preprocessing: scale to unit variance, clip at 10
        std = x.std(axis=0)
        x = np.minimum(x / np.where(std > 0, std, 1.0), 10.0)
    elif config.method not in ("stagate", "graphst"):
        x = heads.pca(x, config.pca_components, seed=seed)
    return x.astype(np.float32, copy=False)


def _graph(adata: AnnData, config: DomainConfig, spatial_key: str) -> sp.csr_matrix:
    method = config.resolved_graph
    k = config.k or _DEFAULTS[config.method][1]
    percentile = config.percentile if config.percentile is not None else (99.0 if method == "delaunay" else None)
    spatial_neighbors(
        adata, method=method, k=k, radius=config.radius, percentile=percentile,
        library_key=config.library_key, spatial_key=spatial_key,
    )
    return adata.obsp["spatial_connectivities"]


def find_domains(
    adata: AnnData,
    config: DomainConfig,
    *,
    seed: int = 0,
    device: str = "auto",
    key_added: str = "domain",
    spatial_key: str = "spatial",
    progress: Callable[[int, float], None] | None = None,
) -> DomainResult:
    """Cluster ``adata`` into spatial domains.

    Writes ``obs[key_added]`` (categorical), ``obsm['X_<method>']`` for the spatial models, the
    graph in ``obsp['spatial_connectivities']``/``['spatial_distances']`` and the settings and run
    facts in ``uns[key_added]``.
    """
    if spatial_key not in adata.obsm and config.method in SPATIAL_METHODS:
        raise KeyError(f"obsm['{spatial_key}'] not found: {config.method} needs cell coordinates")
    start = time.perf_counter()
    x = representation(adata, config, seed=seed)
    info: dict[str, float] = {"n_features": float(x.shape[1])}
    embedding: np.ndarray | None = None
    head_input = x
    covariance = _DEFAULTS[config.method][3]
    if config.method in SPATIAL_METHODS:
        adjacency = _graph(adata, config, spatial_key)
        info["mean_degree"] = float(adata.uns["spatial_neighbors"]["mean_degree"])
        embedding = _spatial_model(x, adjacency, config, seed=seed, device=device, progress=progress, info=info)
        adata.obsm[f"X_{config.method}"] = embedding
        head_input = embedding
        if config.method == "graphst":  # upstream clusters PCA(20) of the GraphST embedding
            head_input = heads.pca(embedding, config.pca_components, seed=seed)
    start_head = time.perf_counter()
    result = heads.cluster(
        head_input, config.resolved_head, config.n_domains, resolution=config.resolution, seed=seed,
        **_head_options(config, covariance),
    )
    info.update(result.info)
    info["n_found"] = float(result.n_found)
    info["model_s"] = start_head - start
    info["head_s"] = time.perf_counter() - start_head
    adata.obs[key_added] = pd.Categorical(result.labels.astype(str), categories=sorted({str(v) for v in result.labels}, key=int))
    adata.uns[key_added] = {"params": {k: v for k, v in asdict(config).items() if v is not None}, "seed": seed, "info": info}
    log.info("%s: %d domains in %.1f s", config.method, result.n_found, time.perf_counter() - start)
    return DomainResult(result.labels, embedding, info)


def _head_options(config: DomainConfig, covariance: str) -> dict[str, Any]:
    if config.resolved_head != "gmm":
        return {}
    # CellCharter keeps the best of several mixture runs (the study: max_runs=5)
    return {"covariance": covariance, "n_init": 5 if config.method == "cellcharter" else 1}


def _spatial_model(x, adjacency, config: DomainConfig, *, seed, device, progress, info) -> np.ndarray:
    if config.method == "cellcharter":
        from .cellcharter import aggregate_neighbors

        return aggregate_neighbors(x, adjacency, n_layers=config.n_layers)
    overrides: dict[str, Any] = {
        k: v for k, v in (("epochs", config.epochs), ("learning_rate", config.learning_rate)) if v is not None
    }
    if config.method == "stagate":
        from .stagate import STAGATEConfig, fit_stagate

        fit = fit_stagate(x, adjacency, replace(STAGATEConfig(), **overrides), seed=seed, device=device, progress=progress)
    else:
        from .graphst import GraphSTConfig, fit_graphst

        overrides.update({k: v for k, v in (("alpha", config.alpha), ("beta", config.beta)) if v is not None})
        fit = fit_graphst(x, adjacency, replace(GraphSTConfig(), **overrides), seed=seed, device=device, progress=progress)
    info["train_s"] = fit.seconds
    info["epochs"] = float(len(fit.losses))
    info["final_loss"] = float(fit.losses[-1]) if fit.losses else float("nan")
    return fit.embedding


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
