"""Clustering heads (cluster.heads) and CellCharter aggregation (cluster.cellcharter)."""

from __future__ import annotations


import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import shortest_path
from scipy.spatial import Delaunay, cKDTree
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score as ari

from cluster import heads
from cluster.cellcharter import aggregate_neighbors, cellcharter, rings
from ssl_st.threads import limited_threads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These fits are tiny; on a shared 2-core machine BLAS/OpenMP thread pools make them up to
    # 100x slower than one thread (measured), so pin them while this module runs.
    with limited_threads(1):
        yield


SIZES = (400, 250, 150, 100)


def _anisotropic(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four clusters of unequal size sharing one rotated, elongated covariance (mclust EEE)."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    scale = rotation @ np.diag([1.5, 0.6, 0.2, 0.2])
    centers = rng.normal(size=(4, 4))
    centers *= 5 / np.linalg.norm(centers, axis=1, keepdims=True)
    x = np.concatenate([c + rng.normal(size=(n, 4)) @ scale.T for c, n in zip(centers, SIZES)])
    return x, np.repeat(np.arange(4), SIZES)


def _assert_size_ordered(labels: np.ndarray) -> None:
    counts = np.bincount(labels)
    assert (counts > 0).all()
    assert (np.diff(counts) <= 0).all(), counts


# --- gmm / kmeans -----------------------------------------------------------------------------


def test_gmm_tied_recovers_shared_anisotropic_covariance():
    x, truth = _anisotropic()
    labels = heads.gmm(x, 4, seed=0)
    assert ari(truth, labels) > 0.95
    np.testing.assert_array_equal(labels, heads.gmm(x, 4, seed=0))
    _assert_size_ordered(labels)
    # 0 = largest: the 400-cell cluster gets label 0 (truth is ordered by size too)
    assert np.bincount(labels[truth == 0]).argmax() == 0
    for covariance in ("full", "diag"):
        assert ari(truth, heads.gmm(x, 4, covariance=covariance, seed=0)) > 0.9


def test_gmm_ignores_constant_and_duplicate_columns():
    x, truth = _anisotropic()
    padded = np.column_stack([x, np.full(len(x), 3.0), x[:, 0]])  # constant + collinear column
    labels = heads.gmm(padded, 4, seed=0)
    assert ari(truth, labels) > 0.95
    with pytest.raises(ValueError, match="constant"):
        heads.gmm(np.ones((50, 3)), 2)


def test_kmeans_recovers_blobs_ordered_by_size():
    x, truth = make_blobs(n_samples=list(SIZES), n_features=5, cluster_std=1.0, random_state=0)
    labels = heads.kmeans(x, 4, seed=0)
    assert ari(truth, labels) > 0.95
    np.testing.assert_array_equal(labels, heads.kmeans(x, 4, seed=0))
    _assert_size_ordered(labels)


# --- leiden -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs():
    # Overlapping enough that the kNN graph is connected: the resolution, not the components,
    # decides the count.
    x, truth = make_blobs(500, centers=5, n_features=8, cluster_std=4.0, random_state=0)
    return x, truth, heads.knn_graph(x, 15)


def test_knn_graph_is_symmetric_binary_without_self_loops(blobs):
    _, _, graph = blobs
    assert (graph != graph.T).nnz == 0
    assert set(np.unique(graph.data)) == {1.0}
    assert graph.diagonal().sum() == 0
    assert (np.diff(graph.indptr) >= 15).all()


def test_leiden_deterministic_and_grows_with_resolution(blobs):
    x, _, graph = blobs
    labels = heads.leiden(graph, 1.0, seed=3)
    np.testing.assert_array_equal(labels, heads.leiden(graph, 1.0, seed=3))
    # an embedding gives the same graph, hence the same partition
    np.testing.assert_array_equal(labels, heads.leiden(x, 1.0, seed=3))
    _assert_size_ordered(labels)
    counts = [heads.leiden(graph, r).max() + 1 for r in (0.05, 0.3, 3.0)]
    assert counts[0] < counts[1] < counts[2], counts


@pytest.mark.parametrize("target", [5, 8, 12])
def test_search_resolution_hits_target_in_few_runs(blobs, target):
    _, truth, graph = blobs
    search = heads.search_resolution(graph, target)
    assert search.reached and search.n_found == target
    assert search.labels.max() + 1 == target
    assert len(search.trials) <= 8  # measured 2, 6, 6; GraphST's sweep would take up to 290
    assert (search.resolution, target) in search.trials
    if target == 5:
        assert ari(truth, search.labels) > 0.85


def test_search_resolution_unreachable_returns_closest():
    x, _ = make_blobs(60, centers=3, n_features=4, random_state=1)
    search = heads.search_resolution(x, 40)  # 15-NN graph on 60 cells: ~17 at most by resolution 3
    assert not search.reached
    assert search.n_found < 40
    assert search.n_found == max(n for _, n in search.trials)
    assert search.labels.max() + 1 == search.n_found
    assert len(search.trials) <= 20


def test_cluster_dispatch(blobs):
    x, _, _ = blobs
    gm = heads.cluster(x, "gmm", 5, covariance="full")
    assert gm.method == "gmm" and gm.n_found == 5 and gm.info == {}
    assert heads.cluster(x, "kmeans", 5).n_found == 5
    fixed = heads.cluster(x, "leiden", resolution=0.3)
    assert fixed.info["resolution"] == 0.3 and "reached" not in fixed.info
    searched = heads.cluster(x, "leiden", 8)
    assert searched.n_found == 8 and searched.info["reached"] == 1.0 and searched.info["n_trials"] >= 1
    # a fixed resolution wins over n_domains, which is then only checked
    both = heads.cluster(x, "leiden", 8, resolution=0.3)
    assert both.info["reached"] == float(both.n_found == 8)


def test_pca_caps_components_and_takes_sparse():
    rng = np.random.default_rng(0)
    x = rng.poisson(1.0, size=(30, 50)).astype(float)
    assert heads.pca(x, 20).shape == (30, 20)
    assert heads.pca(x, 100).shape == (30, 29)  # n_cells - 1
    assert heads.pca(x[:, :5], 20).shape == (30, 5)  # n_features
    dense, sparse = heads.pca(x, 5), heads.pca(sp.csr_matrix(x), 5)
    assert dense.dtype == np.float32
    np.testing.assert_allclose(np.abs(dense), np.abs(sparse), atol=1e-4)  # sign-free


# --- CellCharter ------------------------------------------------------------------------------


def _ring_reference(adjacency: sp.csr_matrix, x: np.ndarray, n_layers: int) -> np.ndarray:
    """Brute force: hop distances by BFS, then mean/var over the cells at exactly l hops."""
    hops = shortest_path(adjacency, unweighted=True, directed=False)
    blocks = [x]
    for layer in range(1, n_layers + 1):
        ring = (hops == layer).astype(float)
        size = ring.sum(axis=1, keepdims=True)
        safe = np.where(size > 0, size, 1)
        mean = ring @ x / safe
        var = ring @ (x * x) / safe - mean**2
        blocks += [np.where(size > 0, mean, 0), np.where(size > 0, np.maximum(var, 0), 0)]
    return np.hstack(blocks)


def _random_graph(n: int, p: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((n, n)) < p, k=1)
    upper[:3] = upper[:, :3] = False  # three isolated cells: every ring empty
    weights = upper * rng.uniform(0.5, 2.0, (n, n))  # weights must be ignored
    return sp.csr_matrix(weights + weights.T + np.eye(n))  # self-loops must be ignored


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_aggregate_neighbors_matches_bfs(n_layers):
    adjacency = _random_graph(80, 0.04, seed=n_layers)
    x = np.random.default_rng(0).normal(size=(80, 3))
    got = aggregate_neighbors(x, adjacency, n_layers, aggregations=("mean", "var"))
    assert got.dtype == np.float32 and got.shape == (80, 3 * (1 + 2 * n_layers))
    np.testing.assert_allclose(got, _ring_reference(adjacency, x, n_layers), atol=1e-5)
    means_only = aggregate_neighbors(x, adjacency, n_layers)
    expected = _ring_reference(adjacency, x, n_layers).reshape(80, -1, 3)[:, [0, *range(1, 2 * n_layers, 2)]]
    np.testing.assert_allclose(means_only, expected.reshape(80, -1), atol=1e-5)


def test_aggregate_neighbors_empty_rings_are_zero():
    # path 0-1-2 and isolated 3: ring 2 of cell 1 and every ring of cell 3 are empty
    adjacency = sp.csr_matrix(([1, 1, 1, 1], ([0, 1, 1, 2], [1, 0, 2, 1])), shape=(4, 4))
    x = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    out = aggregate_neighbors(x, adjacency, n_layers=3)
    assert out.shape == (4, 2 * 4)
    np.testing.assert_array_equal(out[:, :2], x)
    np.testing.assert_array_equal(out[1, 2:4], [2.0, 20.0])  # ring 1 of cell 1: mean of 0 and 2
    np.testing.assert_array_equal(out[0, 4:6], [3.0, 30.0])  # ring 2 of cell 0: cell 2 only
    np.testing.assert_array_equal(out[1, 4:], 0)
    np.testing.assert_array_equal(out[3, 2:], 0)
    np.testing.assert_array_equal(out[:, 6:], 0)  # no cell has a third ring


def test_aggregate_neighbors_at_100k_cells():
    rng = np.random.default_rng(0)
    side = 317  # 100,489 cells
    coords = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2).astype(float)
    coords += rng.normal(0, 0.1, coords.shape)
    n = len(coords)
    _, neighbours = cKDTree(coords).query(coords, k=7)
    graph = sp.csr_matrix((np.ones(6 * n), (np.repeat(np.arange(n), 6), neighbours[:, 1:].ravel())), shape=(n, n))
    graph = graph.maximum(graph.T)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    out = aggregate_neighbors(x, graph, n_layers=4)  # its time at up to 1M cells: bench/metrics_scale.py
    assert out.shape == (n, 16 * 5)
    sizes = [int(np.diff(r.indptr)[side * (side // 2) + side // 2]) for r in rings(graph, 4)]
    assert sizes[0] >= 6 and sizes == sorted(sizes)  # rings widen outwards in the interior


def _banded(seed: int) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    """A 60 x 30 jittered grid in 3 vertical bands; each band mixes the same 4 cell types in
    different proportions, and each cell's expression is its type's centroid plus noise."""
    rng = np.random.default_rng(seed)
    coords = np.stack(np.meshgrid(np.arange(60), np.arange(30)), -1).reshape(-1, 2).astype(float)
    coords += rng.uniform(-0.3, 0.3, coords.shape)
    band = np.minimum((coords[:, 0] * 3 / 60).astype(int), 2)
    mixture = np.array([[0.55, 0.25, 0.1, 0.1], [0.1, 0.55, 0.25, 0.1], [0.1, 0.1, 0.25, 0.55]])
    types = (rng.random(len(coords))[:, None] > np.cumsum(mixture[band], axis=1)).sum(axis=1)
    x = rng.normal(size=(4, 8))[types] + rng.normal(size=(len(coords), 8))
    triangles = Delaunay(coords).simplices
    rows, cols = triangles[:, [0, 1, 2]].ravel(), triangles[:, [1, 2, 0]].ravel()
    adjacency = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(coords),) * 2)
    return x, adjacency.maximum(adjacency.T), band


def test_cellcharter_finds_bands_that_cell_features_cannot():
    spatial, plain = [], []
    for seed in range(3):
        x, adjacency, band = _banded(seed)
        spatial.append(ari(band, cellcharter(x, adjacency, 3, n_layers=3, n_init=3)))
        plain.append(ari(band, heads.gmm(x, 3, covariance="full", n_init=3)))
    # measured: cellcharter 0.89 / 0.52 / 0.41, plain mixture 0.12 / 0.16 / 0.15
    assert all(s > p + 0.15 for s, p in zip(spatial, plain)), (spatial, plain)
    assert np.mean(spatial) - np.mean(plain) > 0.3, (spatial, plain)


# --- bad inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: heads.gmm(np.where(np.eye(len(x), x.shape[1]) > 0, np.nan, x), 3), "NaN"),
        (lambda x: heads.kmeans(x, 1), "n_domains must be between 2"),
        (lambda x: heads.gmm(x, len(x) + 1), "n_domains must be between 2"),
        (lambda x: heads.gmm(x, 2.5), "n_domains must be an integer"),
        (lambda x: heads.gmm(x, 3, covariance="spherical"), "covariance"),
        (lambda x: heads.gmm(x[:, 0], 3), "2-D"),
        (lambda x: heads.cluster(x, "gmm"), "needs n_domains"),
        (lambda x: heads.cluster(x, "kmeans", 3, resolution=1.0), "leiden only"),
        (lambda x: heads.cluster(x, "leiden"), "n_domains .* or a fixed resolution"),
        (lambda x: heads.cluster(x, "dbscan", 3), "unknown clustering method"),
        (lambda x: heads.leiden(x, 0.0), "resolution must be positive"),
        (lambda x: heads.search_resolution(x, 3, low=2.0, high=1.0), "low < high"),
        (lambda x: heads.pca(x, 0), "n_components"),
        (lambda x: aggregate_neighbors(x, sp.identity(len(x) - 1)), "cells x cells"),
        (lambda x: aggregate_neighbors(x, sp.identity(len(x)), aggregations=("max",)), "aggregations"),
        (lambda x: aggregate_neighbors(x, sp.identity(len(x)), n_layers=-1), "n_layers"),
        (lambda x: cellcharter(x, sp.identity(len(x)), 1), "n_domains must be between 2"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    x = np.random.default_rng(0).normal(size=(40, 4))
    with pytest.raises(ValueError, match=message):
        call(x)
