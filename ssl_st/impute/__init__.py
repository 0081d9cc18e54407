"""Gene imputation: unmeasured genes of a spatial panel predicted from a reference single-cell dataset.

The reusability study (§7) imputed the 313-gene Xenium panel to the whole transcriptome with SpaGE,
Tangram and uniPort, validated by holding out 8 panel genes (Pearson r per gene against the measured
values), and fed the imputed sections to the cell-type tasks. Two of those methods are here:

- ``spage`` (:mod:`.spage`; Abdelaal et al. 2020, *Nucleic Acids Res.* 48:e107): principal vectors
  shared by both domains, cosine kNN of each spatial cell among the reference cells, weighted average;
- ``tangram`` (:mod:`.tangram`; Biancalani et al. 2021, *Nat. Methods* 18:1352), "cells" mode: a
  probabilistic mapping of reference cells onto spatial cells fitted by gradient descent.

Both reduce to one (spatial cell x reference cell) weight matrix with rows summing to one; every
imputed quantity is that weighted average of the reference cells.

Value scale
-----------
Imputation runs on log1p(CP10k): the reference is normalised over all its genes, the spatial panel
over the shared genes it uses for training (as SpaGE's and uniPort's notebooks normalise; the study's
Tangram run used raw counts). Imputed values are therefore on the reference's scale:
log1p(10,000 x share of the cell's whole-transcriptome counts).

The returned AnnData must nevertheless hold a count-like matrix in ``layers["counts"]`` and ``X``: the
cell-type tasks (and upstream preprocessing, see :mod:`ssl_st.pp`) read raw counts, scale each cell to
10,000 over the model's genes and apply log1p. Feeding them log values would log-transform twice, and
feeding CP10k values next to raw panel counts would let the ~3,000 imputed genes swamp the ~300
measured ones. So:

- measured genes keep their **original counts** (the measured value wins over an imputed one);
- imputed genes get **pseudo-counts** (floats, not integers), the back-transformed imputed profile
  ``expm1(y_cg)`` rescaled so that it sums to ``g_c * D_c``. ``D_c = L_c / f_c`` is a pseudo
  whole-transcriptome depth: ``L_c`` the cell's measured counts over the training genes, ``f_c`` and
  ``g_c`` the shares of a cell's counts on the training and on the imputed genes, imputed like any
  other gene (the weighted average of the matched reference cells' shares).

Closing the profile to ``g_c * D_c``, rather than using ``expm1(y) * D_c / 10,000`` directly, undoes
the shrinkage of averaging log values (Jensen): on the demo data the back-transformed profile covers
only ~53 % of a cell instead of ~87 %, which after the tasks' per-cell scaling would give the measured
genes ~20 % of every cell instead of the reference's ~13 %. With it, per-cell scaling downstream sees
measured and imputed genes in the proportions of the matched reference cells, and the imputed genes
in the ratios of the imputed values. ``D_c`` is stored in ``obs["imputation_pseudo_depth"]``.
``layers["log1p"]`` holds the method's imputed log values for imputed genes (what :func:`holdout`
validates) and ``log1p(10,000 x counts / D_c)`` for measured genes, the same reference scale.

Deviations from the published tools
-----------------------------------
SpaGE: PCA axes from ``eigh`` of the genes x genes scatter matrix instead of PRECISE's sklearn PCA
(same axes up to sign, which changes nothing downstream); projection onto the reference-side principal
vectors, as SpaGE's code does (it projects on ``source_components_`` and its source is the scRNA-seq
data); genes constant in either dataset are left out of training (SpaGE's z-score would be NaN); when
at most one neighbour has cosine distance < 1, equal weights over the valid neighbours (or all k)
replace SpaGE's 0/0 or all-zero row; at least one principal vector is kept. The study ran SpaGE with
n_pv=5; the default here is 30 (hold-out r 0.24 with 5, 0.31 with 30 on the demo).
Tangram: log-normalised inputs (the study used raw counts); Tangram's training-gene selection
(``pp_adatas``) is replaced by the shared genes minus those constant in either dataset; the
``rna_count_based`` density is each spatial cell's share of the raw counts over the training genes
(Tangram sums whatever ``X`` holds); at most ``max_reference_cells`` reference cells (seeded choice) to
bound the dense mapping matrix (mini-batching over spatial cells would break the softmax over spatial
cells); a private seeded torch generator for the initial matrix instead of the global NumPy seed;
imputed expression normalised per spatial cell (a weighted average) instead of Tangram's unnormalised
``M^T X``; ``lambda_g2`` (per-cell cosine term) is 0 by default, as in Tangram.
Both: measured genes win over imputed ones (the study's SpaGE convention; its Tangram and uniPort
outputs dropped the measured genes).

On the demo data (atlas, 3,000 cells, as reference; MERSCOPE-like section, 1,500 cells; 8 held-out
genes) the mean hold-out r is 0.31 for SpaGE and 0.22 for Tangram; predicting each spatial cell by the
mean of its *true* cell type reaches only 0.31, because ~250 counts per cell make single-cell
measurements noisy. A reference whose held-out genes are shuffled across cells gives r ~ 0.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ..genes import Vocabulary, counts_matrix, gene_table, map_genes
from ..pp import normalize_log1p
from .spage import spage_weights
from .tangram import tangram_weights

__all__ = ["ImputeConfig", "shared_genes", "impute", "holdout"]

TARGET_SUM = 1e4
# Panel columns that are not genes: blank / negative-control / unassigned codewords (MERSCOPE
# "Blank-0001", Xenium "NegControlProbe_*", "BLANK_*", "UnassignedCodeword_*", CosMx "NegPrb*").
_NOT_A_GENE = re.compile(r"^(blank|negcontrol|negprb|systemcontrol|unassigned|deprecated|intergenic)", re.I)
_MATCHING = "Ensembl ID first (version suffix stripped), then case-insensitive symbol (ssl_st.genes.map_genes)"


@dataclass(frozen=True)
class ImputeConfig:
    method: Literal["spage", "tangram"]
    n_pv: int = 30  # spage: principal vectors
    k: int = 50  # spage: neighbours
    epochs: int = 300  # tangram: optimisation steps
    learning_rate: float = 0.1  # tangram
    density_prior: Literal["uniform", "rna_count_based"] = "rna_count_based"  # tangram
    lambda_g2: float = 0.0  # tangram: weight of the per-cell cosine term (Tangram's default is 0)
    max_reference_cells: int = 5000  # tangram: bounds the dense reference x spatial mapping matrix
    threads: int | None = None  # tangram: torch CPU threads during the fit (None: torch's setting)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("spage", "tangram"):
            raise ValueError(f"unknown imputation method {self.method!r}; choose 'spage' or 'tangram'")
        if self.density_prior not in ("uniform", "rna_count_based"):
            raise ValueError(f"density_prior must be 'uniform' or 'rna_count_based', not {self.density_prior!r}")
        for name in ("n_pv", "k", "epochs", "max_reference_cells"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


def _panel_columns(var: pd.DataFrame) -> np.ndarray:
    """Indices of the spatial columns that are genes (control barcodes dropped)."""
    return np.flatnonzero([not _NOT_A_GENE.match(str(name)) for name in var.index])


def shared_genes(spatial: AnnData, reference: AnnData) -> tuple[np.ndarray, np.ndarray]:
    """Column indices ``(spatial_idx, reference_idx)`` of the genes both datasets measure, paired.

    Matching is ``ssl_st.genes.map_genes``: Ensembl ID first, then case-insensitive symbol; each
    reference gene receives at most one spatial gene. Control barcodes (``Blank-0001`` ...) never match.
    Empty arrays when nothing is shared (``impute`` and ``holdout`` turn that into an error).
    """
    panel = _panel_columns(spatial.var)
    mapping = map_genes(spatial.var.iloc[panel], Vocabulary.from_var(reference.var))
    return panel[mapping.source], mapping.target


def _require_shared(spatial: AnnData, reference: AnnData) -> tuple[np.ndarray, np.ndarray]:
    sp_idx, ref_idx = shared_genes(spatial, reference)
    if sp_idx.size == 0:
        raise ValueError(
            f"the spatial dataset ({len(_panel_columns(spatial.var))} genes, e.g. "
            f"{', '.join(map(str, spatial.var_names[:3]))}) and the reference ({reference.n_vars} genes, e.g. "
            f"{', '.join(map(str, reference.var_names[:3]))}) share no gene; genes are matched by {_MATCHING}. "
            "Check that both are the same species and that var holds Ensembl IDs (gene_ids/feature_id) or symbols."
        )
    return sp_idx, ref_idx


def _impute_log(
    spatial_counts: sp.csr_matrix,
    reference_counts: sp.csr_matrix,
    reference_log: sp.csr_matrix,
    train_ref: np.ndarray,
    target_ref: np.ndarray,
    config: ImputeConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Imputed log1p(CP10k) of ``target_ref`` genes, each spatial cell's pseudo-depth ``D_c`` and the
    imputed share ``g_c`` of its counts on the target genes.

    ``spatial_counts`` holds the spatial counts of the training genes, column-paired with ``train_ref``.
    """
    started = time.perf_counter()
    sp_log = normalize_log1p(spatial_counts, TARGET_SUM).toarray()
    ref_train = reference_log[:, train_ref].toarray()
    # Genes constant in either dataset carry no signal (and make z-scores / cosines undefined).
    keep = (sp_log.std(axis=0) > 0) & (ref_train.std(axis=0) > 0)
    if keep.sum() < 2:
        raise ValueError(
            f"only {int(keep.sum())} of {keep.size} shared training genes vary in both datasets; "
            "imputation needs at least 2 to align the datasets"
        )
    sp_log, ref_train, train_ref = sp_log[:, keep], ref_train[:, keep], train_ref[keep]
    spatial_counts = spatial_counts[:, np.flatnonzero(keep)]
    library = np.asarray(spatial_counts.sum(axis=1)).ravel()
    if not keep.all():  # the spatial normalisation is over the genes actually used
        sp_log = normalize_log1p(spatial_counts, TARGET_SUM).toarray()

    info: dict[str, Any] = {"n_train_genes": int(keep.sum())}
    rows = np.arange(reference_log.shape[0])
    if config.method == "spage":
        weights, extra = spage_weights(ref_train, sp_log, n_pv=config.n_pv, k=config.k)
    else:
        if rows.size > config.max_reference_cells:
            rng = np.random.default_rng(config.seed)
            rows = np.sort(rng.choice(rows.size, config.max_reference_cells, replace=False))
        if config.density_prior == "rna_count_based":
            density = library / max(library.sum(), 1.0)
            density = np.where(density > 0, density, 1e-12)  # KL needs a strictly positive target
            density /= density.sum()
        else:
            density = np.full(library.size, 1.0 / library.size)
        weights, extra = tangram_weights(
            ref_train[rows], sp_log, density, epochs=config.epochs, learning_rate=config.learning_rate,
            lambda_g2=config.lambda_g2, seed=config.seed, threads=config.threads,
        )
    info.update(extra, reference_cells_used=int(rows.size))

    # Shares of each reference cell's counts on the training and on the target genes, averaged like
    # any gene: they turn measured panel counts into pseudo-counts (see the module docstring).
    ref_counts = reference_counts[rows]
    ref_total = np.asarray(ref_counts.sum(axis=1)).ravel()
    ref_total = np.where(ref_total > 0, ref_total, 1.0)
    train_share = np.asarray(ref_counts[:, train_ref].sum(axis=1)).ravel() / ref_total
    target_share = np.asarray(ref_counts[:, target_ref].sum(axis=1)).ravel() / ref_total
    train_share, target_share = (np.asarray(weights @ s).ravel() for s in (train_share, target_share))
    depth = np.where(train_share > 0, library / np.where(train_share > 0, train_share, 1.0), 0.0)

    imputed = weights @ reference_log[rows][:, target_ref]
    imputed = imputed.toarray() if sp.issparse(imputed) else np.asarray(imputed)
    info["runtime_s"] = round(time.perf_counter() - started, 3)
    return imputed.astype(np.float32), depth, target_share, info


