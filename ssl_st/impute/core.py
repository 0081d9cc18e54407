"""Imputation itself (see the package docstring for the method and its value scales): the shared
weighted-average core, :func:`impute`, the hold-out check :func:`holdout`, and both together."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ..genes import counts_matrix, gene_table
from ..pp import normalize_log1p
from .config import ImputeConfig
from .matching import MATCHING, GeneIndex, panel_columns, require_shared, resolve, unique_names

TARGET_SUM = 1e4


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
    # Each method's module is imported only when it runs: SpaGE needs scikit-learn, Tangram torch.
    if config.method == "spage":
        from .spage import spage_weights

        weights, extra = spage_weights(ref_train, sp_log, n_pv=config.n_pv, k=config.k)
    else:
        from .tangram import tangram_weights

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


def impute(
    spatial: AnnData, reference: AnnData, config: ImputeConfig, *, genes: Sequence[str] | None = None
) -> AnnData:
    """A new AnnData over the spatial cells: measured panel genes (original counts) + imputed genes.

    Imputes every reference gene the panel lacks, or only ``genes`` (Ensembl IDs or symbols of the
    reference; requested genes the panel measures keep their measured values). Counts and scales are
    described in the module docstring; ``obs``/``obsm`` are copied and
    ``uns["ssl_st_imputation"]`` records the method, gene numbers and fit diagnostics.
    """
    sp_idx, ref_idx = require_shared(spatial, reference)
    panel = panel_columns(spatial.var)
    ref_genes = gene_table(reference.var)
    measured_ref = set(ref_idx.tolist())
    if genes is None:
        targets, already = np.setdiff1d(np.arange(reference.n_vars), ref_idx), []
    else:
        index = GeneIndex(ref_genes["id"], ref_genes["symbol"])
        requested = resolve(genes, index, f"the reference ({reference.n_vars} genes)")
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
    var.index = pd.Index(unique_names(var["gene_symbols"].tolist()))

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
        "matching": MATCHING,
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
    sp_idx, ref_idx = require_shared(spatial, reference)
    sp_counts = counts_matrix(spatial)
    measured_log = normalize_log1p(sp_counts[:, sp_idx], TARGET_SUM).toarray()
    if genes is not None:
        table = gene_table(spatial.var.iloc[sp_idx])
        ref_table = gene_table(reference.var).iloc[ref_idx]
        # a panel gene by its spatial name, its own symbol/ID, or the reference's
        indexes = [
            GeneIndex(table["id"].tolist(), list(spatial.var_names[sp_idx].astype(str))),
            GeneIndex(table["id"].tolist(), table["symbol"].tolist()),
            GeneIndex(ref_table["id"].tolist(), ref_table["symbol"].tolist()),
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


def impute_checked(base: AnnData, reference: AnnData, config: ImputeConfig, *, n_holdout: int = 8) -> AnnData:
    """:func:`impute`, plus the study's check of it: ``n_holdout`` panel genes hidden, imputed back and
    compared (:func:`holdout`, seeded by ``config.seed``). ``uns['ssl_st_imputation']`` gains
    ``holdout_genes`` (comma-separated), ``holdout_pearson_r`` (per gene) and ``holdout_pearson_r_mean``."""
    imputed = impute(base, reference, config)
    check = holdout(base, reference, config, n_holdout=n_holdout, seed=config.seed)
    imputed.uns["ssl_st_imputation"] = {
        **imputed.uns["ssl_st_imputation"],
        "holdout_genes": ",".join(map(str, check["gene"])),
        "holdout_pearson_r": check["pearson_r"].to_numpy(dtype=float),
        "holdout_pearson_r_mean": float(check["pearson_r"].mean()),
    }
    return imputed
