"""Spatial neighbour graphs: which cells count as each other's neighbours in tissue space.

Every spatial-domain method here (STAGATE, GraphST, graph smoothing, the PAS metric) starts from a
graph over cell coordinates, and the choice of graph changes the result as much as the model does.
This module builds the three graphs the literature uses, with squidpy's conventions so that outputs
are interchangeable with ``squidpy.gr.spatial_neighbors``:

- ``radius``: every pair closer than a fixed distance (STAGATE's ``Cal_Spatial_Net(model='Radius')``;
  natural for regular arrays such as Visium where the spot pitch is known);
- ``knn``: each cell's ``k`` nearest cells (STAGATE's KNN net, GraphST); adapts to density, so it
  suits imaging platforms (MERFISH, Xenium) whose cell density varies across the tissue;
- ``delaunay``: the Delaunay triangulation (squidpy ``delaunay=True``), parameter-free, with an
  optional ``percentile`` cut for the long edges that bridge holes and the tissue border.

Graphs are always symmetric, self-loop free CSR matrices built from neighbour searches
(``scipy.spatial.cKDTree``, ``scipy.spatial.Delaunay``): no n x n array is ever formed, so 200,000
cells take seconds. ``groups`` (slice or library ids) keeps serial sections apart: their
coordinates usually share one frame, and a cell must not borrow neighbours from another section.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import scipy.sparse as sp
from scipy.spatial import Delaunay, QhullError, cKDTree

from .settings import GraphMethod

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)


def neighbor_graph(
    coords: np.ndarray,
    *,
    method: GraphMethod = "knn",
    k: int = 6,
    radius: float | None = None,
    percentile: float | None = None,
    groups: np.ndarray | None = None,
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Spatial neighbour graph of ``coords`` (n cells x 2 or 3 dimensions).

    Parameters
    ----------
    method
        ``"knn"``: the ``k`` nearest other cells; ``"radius"``: all cells within ``radius``
        (inclusive); ``"delaunay"``: edges of the Delaunay triangulation.
    k
        Neighbours per cell for ``knn``; a group with fewer than ``k + 1`` cells links each cell to
        all others in it.
    radius
        Distance cut-off for ``radius``, in the units of ``coords``; required there, rejected
        elsewhere.
    percentile
        ``delaunay`` only (squidpy's ``percentile``): drop edges longer than this percentile of
        the edge lengths, computed per group over the stored entries as squidpy does.
    groups
        Optional label per cell (e.g. slice ids). The graph is built within each group and never
        links two groups, so it is block-diagonal up to the (preserved) row order.

    Returns
    -------
    ``(connectivities, distances)``: n x n ``float32`` CSR matrices with the same sparsity pattern,
    sorted indices and no self-loops. Connectivities are 1 for every edge; distances hold the
    Euclidean edge length (an explicitly stored 0.0 for cells at identical coordinates, so the two
    patterns never diverge). Both are symmetric, the union of the directed edges, so a knn cell may
    have more than ``k`` neighbours.
    """
    x = _check_coords(coords)
    n = x.shape[0]
    if method not in get_args(GraphMethod):
        raise ValueError(f"unknown graph method {method!r}; choose one of {', '.join(get_args(GraphMethod))}")
    if method == "knn" and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
        raise ValueError(f"k must be an integer >= 1 for method='knn', got {k!r}")
    if method == "radius":
        if radius is None:
            raise ValueError("method='radius' needs radius= (the neighbour cut-off in coordinate units)")
        if not np.isfinite(radius) or radius <= 0:
            raise ValueError(f"radius must be a finite positive distance, got {radius!r}")
    elif radius is not None:
        # Silently ignoring it would hide a config mistake (e.g. radius meant for a radius graph).
        raise ValueError(f"radius is only used by method='radius', not method={method!r}")
    if percentile is not None:
        if method != "delaunay":
            raise ValueError(f"percentile is only used by method='delaunay', not method={method!r}")
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must lie in (0, 100], got {percentile!r}")

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for members in _group_members(groups, n):
        sub = x[members]
        if method == "knn":
            i, j = _knn_edges(sub, k)
        elif method == "radius":
            pairs = cKDTree(sub).query_pairs(float(radius), output_type="ndarray")
            i, j = pairs[:, 0], pairs[:, 1]
        else:
            i, j = _delaunay_edges(sub, percentile)
        # Local (within-group) indices back to original rows: row order is never permuted.
        rows.append(members[i])
        cols.append(members[j])
    return _assemble(x, np.concatenate(rows), np.concatenate(cols))


