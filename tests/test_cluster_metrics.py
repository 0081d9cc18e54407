"""Domain metrics against dense brute-force references (SDMBench's definitions written out with
full distance matrices) and sklearn, plus their behaviour and cost at 50k-200k cells."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.preprocessing import StandardScaler

from cluster.metrics import chaos, domain_metrics, label_metrics, pas, spatial_asw, spatial_metrics

N = 400


def _coords(n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1000, size=(n, 2))


def _banded(coords: np.ndarray, n_bands: int = 5) -> np.ndarray:
    """Smooth domains: vertical stripes, like cortical layers."""
    width = np.ptp(coords[:, 0]) / n_bands + 1e-9
    return np.array([f"L{int(b)}" for b in (coords[:, 0] - coords[:, 0].min()) // width])


def _random_domains(n: int = N, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 5, size=n)


def _chaos_reference(coords: np.ndarray, domains: np.ndarray) -> float:
    """SDMBench's _compute_CHAOS: z-scored coordinates, 1-NN within each domain of > 2 cells."""
    z = StandardScaler().fit_transform(coords)
    total = 0.0
    for d in np.unique(domains):
        sub = z[domains == d]
        if len(sub) <= 2:
            continue
        dist = np.linalg.norm(sub[:, None] - sub[None], axis=2)
        np.fill_diagonal(dist, np.inf)
        total += dist.min(axis=1).sum()
    return total / len(domains)


def _pas_reference(coords: np.ndarray, domains: np.ndarray, k: int = 10) -> float:
    """SDMBench's _compute_PAS: a cell counts when more than k/2 of its k nearest neighbours differ."""
    dist = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    hits = 0
    for i in range(len(coords)):
        row = dist[i].copy()
        row[i] = np.inf
        nearest = np.argsort(row)[:k]
        hits += int(np.sum(domains[nearest] != domains[i]) > k / 2)
    return hits / len(coords)


DOMAINS = {
    "random": lambda c: _random_domains(),
    "banded": _banded,
    # Strings, one singleton and one pair: the small-domain rules of CHAOS and the silhouette.
    "small domains": lambda c: np.array(["solo"] + ["pair"] * 2 + [f"d{i % 4}" for i in range(N - 3)], dtype=object),
}


@pytest.mark.parametrize("kind", DOMAINS)
def test_chaos_matches_sdmbench(kind):
    coords = _coords()
    domains = DOMAINS[kind](coords)
    assert chaos(coords, domains) == pytest.approx(_chaos_reference(coords, domains), rel=1e-12)


@pytest.mark.parametrize("kind", DOMAINS)
def test_pas_matches_sdmbench(kind):
    coords = _coords()
    domains = DOMAINS[kind](coords)
    assert pas(coords, domains) == _pas_reference(coords, domains)
    assert pas(coords, domains, k=6, threshold=4) == _pas_reference(coords, domains, k=6)


@pytest.mark.parametrize("kind", DOMAINS)
@pytest.mark.parametrize("chunk", [1 << 20, 1000, 1])
def test_asw_equals_sklearn_silhouette(kind, chunk):
    coords = _coords()
    domains = DOMAINS[kind](coords)
    expected = skm.silhouette_score(coords, domains)
    assert spatial_asw(coords, domains, chunk=chunk) == pytest.approx(expected, abs=1e-6)
    assert spatial_asw(coords, domains, sample_size=None) == pytest.approx(expected, abs=1e-6)


def test_asw_subsample_is_exact_for_the_sampled_cells():
    coords, domains = _coords(), _random_domains()
    per_cell = skm.silhouette_samples(coords, domains)
    # The documented sample: np.random.default_rng(seed).choice(n, sample_size, replace=False).
    sample = np.random.default_rng(7).choice(N, size=100, replace=False)
    assert spatial_asw(coords, domains, sample_size=100, seed=7) == pytest.approx(per_cell[sample].mean(), abs=1e-9)
    estimates = [spatial_asw(coords, domains, sample_size=100, seed=s) for s in range(20)]
    assert np.mean(estimates) == pytest.approx(per_cell.mean(), abs=0.02)


