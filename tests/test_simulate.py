"""Tests for the seeded atlas / spatial-section simulator."""

from __future__ import annotations

import re
from itertools import combinations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.spatial import cKDTree
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from ssl_st.datasets import simulate as sim

N_ATLAS, N_SECTION = 3000, 2000


@pytest.fixture(scope="module")
def atlas() -> ad.AnnData:
    return sim.simulate_atlas(N_ATLAS, seed=0)


@pytest.fixture(scope="module")
def sections() -> dict[str, ad.AnnData]:
    return {f: sim.simulate_section(f, N_SECTION, seed=0) for f in sim.FLAVOURS}


def _n_genes(adata: ad.AnnData) -> int:
    return int((~adata.var_names.str.startswith("Blank-")).sum())


def _probe_accuracy(adata: ad.AnnData) -> float:
    """Held-out accuracy of a linear probe on log1p(CP10k) -> PCA(30), genes only."""
    x = adata.X[:, : _n_genes(adata)].toarray()
    x = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1.0) * 1e4)
    z = PCA(30, random_state=0).fit_transform(x)
    y = adata.obs["cell_type"].cat.codes.to_numpy()
    z_tr, z_te, y_tr, y_te = train_test_split(z, y, test_size=0.3, random_state=0, stratify=y)
    return LogisticRegression(max_iter=2000).fit(z_tr, y_tr).score(z_te, y_te)


def _check_counts(adata: ad.AnnData) -> None:
    x = adata.X
    assert sp.issparse(x) and x.format == "csr" and x.dtype == np.float32
    assert "counts" in adata.layers
    assert (adata.layers["counts"] != x).nnz == 0
    assert x.nnz > 0 and (x.data >= 0).all() and np.array_equal(x.data, np.round(x.data))
    assert adata.obs_names.is_unique and adata.var_names.is_unique
    assert isinstance(adata.obs["cell_type"].dtype, pd.CategoricalDtype)
    np.testing.assert_allclose(adata.obs["n_counts"], np.asarray(x[:, : _n_genes(adata)].sum(1)).ravel())
    params = adata.uns["simulation"]
    assert params["n_cells"] == adata.n_obs
    assert all(isinstance(v, (str, int, float, bool)) for v in params.values())


# ---------------------------------------------------------------------------------------- the world


def test_world_is_cached_and_genes_are_well_formed() -> None:
    w = sim.world(0)
    assert sim.world(0) is w
    assert len(w.gene_ids) == sim.N_GENES == len(set(w.gene_ids))
    assert all(re.fullmatch(r"ENSG\d{11}", g) for g in w.gene_ids)
    upper = [s.upper() for s in w.symbols]
    assert len(set(upper)) == len(upper)  # unique case-insensitively
    assert sum(bool(re.fullmatch(r"C\d+orf\d+", s)) for s in w.symbols) >= 5
    renamed = w.symbols[w.renamed]
    assert len(renamed) >= 15 and all(s.endswith("1") for s in renamed)
    assert not {s[:-1].upper() for s in renamed} & set(upper)  # outdated names are free
    assert not np.array_equal(sim.world(1).symbols, w.symbols)


def test_programs_and_cell_types() -> None:
    programs = sim.gene_programs()
    assert 50 <= len(programs) <= 70
    assert {"LINEAGE", "SUBCLASS", "TYPE", "STATE"} <= {name.split("_")[1] for name in programs}
    symbols = set(sim.world(0).symbols)
    assert all(20 <= len(genes) <= 80 and set(genes) <= symbols for genes in programs.values())
    in_programs = [g for genes in programs.values() for g in genes]
    assert len(in_programs) > len(set(in_programs))  # programs overlap a little
    names = sim.cell_type_names()
    assert len(names) == sim.N_CELL_TYPES == len(set(names)) and "astrocyte" in names


def test_some_type_pairs_are_close_and_others_far() -> None:
    w = sim.world(0)
    markers = np.isin(w.program_kind, ["lineage", "subclass", "type"])
    effect = w.activity_mean[:, markers] @ w.loadings[markers][:, : w.n_genes]
    pairs = list(combinations(range(len(effect)), 2))
    dist = np.array([np.linalg.norm(effect[i] - effect[j]) for i, j in pairs])
    assert dist.min() < 0.6 * np.median(dist)  # siblings sharing a subclass program
    same = np.array([w.type_lineages[i] == w.type_lineages[j] for i, j in pairs])
    assert dist[same].mean() < dist[~same].mean()


# ---------------------------------------------------------------------------------- determinism