def spatial_neighbors(
    adata: AnnData,
    *,
    method: GraphMethod = "knn",
    k: int = 6,
    radius: float | None = None,
    percentile: float | None = None,
    library_key: str | None = None,
    spatial_key: str = "spatial",
    key_added: str = "spatial",
) -> dict[str, Any]:
    """Build :func:`neighbor_graph` from ``adata.obsm[spatial_key]`` and store it squidpy-style.

    Writes ``adata.obsp[f"{key_added}_connectivities"]``, ``adata.obsp[f"{key_added}_distances"]``
    and ``adata.uns[f"{key_added}_neighbors"]`` (keys of both matrices, the parameters, the mean
    degree and the number of isolated cells), and returns that ``uns`` entry. ``library_key``
    names an ``obs`` column (slice / library id) within which the graph is built.
    """
    if spatial_key not in adata.obsm:
        raise KeyError(
            f"obsm['{spatial_key}'] not found (obsm has: {', '.join(map(str, adata.obsm)) or 'nothing'}); "
            "store the cell coordinates there or pass spatial_key= naming the obsm entry that holds them"
        )
    groups = None
    if library_key is not None:
        if library_key not in adata.obs:
            raise KeyError(
                f"library_key column '{library_key}' not found in obs "
                f"(columns: {', '.join(map(str, adata.obs.columns)) or 'none'}); "
                "pass the obs column holding the slice / library id, or library_key=None for one section"
            )
        groups = adata.obs[library_key].to_numpy()
    coords = np.asarray(adata.obsm[spatial_key])
    conn, dist = neighbor_graph(coords, method=method, k=k, radius=radius, percentile=percentile, groups=groups)

    degree = np.diff(conn.indptr)
    conn_key, dist_key = f"{key_added}_connectivities", f"{key_added}_distances"
    params = {
        "method": method,
        "k": int(k) if method == "knn" else None,
        "radius": radius,
        "percentile": percentile,
        "library_key": library_key,
        "spatial_key": spatial_key,
    }
    info: dict[str, Any] = {
        "connectivities_key": conn_key,
        "distances_key": dist_key,
        # None cannot be written to h5ad by every supported anndata version: unused ones are left out.
        "params": {key: value for key, value in params.items() if value is not None},
        "mean_degree": float(degree.mean()) if degree.size else 0.0,
        "isolated": int((degree == 0).sum()),
    }
    adata.obsp[conn_key] = conn
    adata.obsp[dist_key] = dist
    adata.uns[f"{key_added}_neighbors"] = info

    logger.info("%s spatial graph: %d cells, mean degree %.2f", method, adata.n_obs, info["mean_degree"])
    if info["isolated"]:
        logger.warning(
            "%d of %d cells have no spatial neighbour; they will be clustered on expression alone "
            "(raise radius / percentile, or check for stray coordinates)",
            info["isolated"],
            adata.n_obs,
        )
    return info


def mean_degree(connectivities: sp.spmatrix | sp.sparray | np.ndarray) -> float:
    """Mean number of neighbours per cell (non-zero entries per row)."""
    n = connectivities.shape[0]
    if n == 0:
        return 0.0
    nonzero = connectivities.count_nonzero() if sp.issparse(connectivities) else np.count_nonzero(connectivities)
    return float(nonzero) / n


