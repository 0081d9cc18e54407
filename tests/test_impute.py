"""Gene imputation (SpaGE- and Tangram-style) on the demo data, validated as the study did (§7)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ssl_st.datasets import generate
from ssl_st.genes import Vocabulary, to_vocabulary
from ssl_st.impute import ImputeConfig, holdout, impute, impute_checked, shared_genes
from ssl_st.threads import limited_threads

# Small Tangram fits keep the suite fast; the mapping is already informative after 50 steps
# (mean hold-out r 0.21 here against 0.22 at the default 300 steps and all reference cells). One
# torch thread: several times faster than two on a busy machine (same hold-out r with either).
SPAGE = ImputeConfig("spage")
TANGRAM = ImputeConfig("tangram", epochs=50, max_reference_cells=1000, threads=1)


@pytest.fixture(scope="module")
def atlas() -> ad.AnnData:
    return generate("atlas", n_cells=3000, seed=0)


@pytest.fixture(scope="module")
def section() -> ad.AnnData:
    return generate("merscope", n_cells=1500, seed=1)


def shuffled_reference(reference: ad.AnnData, symbols: list[str], seed: int = 0) -> ad.AnnData:
    """Negative control: the given genes' counts permuted across reference cells, so that matching
    spatial cells to reference cells can no longer tell anything about them."""
    out = reference.copy()
    lower = out.var["feature_name"].str.lower().tolist()
    columns = [lower.index(s.lower()) for s in symbols]
    counts = sp.csr_matrix(out.layers["counts"]).toarray()
    perm = np.random.default_rng(seed).permutation(out.n_obs)
    counts[:, columns] = counts[perm][:, columns]
    out.X = sp.csr_matrix(counts)
    out.layers["counts"] = out.X
    return out


@pytest.mark.parametrize(
    ("config", "floor"),
    # measured on this demo: SpaGE mean r 0.306, Tangram 0.214 (a cell-type oracle reaches 0.315:
    # ~250 counts per cell cap any correlation with single-cell measurements)
    [(SPAGE, 0.15), (TANGRAM, 0.10)],
    ids=["spage", "tangram"],
)
def test_holdout_recovers_genes_and_beats_a_shuffled_reference(atlas, section, config, floor):
    result = holdout(section, atlas, config, n_holdout=8, seed=0)
    assert list(result.columns[:3]) == ["gene", "pearson_r", "method"]
    assert len(result) == 8 and result["gene"].is_unique and (result["method"] == config.method).all()
    assert result["pearson_r"].notna().all()
    assert result["pearson_r"].mean() > floor
    assert (result["pearson_r"] > 0).sum() >= 7

    control = holdout(section, shuffled_reference(atlas, result["gene"].tolist()), config,
                      genes=result["gene"].tolist())
    assert control["gene"].tolist() == result["gene"].tolist()
    assert abs(control["pearson_r"].mean()) < 0.08
    assert result["pearson_r"].mean() - control["pearson_r"].mean() > floor


def test_imputed_anndata_is_a_dataset_like_any_other(atlas, section, tmp_path):
    out = impute(section, atlas, SPAGE)
    sp_idx, ref_idx = shared_genes(section, atlas)
    panel = [g for g in section.var_names if not g.startswith("Blank-")]
    n_imputed = atlas.n_vars - ref_idx.size

    # the spatial cells, their labels and coordinates
    assert out.obs_names.equals(section.obs_names)
    assert (out.obs["cell_type"] == section.obs["cell_type"]).all()
    np.testing.assert_array_equal(out.obsm["spatial"], section.obsm["spatial"])
    # measured genes first, unchanged; blank barcodes dropped; only genes the panel lacks are imputed
    assert out.n_vars == len(panel) + n_imputed
    measured = ~out.var["imputed"].to_numpy()
    assert out.var["spatial_name"][measured].tolist() == panel
    np.testing.assert_array_equal(
        out.layers["counts"][:, measured].toarray(), section[:, panel].layers["counts"].toarray()
    )
    panel_ids = set(atlas.var["feature_id"].iloc[ref_idx])
    imputed_ids = set(out.var["gene_ids"][~measured])
    assert len(imputed_ids) == n_imputed and not imputed_ids & panel_ids
    assert set(out.var["gene_ids"]) == set(atlas.var["feature_id"])
    # count-like matrix in X and layers["counts"], log values alongside
    counts = out.layers["counts"]
    assert counts.min() >= 0 and np.isfinite(counts.data).all()
    assert (out.X != counts).nnz == 0
    assert out.layers["log1p"].shape == out.shape and out.layers["log1p"].min() >= 0
    # pseudo-counts close each cell at its pseudo-depth
    np.testing.assert_allclose(np.asarray(counts.sum(axis=1)).ravel(), out.obs["imputation_pseudo_depth"], rtol=1e-3)
    info = out.uns["ssl_st_imputation"]
    assert info["method"] == "spage" and info["n_shared"] == sp_idx.size == 300
    assert info["n_imputed"] == n_imputed and info["n_measured"] == len(panel)

    # the cell-type tasks map it onto the reference vocabulary like any other dataset, and it survives h5ad
    mapped, coverage = to_vocabulary(out, Vocabulary.from_var(atlas.var))
    assert coverage.vocabulary_fraction == 1.0 and mapped.shape == (section.n_obs, atlas.n_vars)
    out.write_h5ad(tmp_path / "imputed.h5ad")
    back = ad.read_h5ad(tmp_path / "imputed.h5ad")
    assert back.uns["ssl_st_imputation"]["n_imputed"] == n_imputed


@pytest.mark.parametrize("config", [SPAGE, ImputeConfig("tangram", epochs=5, max_reference_cells=300, threads=1)],
                         ids=["spage", "tangram"])
def test_deterministic_and_restricted_to_requested_genes(atlas, section, config):
    sp_idx, ref_idx = shared_genes(section, atlas)
    unmeasured = np.setdiff1d(np.arange(atlas.n_vars), ref_idx)[:5]
    requested = [*atlas.var["feature_name"].iloc[unmeasured], atlas.var["feature_id"].iloc[ref_idx[0]]]
    first = impute(section, atlas, config, genes=requested)
    second = impute(section, atlas, config, genes=requested)
    assert (first.layers["counts"] != second.layers["counts"]).nnz == 0
    imputed_symbols = first.var["gene_symbols"][first.var["imputed"]].tolist()
    assert imputed_symbols == atlas.var["feature_name"].iloc[unmeasured].tolist()
    # a requested gene the panel measures keeps its measured value
    assert first.uns["ssl_st_imputation"]["requested_but_measured"] == [atlas.var["feature_name"].iloc[ref_idx[0]]]
    if config.method == "tangram":
        reseeded = ImputeConfig("tangram", epochs=5, max_reference_cells=300, threads=1, seed=1)
        other = impute(section, atlas, reseeded, genes=requested)
        assert not np.allclose(first.layers["log1p"].toarray(), other.layers["log1p"].toarray())


def test_impute_checked_records_the_holdout_check_beside_the_imputation(atlas, section):
    out = impute_checked(section, atlas, SPAGE, n_holdout=4)
    plain = impute(section, atlas, SPAGE)
    assert (out.layers["counts"] != plain.layers["counts"]).nnz == 0
    check = holdout(section, atlas, SPAGE, n_holdout=4, seed=SPAGE.seed)
    info = out.uns["ssl_st_imputation"]
    assert {k for k in info if not k.startswith("holdout_")} == set(plain.uns["ssl_st_imputation"])
    assert info["holdout_genes"] == ",".join(check["gene"])
    np.testing.assert_array_equal(info["holdout_pearson_r"], check["pearson_r"].to_numpy())
    assert info["holdout_pearson_r_mean"] == pytest.approx(check["pearson_r"].mean())


def test_thread_limit_holds_for_a_block_and_is_restored():
    # Tangram's ``threads`` runs its fit under this limit
    import torch
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads(), [pool["num_threads"] for pool in threadpool_info()]
    with limited_threads(before[0] + 1):
        assert torch.get_num_threads() == before[0] + 1
        assert all(pool["num_threads"] == before[0] + 1 for pool in threadpool_info())
    assert (torch.get_num_threads(), [pool["num_threads"] for pool in threadpool_info()]) == before
    with limited_threads(None):
        assert torch.get_num_threads() == before[0]


def test_xenium_genes_match_by_id_despite_outdated_symbols(atlas):
    xenium = generate("xenium", n_cells=400, seed=2)
    sp_idx, ref_idx = shared_genes(xenium, atlas)
    assert sp_idx.size == xenium.n_vars  # outdated symbols ("STEM" for "STEM1") still match by Ensembl ID
    out = impute(xenium, atlas, SPAGE, genes=list(atlas.var["feature_name"].iloc[:40]))
    outdated = dict(zip(xenium.var_names, xenium.var["outdated_symbol"]))
    renamed = out.var[[bool(outdated.get(name, False)) for name in out.var["spatial_name"]]]
    assert len(renamed) > 0
    assert all(sym.lower() == f"{old.lower()}1" for sym, old in zip(renamed["gene_symbols"], renamed["spatial_name"]))


def test_no_shared_genes_is_a_clear_error(atlas):
    spatial = ad.AnnData(
        X=sp.csr_matrix(np.ones((10, 3), dtype=np.float32)),
        var=pd.DataFrame(index=["NOTAGENE1", "NOTAGENE2", "NOTAGENE3"]),
    )
    expected = r"spatial dataset \(3 genes.*reference \(3000 genes.*Ensembl ID first.*symbol"
    with pytest.raises(ValueError, match=expected):
        impute(spatial, atlas, SPAGE)
    with pytest.raises(ValueError, match="share no gene"):
        holdout(spatial, atlas, SPAGE)


def test_bad_holdout_and_config_are_clear_errors(atlas, section):
    with pytest.raises(ValueError, match=r"n_holdout=400 but the datasets share 300 genes"):
        holdout(section, atlas, SPAGE, n_holdout=400)
    with pytest.raises(ValueError, match="not among the 300 genes shared"):
        holdout(section, atlas, SPAGE, genes=["Blank-0001"])
    with pytest.raises(ValueError, match="not found in the reference"):
        impute(section, atlas, SPAGE, genes=["NO_SUCH_GENE"])
    with pytest.raises(ValueError, match="unknown imputation method"):
        ImputeConfig("magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        ImputeConfig("tangram", epochs=0)
