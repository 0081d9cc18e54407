"""Which neighbourhood scale STAGATE and GraphST need at imaging (single-cell) resolution.

At single-cell resolution a tissue domain is a *mixture* of cell types: no cell says which layer it
is in, and the mixture shows only over enough neighbours (issue 11, finding 8). Upstream's graphs
(STAGATE 6-NN, GraphST 3-NN) were set for Visium spots, each already an average of several cells.
This script measures what scale works, on several simulated sections whose domains span different
numbers of cells, and prints the ARI of every method at every scale it is given:

* ``gmm``: the mixture on PCA(20) of expression, no space (the floor);
* ``neighbour-average``: expression averaged over each cell and its graph neighbours, then the
  same mixture (the trivial spatial reference a model has to beat);
* ``stagate`` and ``graphst``: the graph autoencoders with all other settings at their defaults
  (STAGATE 200 epochs, GraphST 600), so the rows are what a user gets; REFERENCES adds
  upstream's Visium settings (STAGATE k 6 and 1,000 epochs, GraphST k 3 and its "10X" path).

Sections: MERSCOPE-like (300 genes) simulated sections of six layered domains
(``ssl_st.datasets.simulate``), of about 1,500 cells each. The simulator draws its six layers over
a fixed 2,000 x 1,500 um field, so a section simulated with more cells has layers that are more
cells thick; a vertical strip of it (all six layers, fewer cells) keeps the cost of a fit the same:

* ``thin``: 1,500 cells over the whole field (layers 4-10 cell spacings thick);
* ``medium``: a 750 um strip of 4,000 cells (7-18 spacings);
* ``thick``: a 300 um strip of 10,000 cells (11-28 spacings).

A cell spacing is the median distance to the nearest cell. For each k the table gives the mean
degree of the symmetrised kNN graph and how many cells the method's output averages over (the
effective count of the weights, ``cluster.settings.knn_for``): one hop for neighbour-average and
STAGATE (its embedding z is one attention hop of x; attention squashed by a sigmoid stays within a
factor e of uniform), two hops for GraphST (its embedding is the decoder's output, A(A x W1) W2).

Cost (measured on 2 cores shared with other jobs, so upper bounds): a fit at 200 STAGATE or 600
GraphST epochs takes 1-2 min of one core, at 1,000 STAGATE epochs 4-5 min; the whole table (48
fits) took 72 min of fitting, about 40 min with ``--jobs 2``. ``--sections``, ``--k``,
``--methods`` and ``--no-references`` cut it down. ``--seeds`` runs each cell with several seeds
(model and head): a single fit's ARI moves by up to +-0.1 with the seed of the mixture head alone,
so one seed cannot rank methods that are within 0.1 of each other.

    python bench/neighbourhood_scale.py --jobs 2                      # the whole table, seed 0
    python bench/neighbourhood_scale.py --k 24 --graphst-k 12 --seeds 0 1 2 --no-references --jobs 2
    python bench/neighbourhood_scale.py --methods neighbour-average gmm --k 3 6 12 24 48 96
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

FIELD_WIDTH_UM = 2000.0  # the simulator's field (ssl_st.datasets.simulate._WIDTH x _HEIGHT)
FIELD_HEIGHT_UM = 1500.0
HOPS = {"neighbour-average": 1, "stagate": 1, "graphst": 2}  # hops of the graph each output mixes


@dataclass(frozen=True)
class Section:
    """A simulated section: ``simulated`` cells over the whole field, of which the strip
    ``x < strip * width`` is kept."""

    name: str
    simulated: int
    strip: float
    seed: int = 1

    def make(self):
        from ssl_st import datasets

        adata = datasets.generate("merscope", seed=self.seed, n_cells=self.simulated)
        keep = np.asarray(adata.obsm["spatial"])[:, 0] < self.strip * FIELD_WIDTH_UM
        return adata[keep].copy()


SECTIONS = (Section("thin", 1500, 1.0), Section("medium", 4000, 0.375), Section("thick", 10000, 0.15))
DEFAULT_K = (6, 12, 24, 48)
GRAPHST_K = (3, 6, 12, 24)  # two hops: the same number of cells averaged at half the k (settings.knn_for)


def describe(adata) -> dict:
    """Cell spacing and layer thickness in spacings (layers span the strip's width)."""
    from scipy.spatial import cKDTree

    xy = np.asarray(adata.obsm["spatial"])
    spacing = float(np.median(cKDTree(xy).query(xy, k=2)[0][:, 1]))
    share = adata.obs["layer"].value_counts(normalize=True).to_numpy()
    thickness = share * FIELD_HEIGHT_UM / spacing
    return {"cells": int(adata.n_obs), "spacing_um": spacing, "thickness_median": float(np.median(thickness)),
            "thickness_min": float(thickness.min()), "thickness_max": float(thickness.max())}


def mixed_cells(adjacency, hops: int) -> float:
    """How many cells ``hops`` hops of the closed-neighbourhood mean are worth: the effective count
    ``(sum w)^2 / sum w^2`` of a cell's weights, median over cells (``cluster.settings.knn_for``)."""
    import scipy.sparse as sp

    closed = (adjacency + sp.identity(adjacency.shape[0], format="csr")).tocsr()
    closed.data[:] = 1.0
    step = sp.diags(1.0 / np.asarray(closed.sum(axis=1)).ravel()) @ closed
    weights = step
    for _ in range(hops - 1):
        weights = (weights @ step).tocsr()
    squares = np.asarray(weights.multiply(weights).sum(axis=1)).ravel()
    return float(np.median(np.asarray(weights.sum(axis=1)).ravel() ** 2 / squares))


# Named settings measured besides the scale sweep: upstream's Visium defaults (the "before"), and the
# default scale at upstream's epochs. ``--no-references`` leaves them out (they are the costly rows).
REFERENCES = {
    "stagate": {"upstream: k 6, 1000 ep": {"k": 6, "epochs": 1000}, "k 24, 1000 ep": {"k": 24, "epochs": 1000}},
    "graphst": {"upstream: k 3, 10X": {"k": 3, "variant": "10X"}},
}

Run = tuple[Section, str, str, tuple[tuple[str, object], ...], int]  # section, method, label, settings, seed


def run_one(section: Section, method: str, label: str, settings: tuple[tuple[str, object], ...], seed: int,
            threads: int) -> dict:
    """One find_domains run, scored against the simulated layers."""
    sys.path.insert(0, str(REPO))
    from cluster import DomainConfig, find_domains, score_domains
    from ssl_st.threads import limit_threads

    limit_threads(threads)
    adata = section.make()
    config = DomainConfig.from_name(method, n_domains=6, **dict(settings))
    start = time.perf_counter()
    result = find_domains(adata, config, seed=seed)
    seconds = time.perf_counter() - start
    row = {"section": section.name, "method": method, "label": label, "settings": dict(settings), "seed": seed,
           "ari": score_domains(adata, labels="layer")["ari"], "seconds": seconds, **describe(adata)}
    if method in HOPS:
        row["mean_degree"] = float(result.info["mean_degree"])
        row["mixed_cells"] = mixed_cells(adata.obsp["spatial_connectivities"], HOPS[method])
    return row


def plan(args: argparse.Namespace) -> list[Run]:
    from cluster import DOMAIN_METHODS

    sections = [s for s in SECTIONS if s.name in args.sections]
    runs: list[Run] = []
    for method in args.methods:
        cls = DOMAIN_METHODS[method]
        fields = cls.__dataclass_fields__
        epochs = {"epochs": args.epochs} if args.epochs is not None and "epochs" in fields else {}
        named: dict[str, dict[str, object]] = {}
        if "k" not in fields:
            named["-"] = {}
        else:
            scales = args.graphst_k if method == "graphst" and args.graphst_k else args.k
            default = cls().k
            for k in dict.fromkeys((*scales, default)):  # the default is always measured
                named[f"k {k}{'*' if k == default else ''}"] = {"k": k, **epochs}
        if not args.no_references:
            named.update(REFERENCES.get(method, {}))
        runs += [(section, method, label, tuple(settings.items()), seed)
                 for label, settings in named.items() for section in sections for seed in args.seeds]
    return runs


def _ari(values: list[float], width: int) -> str:
    if not values:
        return " " * width
    if len(values) == 1:
        return f"{values[0]:>{width}.3f}"
    return f"{np.mean(values):>{width - 6}.3f}+-{np.std(values):.2f}"


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    sections = [s.name for s in SECTIONS if s.name in args.sections]
    print("Sections (seed 1, MERSCOPE-like, 6 layers; thickness of a layer in median nearest-cell spacings):")
    seen: dict[str, dict] = {}
    for row in rows:
        seen.setdefault(row["section"], row)
    for name in sections:
        r = seen[name]
        print(f"  {name:<7} {r['cells']:>5} cells, spacing {r['spacing_um']:5.1f} um, layers "
              f"{r['thickness_min']:4.1f}-{r['thickness_max']:4.1f} spacings thick (median {r['thickness_median']:4.1f})")
    epochs = "" if args.epochs is None else f"; the k rows at {args.epochs} epochs, NOT the defaults"
    seeds = ", ".join(map(str, args.seeds))
    print(f"\nARI against the layers (mean over seeds {seeds}, +- sd where more than one; * = the default k; "
          f"other settings at their defaults{epochs}). degree: mean degree of the graph; cells: how many cells "
          "the output averages over:")
    width = 13 if len(args.seeds) > 1 else 7
    header = (f"{'method':<18} {'setting':<22} {'degree':>6} {'cells':>5} | " + " ".join(f"{s:>{width}}" for s in sections)
              + f" | {'mean':>6}")
    print(header)
    print("-" * len(header))
    for method, label in dict.fromkeys((r["method"], r["label"]) for r in rows):
        runs = [r for r in rows if r["method"] == method and r["label"] == label]
        by_section = {s: [r["ari"] for r in runs if r["section"] == s] for s in sections}
        degree = f"{np.mean([r['mean_degree'] for r in runs]):6.1f}" if "mean_degree" in runs[0] else f"{'-':>6}"
        cells = f"{np.mean([r['mixed_cells'] for r in runs]):5.0f}" if "mixed_cells" in runs[0] else f"{1:>5}"
        print(f"{method:<18} {label:<22} {degree} {cells} | " + " ".join(_ari(by_section[s], width) for s in sections)
              + f" | {np.mean([np.mean(v) for v in by_section.values() if v]):6.3f}")
    total = sum(r["seconds"] for r in rows)
    print(f"\n{len(rows)} fits, {total / 60:.0f} min of fitting ({args.threads} thread(s) each, {args.jobs} at a time; "
          "timings on a shared, loaded machine)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=[s.name for s in SECTIONS], choices=[s.name for s in SECTIONS])
    parser.add_argument("--methods", nargs="+", default=["gmm", "neighbour-average", "stagate", "graphst"])
    parser.add_argument("--k", type=int, nargs="+", default=list(DEFAULT_K), help="kNN scales (neighbours per cell)")
    parser.add_argument("--graphst-k", type=int, nargs="*", default=list(GRAPHST_K),
                        help="GraphST's scales (two hops); empty: the same as --k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of model and head, one fit each")
    parser.add_argument("--epochs", type=int, help="the k rows at these epochs instead of the defaults (quick looks)")
    parser.add_argument("--no-references", action="store_true", help="leave out upstream's settings (costly rows)")
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads per fit")
    parser.add_argument("--jobs", type=int, default=1, help="fits run side by side, each in its own process")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))

    runs = plan(args)
    rows: list[dict] = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, *run, args.threads) for run in runs]
        for (section, method, label, _, seed), future in zip(runs, futures):
            rows.append(future.result())
            print(f"  {section.name:<7} {method:<18} {label} seed {seed}: ARI {rows[-1]['ari']:.3f} ({rows[-1]['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print_table(rows, args)


if __name__ == "__main__":
    main()
