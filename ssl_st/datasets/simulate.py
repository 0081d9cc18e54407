"""Seeded simulator standing in for the study's single-cell atlas and spatial sections.

One shared "world" per ``world_seed`` holds the biology:

* genes with a baseline log-abundance ``b_g ~ N(-1, 1.5)`` and a NB dispersion ``theta_g``;
* ~60 gene programs (lineage, subclass, type, state, module) loading genes with ``w_pg`` in [1, 3];
* cell types in four lineages; types sharing a subclass program are genuinely close.

A cell ``c`` of type ``t`` gets program activities ``a_cp`` (type mean + jitter; state programs are
per-cell nuisance, with extra dissociation stress in the atlas only), log-rates
``r_cg = b_g + sum_p a_cp w_pg + donor/section/technology offsets``, proportions
``pi_c = softmax(r_c)`` over the measured genes and gamma-Poisson counts with mean ``depth_c * pi_cg``
and lognormal depth. Spatial sections add a layered, cortex-like layout (six wavy bands, each with
its own cell-type mix) and the domain gap of each technology: targeted panels with per-gene capture
efficiency, segmentation spillover and background (MERSCOPE; Xenium, with some outdated symbols), or
low-depth beads mixing neighbours and ambient RNA over the whole transcriptome (Slide-seqV2, human,
or mouse with a per-gene species divergence). Everything is seeded through ``SeedSequence``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.spatial import cKDTree

__all__ = ["FLAVOURS", "World", "world", "simulate_atlas", "simulate_section",
           "ortholog_table", "gene_programs", "cell_type_names"]

FLAVOURS: tuple[str, ...] = ("merscope", "xenium", "slideseq", "slideseq-mouse")
# Part of every cache key: bump whenever a change alters the generated data for a given seed.
SIMULATOR_VERSION = 2  # 2: the ground-truth domain column is obs["layer"] (was "domain")
N_GENES = 3000
N_CELL_TYPES = 14
DOMAINS: tuple[str, ...] = ("L1", "L2/3", "L4", "L5", "L6", "WM")
_CODES = {"atlas": 0, **{f: i + 1 for i, f in enumerate(FLAVOURS)}}
_WORLD_TAG, _PANEL_TAG = 7001, 7002
_WIDTH, _HEIGHT = 2000.0, 1500.0
_N_PROGRAMS = 60
_N_RENAMED = 20  # atlas symbols "STEM1" whose outdated name "STEM" Xenium still reports
_PANEL_SIZES = {"merscope": 300, "xenium": 313}
_N_BLANKS = 5

# name, lineage, subclass (types sharing one are hard to separate), home domains, background
# weight in every domain, atlas frequency (unnormalised; pericyte and VLMC are the rare ones)
_TYPES: tuple[tuple[str, str, str | None, dict[str, float], float, float], ...] = (
    ("L2/3 IT neuron", "excitatory", "IT", {"L2/3": 10}, 0.05, 0.16),
    ("L5 ET neuron", "excitatory", "deep", {"L5": 8}, 0.05, 0.06),
    ("astrocyte", "glia", None, {"L1": 8, "WM": 2}, 1.0, 0.12),
    ("oligodendrocyte", "glia", "oligo", {"WM": 12, "L6": 2}, 0.3, 0.14),
    ("microglia", "glia", None, {}, 0.8, 0.05),
    ("endothelial", "vascular", None, {}, 0.8, 0.04),
    ("pericyte", "vascular", "mural", {}, 0.3, 0.015),
    ("OPC", "glia", "oligo", {"WM": 3}, 0.4, 0.05),
    ("VIP interneuron", "inhibitory", None, {"L1": 4, "L2/3": 3}, 0.05, 0.04),
    ("SST interneuron", "inhibitory", "MGE", {"L5": 3, "L2/3": 1.5}, 0.05, 0.05),
    ("PVALB interneuron", "inhibitory", "MGE", {"L4": 3, "L5": 2, "L6": 1}, 0.05, 0.06),
    ("L6 CT neuron", "excitatory", "deep", {"L6": 10}, 0.05, 0.10),
    ("L4 IT neuron", "excitatory", "IT", {"L4": 10}, 0.05, 0.09),
    ("VLMC", "vascular", "mural", {"L1": 4}, 0.1, 0.012),
)
_SIZES = {"lineage": (30, 60), "subclass": (25, 50), "type": (20, 40), "state": (20, 80), "module": (20, 60)}
_MARKER_KINDS = ("lineage", "subclass", "type")
# mean program activity of member types; "close" is the private program of a type with a sibling
_ACTIVITY = {"lineage": (1.0, 0.7), "subclass": 1.0, "type": 1.0, "close": 0.55}
_JITTER = 0.25  # cell-level sd of every program activity
# Slide-seq: ambient RNA share, median UMIs per bead, and a bead's extra overdispersion (it samples a
# random fragment of a cell), as a factor on the gene's dispersion theta
_AMBIENT, _SLIDESEQ_DEPTH, _BEAD_THETA = 0.25, 400.0, 0.25


@dataclass(frozen=True, eq=False)
class World:
    """Shared biology; gene axes have ``G`` human genes then ``M`` mouse-only genes."""

    seed: int
    gene_ids: np.ndarray  # (G,) human Ensembl IDs
    symbols: np.ndarray  # (G,) human symbols
    program_names: tuple[str, ...]
    program_kind: np.ndarray  # (P,)
    loadings: np.ndarray  # (P, G + M)
    baseline: np.ndarray  # (G + M,)
    theta: np.ndarray  # (G + M,)
    type_names: tuple[str, ...]
    type_lineages: tuple[str, ...]
    activity_mean: np.ndarray  # (T, P)
    type_freq: np.ndarray  # (T,)
    domain_affinity: np.ndarray  # (D, T)
    renamed: np.ndarray  # human gene indices whose symbol gained a trailing "1"
    has_ortholog: np.ndarray  # (G,) bool
    mouse_ids: np.ndarray  # (G + M,)
    mouse_symbols: np.ndarray  # (G + M,)
    percent_id: np.ndarray  # (G,)
    species_lfc: np.ndarray  # (G + M,)
    panels: dict[str, tuple[np.ndarray, np.ndarray]]  # flavour -> (gene indices, capture efficiency)

    @property
    def n_genes(self) -> int:
        return len(self.gene_ids)


def _symbols(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))

    def word(lo: int, hi: int) -> str:
        return "".join(rng.choice(letters, rng.integers(lo, hi + 1)))

    # 0: renamed "STEM1" genes, 1: "C1orf112"-style open reading frames, 2: ordinary symbols
    kinds = rng.permutation(np.repeat([0, 1, 2], [_N_RENAMED, 12, n - _N_RENAMED - 12]))
    taken: set[str] = set()  # upper-cased, so symbols are unique case-insensitively
    out: list[str] = []
    for kind in kinds:
        while True:
            u, reserved = rng.random(), set()
            if kind == 0:
                stem = word(3, 5)
                symbol, reserved = stem + "1", {stem}  # the outdated name must not name another gene
            elif kind == 1:
                symbol = f"C{rng.integers(1, 23)}orf{rng.integers(1, 200)}"
            elif u < 0.6:
                symbol = word(2, 5) + str(rng.integers(1, 100))
            elif u < 0.8:
                symbol = f"{word(3, 4)}{rng.integers(1, 40)}{rng.choice(['A', 'B'])}{rng.integers(1, 10)}"
            else:
                symbol = word(3, 5)
            keys = {symbol.upper()} | reserved
            if not keys & taken:
                break
        taken |= keys
        out.append(symbol)
    return np.array(out, dtype=object), np.flatnonzero(kinds == 0)


def _program_specs(types: tuple[tuple, ...]) -> list[tuple[str, dict[int, float]]]:
    """(kind, {type index: mean activity}) for each program; state programs have no type means."""
    specs: list[tuple[str, dict[int, float]]] = []
    for lineage in dict.fromkeys(t[1] for t in types):
        members = [i for i, t in enumerate(types) if t[1] == lineage]
        specs += [("lineage", dict.fromkeys(members, _ACTIVITY["lineage"][0])),
                  ("lineage", dict.fromkeys(members, _ACTIVITY["lineage"][1]))]
    close: set[int] = set()
    for sub in dict.fromkeys(t[2] for t in types if t[2]):
        members = [i for i, t in enumerate(types) if t[2] == sub]
        if len(members) > 1:
            specs.append(("subclass", dict.fromkeys(members, _ACTIVITY["subclass"])))
            close.update(members)
    for i in range(len(types)):
        # close relatives get one weaker private program, so they stay hard (not impossible) to split
        specs += [("type", {i: _ACTIVITY["close"]})] if i in close else [("type", {i: _ACTIVITY["type"]})] * 2
    specs += [("state", {})] * 6
    specs += [("module", {})] * max(0, _N_PROGRAMS - len(specs))
    return specs


@functools.lru_cache(maxsize=8)
def world(world_seed: int = 0, *, n_genes: int = N_GENES, n_cell_types: int = N_CELL_TYPES) -> World:
    """The shared biology for ``world_seed`` (cached: every dataset of a seed sees the same world)."""
    if not 2 <= n_cell_types <= len(_TYPES) or n_genes < 1000:
        raise ValueError(f"need 2 <= n_cell_types <= {len(_TYPES)} and n_genes >= 1000")
    rng = np.random.default_rng(np.random.SeedSequence([world_seed, _WORLD_TAG]))
    types = _TYPES[:n_cell_types]
    n_mouse_only = round(0.045 * n_genes)
    n_all = n_genes + n_mouse_only
    symbols, renamed = _symbols(rng, n_genes)

    specs = _program_specs(types)
    kind = np.array([k for k, _ in specs])
    names = tuple(f"PROG_{k.upper()}_{(kind[: p + 1] == k).sum()}" for p, k in enumerate(kind))
    loadings = np.zeros((len(specs), n_all))
    used = np.zeros(n_genes, bool)
    for p, k in enumerate(kind):
        size = int(rng.integers(_SIZES[k][0], _SIZES[k][1] + 1))
        fresh, old = np.flatnonzero(~used), np.flatnonzero(used)
        n_old = min(old.size, max(rng.binomial(size, 0.08), size - fresh.size))  # a little overlap
        genes = np.r_[rng.choice(fresh, size - n_old, replace=False), rng.choice(old, n_old, replace=False)]
        loadings[p, genes] = rng.uniform(1.0, 3.0, size)
        used[genes] = True
    # mouse-only genes join a few non-state programs so they carry some signal too
    joins = np.flatnonzero(rng.random(n_mouse_only) < 0.3)
    non_state = np.flatnonzero(kind != "state")
    loadings[rng.choice(non_state, joins.size), n_genes + joins] = rng.uniform(1.0, 3.0, joins.size)

    means = np.zeros((len(types), len(specs)))
    for p, (k, by_type) in enumerate(specs):
        if k == "module":
            means[:, p] = rng.normal(0.0, 0.3, len(types))
        for t, m in by_type.items():
            means[t, p] = m
    freq = np.array([t[5] for t in types]) * rng.lognormal(0.0, 0.1, len(types))
    affinity = np.array([[t[4] + t[3].get(d, 0.0) for t in types] for d in DOMAINS])

    has_ortholog = rng.random(n_genes) < 0.85
    mouse_num = 20000 + 3 * rng.permutation(n_all)
    mouse_ids = np.array([f"ENSMUSG{m:011d}" for m in mouse_num], dtype=object)
    mouse_ids[:n_genes][~has_ortholog] = ""
    mouse_symbols = np.r_[[s[0].upper() + s[1:].lower() for s in symbols],
                          [f"Gm{10000 + 7 * i}" for i in range(n_mouse_only)]].astype(object)
    mouse_symbols[:n_genes][~has_ortholog] = ""

    markers = loadings[np.isin(kind, _MARKER_KINDS), :n_genes]
    panels = _platforms(world_seed, markers, renamed, has_ortholog, n_all)

    arrays = dict(
        gene_ids=np.array([f"ENSG{100000 + 7 * i:011d}" for i in range(n_genes)], dtype=object),
        symbols=symbols, program_kind=kind, loadings=loadings.astype(np.float32),
        baseline=rng.normal(-1.0, 1.5, n_all).astype(np.float32), theta=rng.uniform(2.0, 10.0, n_all),
        activity_mean=means, type_freq=freq / freq.sum(),
        domain_affinity=affinity / affinity.sum(1, keepdims=True),
        renamed=renamed, has_ortholog=has_ortholog, mouse_ids=mouse_ids, mouse_symbols=mouse_symbols,
        percent_id=np.round(100.0 - 60.0 * rng.beta(1.2, 3.6, n_genes), 2),
        species_lfc=rng.normal(0.0, 0.5, n_all),
    )
    for a in [*arrays.values(), *(x for pair in panels.values() for x in pair)]:
        a.flags.writeable = False  # the world is shared through the cache
    return World(seed=world_seed, program_names=names, type_names=tuple(t[0] for t in types),
                 type_lineages=tuple(t[1] for t in types),
                 panels=panels, **arrays)


def _platforms(world_seed: int, markers: np.ndarray, renamed: np.ndarray, has_ortholog: np.ndarray,
               n_all: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Measured genes and per-gene capture efficiency of each technology, fixed per world."""
    rng = np.random.default_rng(np.random.SeedSequence([world_seed, _PANEL_TAG]))
    n_genes = markers.shape[1]
    merscope = _panel(rng, _PANEL_SIZES["merscope"], np.array([], int), np.zeros(n_genes, bool), markers)
    shared = rng.choice(merscope, round(0.4 * _PANEL_SIZES["xenium"]), replace=False)
    candidates = np.setdiff1d(renamed, merscope)
    outdated = rng.choice(candidates, min(8, candidates.size), replace=False)
    in_merscope = np.isin(np.arange(n_genes), merscope)
    xenium = _panel(rng, _PANEL_SIZES["xenium"], np.r_[shared, outdated], in_merscope, markers)
    # Slide-seq keeps a fixed ~90% of genes (a detection filter); its 3' chemistry biases genes too
    human = np.sort(rng.choice(n_genes, round(0.9 * n_genes), replace=False))
    orthologs = np.flatnonzero(has_ortholog)
    mouse = np.r_[np.sort(rng.choice(orthologs, round(0.9 * orthologs.size), replace=False)),
                  np.arange(n_genes, n_all)]  # plus every mouse-only gene
    return {
        "merscope": (merscope, rng.lognormal(0.0, 0.6, merscope.size)),
        "xenium": (xenium, rng.lognormal(0.0, 0.6, xenium.size)),
        "slideseq": (human, rng.lognormal(0.0, 0.5, human.size)),
        "slideseq-mouse": (mouse, rng.lognormal(0.0, 0.5, mouse.size)),
    }