def _check_coords(coords: Any) -> np.ndarray:
    """Coordinates as a float64 (n, 2|3) array, or a ValueError saying what is wrong."""
    try:
        x = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"coordinates must be numeric, got {type(coords).__name__}: {err}") from None
    if x.ndim != 2 or x.shape[1] not in (2, 3):
        raise ValueError(f"coordinates must have shape (n_cells, 2) or (n_cells, 3), got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError("coordinates are empty: no cells")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"{bad} cells have NaN or infinite coordinates; drop or fix them first")
    return x


def _group_members(groups: Any, n: int) -> list[np.ndarray]:
    """Original row indices of each group (all rows when ``groups`` is None)."""
    if groups is None:
        return [np.arange(n)]
    import pandas as pd

    # Object dtype lets factorize see None / NaN as missing for strings, numbers and categoricals.
    values = np.asarray(groups, dtype=object)
    if values.ndim != 1 or len(values) != n:
        raise ValueError(f"groups must be one label per cell: got shape {values.shape} for {n} cells")
    codes, _ = pd.factorize(values)
    if (codes < 0).any():
        raise ValueError(f"{int((codes < 0).sum())} cells have a missing group; give every cell one")
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    return np.split(order, bounds)


def _knn(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and distances (n, k) of each point's k nearest other points; needs k < n.

    Self is dropped by index, not by rank: with duplicated coordinates the query may rank a twin
    before the point itself, or return k + 1 twins without it (then the first k are kept).
    """
    dist, idx = cKDTree(x).query(x, k=k + 1)
    is_self = idx == np.arange(len(x))[:, None]
    keep = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(idx, keep, axis=1), np.take_along_axis(dist, keep, axis=1)


def _knn_edges(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    k = min(k, n - 1)
    if k < 1:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    idx, _ = _knn(x, k)
    # Directed edges (cell -> its k nearest), as STAGATE's KNN net stores them. _assemble takes the
    # union with the reverse edges: GraphST symmetrises its KNN adjacency (adj + adj.T, clipped to
    # 1) and GNN message passing over a spatial graph assumes neighbourhood is mutual.
    return np.repeat(np.arange(n), k), idx.ravel()


def _delaunay_edges(x: np.ndarray, percentile: float | None) -> tuple[np.ndarray, np.ndarray]:
    n, dim = x.shape
    if n <= dim:
        # Too few points to triangulate; any edge among them is a Delaunay edge of a simplex.
        i, j = np.triu_indices(n, k=1)
    else:
        try:
            tri = Delaunay(x)
        except QhullError as err:
            raise ValueError(
                f"Delaunay triangulation failed on {n} cells (collinear or coplanar coordinates?); "
                f"use method='knn' or 'radius'. Qhull said: {str(err).splitlines()[0]}"
            ) from None
        indptr, indices = tri.vertex_neighbor_vertices
        i = np.repeat(np.arange(n), np.diff(indptr))
        j = indices.astype(np.intp)
        # Qhull leaves cells at an already-used position out of the triangulation; rather than
        # isolate them, give each its twin and the twin's neighbours, as a tiny jitter would.
        left_out, twin = tri.coplanar[:, 0].astype(np.intp), tri.coplanar[:, 2].astype(np.intp)
        if left_out.size:
            n_twin = np.diff(indptr)[twin]
            i = np.concatenate([i, left_out, np.repeat(left_out, n_twin)])
            j = np.concatenate([j, twin, np.concatenate([indices[indptr[t] : indptr[t + 1]] for t in twin])])
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        i, j = np.divmod(np.unique(lo[lo != hi].astype(np.int64) * n + hi[lo != hi]), n)
    if percentile is not None and i.size:
        length = np.linalg.norm(x[i] - x[j], axis=1)
        # Squidpy takes the percentile over the symmetric matrix, where each edge is stored twice.
        cut = np.percentile(np.repeat(length, 2), percentile)
        i, j = i[length <= cut], j[length <= cut]
    return i, j


def _assemble(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Symmetric, deduplicated, self-loop free CSR pair from directed edges."""
    n = x.shape[0]
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    keep = rows != cols
    rows, cols = rows[keep], cols[keep]
    # One sortable key per (row, col): np.unique both deduplicates and yields CSR order.
    key = np.unique(np.concatenate([rows * n + cols, cols * n + rows]))
    rows, cols = np.divmod(key, n)
    length = np.sqrt(((x[rows] - x[cols]) ** 2).sum(axis=1)).astype(np.float32)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    index_dtype = np.int32 if max(n, key.size) < np.iinfo(np.int32).max else np.int64
    indptr, cols = indptr.astype(index_dtype), cols.astype(index_dtype)
    # Built from (data, indices, indptr) directly, so the zero distances of coincident cells stay
    # stored and both matrices share one pattern.
    conn = sp.csr_matrix((np.ones(key.size, np.float32), cols, indptr), shape=(n, n))
    dist = sp.csr_matrix((length, cols.copy(), indptr.copy()), shape=(n, n))
    for matrix in (conn, dist):
        matrix.has_sorted_indices = True
    return conn, dist
