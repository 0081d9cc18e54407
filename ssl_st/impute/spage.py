"""SpaGE-style mapping: principal vectors shared by both domains, then a cosine kNN in that space.

Follows ``SpaGE/main.py`` of Abdelaal et al. (2020), which builds on PRECISE (Mourragui et al. 2019):

1. z-score every shared gene within each dataset (its own mean and standard deviation);
2. PCA of each z-scored dataset (``n_pv`` components; both bases have orthonormal rows; computed by
   ``eigh`` of the genes x genes scatter matrix rather than PRECISE's sklearn PCA);
3. SVD of the cross-product of the two bases, ``P_ref P_sp^T = U diag(s) V^T``; the principal vectors
   are ``U^T P_ref`` (reference side) and ``V P_sp`` (spatial side), paired, with cosine ``s_i``;
4. keep the pairs with cosine similarity > 0.3 (SpaGE's ``Effective_n_pv``);
5. project both z-scored datasets onto the kept reference-side principal vectors (SpaGE projects on
   ``source_components_``, and its source is the scRNA-seq data);
6. for each spatial cell, its ``k`` nearest reference cells by cosine distance; weights
   ``1 - d_i / sum_j d_j`` over the neighbours with ``d < 1``, divided by their number minus one (so
   the weights sum to one).

The weights come back as a sparse (spatial x reference) matrix with rows summing to one, so that the
caller averages any reference quantity (log expression, depth fraction) with the same neighbours.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

# SpaGE keeps principal-vector pairs whose cosine similarity exceeds this value.
MIN_PV_SIMILARITY = 0.3


def zscore(x: np.ndarray) -> np.ndarray:
    """Per-gene z-score (ddof=0, like ``scipy.stats.zscore``); constant genes become zeros, not NaN."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def pca_components(x: np.ndarray, n_components: int) -> np.ndarray:
    """Top principal axes (``n_components x genes``, orthonormal rows) of the centred rows of ``x``.

    From the eigendecomposition of the genes x genes scatter matrix: the same axes as a PCA by SVD of
    the cells x genes matrix, but a panel has only a few hundred genes, so this is one small ``eigh``
    (and much less exposed to BLAS thread contention than a full SVD of 10^4 cells). The signs of the
    axes are arbitrary, which changes neither the principal vectors' span nor cosine distances.
    """
    centred = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(eigenvalues)[::-1][:n_components]
    return eigenvectors[:, order].T


def principal_vectors(ref: np.ndarray, spatial: np.ndarray, n_pv: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PRECISE principal vectors of two z-scored matrices on the same genes.

    Returns the reference-side vectors, the spatial-side vectors (both ``n_pv x genes``) and the
    cosine similarity of each pair (descending).
    """
    p_ref, p_sp = pca_components(ref, n_pv), pca_components(spatial, n_pv)
    u, similarity, vt = np.linalg.svd(p_ref @ p_sp.T)
    return u.T @ p_ref, vt @ p_sp, similarity


def knn_weights(distances: np.ndarray, indices: np.ndarray, n_reference: int) -> sp.csr_matrix:
    """SpaGE's neighbour weights as a sparse matrix whose rows sum to one (vectorised).

    SpaGE divides by ``n_valid - 1``, which is 0/0 when a single neighbour is valid (weight
    ``1 - d/d = 0``) and leaves an all-zero row when none is valid (every cosine distance >= 1). Both
    fall back here to equal weights over the valid neighbours, or over all ``k`` if none is valid,
    so that every spatial cell receives an estimate.
    """
    valid = distances < 1.0
    total = np.where(valid, distances, 0.0).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(valid, 1.0 - distances / total, 0.0)
    w = np.nan_to_num(w, nan=0.0)
    row_sum = w.sum(axis=1, keepdims=True)
    degenerate = (row_sum <= 0).ravel()
    if degenerate.any():
        fallback = valid[degenerate] | ~valid[degenerate].any(axis=1, keepdims=True)
        w[degenerate] = fallback.astype(float)
        row_sum = w.sum(axis=1, keepdims=True)
    w /= row_sum  # equals SpaGE's division by n_valid - 1 wherever that is defined
    n, k = indices.shape
    return sp.csr_matrix(
        (w.ravel().astype(np.float32), indices.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n_reference)
    )


def spage_weights(
    ref_log: np.ndarray, spatial_log: np.ndarray, *, n_pv: int, k: int
) -> tuple[sp.csr_matrix, dict[str, Any]]:
    """Spatial-cell x reference-cell weights from log-normalised training genes of both datasets."""
    ref_z, sp_z = zscore(ref_log), zscore(spatial_log)
    n_components = int(min(n_pv, ref_z.shape[1], ref_z.shape[0], sp_z.shape[0]))
    # Single-threaded BLAS: these are panel-sized (genes x genes) problems, where threads buy nothing
    # and, next to torch's own thread pool on a busy machine, made one small eigh take seconds.
    with threadpool_limits(limits=1, user_api="blas"):
        pv_ref, _, similarity = principal_vectors(ref_z, sp_z, n_components)
    # at least one vector, where SpaGE would fail on an empty projection
    effective = max(1, int((similarity > MIN_PV_SIMILARITY).sum()))
    basis = pv_ref[:effective].T.astype(np.float32)
    n_neighbours = int(min(k, ref_z.shape[0]))
    knn = NearestNeighbors(n_neighbors=n_neighbours, metric="cosine", algorithm="brute").fit(ref_z @ basis)
    distances, indices = knn.kneighbors(sp_z @ basis)
    weights = knn_weights(distances, indices, ref_z.shape[0])
    info = {
        "n_pv": n_components,
        "effective_n_pv": effective,
        "pv_similarity": [round(float(s), 4) for s in similarity],
        "k": n_neighbours,
    }
    return weights, info