def test_atlas_is_deterministic() -> None:
    a, b = sim.simulate_atlas(300, seed=3), sim.simulate_atlas(300, seed=3)
    assert (a.X != b.X).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)
    c = sim.simulate_atlas(300, seed=4)
    assert (a.X != c.X).nnz > 0


@pytest.mark.parametrize("flavour", sim.FLAVOURS)
def test_section_is_deterministic(flavour: str) -> None:
    a, b = sim.simulate_section(flavour, 300, seed=5), sim.simulate_section(flavour, 300, seed=5)
    assert (a.X != b.X).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    c = sim.simulate_section(flavour, 300, seed=6)
    assert (a.X != c.X).nnz > 0
    assert not np.allclose(a.obsm["spatial"], c.obsm["spatial"])
    pd.testing.assert_index_equal(a.var_names, c.var_names)  # the platform is fixed per world


def test_unknown_flavour_is_rejected() -> None:
    with pytest.raises(ValueError, match="flavour"):
        sim.simulate_section("visium")


# ---------------------------------------------------------------------------------------- shapes


def test_atlas_layout(atlas: ad.AnnData) -> None:
    _check_counts(atlas)
    w = sim.world(0)
    assert atlas.shape == (N_ATLAS, sim.N_GENES)
    assert list(atlas.var_names) == list(atlas.var["feature_id"]) == list(w.gene_ids)
    assert list(atlas.var["feature_name"]) == list(w.symbols)
    assert 3 <= atlas.obs["donor_id"].nunique() <= 6
    freq = atlas.obs["cell_type"].value_counts(normalize=True)
    assert len(freq) == sim.N_CELL_TYPES and freq.min() < 0.025 and freq.max() > 0.1


@pytest.mark.parametrize("flavour", sim.FLAVOURS)
def test_section_layout(sections: dict[str, ad.AnnData], flavour: str) -> None:
    adata = sections[flavour]
    _check_counts(adata)
    xy = adata.obsm["spatial"]
    assert xy.shape == (N_SECTION, 2) and xy.dtype == np.float64
    assert xy.min() >= 0 and 1800 < xy[:, 0].max() <= 2000 and 1300 < xy[:, 1].max() <= 1500
    assert list(adata.obs["layer"].cat.categories) == list(sim.DOMAINS)
    assert (adata.obs["section_id"] == f"{flavour}-0").all()
    assert adata.uns["simulation"]["flavour"] == flavour


def test_panel_shapes(sections: dict[str, ad.AnnData], atlas: ad.AnnData) -> None:
    symbols = set(atlas.var["feature_name"])
    merscope, xenium = sections["merscope"], sections["xenium"]
    assert merscope.n_vars == 305
    assert list(merscope.var_names[-5:]) == [f"Blank-{i:04d}" for i in range(1, 6)]
    assert set(merscope.var_names[:300]) <= symbols
    programs = sim.gene_programs()
    marker = {g for name, genes in programs.items() if "STATE" not in name and "MODULE" not in name for g in genes}
    assert np.mean([g in marker for g in merscope.var_names[:300]]) > 0.6
    assert xenium.n_vars == 313 and set(xenium.var["gene_ids"]) <= set(atlas.var_names)
    merscope_ids = set(atlas.var_names[atlas.var["feature_name"].isin(merscope.var_names)])
    overlap = len(merscope_ids & set(xenium.var["gene_ids"])) / 313
    assert 0.3 <= overlap <= 0.5


def test_slideseq_shapes(sections: dict[str, ad.AnnData], atlas: ad.AnnData) -> None:
    human, mouse = sections["slideseq"], sections["slideseq-mouse"]
    assert 0.85 * sim.N_GENES <= human.n_vars <= 0.95 * sim.N_GENES
    assert set(human.var_names) <= set(atlas.var_names)
    assert list(human.var_names) == list(human.var["feature_id"])
    assert (atlas.var.loc[human.var_names, "feature_name"] == human.var["feature_name"]).all()
    for adata in (human, mouse):
        np.testing.assert_array_equal(adata.obsm["X_spatial"], adata.obsm["spatial"])
    assert all(re.fullmatch(r"ENSMUSG\d{11}", g) for g in mouse.var_names)
    assert all(s[0].isupper() and s[1:] == s[1:].lower() for s in mouse.var["feature_name"])


