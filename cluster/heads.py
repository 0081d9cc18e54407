"""Clustering heads: the last step of every spatial-domain method, an embedding cut into domains.

The published methods differ less in their heads than their code suggests, so one module serves
them all and the comparison isolates the representation:

* **Gaussian mixture** (:func:`gmm`) stands in for R ``mclust``, which STAGATE and GraphST call
  through rpy2 with model ``EEE``. Pulling R into a Ray worker for one EM fit is a heavy price; a
  scikit-learn mixture with the same covariance model is the same likelihood.
* **k-means** (:func:`kmeans`) is the cheapest baseline head.
* **Leiden** (:func:`leiden`) on a kNN graph of the embedding, the scanpy route. It has no
  ``n_domains`` argument, so :func:`search_resolution` finds a resolution that yields it, and the
  kNN graph is built once and shared by every resolution tried.

Each head is also a small frozen dataclass of its options, light, in :mod:`cluster.settings`
(:class:`~cluster.settings.GaussianMixtureHead`, :class:`~cluster.settings.KMeansHead`,
:class:`~cluster.settings.LeidenHead`), registered in :data:`cluster.HEADS` under the name a
method's ``head`` setting gives it; its ``cut`` calls the functions here and returns a
:class:`HeadResult`, and :func:`cluster` does the same from a name. All labels are relabelled by
cluster size (0 = largest), so that two runs that agree up to label permutation also agree as
arrays, and plots keep their colours.

Everything here scales to 10^5-10^6 cells: the kNN graph is sparse, and nothing builds an n x n
dense matrix.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from .registry import HEADS
from .settings import Covariance

# Above this many cells k-means switches to mini-batches: full Lloyd passes over 10^6 cells and
# n_init restarts cost minutes, while mini-batch centroids land within noise of them for domains.
MINIBATCH_ABOVE = 200_000
# Sparse inputs up to this many entries are densified for an exact (centred) PCA.
_DENSIFY_MAX = 50_000_000


@dataclass(frozen=True, eq=False)  # eq=False: array fields make the generated __eq__ ambiguous
class ResolutionSearch:
    """Outcome of :func:`search_resolution`.

    ``reached`` is False when no resolution tried gave ``n_domains``; ``labels`` and
    ``resolution`` are then those of the closest count found, for the caller to record.
    """

    labels: np.ndarray
    resolution: float
    n_found: int
    reached: bool
    trials: tuple[tuple[float, int], ...]  # (resolution, clusters found), in the order tried


@dataclass(frozen=True, eq=False)
class HeadResult:
    """Labels from :func:`cluster` with what it took to get them (``info``: resolution, reached...)."""

    labels: np.ndarray
    method: str
    n_found: int
    info: dict[str, float] = field(default_factory=dict)


# --- validation -------------------------------------------------------------------------------


def _as_features(x: Any, *, allow_sparse: bool = False) -> np.ndarray | sp.csr_matrix:
    """``x`` as a 2-D float matrix with finite values, or a ValueError saying what is wrong."""
    if sp.issparse(x):
        if not allow_sparse:
            x = x.toarray()
        else:
            x = sp.csr_matrix(x, dtype=np.float64 if x.dtype == np.float64 else np.float32)
            values = x.data
    if not sp.issparse(x):
        x = np.asarray(x)
        if x.dtype.kind not in "fiub":
            raise ValueError(f"x must be numeric, got dtype {x.dtype}")
        if x.dtype.kind != "f":
            x = x.astype(np.float32)
        values = x
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (cells x features), got shape {x.shape}")
    if x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"x must have at least 2 cells and 1 feature, got shape {x.shape}")
    if not np.isfinite(values).all():
        n_nan = int(np.isnan(values).sum())
        what = f"{n_nan} NaN" if n_nan else "infinite"
        raise ValueError(f"x contains {what} values; impute or drop those cells before clustering")
    return x


def _check_n_domains(n_domains: Any, n_cells: int) -> int:
    if n_domains is None or isinstance(n_domains, bool) or not float(n_domains).is_integer():
        raise ValueError(f"n_domains must be an integer, got {n_domains!r}")
    n_domains = int(n_domains)
    if not 2 <= n_domains <= n_cells:
        raise ValueError(f"n_domains must be between 2 and the number of cells ({n_cells}), got {n_domains}")
    return n_domains


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Labels 0..k-1 by decreasing cluster size; ties keep the original order (stable)."""
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    return rank[inverse.ravel()]