def _panel(rng: np.random.Generator, size: int, include: np.ndarray, exclude: np.ndarray,
           markers: np.ndarray) -> np.ndarray:
    """Targeted panel: ``include``, then the strongest free genes of each marker program in turn (a
    designed panel covers every type), then random other genes; ~75% of the panel are markers."""
    free = ~exclude
    free[include] = False
    n_marker = max(0, round(0.75 * size) - int((markers[:, include] > 0).any(0).sum()))
    score = markers * rng.lognormal(0.0, 0.3, markers.shape)  # noisy ranking: designers disagree
    order = np.argsort(-score, axis=1)
    picked: list[int] = []
    for rank in range(markers.shape[1]):
        for p in rng.permutation(markers.shape[0]):
            g = order[p, rank]
            if len(picked) < n_marker and free[g] and score[p, g] > 0:
                picked.append(g)
                free[g] = False
        if len(picked) >= n_marker:
            break
    others = np.flatnonzero(free & ~(markers > 0).any(0))
    rest = rng.choice(others, size - include.size - len(picked), replace=False)
    return np.sort(np.r_[include, picked, rest]).astype(int)


def _rng(world_seed: int, dataset: str, seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([world_seed, _CODES[dataset], seed]))


def _activities(w: World, rng: np.random.Generator, types: np.ndarray, stress: float) -> np.ndarray:
    a = w.activity_mean[types] + rng.normal(0.0, _JITTER, (types.size, len(w.program_names)))
    state = np.flatnonzero(w.program_kind == "state")
    s = rng.gamma(0.7, 0.4, (types.size, state.size))
    s[:, 0] = 2.0 * (rng.random(types.size) < 0.06) + rng.normal(0.0, 0.1, types.size)  # few cycling cells
    s[:, 1] += stress  # dissociation stress: present in the atlas, absent in situ
    a[:, state] = s
    return a