class _GeneIndex:
    """Look-up of a gene by Ensembl ID (version stripped) or, failing that, case-insensitive symbol."""

    def __init__(self, ids: Sequence[Any], symbols: Sequence[Any]) -> None:
        # reversed: the first occurrence wins, as in ssl_st.genes.map_genes
        self.by_id = {g: i for i, g in reversed(list(enumerate(ids))) if isinstance(g, str) and g}
        self.by_symbol = {s.lower(): i for i, s in reversed(list(enumerate(symbols))) if isinstance(s, str) and s}

    def find(self, name: str) -> int | None:
        hit = self.by_id.get(re.sub(r"\.\d+$", "", str(name)))
        return hit if hit is not None else self.by_symbol.get(str(name).lower())


def _resolve(names: Sequence[str], index: _GeneIndex, what: str) -> np.ndarray:
    """Positions of ``names`` (IDs or symbols), first occurrence each; ValueError naming the missing ones."""
    hits = {name: index.find(name) for name in names}
    missing = [name for name, hit in hits.items() if hit is None]
    if missing:
        raise ValueError(f"{len(missing)} requested gene(s) not found in {what}: {', '.join(map(str, missing[:10]))}")
    return np.asarray(list(dict.fromkeys(hits.values())), dtype=np.int64)