# ------------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("flavour", sim.FLAVOURS)
def test_domains_are_bands_with_distinct_mixes(sections: dict[str, ad.AnnData], flavour: str) -> None:
    adata = sections[flavour]
    xy, domain = adata.obsm["spatial"], adata.obs["layer"]
    mean_y = [xy[(domain == d).to_numpy(), 1].mean() for d in sim.DOMAINS]
    assert np.all(np.diff(mean_y) > 0)
    # contiguous bands: a cell's spatial neighbours are mostly in its own domain
    _, nb = cKDTree(xy).query(xy, k=7)
    codes = domain.cat.codes.to_numpy()
    assert (codes[nb[:, 1:]] == codes[:, None]).mean() > 0.85
    comp = pd.crosstab(domain, adata.obs["cell_type"], normalize="index")
    assert comp.idxmax(axis=1).nunique() >= 4
    tv = [0.5 * np.abs(comp.iloc[i] - comp.iloc[j]).sum() for i, j in combinations(range(len(comp)), 2)]
    assert np.mean(np.array(tv) > 0.3) >= 0.8


def test_xenium_outdated_symbols(sections: dict[str, ad.AnnData], atlas: ad.AnnData) -> None:
    var = sections["xenium"].var
    flagged = var[var["outdated_symbol"]]
    upper = set(atlas.var["feature_name"].str.upper())
    assert len(flagged) >= 5
    assert not {s.upper() for s in flagged.index} & upper
    assert set(flagged["gene_ids"]) <= set(atlas.var_names)
    current = atlas.var.loc[flagged["gene_ids"], "feature_name"]
    assert list(current) == [s + "1" for s in flagged.index]
    assert set(var.index[~var["outdated_symbol"]]) <= set(atlas.var["feature_name"])


def test_ortholog_table_matches_mouse_section(sections: dict[str, ad.AnnData], atlas: ad.AnnData) -> None:
    table = sim.ortholog_table()
    assert list(table.columns) == ["Mouse_Gene_Symbol", "Mouse_Ensembl_ID", "Human_Gene_Symbol",
                                   "Human_Ensembl_ID", "Homology_Type", "Confidence", "Percent_ID"]
    for col in ("Mouse_Gene_Symbol", "Mouse_Ensembl_ID", "Human_Gene_Symbol", "Human_Ensembl_ID"):
        assert table[col].is_unique
    assert (table["Homology_Type"] == "ortholog_one2one").all()
    assert table["Percent_ID"].between(40, 100).all() and 80 <= table["Percent_ID"].mean() <= 90
    assert 0.8 <= len(table) / sim.N_GENES <= 0.9
    assert set(table["Human_Ensembl_ID"]) <= set(atlas.var_names)

    mouse = sections["slideseq-mouse"]
    has_ortholog = mouse.var_names.isin(table["Mouse_Ensembl_ID"])
    assert 0.03 <= 1 - has_ortholog.mean() <= 0.08  # mouse-only genes
    by_id = table.set_index("Mouse_Ensembl_ID")
    mapped = mouse.var[has_ortholog]
    assert (by_id.loc[mapped.index, "Mouse_Gene_Symbol"] == mapped["feature_name"]).all()
    human_symbols = by_id.loc[mapped.index, "Human_Gene_Symbol"]
    assert (human_symbols.str.upper() == mapped["feature_name"].str.upper()).all()
    assert not mouse.var.loc[~has_ortholog, "feature_name"].str.upper().isin(table["Human_Gene_Symbol"].str.upper()).any()


# ------------------------------------------------------------------------------ depth and signal


def test_depths(atlas: ad.AnnData, sections: dict[str, ad.AnnData]) -> None:
    median = {"atlas": atlas.obs["n_counts"].median()} | {f: a.obs["n_counts"].median() for f, a in sections.items()}
    assert 2000 <= median["atlas"] <= 4500
    assert 150 <= median["merscope"] <= 400
    assert 100 <= median["xenium"] <= 300
    for flavour in ("slideseq", "slideseq-mouse"):
        assert 300 <= median[flavour] <= 800 and median[flavour] < median["atlas"]


def test_atlas_types_are_learnable(atlas: ad.AnnData) -> None:
    assert _probe_accuracy(atlas) > 0.8


def test_slideseq_is_harder_than_panels(sections: dict[str, ad.AnnData]) -> None:
    acc = {f: _probe_accuracy(a) for f, a in sections.items()}
    assert acc["merscope"] > 0.75
    assert acc["slideseq"] < acc["merscope"] - 0.05


def test_h5ad_roundtrip(tmp_path) -> None:
    for name, adata in {"atlas": sim.simulate_atlas(100), "xenium": sim.simulate_section("xenium", 100)}.items():
        adata.write_h5ad(tmp_path / f"{name}.h5ad")
        back = ad.read_h5ad(tmp_path / f"{name}.h5ad")
        assert back.uns["simulation"] == adata.uns["simulation"]
        assert (back.X != adata.X).nnz == 0