def _proportions(w: World, a: np.ndarray, genes: np.ndarray, offset: np.ndarray | float) -> np.ndarray:
    # float32 throughout: exp on float64 dominates the run time and buys no useful precision
    r = a.astype(np.float32) @ w.loadings[:, genes]
    r += w.baseline[genes]
    r += np.asarray(offset, dtype=np.float32)
    r -= r.max(1, keepdims=True)
    np.exp(r, out=r)
    r /= r.sum(1, keepdims=True)
    return r


def _counts(rng: np.random.Generator, mu: np.ndarray, theta: np.ndarray, block: int = 2048) -> sp.csr_matrix:
    """Gamma-Poisson (NB) counts, sampled in row blocks to bound memory."""
    parts, theta = [], theta.astype(np.float32)
    for start in range(0, mu.shape[0], block):
        m = mu[start:start + block]
        lam = rng.standard_gamma(np.broadcast_to(theta, m.shape), dtype=np.float32) * (m / theta)
        parts.append(sp.csr_matrix(rng.poisson(lam).astype(np.float32)))
    return sp.vstack(parts, format="csr") if parts else sp.csr_matrix(mu.shape, dtype=np.float32)


def _mix(rng: np.random.Generator, pi: np.ndarray, xy: np.ndarray, lo: float, hi: float,
         max_nb: int) -> np.ndarray:
    """Mix a fraction of 1..max_nb nearest neighbours' expected profiles into each cell/bead."""
    if pi.shape[0] <= max_nb:
        return pi
    _, nb = cKDTree(xy).query(xy, k=max_nb + 1)
    frac = rng.uniform(lo, hi, pi.shape[0])
    k = rng.integers(1, max_nb + 1, pi.shape[0])
    out = (1.0 - frac)[:, None] * pi
    for j in range(max_nb):
        out += np.where(k > j, frac / k, 0.0)[:, None] * pi[nb[:, j + 1]]
    return out