def test_asw_is_nan_where_the_silhouette_is_undefined():
    coords = _coords(10)
    assert np.isnan(spatial_asw(coords, np.zeros(10)))
    assert np.isnan(spatial_asw(coords, np.arange(10)))


def test_label_metrics_match_sklearn_and_ignore_missing_labels():
    rng = np.random.default_rng(0)
    labels = rng.choice(["L1", "L2", "L3", "WM"], size=N).astype(object)
    domains = np.where(rng.random(N) < 0.7, labels, rng.choice(["L1", "L2"], size=N))
    domains = pd.Categorical([f"c{x}" for x in domains])
    labels[:30] = None
    labels[30:40] = np.nan
    result = label_metrics(labels, domains)
    y, d = labels[40:].astype(str), np.asarray(domains)[40:]
    assert result == pytest.approx(
        {
            "ari": skm.adjusted_rand_score(y, d),
            "nmi": skm.normalized_mutual_info_score(y, d),
            "homogeneity": skm.homogeneity_score(y, d),
            "completeness": skm.completeness_score(y, d),
        },
        abs=1e-12,
    )
    assert 0.2 < result["ari"] < 1


def test_label_metrics_are_invariant_to_renaming():
    labels, domains = _banded(_coords()), _random_domains()
    domains[:200] = 0  # partially agree, so scores are not trivially 0
    renamed = np.array(["zeta", "alpha", "7", "x", "mid"], dtype=object)[domains]
    assert label_metrics(labels, renamed) == pytest.approx(label_metrics(labels, domains), abs=1e-12)
    assert label_metrics(labels, labels)["ari"] == pytest.approx(1.0)


def test_banded_domains_score_better_than_shuffled():
    coords = _coords(2000)
    banded = _banded(coords)
    shuffled = np.random.default_rng(0).permutation(banded)
    good, bad = spatial_metrics(coords, banded), spatial_metrics(coords, shuffled)
    assert good["chaos"] < bad["chaos"]
    assert good["pas"] < bad["pas"]
    assert good["asw"] > bad["asw"]


def test_domain_metrics_combines_everything():
    coords = _coords()
    banded = _banded(coords)
    result = domain_metrics(coords, banded, labels=banded, k=8, threshold=5)
    assert set(result) == {"n_domains", "chaos", "pas", "asw", "ari", "nmi", "homogeneity", "completeness"}
    assert result["n_domains"] == 5 and result["ari"] == pytest.approx(1.0)
    assert result["pas"] == pas(coords, banded, k=8, threshold=5)
    assert set(domain_metrics(coords, banded)) == {"n_domains", "chaos", "pas", "asw"}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: chaos(_coords(10), np.zeros(9)), "9 entries for 10 cells"),
        (lambda: chaos(_coords(3), np.array(["a", None, "b"], dtype=object)), "no domain"),
        (lambda: pas(_coords(10), np.zeros(10), k=10), r"k must be an integer in \[1, n_cells - 1\]"),
        (lambda: pas(_coords(20), np.zeros(20), k=5, threshold=6), r"threshold must lie in \[1, k\]"),
        (lambda: spatial_asw(np.zeros((5, 4)), np.zeros(5)), "shape"),
        (lambda: label_metrics([None, None], ["a", "b"]), "every label is missing"),
        (lambda: label_metrics(["a", "b", "c"], ["a", "b"]), "labels has 3 entries but domains has 2"),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_asw_memory_stays_far_below_a_distance_matrix():
    n = 50_000
    coords, domains = _coords(n, seed=3), _random_domains(n, seed=3)
    tracemalloc.start()
    try:
        spatial_asw(coords, domains, sample_size=2_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    dense = n * n * 8  # 20 GB
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert peak < dense / 300


@pytest.mark.slow
def test_spatial_metrics_at_100k_cells():
    # A distance matrix of 100k cells would be 80 GB: the metrics only finish by staying near-linear
    # (their times at up to 1M cells: bench/metrics_scale.py).
    n = 100_000
    coords = _coords(n, seed=5)
    banded = _banded(coords, n_bands=10)
    shuffled = np.random.default_rng(5).permutation(banded)
    result = spatial_metrics(coords, banded)
    assert all(np.isfinite(v) for v in result.values()), result
    assert result["pas"] < pas(coords, shuffled)
    assert result["asw"] > 0
