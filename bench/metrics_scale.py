"""How the spatial metrics and CellCharter's neighbourhood aggregation grow with the number of cells.

Usage: python bench/metrics_scale.py [--sizes 50000 200000 1000000]

Both must stay near-linear (bounded neighbours per cell, ASW on a sample): a distance matrix of a
200,000-cell section would be 320 GB. For each size: ``cluster.metrics.spatial_metrics`` (CHAOS,
PAS, ASW) of banded domains on uniform coordinates, and ``cluster.cellcharter.aggregate_neighbors``
(4 rings, 16 features) on a jittered grid's 6-NN graph; process CPU seconds (the column to trust on a
shared machine) and wall seconds, with ratios against the smallest size, all in this one process.
The tests check the results at 100k cells; the times live here, not in assertions.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from cluster.cellcharter import aggregate_neighbors
from cluster.metrics import spatial_metrics


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _metrics_inputs(n: int) -> tuple[np.ndarray, np.ndarray]:
    coords = np.random.default_rng(5).uniform(0, 1000, size=(n, 2))
    return coords, (coords[:, 0] // 100).astype(int)


def _grid_graph(n: int) -> tuple[np.ndarray, sp.csr_matrix]:
    rng = np.random.default_rng(0)
    side = int(np.sqrt(n))
    coords = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2).astype(float)
    coords += rng.normal(0, 0.1, coords.shape)
    m = len(coords)
    _, neighbours = cKDTree(coords).query(coords, k=7)
    graph = sp.csr_matrix((np.ones(6 * m), (np.repeat(np.arange(m), 6), neighbours[:, 1:].ravel())), shape=(m, m))
    return rng.normal(size=(m, 16)).astype(np.float32), graph.maximum(graph.T)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 1_000_000])
    args = parser.parse_args()
    rows = []
    for n in sorted(args.sizes):
        coords, domains = _metrics_inputs(n)
        metrics = _timed(lambda: spatial_metrics(coords, domains))
        x, graph = _grid_graph(n)
        aggregate = _timed(lambda: aggregate_neighbors(x, graph, n_layers=4))
        rows.append((n, metrics, aggregate))
    base_n, base_m, base_a = rows[0]
    print("cells, then wall s / CPU s and the CPU ratio against the smallest size (cell ratio beside)")
    print(f"{'cells':>10} {'cell ratio':>10} {'metrics wall':>13} {'CPU':>7} {'ratio':>6} {'aggregate wall':>15} {'CPU':>7} {'ratio':>6}")
    for n, (mw, mc), (aw, ac) in rows:
        print(f"{n:>10,} {n / base_n:>10.1f} {mw:>13.2f} {mc:>7.2f} {mc / base_m[1]:>6.1f} {aw:>15.2f} {ac:>7.2f} {ac / base_a[1]:>6.1f}")


if __name__ == "__main__":
    main()