def _layout(rng: np.random.Generator, n: int) -> np.ndarray:
    """Jittered grid: cells fill the rectangle without overlapping."""
    nx = max(1, round(np.sqrt(n * _WIDTH / _HEIGHT)))
    ny = max(1, int(np.ceil(n / nx)))
    ix, iy = np.divmod(rng.choice(nx * ny, n, replace=False), ny)
    x, y = (ix + rng.uniform(0.1, 0.9, n)) * _WIDTH / nx, (iy + rng.uniform(0.1, 0.9, n)) * _HEIGHT / ny
    return np.c_[x, y]


def _domains(rng: np.random.Generator, xy: np.ndarray) -> np.ndarray:
    """Six bands along y with wavy, nearly parallel boundaries (layer 1 at small y)."""
    frac = np.array([0.10, 0.22, 0.14, 0.20, 0.18, 0.16]) * rng.uniform(0.85, 1.15, len(DOMAINS))
    base = np.cumsum(frac / frac.sum())[:-1] * _HEIGHT
    amp, wavelength = rng.uniform(20.0, 50.0), rng.uniform(800.0, 1600.0)
    phase = rng.uniform(0.0, 2 * np.pi) + rng.normal(0.0, 0.3, base.size)
    bounds = base + amp * np.sin(2 * np.pi * xy[:, :1] / wavelength + phase)
    return (xy[:, 1:2] > bounds).sum(1)