def _unique(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        n = seen.get(name, 0)
        out.append(name if n == 0 else f"{name}-{n}")
        seen[name] = n + 1
    return out


def impute(
    spatial: AnnData, reference: AnnData, config: ImputeConfig, *, genes: Sequence[str] | None = None
) -> AnnData:
    """A new AnnData over the spatial cells: measured panel genes (original counts) + imputed genes.

    Imputes every reference gene the panel lacks, or only ``genes`` (Ensembl IDs or symbols of the
    reference; requested genes the panel measures keep their measured values). Counts and scales are
    described in the module docstring; ``obs``/``obsm`` are copied and
    ``uns["ssl_st_imputation"]`` records the method, gene numbers and fit diagnostics.
    """
    sp_idx, ref_idx = _require_shared(spatial, reference)
    panel = _panel_columns(spatial.var)
    ref_genes = gene_table(reference.var)
    measured_ref = set(ref_idx.tolist())
    if genes is None:
        targets, already = np.setdiff1d(np.arange(reference.n_vars), ref_idx), []
    else:
        index = _GeneIndex(ref_genes["id"], ref_genes["symbol"])
        requested = _resolve(genes, index, f"the reference ({reference.n_vars} genes)")
        targets = np.asarray([g for g in requested if g not in measured_ref], dtype=np.int64)
        already = [str(ref_genes["symbol"].iloc[g]) for g in requested if g in measured_ref]

    sp_counts = counts_matrix(spatial)
    ref_counts = counts_matrix(reference)
    ref_log = normalize_log1p(ref_counts, TARGET_SUM)
    imputed_log, depth, target_share, info = _impute_log(
        sp_counts[:, sp_idx], ref_counts, ref_log, ref_idx, targets, config
    )

    # Measured genes: original counts. Imputed: the expm1 profile closed to g_c * D_c pseudo-counts.
    measured = sp_counts[:, panel]
    profile = np.expm1(imputed_log.astype(np.float64))
    total = profile.sum(axis=1, keepdims=True)
    pseudo = profile * ((target_share * depth)[:, None] / np.where(total > 0, total, 1.0))
    counts = sp.hstack([measured, sp.csr_matrix(pseudo.astype(np.float32))], format="csr", dtype=np.float32)
    counts.eliminate_zeros()
    scale = np.where(depth > 0, TARGET_SUM / np.where(depth > 0, depth, 1.0), 0.0)
    measured_log = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ measured, dtype=np.float32)
    np.log1p(measured_log.data, out=measured_log.data)
    log1p = sp.hstack([measured_log, sp.csr_matrix(imputed_log)], format="csr", dtype=np.float32)

    # var: reference ID and symbol wherever the gene is known to the reference.
    spatial_genes = gene_table(spatial.var.iloc[panel])
    symbols = spatial_genes["symbol"].where(spatial_genes["symbol"].notna(), pd.Series(spatial.var_names[panel]))
    ids = spatial_genes["id"].fillna("")
    matched = dict(zip(sp_idx.tolist(), ref_idx.tolist()))
    for j, col in enumerate(panel):
        if col in matched:
            symbols.iloc[j], ids.iloc[j] = ref_genes["symbol"].iloc[matched[col]], ref_genes["id"].iloc[matched[col]]
    var = pd.DataFrame(
        {
            "gene_symbols": [*map(str, symbols), *ref_genes["symbol"].iloc[targets].astype(str)],
            "gene_ids": [*map(str, ids), *ref_genes["id"].iloc[targets].fillna("").astype(str)],
            "imputed": np.r_[np.zeros(panel.size, bool), np.ones(targets.size, bool)],
            "spatial_name": [*map(str, spatial.var_names[panel]), *([""] * targets.size)],
        }
    )
    var.index = pd.Index(_unique(var["gene_symbols"].tolist()))

    obs = spatial.obs.copy()
    obs["imputation_pseudo_depth"] = depth
    out = AnnData(X=counts, obs=obs, var=var, obsm={key: v.copy() for key, v in spatial.obsm.items()},
                  uns=copy.deepcopy(dict(spatial.uns)))
    out.layers["counts"] = out.X
    out.layers["log1p"] = log1p
    out.uns["ssl_st_imputation"] = {
        "method": config.method,
        "config": asdict(config),
        "n_shared": int(sp_idx.size),
        "n_measured": int(panel.size),
        "n_imputed": int(targets.size),
        "requested_but_measured": already,
        "matching": _MATCHING,
        "value_scale": "counts: measured raw counts; imputed pseudo-counts = expm1(imputed log1p CP10k) "
        "closed to g_c*D_c per cell (D_c in obs['imputation_pseudo_depth']); log1p: imputed log values, "
        "measured genes as log1p(1e4*counts/D_c); see the ssl_st.impute docstring",
        **info,
    }
    return out


