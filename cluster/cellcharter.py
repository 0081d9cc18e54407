"""CellCharter-style spatial domains (Varrone et al., Nat. Genet. 2024): neighbourhood rings + GMM.

CellCharter learns nothing spatial. It describes each cell by its own features next to the mean
features of the cells 1, 2, ..., L hops away in the spatial graph, and clusters that vector with a
full-covariance Gaussian mixture. A domain then is a region whose cells *and surroundings* look
alike, which is what separates tissue layers built from the same cell types in different
proportions, where the cells' own features alone cannot.

Following ``cellcharter.gr.aggregate_neighbors`` (``src/cellcharter/gr/_aggr.py``):

* the graph is binarised (edge weights and distances are ignored) and self-loops removed;
* layer l is a *ring*: the cells at exactly hop-distance l (reached by l steps, not by fewer),
  never the cell itself, not the cumulative ball;
* layers are aggregated by the mean, optionally also the variance (E[x^2] - E[x]^2);
* a cell whose ring is empty (an isolated cell, or a component too small to reach l hops) gets
  zeros there: upstream divides by the ring size with 1/0 set to 0, so do we;
* output blocks are ``[x, ring1 agg1, ring1 agg2, ..., ringL ...]``, float32.

The adjacency is used as given (row i lists i's neighbours), as upstream; pass a symmetric graph
(Delaunay, kNN union) for undirected rings.

Rings are built with sparse products, never a dense n x n: the frontier of layer l is the frontier
of layer l-1 times A, minus every cell already reached. On a planar graph of degree ~6, ring l has
~6l cells, so L=4 stores ~60 entries per cell: about a second at 10^5 cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from .heads import Covariance, _as_features, gmm

AGGREGATIONS: tuple[str, ...] = ("mean", "var")


def _binary_adjacency(adjacency: Any, n_cells: int) -> sp.csr_matrix:
    """The graph's 0/1 pattern without self-loops (what upstream's ``astype(bool)``, ``setdiag(0)`` do)."""
    if not sp.issparse(adjacency):
        adjacency = np.asarray(adjacency)
    if adjacency.ndim != 2 or adjacency.shape != (n_cells, n_cells):
        raise ValueError(f"adjacency must be cells x cells ({n_cells} x {n_cells}) to match x, got shape {adjacency.shape}")
    coo = sp.coo_matrix(adjacency)
    keep = (coo.row != coo.col) & (coo.data != 0)
    ones = np.ones(int(keep.sum()), dtype=np.float32)
    a = sp.csr_matrix((ones, (coo.row[keep], coo.col[keep])), shape=(n_cells, n_cells))
    a.sum_duplicates()
    a.data[:] = 1.0
    return a


def _binarise(m: sp.csr_matrix) -> sp.csr_matrix:
    m.data[:] = 1.0
    return m


def _rings(a: sp.csr_matrix, n_layers: int) -> list[sp.csr_matrix]:
    if n_layers == 0:
        return []
    reached = _binarise(a + sp.identity(a.shape[0], dtype=np.float32, format="csr"))
    frontier = a
    out = [frontier]
    for _ in range(1, n_layers):
        step = _binarise((frontier @ a).tocsr())
        # step - step*reached keeps the entries of step not reached before; all values are 0/1.
        frontier = (step - step.multiply(reached)).tocsr()
        frontier.eliminate_zeros()
        reached = (reached + frontier).tocsr()
        out.append(frontier)
    return out


def rings(adjacency: Any, n_layers: int) -> list[sp.csr_matrix]:
    """Binary sparse matrices R_1..R_L with R_l[i, j] = 1 iff j is exactly l hops from i."""
    return _rings(_binary_adjacency(adjacency, np.shape(adjacency)[0]), int(n_layers))


def aggregate_neighbors(
    x: Any,
    adjacency: Any,
    n_layers: int = 3,
    aggregations: Sequence[str] | str = ("mean",),
) -> np.ndarray:
    """CellCharter features: ``x`` next to its aggregates over the rings 1..``n_layers``.

    Parameters
    ----------
    x
        Cells x features (an embedding or PCA; sparse input is densified).
    adjacency
        Cells x cells spatial graph (e.g. ``obsp['spatial_connectivities']``); binarised.
    n_layers
        Rings to aggregate (CellCharter's default 3; the study used 4).
    aggregations
        ``"mean"`` and/or ``"var"``, applied to every ring in that order.

    Returns
    -------
    float32 array of width ``d * (1 + n_layers * len(aggregations))``.
    """
    x = np.asarray(_as_features(x), dtype=np.float64)  # float64: var = E[x^2] - E[x]^2 cancels
    n_cells, d = x.shape
    if isinstance(n_layers, bool) or int(n_layers) != n_layers or n_layers < 0:
        raise ValueError(f"n_layers must be a non-negative integer, got {n_layers!r}")
    aggregations = (aggregations,) if isinstance(aggregations, str) else tuple(aggregations)
    unknown = [a for a in aggregations if a not in AGGREGATIONS]
    if unknown or not aggregations:
        raise ValueError(f"aggregations must be a non-empty subset of {AGGREGATIONS}, got {aggregations!r}")
    a = _binary_adjacency(adjacency, n_cells)

    out = np.empty((n_cells, d * (1 + int(n_layers) * len(aggregations))), dtype=np.float32)
    out[:, :d] = x
    col = d
    squares = x * x if "var" in aggregations else None
    for ring in _rings(a, int(n_layers)):
        size = np.asarray(ring.sum(axis=1)).ravel()
        # An empty ring gives zeros, as upstream (1/0 -> 0).
        inv = np.divide(1.0, size, out=np.zeros_like(size, dtype=np.float64), where=size > 0)
        mean_op = sp.diags(inv) @ ring.astype(np.float64)
        mean = mean_op @ x
        for aggregation in aggregations:
            if aggregation == "mean":
                out[:, col : col + d] = mean
            else:
                # Clipped at 0 (upstream is not): cancellation leaves tiny negatives on uniform rings.
                out[:, col : col + d] = np.maximum(mean_op @ squares - mean * mean, 0.0)
            col += d
    return out


def neighbourhood_mean(x: Any, adjacency: Any) -> np.ndarray:
    """Each cell's features averaged with its neighbours' (the closed neighbourhood, equal
    weights; the graph binarised), float32: what the ``neighbour-average`` baseline clusters.

    The cell itself counts once, so an isolated cell keeps its own features; a domain defined by a
    mixture of cell types shows in this mean once the neighbourhood holds enough cells.
    """
    x = np.asarray(_as_features(x), dtype=np.float64)
    a = _binary_adjacency(adjacency, x.shape[0])
    closed = (a + sp.identity(x.shape[0], dtype=np.float32, format="csr")).tocsr()
    size = np.asarray(closed.sum(axis=1), dtype=np.float64).ravel()
    return np.asarray(sp.diags(1.0 / size) @ (closed @ x), dtype=np.float32)


def cellcharter(
    x: Any,
    adjacency: Any,
    n_domains: int,
    *,
    n_layers: int = 3,
    aggregations: Sequence[str] | str = ("mean",),
    seed: int = 0,
    covariance: Covariance = "full",
    n_init: int = 10,
    max_iter: int = 100,
) -> np.ndarray:
    """CellCharter domains: :func:`aggregate_neighbors`, then a Gaussian mixture (0 = largest).

    With the number of clusters fixed, CellCharter's ``ClusterAutoK`` fits its full-covariance
    mixture (k-means initialised, regularisation 1e-6, at most 100 EM steps) ``max_runs`` times
    (default 10) with seeds ``seed, seed+1, ...`` and keeps the lowest negative log-likelihood;
    scikit-learn's ``n_init`` does the same within one estimator. Its automatic choice of K by
    cluster stability across runs is not reproduced: the benchmark fixes K to the annotation.

    The study ran ``n_layers=4`` on 64-d SSL embeddings over a Delaunay graph; CellCharter's
    default is 3. A full covariance on d*(1+L) dimensions costs O(n K (dL)^2) per EM step: at
    10^6 cells lower ``n_init`` or reduce ``x`` with :func:`cluster.heads.pca` first.
    """
    features = aggregate_neighbors(x, adjacency, n_layers=n_layers, aggregations=aggregations)
    return gmm(features, n_domains, covariance=covariance, seed=seed, n_init=n_init, max_iter=max_iter)