def _assemble(counts: sp.csr_matrix, obs: pd.DataFrame, var: pd.DataFrame, n_genes: int,
              params: dict[str, str | int | float | bool],
              obsm: dict[str, np.ndarray] | None = None) -> ad.AnnData:
    obs["n_counts"] = np.asarray(counts[:, :n_genes].sum(1)).ravel()  # genes only, not blank barcodes
    adata = ad.AnnData(X=counts, obs=obs, var=var, obsm=obsm, uns={"simulation": params})
    adata.layers["counts"] = adata.X
    return adata


def _cxg_var(ids: np.ndarray, names: np.ndarray) -> pd.DataFrame:
    ids = ids.astype(str)
    return pd.DataFrame({"feature_name": names.astype(str), "feature_id": ids}, index=pd.Index(ids))


def simulate_atlas(n_cells: int = 8000, *, seed: int = 0, world_seed: int = 0) -> ad.AnnData:
    """Reference single-cell atlas: all genes, CELLxGENE-style var, 3-6 donors, ~3000 UMIs per cell."""
    w, rng = world(world_seed), _rng(world_seed, "atlas", seed)
    types = rng.choice(len(w.type_names), n_cells, p=w.type_freq)
    n_donors = int(rng.integers(3, 7))
    donor = rng.choice(n_donors, n_cells, p=rng.dirichlet(np.full(n_donors, 5.0)))
    donor_lfc = rng.normal(0.0, 0.2, (n_donors, w.n_genes))
    a = _activities(w, rng, types, stress=0.5)
    pi = _proportions(w, a, np.arange(w.n_genes), donor_lfc.astype(np.float32)[donor])
    depth = (3000.0 * rng.lognormal(0.0, 0.5, n_cells)).astype(np.float32)
    counts = _counts(rng, depth[:, None] * pi, w.theta[: w.n_genes])
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(types, w.type_names),
         "donor_id": pd.Categorical([f"D{d + 1}" for d in donor], [f"D{d + 1}" for d in range(n_donors)])},
        index=pd.Index([f"atlas-{seed}-{i:06d}" for i in range(n_cells)]))
    params = {"flavour": "atlas", "seed": seed, "world_seed": world_seed, "n_cells": n_cells,
              "n_genes": w.n_genes, "n_donors": n_donors, "depth_median": 3000.0, "depth_sdlog": 0.5}
    return _assemble(counts, obs, _cxg_var(w.gene_ids, w.symbols), w.n_genes, params)


