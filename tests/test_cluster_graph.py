"""Spatial neighbour graphs: each method against a brute-force or geometric reference, slice
separation, the squidpy-style AnnData keys and the input errors."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.spatial.distance import cdist

from cluster.graph import mean_degree, neighbor_graph, spatial_neighbors


def _random_points(n: int = 300, seed: int = 0, dim: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 100, size=(n, dim))


def _triangular_lattice(rows: int = 12, cols: int = 12) -> np.ndarray:
    """Points of a triangular lattice (unit spacing): its Delaunay triangulation is unique and
    every interior point has exactly 6 neighbours."""
    j, i = np.mgrid[0:rows, 0:cols]
    x = i + 0.5 * (j % 2)
    y = j * np.sqrt(3) / 2
    return np.column_stack([x.ravel(), y.ravel()]).astype(float)


def _check_well_formed(conn: sp.csr_matrix, dist: sp.csr_matrix, coords: np.ndarray) -> None:
    n = len(coords)
    for matrix in (conn, dist):
        assert isinstance(matrix, sp.csr_matrix) and matrix.shape == (n, n)
        assert matrix.dtype == np.float32
        assert matrix.has_sorted_indices
        assert (matrix != matrix.T).nnz == 0
    assert conn.diagonal().sum() == 0
    # One sparsity pattern, unit weights, and distances that are the real edge lengths.
    assert np.array_equal(conn.indptr, dist.indptr) and np.array_equal(conn.indices, dist.indices)
    assert np.all(conn.data == 1)
    rows = np.repeat(np.arange(n), np.diff(dist.indptr))
    expected = np.linalg.norm(coords[rows] - coords[dist.indices], axis=1)
    np.testing.assert_allclose(dist.data, expected, rtol=1e-6)


@pytest.mark.parametrize("dim", [2, 3])
def test_knn_contains_the_k_nearest_and_is_symmetric(dim):
    coords, k = _random_points(dim=dim), 6
    conn, dist = neighbor_graph(coords, method="knn", k=k)
    _check_well_formed(conn, dist, coords)
    assert np.diff(conn.indptr).min() >= k
    full = cdist(coords, coords)
    np.fill_diagonal(full, np.inf)
    nearest = np.argsort(full, axis=1)[:, :k]
    dense = conn.toarray()
    assert np.all(np.take_along_axis(dense, nearest, axis=1) == 1)
    # Symmetrisation adds the reverse edges and nothing else.
    directed = np.zeros_like(dense)
    np.put_along_axis(directed, nearest, 1, axis=1)
    assert np.array_equal(dense, np.maximum(directed, directed.T))
    assert mean_degree(conn) == pytest.approx(dense.sum() / len(coords))


def test_knn_clamps_k_to_a_small_group_and_handles_duplicates():
    coords = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    conn, dist = neighbor_graph(coords, method="knn", k=10)
    _check_well_formed(conn, dist, coords)
    assert np.array_equal(conn.toarray(), 1 - np.eye(4))
    # The two coincident cells are neighbours at a stored distance of 0, not a dropped entry.
    assert dist[0, 1] == 0 and conn[0, 1] == 1


def test_radius_graph_equals_brute_force():
    coords, radius = _random_points(), 9.0
    conn, dist = neighbor_graph(coords, method="radius", radius=radius)
    _check_well_formed(conn, dist, coords)
    full = cdist(coords, coords)
    expected = (full <= radius) & ~np.eye(len(coords), dtype=bool)
    assert np.array_equal(conn.toarray() == 1, expected)
    np.testing.assert_allclose(dist.toarray()[expected], full[expected].astype(np.float32), rtol=1e-6)
    assert 2 < mean_degree(conn) < 20  # a meaningful radius for the test, not an empty graph


def test_delaunay_on_a_triangular_lattice_has_interior_degree_six():
    coords = _triangular_lattice()
    conn, dist = neighbor_graph(coords, method="delaunay")
    _check_well_formed(conn, dist, coords)
    x, y = coords[:, 0], coords[:, 1]
    interior = (x > 1) & (x < x.max() - 1) & (y > 1) & (y < y.max() - 1)
    degree = np.diff(conn.indptr)
    assert interior.sum() > 50
    assert np.all(degree[interior] == 6)
    # Interior edges are lattice edges: unit length.
    np.testing.assert_allclose(dist[np.flatnonzero(interior)].data, 1.0, rtol=1e-6)


def test_delaunay_links_duplicated_cells_instead_of_isolating_them():
    coords = np.vstack([_random_points(50), _random_points(50)[:3]])
    conn, dist = neighbor_graph(coords, method="delaunay")
    _check_well_formed(conn, dist, coords)
    assert np.diff(conn.indptr).min() > 0
    assert conn[0, 50] == 1 and dist[0, 50] == 0


def test_percentile_drops_the_long_edges():
    # A lattice plus two far-away cells: their edges to the lattice are the longest by far.
    coords = np.vstack([_triangular_lattice(), [[40.0, 40.0], [-30.0, 5.0]]])
    conn_all, dist_all = neighbor_graph(coords, method="delaunay")
    conn, dist = neighbor_graph(coords, method="delaunay", percentile=90)
    _check_well_formed(conn, dist, coords)
    cut = np.percentile(dist_all.data, 90)  # squidpy: over the stored (symmetric) entries
    expected = dist_all.toarray()
    expected[expected > cut] = 0
    assert np.array_equal(dist.toarray(), expected)
    assert conn.nnz < conn_all.nnz and dist.data.max() <= cut
    # The ~6% long edges of the two stray cells all go, which leaves them isolated.
    assert (dist_all.data > 20).mean() > 0.05 and dist.data.max() < 2
    assert np.diff(conn.indptr)[-2:].tolist() == [0, 0]


def test_groups_never_connect_across_slices_and_keep_row_order():
    # Two slices sharing one coordinate frame, interleaved row by row.
    a, b = _random_points(150, seed=1), _random_points(150, seed=2)
    coords = np.empty((300, 2))
    coords[0::2], coords[1::2] = a, b
    groups = np.array(["s1", "s2"] * 150, dtype=object)
    for method, kw in [("knn", {"k": 5}), ("radius", {"radius": 12.0}), ("delaunay", {})]:
        conn, dist = neighbor_graph(coords, method=method, groups=groups, **kw)
        _check_well_formed(conn, dist, coords)
        rows, cols = conn.nonzero()
        assert np.all(groups[rows] == groups[cols])
        # Within a slice, exactly the graph of that slice alone, at the original rows.
        for sl, offset in [(a, 0), (b, 1)]:
            alone, alone_dist = neighbor_graph(sl, method=method, **kw)
            assert (conn[offset::2][:, offset::2] != alone).nnz == 0
            assert abs(dist[offset::2][:, offset::2] - alone_dist).max() == 0
    # Categorical and numeric group labels behave alike.
    cat = pd.Categorical(groups)
    assert (neighbor_graph(coords, k=5, groups=cat)[0] != neighbor_graph(coords, k=5, groups=groups)[0]).nnz == 0


def test_spatial_neighbors_writes_squidpy_keys(caplog):
    coords = _random_points(200)
    adata = ad.AnnData(np.zeros((200, 3), dtype=np.float32), obsm={"xy": coords})
    adata.obs["slice"] = pd.Categorical(np.repeat(["a", "b"], 100))
    with caplog.at_level(logging.INFO, logger="cluster.graph"):
        info = spatial_neighbors(adata, method="knn", k=4, spatial_key="xy", library_key="slice", key_added="sp")
    assert adata.uns["sp_neighbors"] is info
    assert info["connectivities_key"] == "sp_connectivities" and info["distances_key"] == "sp_distances"
    conn, dist = adata.obsp["sp_connectivities"], adata.obsp["sp_distances"]
    expected, _ = neighbor_graph(coords, method="knn", k=4, groups=adata.obs["slice"].to_numpy())
    assert (conn != expected).nnz == 0 and dist.nnz == conn.nnz
    assert info["mean_degree"] == pytest.approx(mean_degree(conn))
    assert info["isolated"] == 0
    assert info["params"] == {"method": "knn", "k": 4, "library_key": "slice", "spatial_key": "xy"}
    assert f"mean degree {info['mean_degree']:.2f}" in caplog.text

    # Default keys follow squidpy: obsp['spatial_connectivities'] / ['spatial_distances'].
    adata.obsm["spatial"] = coords
    spatial_neighbors(adata, method="delaunay")
    assert {"spatial_connectivities", "spatial_distances"} <= set(adata.obsp)
    assert adata.uns["spatial_neighbors"]["params"]["method"] == "delaunay"


def test_spatial_neighbors_warns_about_isolated_cells(caplog):
    coords = np.vstack([_random_points(50), [[1000.0, 1000.0]]])
    adata = ad.AnnData(np.zeros((51, 1), dtype=np.float32), obsm={"spatial": coords})
    with caplog.at_level(logging.INFO, logger="cluster.graph"):
        info = spatial_neighbors(adata, method="radius", radius=30.0)
    assert info["isolated"] == 1
    assert any(r.levelno == logging.WARNING and "no spatial neighbour" in r.getMessage() for r in caplog.records)


def test_missing_keys_name_the_key_and_the_fix():
    adata = ad.AnnData(np.zeros((10, 1), dtype=np.float32), obsm={"X_pca": np.zeros((10, 2))})
    with pytest.raises(KeyError, match=r"obsm\['spatial'\] not found.*X_pca.*spatial_key="):
        spatial_neighbors(adata)
    adata.obsm["spatial"] = _random_points(10)
    with pytest.raises(KeyError, match="library_key column 'section' not found"):
        spatial_neighbors(adata, library_key="section")


@pytest.mark.parametrize(
    ("coords", "kwargs", "message"),
    [
        (_random_points(20), {"method": "radius"}, "needs radius="),
        (_random_points(20), {"method": "radius", "radius": -1.0}, "finite positive"),
        (_random_points(20), {"method": "knn", "k": 0}, "k must be an integer >= 1"),
        (_random_points(20), {"method": "knn", "k": 2.5}, "k must be an integer >= 1"),
        (_random_points(20), {"method": "knn", "radius": 3.0}, "only used by method='radius'"),
        (_random_points(20), {"method": "knn", "percentile": 99}, "only used by method='delaunay'"),
        (_random_points(20), {"method": "delaunay", "percentile": 0}, r"\(0, 100\]"),
        (_random_points(20), {"method": "gabriel"}, "unknown graph method"),
        (np.zeros((20, 4)), {}, r"shape \(n_cells, 2\) or \(n_cells, 3\)"),
        (np.zeros(20), {}, r"shape \(n_cells, 2\)"),
        (np.array([[0.0, np.nan], [1.0, 1.0]]), {}, "1 cells have NaN or infinite"),
        (np.array([["a", "b"]]), {}, "must be numeric"),
        (np.zeros((0, 2)), {}, "no cells"),
        (_random_points(20), {"groups": np.array(["a"] * 19)}, "one label per cell"),
        (_random_points(3), {"groups": np.array(["a", None, "b"], dtype=object)}, "missing group"),
        (np.column_stack([np.arange(10.0), np.arange(10.0)]), {"method": "delaunay"}, "collinear"),
    ],
)
def test_bad_input_errors(coords, kwargs, message):
    with pytest.raises(ValueError, match=message):
        neighbor_graph(coords, **kwargs)
