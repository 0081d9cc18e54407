"""Spatial-domain metrics: agreement with annotated regions and spatial coherence of the domains.

Domain methods are compared two ways in the literature, and SDMBench (Yuan et al., Nat. Methods
2024) fixed the definitions most papers now report:

- against manual region labels (cortical layers, anatomical regions): ARI, NMI, homogeneity and
  completeness (:func:`label_metrics`);
- without labels, by how spatially coherent the domains are (:func:`spatial_metrics`): CHAOS (mean
  distance to the nearest same-domain cell), PAS (fraction of cells outvoted by their spatial
  neighbours) and ASW (silhouette of the domains on the coordinates).

SDMBench computes the spatial ones with dense n x n distances and Python loops, which is hopeless
at the 100k-1M cells of imaging platforms. The versions here give the same numbers through
neighbour searches (``cKDTree``) and, for the silhouette, streamed distance blocks: memory stays
bounded and 200,000 cells take seconds. Where the definitions leave room (ties, sampling), the
docstrings say what is done.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from .graph import _check_coords, _knn

LABEL_METRICS = ("ari", "nmi", "homogeneity", "completeness")
SPATIAL_METRICS = ("chaos", "pas", "asw")


def label_metrics(labels: Any, domains: Any) -> dict[str, float]:
    """ARI, NMI, homogeneity and completeness of ``domains`` against reference ``labels``.

    Cells whose label is missing (None / NaN, e.g. unannotated spots outside the tissue regions)
    are ignored; domains must be given for every cell. NMI uses sklearn's default arithmetic
    normalisation, as SDMBench. Homogeneity: each domain holds one label; completeness: each label
    falls in one domain.
    """
    from sklearn import metrics  # deferred: sklearn import costs a second

    label_codes = _codes(labels, "labels", allow_missing=True)
    domain_codes = _codes(domains, "domains")
    if len(label_codes) != len(domain_codes):
        raise ValueError(f"labels has {len(label_codes)} entries but domains has {len(domain_codes)}")
    known = label_codes >= 0
    if not known.any():
        raise ValueError("every label is missing: nothing to compare the domains with")
    y, d = label_codes[known], domain_codes[known]
    return {
        "ari": float(metrics.adjusted_rand_score(y, d)),
        "nmi": float(metrics.normalized_mutual_info_score(y, d)),
        "homogeneity": float(metrics.homogeneity_score(y, d)),
        "completeness": float(metrics.completeness_score(y, d)),
    }


def chaos(coords: Any, domains: Any) -> float:
    """CHAOS (SDMBench): mean distance from each cell to its nearest cell of the same domain.

    Coordinates are z-scored per axis first (sklearn ``StandardScaler``, as SDMBench), so the value
    does not depend on the unit. The sum of these 1-NN distances is divided by the number of all
    cells. As in SDMBench, domains of one or two cells are skipped (contribute 0). Lower is better.
    """
    x, codes = _inputs(coords, domains)
    std = x.std(axis=0)
    # StandardScaler leaves a constant axis unscaled rather than dividing by zero.
    z = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    total = 0.0
    for members in _members(codes):
        if len(members) <= 2:
            continue
        # k=2: the point itself (distance 0) and its nearest other point; a twin at the same
        # position correctly gives 0.
        dist, _ = cKDTree(z[members]).query(z[members], k=2)
        total += float(dist[:, 1].sum())
    return total / len(codes)


def pas(coords: Any, domains: Any, k: int = 10, threshold: int = 6) -> float:
    """PAS (Shang & Zhou 2022; SDMBench): fraction of cells outvoted by their spatial neighbours.

    A cell counts when at least ``threshold`` of its ``k`` nearest other cells (raw coordinates)
    belong to another domain. The defaults reproduce SDMBench / SpatialPCA ("different from at
    least six of its ten nearest neighbours", coded there as ``> k / 2``). Neighbours tied in
    distance at the k-th place are broken arbitrarily, as in SDMBench. Lower is better.
    """
    x, codes = _inputs(coords, domains)
    n = len(codes)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n:
        raise ValueError(f"k must be an integer in [1, n_cells - 1] = [1, {n - 1}], got {k!r}")
    if not 1 <= threshold <= k:
        raise ValueError(f"threshold must lie in [1, k] = [1, {k}], got {threshold!r}")
    idx, _ = _knn(x, int(k))
    disagree = (codes[idx] != codes[:, None]).sum(axis=1)
    return float((disagree >= threshold).mean())


def spatial_asw(
    coords: Any,
    domains: Any,
    *,
    sample_size: int | None = 10_000,
    seed: int = 0,
    chunk: int = 1 << 20,
) -> float:
    """Average silhouette width of the domains on the spatial coordinates (Euclidean).

    The silhouette of a cell needs its mean distance to every domain, i.e. all n x n distances.
    They are never stored: ``sample_size`` query cells (all cells when ``n <= sample_size`` or
    ``sample_size`` is None) are compared with *all* n cells in blocks of at most ``chunk``
    distances (default 2**20, 8 MB), and only per-domain distance sums are kept. Hence

    - for ``n <= sample_size`` the result equals ``sklearn.metrics.silhouette_score(coords,
      domains)`` (up to float rounding) — SDMBench's ASW;
    - above, it is the exact mean silhouette of a uniform random subset of cells
      (``np.random.default_rng(seed).choice(n, sample_size, replace=False)``), an unbiased
      estimate of the full score (standard error ~ std of the silhouettes / sqrt(sample_size)).
      This differs from sklearn's own ``sample_size``, which recomputes silhouettes *within* the
      subsample and so distorts them.

    A cell alone in its domain scores 0, as in sklearn. Returns NaN when the silhouette is undefined
    (fewer than 2 domains, or as many domains as cells), where sklearn raises. Higher is better.
    Cost: sample_size x n distances; 10,000 x 200,000 cells take seconds on one core.
    """
    x, codes = _inputs(coords, domains)
    n = len(codes)
    n_domains = int(codes.max()) + 1
    if not 2 <= n_domains <= n - 1:
        return float("nan")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 distances, got {chunk!r}")
    if sample_size is not None and sample_size < 1:
        raise ValueError(f"sample_size must be >= 1 (or None for all cells), got {sample_size!r}")

    if sample_size is None or n <= sample_size:
        query = np.arange(n)
    else:
        query = np.sort(np.random.default_rng(seed).choice(n, size=sample_size, replace=False))
    # Centring first keeps float rounding in the distances relative to the tissue, not the origin.
    x = x - x.mean(axis=0)
    size = np.bincount(codes, minlength=n_domains)
    members = _members(codes)

    # sums[i, d]: total distance from query cell i to all cells of domain d (self included, at 0).
    sums = np.zeros((len(query), n_domains))
    q_block = min(len(query), 256)
    r_block = max(1, chunk // q_block)
    for q0 in range(0, len(query), q_block):
        xq = x[query[q0 : q0 + q_block]]
        for d, cells in enumerate(members):
            # Per-domain reference blocks: each block's row sums land in one column, no scatter.
            for r0 in range(0, len(cells), r_block):
                sums[q0 : q0 + q_block, d] += cdist(xq, x[cells[r0 : r0 + r_block]]).sum(axis=1)

    own = codes[query]
    rows = np.arange(len(query))
    with np.errstate(divide="ignore", invalid="ignore"):
        intra = sums[rows, own] / (size[own] - 1)  # 0/0 for singletons, zeroed below
        mean_to = sums / size
    mean_to[rows, own] = np.inf
    inter = mean_to.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sil = (inter - intra) / np.maximum(intra, inter)
    # sklearn's nan_to_num: singletons (intra 0/0) and all-coincident cells (0/0) score 0.
    sil[size[own] == 1] = 0.0
    return float(np.nan_to_num(sil).mean())


def spatial_metrics(
    coords: Any,
    domains: Any,
    *,
    k: int = 10,
    threshold: int = 6,
    sample_size: int | None = 10_000,
    seed: int = 0,
    chunk: int = 1 << 20,
) -> dict[str, float]:
    """CHAOS, PAS and ASW of ``domains`` on ``coords`` (see :func:`chaos`, :func:`pas`,
    :func:`spatial_asw`); ``k``/``threshold`` go to PAS, the rest to ASW."""
    return {
        "chaos": chaos(coords, domains),
        "pas": pas(coords, domains, k=k, threshold=threshold),
        "asw": spatial_asw(coords, domains, sample_size=sample_size, seed=seed, chunk=chunk),
    }


def domain_metrics(coords: Any, domains: Any, labels: Any = None, **spatial_kw: Any) -> dict[str, float]:
    """All domain metrics: the spatial ones always, the label ones when ``labels`` are given, and
    ``n_domains`` (distinct domains found). ``spatial_kw`` goes to :func:`spatial_metrics`."""
    result: dict[str, float] = {"n_domains": int(_codes(domains, "domains").max()) + 1}
    result.update(spatial_metrics(coords, domains, **spatial_kw))
    if labels is not None:
        result.update(label_metrics(labels, domains))
    return result


def _codes(values: Any, name: str, *, allow_missing: bool = False) -> np.ndarray:
    """Integer codes 0..m-1 of any array-like of hashables; -1 marks missing (None / NaN)."""
    import pandas as pd

    # Object dtype: strings, ints and categoricals alike, with None / NaN recognised as missing.
    array = np.asarray(values, dtype=object)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one entry per cell), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    codes, _ = pd.factorize(array)
    if not allow_missing and (codes < 0).any():
        raise ValueError(f"{int((codes < 0).sum())} cells have no {name[:-1]} (None / NaN); every cell needs one")
    return codes.astype(np.intp)


def _inputs(coords: Any, domains: Any) -> tuple[np.ndarray, np.ndarray]:
    x = _check_coords(coords)
    codes = _codes(domains, "domains")
    if len(codes) != len(x):
        raise ValueError(f"domains has {len(codes)} entries for {len(x)} cells")
    return x, codes


def _members(codes: np.ndarray) -> list[np.ndarray]:
    """Cell indices of each domain code 0..m-1, in code order."""
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.cumsum(np.bincount(codes))[:-1])