def _pearson(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per-column Pearson r; NaN where either column is constant."""
    a = truth.astype(np.float64) - truth.mean(axis=0, dtype=np.float64)
    b = predicted.astype(np.float64) - predicted.mean(axis=0, dtype=np.float64)
    denominator = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, (a * b).sum(axis=0) / denominator, np.nan)


def holdout(
    spatial: AnnData,
    reference: AnnData,
    config: ImputeConfig,
    *,
    genes: Sequence[str] | None = None,
    n_holdout: int = 8,
    seed: int = 0,
) -> pd.DataFrame:
    """The study's validation: hide panel genes from the spatial input, impute them back, correlate.

    ``genes`` names the held-out panel genes (spatial names, symbols or Ensembl IDs); otherwise
    ``n_holdout`` shared genes that vary across the spatial cells are drawn with ``seed``. Each row:
    ``gene`` (spatial name), ``pearson_r`` (over cells, imputed log values against the measured
    log1p(CP10k) over all shared genes), ``method``, ``n_train_genes``.
    """
    sp_idx, ref_idx = _require_shared(spatial, reference)
    sp_counts = counts_matrix(spatial)
    measured_log = normalize_log1p(sp_counts[:, sp_idx], TARGET_SUM).toarray()
    if genes is not None:
        table = gene_table(spatial.var.iloc[sp_idx])
        ref_table = gene_table(reference.var).iloc[ref_idx]
        # a panel gene by its spatial name, its own symbol/ID, or the reference's
        indexes = [
            _GeneIndex(table["id"].tolist(), list(spatial.var_names[sp_idx].astype(str))),
            _GeneIndex(table["id"].tolist(), table["symbol"].tolist()),
            _GeneIndex(ref_table["id"].tolist(), ref_table["symbol"].tolist()),
        ]
        held = []
        for name in genes:
            hit = next((h for h in (index.find(name) for index in indexes) if h is not None), None)
            if hit is None:
                raise ValueError(
                    f"held-out gene {name!r} is not among the {sp_idx.size} genes shared with the reference"
                )
            held.append(hit)
        held_pos = np.asarray(list(dict.fromkeys(held)), dtype=np.int64)
    else:
        if not 1 <= n_holdout <= sp_idx.size - 2:
            raise ValueError(
                f"n_holdout={n_holdout} but the datasets share {sp_idx.size} genes; hold out between 1 and "
                f"{max(sp_idx.size - 2, 0)} so that at least 2 shared genes remain to align the datasets"
            )
        # Only genes that vary across the spatial cells: a constant gene has no defined correlation.
        candidates = np.flatnonzero(measured_log.std(axis=0) > 0)
        if candidates.size < n_holdout:
            raise ValueError(
                f"only {candidates.size} shared genes vary across the spatial cells; n_holdout={n_holdout}"
            )
        held_pos = np.sort(np.random.default_rng(seed).choice(candidates, n_holdout, replace=False))
    train_pos = np.setdiff1d(np.arange(sp_idx.size), held_pos)
    if train_pos.size < 2:
        raise ValueError(f"holding out {held_pos.size} of {sp_idx.size} shared genes leaves fewer than 2 to align on")

    ref_counts = counts_matrix(reference)
    ref_log = normalize_log1p(ref_counts, TARGET_SUM)
    imputed, _, _, info = _impute_log(
        sp_counts[:, sp_idx[train_pos]], ref_counts, ref_log, ref_idx[train_pos], ref_idx[held_pos], config
    )
    return pd.DataFrame(
        {
            "gene": spatial.var_names[sp_idx[held_pos]].astype(str),
            "pearson_r": _pearson(measured_log[:, held_pos], imputed),
            "method": config.method,
            "n_train_genes": info["n_train_genes"],
            "runtime_s": info["runtime_s"],
        }
    )