def simulate_section(flavour: str, n_cells: int = 5000, *, seed: int = 0, world_seed: int = 0) -> ad.AnnData:
    """One layered, cortex-like tissue section measured with ``flavour`` (see :data:`FLAVOURS`)."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; expected one of {FLAVOURS}")
    w, rng = world(world_seed), _rng(world_seed, flavour, seed)
    xy = _layout(rng, n_cells)
    domain = _domains(rng, xy)
    mix = np.stack([rng.dirichlet(60.0 * p + 0.02) for p in w.domain_affinity])
    types = (rng.random(n_cells)[:, None] > np.cumsum(mix, 1)[domain]).sum(1).clip(max=len(w.type_names) - 1)
    a = _activities(w, rng, types, stress=0.0)

    genes, efficiency = w.panels[flavour]
    mouse = flavour == "slideseq-mouse"
    # the section's donor/batch effect, the platform's capture efficiency and, in mouse, the species
    offset = rng.normal(0.0, 0.2, genes.size) + np.log(efficiency) + (w.species_lfc[genes] if mouse else 0.0)
    pi = _proportions(w, a, genes, offset)
    panel = flavour in _PANEL_SIZES
    if panel:  # segmentation spillover from the nearest neighbour
        pi = _mix(rng, pi, xy, 0.05, 0.15, 1)
        depth_median, background = (250.0 if flavour == "merscope" else 180.0), 0.01
    else:  # a bead captures transcripts from 1-2 neighbouring cells besides its own, and ambient RNA
        pi = (1.0 - _AMBIENT) * _mix(rng, pi, xy, 0.2, 0.3, 2) + _AMBIENT * pi.mean(0)
        depth_median, background = _SLIDESEQ_DEPTH, 0.0
    depth = (depth_median * rng.lognormal(0.0, 0.25, n_cells)).astype(np.float32)
    theta = w.theta[genes] * (1.0 if panel else _BEAD_THETA)
    counts = _counts(rng, depth[:, None] * pi + background, theta)

    if flavour == "merscope":
        # blank barcodes: not genes, a few false-positive decodings per cell; readers drop them
        blank_names = [f"Blank-{i + 1:04d}" for i in range(_N_BLANKS)]
        var = pd.DataFrame(index=pd.Index([*w.symbols[genes].astype(str), *blank_names]))
        blanks = rng.poisson(rng.uniform(0.02, 0.1, _N_BLANKS), (n_cells, _N_BLANKS)).astype(np.float32)
        counts = sp.hstack([counts, sp.csr_matrix(blanks)], format="csr")
    elif flavour == "xenium":
        outdated = np.isin(genes, w.renamed)
        names = np.array([s[:-1] if o else s for s, o in zip(w.symbols[genes], outdated)], dtype=str)
        var = pd.DataFrame({"gene_ids": w.gene_ids[genes].astype(str), "outdated_symbol": outdated},
                           index=pd.Index(names))
    elif mouse:
        var = _cxg_var(w.mouse_ids[genes], w.mouse_symbols[genes])
    else:
        var = _cxg_var(w.gene_ids[genes], w.symbols[genes])

    section_id = f"{flavour}-{seed}"
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(types, w.type_names),
         # "layer", not "domain": obs["domain"] is where domain finders write their answer
         "layer": pd.Categorical.from_codes(domain, DOMAINS), "section_id": section_id},
        index=pd.Index([f"{section_id}-{i:06d}" for i in range(n_cells)]))
    obsm = {"spatial": xy} | ({} if panel else {"X_spatial": xy.copy()})
    params = {"flavour": flavour, "seed": seed, "world_seed": world_seed, "n_cells": n_cells,
              "n_genes": int(genes.size), "depth_median": depth_median, "depth_sdlog": 0.25,
              "background": background, "ambient": 0.0 if panel else _AMBIENT, "species": "mouse" if mouse else "human",
              "width_um": _WIDTH, "height_um": _HEIGHT, "n_domains": len(DOMAINS)}
    return _assemble(counts, obs, var, int(genes.size), params, obsm)


def ortholog_table(*, world_seed: int = 0) -> pd.DataFrame:
    """Mouse-human one-to-one orthologs in the layout of the study's ``ensembl_homologs.csv``."""
    w = world(world_seed)
    idx = np.flatnonzero(w.has_ortholog)
    return pd.DataFrame({
        "Mouse_Gene_Symbol": w.mouse_symbols[idx].astype(str),
        "Mouse_Ensembl_ID": w.mouse_ids[idx].astype(str),
        "Human_Gene_Symbol": w.symbols[idx].astype(str),
        "Human_Ensembl_ID": w.gene_ids[idx].astype(str),
        "Homology_Type": "ortholog_one2one", "Confidence": "1", "Percent_ID": w.percent_id[idx],
    })


def gene_programs(*, world_seed: int = 0) -> dict[str, list[str]]:
    """Program name -> human gene symbols of its genes."""
    w = world(world_seed)
    human = w.loadings[:, : w.n_genes] > 0
    return {name: w.symbols[human[p]].tolist() for p, name in enumerate(w.program_names)}


def cell_type_names(*, world_seed: int = 0) -> list[str]:
    """Cell type names, in the order of the ``cell_type`` categories."""
    return list(world(world_seed).type_names)