def _drop_constant_columns(x: np.ndarray) -> np.ndarray:
    # A constant column carries no information for clustering, and its zero variance is what makes
    # EM covariances singular; dropping it changes no likelihood ratio between components.
    varying = np.ptp(x, axis=0) > 0
    if not varying.any():
        raise ValueError("x is constant (every column has a single value): there is nothing to cluster")
    return x if varying.all() else x[:, varying]


# --- heads ------------------------------------------------------------------------------------


def gmm(
    x: Any,
    n_domains: int,
    *,
    covariance: Covariance = "tied",
    seed: int = 0,
    n_init: int = 1,
    max_iter: int = 100,
    reg_covar: float = 1e-6,
) -> np.ndarray:
    """Gaussian-mixture domains: the Python stand-in for R ``mclust``.

    STAGATE (on its 30-d embedding) and GraphST (on PCA(20) of its embedding, see :func:`pca`) call
    ``Mclust(x, G=n_domains, modelNames="EEE")``. In mclust's naming EEE is *ellipsoidal, equal
    volume, shape and orientation*: one full covariance matrix shared by all components, which is
    scikit-learn's ``covariance_type="tied"`` (the default here). ``"full"`` is mclust ``VVV``, one
    unconstrained covariance per component, the choice of CellCharter; ``"diag"`` is ``VVI``.

    Differences from mclust, which keep results close but not identical:

    * mclust initialises EM from model-based hierarchical agglomeration; we initialise from
      k-means (scikit-learn's default), ``n_init`` times with the best likelihood kept. k-means
      can cut across strongly elongated clusters that lie side by side, and EM then stays in that
      basin (k-means restarts agree, so ``n_init`` does not help): on such synthetic data the tied
      fit reached ARI 0.43 where EM started from the true means reached 1.0 at a far higher
      likelihood. Well-separated clusters, elongated or not, are recovered.
    * constant columns are dropped first (they only make covariances singular), and ``reg_covar``
      is added to the covariance diagonal *relative to the mean feature variance*, so it is equally
      small for embeddings on any scale. If a fit still fails on an ill-conditioned covariance the
      regularisation is raised tenfold and the fit retried (CellCharter's mixture does the same).
    * EM stops after ``max_iter`` iterations (scikit-learn's and CellCharter's 100) or when the
      per-cell lower bound moves less than 1e-3.

    Returns int labels, 0 = the largest domain. A component that ends up empty is dropped, so
    fewer than ``n_domains`` labels can come back on degenerate data.
    """
    from sklearn.mixture import GaussianMixture

    x = _as_features(x)
    n_domains = _check_n_domains(n_domains, x.shape[0])
    if covariance not in ("tied", "full", "diag"):
        raise ValueError(f"covariance must be 'tied', 'full' or 'diag', got {covariance!r}")
    # float64: covariance Cholesky factors in float32 fail on embeddings with correlated columns.
    x = _drop_constant_columns(np.asarray(x, dtype=np.float64))
    scale = float(np.mean(np.var(x, axis=0)))
    reg = reg_covar * scale
    for _attempt in range(4):
        model = GaussianMixture(
            n_components=n_domains, covariance_type=covariance, reg_covar=reg, max_iter=max_iter,
            n_init=n_init, random_state=seed,
        )
        try:
            with warnings.catch_warnings():
                # Non-convergence within max_iter is expected on large data and is not an error
                # for a head whose labels are all we keep.
                warnings.filterwarnings("ignore", message=".*did not converge.*")
                labels = model.fit_predict(x)
            return _relabel_by_size(labels)
        except ValueError as error:
            if "ill-defined empirical covariance" not in str(error):
                raise
            reg *= 10
    raise ValueError(
        f"the Gaussian mixture failed on singular covariances even with reg_covar={reg / scale:.0e} "
        "(relative); x may have fewer distinct points than n_domains"
    )


