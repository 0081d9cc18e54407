"""ssl-st's preprocessing against scanpy's, on the same data: what a user would run with scanpy
(``normalize_total`` + ``log1p``, ``highly_variable_genes``) gives what ssl-st computes, and what
ssl-st writes is what scanpy and squidpy read (``obsm['spatial']``, ``obs`` domains, ``obsm`` embeddings).
"""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from cluster.domains import expression, highly_variable_genes
from ssl_st import datasets
from ssl_st.pp import log_expression, normalize_log1p

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def slideseq():
    """A Slide-seq-like section: 2,700 genes, sparse, no empty bead (a cell of zeros has no median)."""
    adata = datasets.generate("slideseq", n_cells=1500, seed=3)
    counts = sp.csr_matrix(adata.layers["counts"])
    return adata[np.asarray(counts.sum(axis=1)).ravel() > 0].copy()


@pytest.mark.parametrize("target_sum", [1e4, "median"])
def test_log_normalisation_is_scanpys_normalize_total_then_log1p(slideseq, target_sum):
    reference = slideseq.copy()
    reference.X = sp.csr_matrix(reference.layers["counts"], dtype=np.float64)
    # scanpy's target_sum=None is the median library size: ssl-st's "median"
    sc.pp.normalize_total(reference, target_sum=None if target_sum == "median" else target_sum)
    sc.pp.log1p(reference)
    ours = normalize_log1p(slideseq.layers["counts"], target_sum)
    np.testing.assert_allclose(ours.toarray(), reference.X.toarray(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_expression(slideseq, target_sum).toarray(), ours.toarray())


def test_highly_variable_genes_are_scanpys_seurat_v3_on_the_counts(slideseq):
    """The genes ssl-st's domain methods read from a whole-transcriptome section are the ones
    ``sc.pp.highly_variable_genes(adata, flavor='seurat_v3', layer='counts')`` marks."""
    reference = slideseq.copy()
    sc.pp.highly_variable_genes(reference, flavor="seurat_v3", n_top_genes=500, layer="counts")
    marked = np.flatnonzero(reference.var["highly_variable"].to_numpy())
    chosen = highly_variable_genes(sp.csr_matrix(slideseq.layers["counts"]), None, 500)
    assert chosen.tolist() == marked.tolist()
    x = expression(slideseq, n_top_genes=500)
    logged = log_expression(slideseq, "median").toarray()
    np.testing.assert_allclose(x, logged[:, marked])
    # not the log-variance ranking it replaced: seurat_v3 standardises by the mean-variance trend
    mean = logged.mean(axis=0)
    by_variance = np.sort(np.argsort(-(logged**2).mean(axis=0) + mean**2, kind="stable")[:500])
    assert len(set(by_variance) & set(marked)) < 500


def test_declared_normalised_values_take_seurat_dispersions_and_a_panel_keeps_every_gene(slideseq):
    from ssl_st.io.values import ValueType

    logged = slideseq.copy()
    logged.X = log_expression(slideseq, 1e4)
    del logged.layers["counts"]
    logged.uns["ssl_st"] = ValueType("log-normalized").as_uns()
    reference = logged.copy()
    sc.pp.highly_variable_genes(reference, flavor="seurat", n_top_genes=500)
    x = expression(logged, n_top_genes=500, target_sum=1e4)
    np.testing.assert_allclose(x, logged.X.toarray()[:, reference.var["highly_variable"].to_numpy()], rtol=1e-5, atol=1e-6)
    panel = datasets.generate("merscope", n_cells=300, seed=3)
    assert expression(panel, n_top_genes=3000).shape == (300, panel.n_vars)


def test_domains_and_coordinates_are_where_scanpy_and_squidpy_read_them(tmp_path):
    """``ssl-st cluster`` writes domains to ``obs`` (categorical) beside ``obsm['spatial']``, which
    ``sc.pl.embedding(basis='spatial')`` (and squidpy's ``spatial_scatter``) draws as they are."""
    import anndata as ad
    import matplotlib

    matplotlib.use("Agg")

    from .conftest import run_cli_here

    section = datasets.generate("merscope", n_cells=400, seed=2)
    section.write_h5ad(tmp_path / "section.h5ad")
    run_cli_here("cluster", tmp_path / "section.h5ad", "--method", "gmm", "--n-domains", "4",
                 "--out", tmp_path / "domains.h5ad", check=True)
    result = ad.read_h5ad(tmp_path / "domains.h5ad")
    key = next(k for k in result.obs if k.startswith("domain"))
    assert isinstance(result.obs[key].dtype, __import__("pandas").CategoricalDtype)
    assert result.obsm["spatial"].shape == (400, 2)
    ax = sc.pl.embedding(result, basis="spatial", color=key, show=False)
    assert len(ax.collections[0].get_offsets()) == 400
    # sc.pl.spatial draws imaging data (no tissue image in uns['spatial']) given a spot size
    axes = sc.pl.spatial(result, color=key, spot_size=10, show=False)
    assert len(axes[0].collections[0].get_paths()) == 400  # one circle per cell
