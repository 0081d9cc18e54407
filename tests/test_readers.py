"""Each reader reads its vendor fixture back exactly: counts, coordinates, genes, labels, what was dropped."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ssl_st import datasets
from ssl_st.datasets.simulate import ortholog_table
from ssl_st.io import DataError, first_cells, guess_format, read, read_h5ad, read_merscope, read_xenium, to_human_space

from .vendor_fixtures import Expected, write_cellxgene_h5ad, write_merscope, write_xenium


def assert_standard(adata: ad.AnnData, expected: Expected, fmt: str) -> None:
    """The contract every reader keeps (ssl_st.io docstring), checked against the ground truth."""
    assert sp.issparse(adata.X) and adata.X.format == "csr" and adata.X.dtype == np.float32
    assert adata.layers["counts"] is adata.X or (adata.layers["counts"] != adata.X).nnz == 0
    np.testing.assert_array_equal(adata.X.toarray(), expected.counts)
    assert adata.obsm["spatial"].dtype == np.float64 and adata.obsm["spatial"].shape == (adata.n_obs, 2)
    np.testing.assert_array_equal(adata.obsm["spatial"], expected.coords)
    assert list(adata.obs_names) == expected.cell_ids
    assert list(adata.var_names) == expected.genes
    assert list(adata.var["gene_symbols"]) == expected.genes
    ids = [None if pd.isna(v) else v for v in adata.var["gene_ids"]]
    assert ids == expected.gene_ids
    info = adata.uns["ssl_st_import"]
    assert info["format"] == fmt and info["source"] == str(expected.path)
    for key, value in expected.dropped.items():
        assert info[key] == value, key
    if expected.labels is not None:
        labels = [None if pd.isna(v) else v for v in adata.obs["cell_type"]]
        assert labels == expected.labels


def without_source(adata: ad.AnnData) -> dict:
    info = dict(adata.uns["ssl_st_import"])
    for key in ("source", "matrix_file", "cells_file"):
        info.pop(key, None)
    return info


@pytest.mark.parametrize("matrix", ["h5", "mex"])
@pytest.mark.parametrize("cells", ["csv.gz", "parquet"])
def test_xenium_exact(tmp_path, matrix, cells):
    expected = write_xenium(tmp_path / "xenium", matrix=matrix, cells=cells, labels=True)
    adata = read_xenium(expected.path, labels=expected.labels_path)
    assert_standard(adata, expected, "xenium")
    info = adata.uns["ssl_st_import"]
    assert info["dropped_controls"] == 11 and info["dropped_unassigned_codeword"] == 4
    assert info["dropped_features"].startswith("NegControlProbe_00000,") and info["unlabeled_cells"] == 2
    # per-cell metadata travels with the cells, matched by id (the fixture shuffles the table's rows)
    np.testing.assert_array_equal(adata.obs["transcript_counts"], expected.counts.sum(axis=1))
    assert "x_centroid" not in adata.obs


def test_xenium_mex_and_h5_identical(tmp_path):
    a = read_xenium(write_xenium(tmp_path / "h5", matrix="h5").path)
    b = read_xenium(write_xenium(tmp_path / "mex", matrix="mex").path)
    assert (a.X != b.X).nnz == 0
    pd.testing.assert_frame_equal(a.var, b.var)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    assert without_source(a) == without_source(b)


def test_xenium_csv_and_parquet_cells_identical(tmp_path):
    a = read_xenium(write_xenium(tmp_path / "csv", cells="csv.gz").path)
    b = read_xenium(write_xenium(tmp_path / "pq", cells="parquet").path)
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    pd.testing.assert_frame_equal(a.obs, b.obs)


def test_xenium_parquet_with_byte_cell_ids(tmp_path):
    """Some XOA versions store cell_id in cells.parquet as binary; ids must still match the barcodes."""
    expected = write_xenium(tmp_path / "x", cells="parquet")
    table = pd.read_parquet(expected.path / "cells.parquet")
    table["cell_id"] = [v.encode() for v in table["cell_id"]]
    table.to_parquet(expected.path / "cells.parquet", index=False)
    assert_standard(read_xenium(expected.path), expected, "xenium")


def test_xenium_without_controls(tmp_path):
    expected = write_xenium(tmp_path / "x", controls={})
    adata = read_xenium(expected.path)
    assert adata.uns["ssl_st_import"]["dropped_controls"] == 0
    assert adata.uns["ssl_st_import"]["dropped_features"] == ""


@pytest.mark.parametrize("index_header", ["cell", ""], ids=["cell-column", "unnamed-index"])
def test_merscope_exact(tmp_path, index_header):
    expected = write_merscope(tmp_path / "merscope", index_header=index_header, labels=True)
    adata = read_merscope(expected.path, labels=expected.labels_path)
    assert_standard(adata, expected, "merscope")
    info = adata.uns["ssl_st_import"]
    assert info["dropped_features"] == "Blank-0,Blank-1,Blank-2,Blank-3,Blank-4"
    assert all(len(c) > 30 for c in adata.obs_names)  # 38-digit ids kept exactly, not as int64/float
    assert {"fov", "volume", "min_x", "max_y"} <= set(adata.obs.columns) and "center_x" not in adata.obs


def test_merscope_portal_prefixed_names(tmp_path):
    expected = write_merscope(tmp_path / "m")
    (expected.path / "cell_by_gene.csv").rename(expected.path / "region_0_cell_by_gene_S1R1.csv")
    (expected.path / "cell_metadata.csv").rename(expected.path / "region_0_cell_metadata_S1R1.csv")
    assert_standard(read_merscope(expected.path), expected, "merscope")


def test_cellxgene_h5ad(tmp_path):
    expected = write_cellxgene_h5ad(tmp_path / "slide_seq.h5ad")
    adata = read_h5ad(expected.path)
    assert_standard(adata, expected, "h5ad")
    assert adata.uns["ssl_st_import"]["counts_from"] == "raw.X"
    assert adata.uns["ssl_st_import"]["spatial_from"] == "X_spatial"
    assert adata.uns["schema_version"] == "5.2.0"  # the source's own uns is kept


def test_h5ad_scanpy_layout(tmp_path):
    """Counts in layers['counts'] (preferred over X), symbols as index, ids in var['gene_ids'], no raw."""
    rng = np.random.default_rng(1)
    counts = rng.poisson(2, (30, 5)).astype(np.float32)
    var = pd.DataFrame({"gene_ids": [f"ENSMUSG{i:011d}" for i in range(5)]}, index=[f"Gene{i}" for i in range(5)])
    obs = pd.DataFrame({"celltype": pd.Categorical(rng.choice(["a", "b"], 30))}, index=[f"c{i}" for i in range(30)])
    source = ad.AnnData(X=np.log1p(counts), obs=obs, var=var, layers={"counts": sp.csr_matrix(counts)},
                        obsm={"spatial": rng.uniform(0, 100, (30, 2))})
    source.write_h5ad(tmp_path / "s.h5ad")
    adata = read_h5ad(tmp_path / "s.h5ad", label_key="celltype")
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert list(adata.var_names) == list(var.index) and list(adata.var["gene_ids"]) == list(var["gene_ids"])
    np.testing.assert_array_equal(adata.obsm["spatial"], source.obsm["spatial"])
    assert adata.uns["ssl_st_import"]["counts_from"] == "layers['counts']"


def test_h5ad_single_cell_without_coordinates_and_integer_x(tmp_path):
    counts = np.random.default_rng(2).poisson(1, (20, 4))
    var = pd.DataFrame(index=[f"ENSG{i:011d}" for i in range(4)])
    source = ad.AnnData(X=sp.csr_matrix(counts.astype(np.int64)), var=var,
                        obs=pd.DataFrame({"cell_type": ["t"] * 20}, index=[f"c{i}" for i in range(20)]))
    source.write_h5ad(tmp_path / "sc.h5ad")
    adata = read_h5ad(tmp_path / "sc.h5ad")
    assert "spatial" not in adata.obsm and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert list(adata.var_names) == list(var.index)  # no symbols known: the Ensembl id stands in
    assert adata.var["gene_symbols"].isna().all() and list(adata.var["gene_ids"]) == list(var.index)


def test_dispatch_and_guess(tmp_path):
    xenium = write_xenium(tmp_path / "x")
    merscope = write_merscope(tmp_path / "m")
    cellxgene = write_cellxgene_h5ad(tmp_path / "c.h5ad")
    assert [guess_format(e.path) for e in (xenium, merscope, cellxgene)] == ["xenium", "merscope", "h5ad"]
    assert read(xenium.path, format="xenium").n_obs == 50
    assert read(merscope.path).uns["ssl_st_import"]["format"] == "merscope"
    assert read(cellxgene.path, format="h5ad", label_key=None).n_vars == 10


def test_imports_round_trip_through_h5ad(tmp_path):
    """The standard AnnData can be written and read back by read_h5ad unchanged (uns, NaN ids included)."""
    for name, expected, reader in [("x", write_xenium(tmp_path / "x", labels=True), read_xenium),
                                   ("m", write_merscope(tmp_path / "m", labels=True), read_merscope)]:
        adata = reader(expected.path, labels=expected.labels_path)
        adata.write_h5ad(tmp_path / f"{name}.h5ad")
        again = read_h5ad(tmp_path / f"{name}.h5ad")
        assert (again.X != adata.X).nnz == 0 and list(again.var_names) == list(adata.var_names)
        np.testing.assert_array_equal(again.obsm["spatial"], adata.obsm["spatial"])


def test_first_cells_keeps_a_prefix_or_the_dataset_itself():
    section = datasets.generate("merscope", n_cells=120, seed=1)
    head = first_cells(section, 50)
    assert list(head.obs_names) == list(section.obs_names[:50]) and not head.is_view
    assert first_cells(section, None) is section and first_cells(section, 500) is section


def test_mouse_data_reaches_human_space_through_a_table_or_the_demo_one(tmp_path):
    mouse = datasets.generate("slideseq-mouse", n_cells=60)
    demo = to_human_space(mouse, species="mouse", orthologs="demo", where="demo slideseq-mouse")
    assert demo.var["gene_ids"].str.startswith("ENSG").all()
    assert demo.var["mouse_gene_ids"].str.startswith("ENSMUSG").all()
    assert demo.uns["ssl_st_orthologs"]["mapped"] == demo.n_vars < mouse.n_vars
    ortholog_table().to_csv(tmp_path / "orthologs.csv", index=False)
    from_file = to_human_space(mouse, species="mouse", orthologs=tmp_path / "orthologs.csv", where="mouse.h5ad")
    assert from_file.var.equals(demo.var) and (from_file.X != demo.X).nnz == 0
    human = datasets.generate("merscope", n_cells=60)
    assert to_human_space(human, species="human", where="demo merscope") is human


@pytest.mark.parametrize(
    ("flavour", "declared", "orthologs", "message"),
    [
        ("slideseq-mouse", "human", None, r"mouse.h5ad: var \(gene IDs\) looks like mouse data .* declared human; "
                                         "set species: mouse and orthologs"),
        ("atlas", "mouse", "demo", r"looks like human data but the dataset is declared mouse; set species: human$"),
        ("slideseq-mouse", "mouse", None, "orthologs are missing for mouse data"),
    ],
)
def test_species_mismatch_is_a_data_error(flavour, declared, orthologs, message):
    adata = datasets.generate(flavour, n_cells=30)
    with pytest.raises(DataError, match=message):
        to_human_space(adata, species=declared, orthologs=orthologs, where="mouse.h5ad")