def kmeans(x: Any, n_domains: int, *, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """k-means domains (labels 0 = largest).

    Above ``MINIBATCH_ABOVE`` (200k) cells this is :class:`~sklearn.cluster.MiniBatchKMeans`
    (batches of 4096, ``n_init`` k-means++ starts), which costs a fraction of full Lloyd passes
    and gives centroids within noise of them at that size.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x = _as_features(x)
    n_domains = _check_n_domains(n_domains, x.shape[0])
    if x.shape[0] > MINIBATCH_ABOVE:
        model = MiniBatchKMeans(n_clusters=n_domains, n_init=n_init, batch_size=4096, random_state=seed)
    else:
        model = KMeans(n_clusters=n_domains, n_init=n_init, random_state=seed)
    return _relabel_by_size(model.fit_predict(x))


def knn_graph(x: Any, n_neighbors: int = 15, *, seed: int = 0) -> sp.csr_matrix:
    """Symmetric kNN connectivities of ``x`` for :func:`leiden` (build once, reuse per resolution).

    Each cell links to its ``n_neighbors`` nearest other cells (Euclidean, exact search); the
    graph is the union of those links (``max(A, A.T)``) with every weight 1. scanpy weights edges
    by UMAP's fuzzy memberships instead; on embeddings the two give near-identical partitions, and
    binary weights keep the resolution scale independent of the distance scale.

    ``seed`` is unused by the exact search; it is accepted so that an approximate backend can take
    it without changing call sites. At 10^6 cells in high dimension the exact search dominates the
    cost of a Leiden head: reduce with :func:`pca` first.
    """
    from sklearn.neighbors import NearestNeighbors

    del seed
    x = _as_features(x, allow_sparse=True)
    n_cells = x.shape[0]
    if isinstance(n_neighbors, bool) or int(n_neighbors) != n_neighbors or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be a positive integer, got {n_neighbors!r}")
    n_neighbors = min(int(n_neighbors), n_cells - 1)
    # kneighbors_graph without X excludes each cell from its own neighbours, even among duplicates.
    graph = NearestNeighbors(n_neighbors=n_neighbors).fit(x).kneighbors_graph(mode="connectivity")
    graph = graph.maximum(graph.T).tocsr()
    graph.data[:] = 1.0
    return graph


def _is_graph(graph_or_x: Any) -> bool:
    # A square sparse matrix is a graph; an embedding is dense (or sparse but not square).
    return sp.issparse(graph_or_x) and graph_or_x.shape[0] == graph_or_x.shape[1]


def _as_igraph(graph_or_x: Any, n_neighbors: int):
    import igraph as ig

    if _is_graph(graph_or_x):
        graph = sp.csr_matrix(graph_or_x)
        if graph.data.size and not np.isfinite(graph.data).all():
            raise ValueError("the graph has NaN or infinite edge weights")
        graph = graph.maximum(graph.T)  # Leiden's modularity is for undirected graphs
    else:
        graph = knn_graph(graph_or_x, n_neighbors)
    upper = sp.triu(graph, k=1).tocoo()  # self-loops dropped: they only add a constant to quality
    g = ig.Graph(n=graph.shape[0], edges=np.column_stack([upper.row, upper.col]), directed=False)
    g.es["weight"] = upper.data.astype(float)
    return g


def _run_leiden(g, resolution: float, seed: int, n_iterations: int) -> np.ndarray:
    import leidenalg

    partition = leidenalg.find_partition(
        g, leidenalg.RBConfigurationVertexPartition, weights="weight",
        resolution_parameter=float(resolution), seed=int(seed), n_iterations=n_iterations,
    )
    return _relabel_by_size(np.asarray(partition.membership))


def leiden(
    graph_or_x: Any,
    resolution: float = 1.0,
    *,
    n_neighbors: int = 15,
    seed: int = 0,
    n_iterations: int = -1,
) -> np.ndarray:
    """Leiden communities (``RBConfigurationVertexPartition``, scanpy's default) as labels.

    ``graph_or_x`` is either a precomputed square sparse graph (e.g. :func:`knn_graph`, taken as
    undirected, weights kept) or an embedding, from which a ``n_neighbors`` kNN graph is built.
    ``n_iterations=-1`` iterates until the partition stops changing (scanpy uses 2). The result is
    deterministic for a given ``seed``.
    """
    if not resolution > 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    return _run_leiden(_as_igraph(graph_or_x, n_neighbors), resolution, seed, n_iterations)


def search_resolution(
    graph_or_x: Any,
    n_domains: int,
    *,
    n_neighbors: int = 15,
    seed: int = 0,
    low: float = 0.01,
    high: float = 3.0,
    max_iter: int = 20,
    tol: float = 1e-3,
    n_iterations: int = -1,
) -> ResolutionSearch:
    """Find a Leiden resolution that gives ``n_domains`` clusters, by bisection.

    The cluster count grows with the resolution, nearly monotonically, so bisection on
    ``[low, high]`` finds the target in a handful of Leiden runs (typically 5-10, at most
    ``max_iter``). GraphST instead sweeps the resolution down from 3.0 to 0.1 in steps of 0.01 (up
    to 290 runs, with an assertion if nothing fits) and SDMBench steps and halves its step; both
    hit the *largest* fitting resolution, bisection hits *some* fitting resolution. Where the count
    is flat over a range the partitions there are near-identical, so the difference is small.

    Bisection is geometric (on log-resolution): counts change as much between 0.01 and 0.1 as
    between 0.3 and 3. The count is not strictly monotone, so the search can jump over the target
    (4 at one resolution, 6 at a slightly higher one); it then stops once the bracket is narrower
    than ``tol`` (relative) and returns the closest count found with ``reached=False``. It never
    raises for an unreachable target: the caller records ``reached`` and ``n_found``.

    ``n_iterations`` is passed to every Leiden run (:func:`leiden`); 2, scanpy's default, roughly
    halves the cost of a run on 10^5 cells at nearly the same partition.
    """
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low}, high={high}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    n_domains = _check_n_domains(n_domains, np.shape(graph_or_x)[0])
    g = _as_igraph(graph_or_x, n_neighbors)
    trials: list[tuple[float, int]] = []
    best: tuple[int, float, np.ndarray] | None = None  # (distance to target, resolution, labels)
    lo, hi = math.log(low), math.log(high)
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        resolution = math.exp(mid)
        labels = _run_leiden(g, resolution, seed, n_iterations)
        found = int(labels.max()) + 1
        trials.append((resolution, found))
        if best is None or abs(found - n_domains) < best[0]:
            best = (abs(found - n_domains), resolution, labels)
        if found == n_domains or hi - lo < tol:
            break
        if found < n_domains:
            lo = mid
        else:
            hi = mid
    assert best is not None
    distance, resolution, labels = best
    return ResolutionSearch(
        labels=labels, resolution=resolution, n_found=int(labels.max()) + 1, reached=distance == 0, trials=tuple(trials)
    )


def pca(x: Any, n_components: int = 20, *, seed: int = 0) -> np.ndarray:
    """Principal components of ``x`` (float32, cells x components).

    GraphST clusters ``PCA(n_components=20)`` of its embedding rather than the embedding itself
    (``GraphST.utils.clustering``); the baselines use it to bring expression down to a size the
    mixture's covariances can be estimated on. ``n_components`` is capped at
    ``min(n_features, n_cells - 1)``. Sparse input is densified when it is small (exact, centred
    PCA); a large sparse matrix goes through :class:`~sklearn.decomposition.TruncatedSVD`, which
    does not centre the data (densifying 10^6 cells x genes would not fit).
    """
    from sklearn.decomposition import PCA, TruncatedSVD

    x = _as_features(x, allow_sparse=True)
    n_cells, n_features = x.shape
    if isinstance(n_components, bool) or int(n_components) != n_components or n_components < 1:
        raise ValueError(f"n_components must be a positive integer, got {n_components!r}")
    n_components = min(int(n_components), n_features, n_cells - 1)
    if sp.issparse(x) and n_cells * n_features > _DENSIFY_MAX and n_components < n_features:
        return TruncatedSVD(n_components, random_state=seed).fit_transform(x).astype(np.float32)
    if sp.issparse(x):
        x = x.toarray()
    return PCA(n_components, random_state=seed).fit_transform(x).astype(np.float32)


def cluster(
    x: Any,
    method: str,
    n_domains: int | None = None,
    *,
    resolution: float | None = None,
    seed: int = 0,
    **options: Any,
) -> HeadResult:
    """Cut ``x`` into domains with one head: ``"gmm"``, ``"kmeans"`` or ``"leiden"`` (any name in
    :data:`cluster.HEADS`).

    gmm and kmeans need ``n_domains``. Leiden runs once at ``resolution`` when one is given (a
    fixed resolution wins over ``n_domains``; ``info['reached']`` then says whether it happened to
    give ``n_domains``), and otherwise searches a resolution for ``n_domains``
    (:func:`search_resolution`). ``options`` are the head's fields (``covariance``, ``n_init``,
    ``n_neighbors``, ``low``/``high``...). ``info`` holds numbers only (``reached`` as 0/1), so it
    drops straight into a results table.
    """
    head = HEADS.get(method)
    if head is None:
        raise ValueError(f"unknown clustering method {method!r}; choose one of {', '.join(HEADS.names())}")
    return head(**options).cut(x, n_domains, resolution=resolution, seed=seed)
