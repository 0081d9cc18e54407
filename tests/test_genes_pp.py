"""The gene space and upstream preprocessing."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ssl_st.genes import Vocabulary, map_genes, to_vocabulary
from ssl_st.pp import CoverageError, model_input, normalize_log1p

VOCAB = Vocabulary(
    ids=("ENSG00000000001", "ENSG00000000002", "ENSG00000000003", "ENSG00000000004"),
    symbols=("TP53", "C1orf112", "WARS1", "KRT7"),
)


def test_ids_first_then_symbols_case_insensitively():
    var = pd.DataFrame(
        {"gene_ids": ["ENSG00000000003.5", "ENSG99999999999", "ENSG00000000004"]},
        index=["WARS", "c1ORF112", "KRT7"],
    )
    mapping = map_genes(var, VOCAB)
    assert dict(zip(mapping.source.tolist(), mapping.target.tolist())) == {0: 2, 1: 1, 2: 3}
    cov = mapping.coverage
    assert (cov.mapped_by_id, cov.mapped_by_symbol, cov.mapped_genes) == (2, 1, 3)
    assert cov.vocabulary_fraction == pytest.approx(0.75)


def test_cellxgene_layout_and_unmatched_genes():
    var = pd.DataFrame(
        {"feature_name": ["TP53", "NEAT1"], "feature_id": ["ENSG00000000001", "ENSG00000000777"]},
        index=["ENSG00000000001", "ENSG00000000777"],
    )
    cov = map_genes(var, VOCAB).coverage
    assert (cov.dataset_genes, cov.mapped_genes, cov.dataset_fraction) == (2, 1, 0.5)


def test_a_vocabulary_gene_is_never_fed_twice():
    var = pd.DataFrame(index=["KRT7", "krt7"])
    assert map_genes(var, VOCAB).coverage.mapped_genes == 1


def test_mapping_places_counts_and_zero_fills():
    counts = sp.csr_matrix(np.array([[1, 2, 3], [0, 0, 5]], dtype=np.float32))
    adata = ad.AnnData(X=counts, var=pd.DataFrame(index=["KRT7", "NEAT1", "TP53"]))
    matrix, cov = to_vocabulary(adata, VOCAB)
    np.testing.assert_array_equal(matrix.toarray(), [[3, 0, 0, 1], [5, 0, 0, 0]])
    assert cov.mapped_genes == 2


def test_layers_counts_win_over_x():
    adata = ad.AnnData(X=np.full((1, 1), 9.5, dtype=np.float32), var=pd.DataFrame(index=["TP53"]))
    adata.layers["counts"] = np.ones((1, 1), dtype=np.float32)
    assert to_vocabulary(adata, VOCAB)[0][0, 0] == 1


def test_normalize_scales_rows_over_the_mapped_genes_then_log1p():
    counts = sp.csr_matrix(np.array([[1, 3, 0], [0, 0, 0], [2, 2, 4]], dtype=np.float32))
    out = normalize_log1p(counts, 1e4).toarray()
    np.testing.assert_allclose(np.expm1(out).sum(axis=1), [1e4, 0, 1e4], rtol=1e-5)
    np.testing.assert_allclose(np.expm1(out[0, :2]), [2500, 7500], rtol=1e-5)
    median = normalize_log1p(counts, "median").toarray()
    np.testing.assert_allclose(np.expm1(median).sum(axis=1), [6, 0, 6], rtol=1e-5)


def test_model_input_drops_unmapped_genes_before_scaling():
    counts = np.array([[10, 90]], dtype=np.float32)  # NEAT1 (90) is not a model gene
    adata = ad.AnnData(X=counts, var=pd.DataFrame(index=["TP53", "NEAT1"]))
    matrix, _ = model_input(adata, VOCAB)
    assert np.expm1(matrix[0, 0]) == pytest.approx(1e4, rel=1e-5)


def test_model_input_refuses_datasets_that_barely_reach_the_vocabulary():
    adata = ad.AnnData(X=np.ones((2, 2), dtype=np.float32), var=pd.DataFrame(index=["TP53", "NEAT1"]))
    assert model_input(adata, VOCAB, min_coverage=0.5)[1].mapped_genes == 1
    with pytest.raises(CoverageError, match=r"only 1 of the dataset's 2 genes \(50%\) map onto the 4-gene.*species"):
        model_input(adata, VOCAB, min_coverage=0.6)
    # no gene at all is never an input, whatever the floor: the model would see only zeros
    nothing = ad.AnnData(X=np.ones((2, 1), dtype=np.float32), var=pd.DataFrame(index=["NEAT1"]))
    with pytest.raises(CoverageError, match="only 0 of the dataset's 1 genes"):
        model_input(nothing, VOCAB)


def test_vocabulary_parquet_round_trip(tmp_path):
    VOCAB.to_parquet(tmp_path / "var.parquet")
    assert Vocabulary.from_parquet(tmp_path / "var.parquet") == VOCAB
    pd.DataFrame({"gene": ["a"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="feature_id and feature_name"):
        Vocabulary.from_parquet(tmp_path / "bad.parquet")


def test_missing_ids_stay_missing_and_symbols_take_over():
    var = pd.DataFrame({"gene_ids": ["ENSG00000000001", None]}, index=["TP53", "KRT7"])
    mapping = map_genes(var, VOCAB)
    assert (mapping.coverage.mapped_by_id, mapping.coverage.mapped_by_symbol) == (1, 1)


def test_renamed_symbols_are_recovered():
    # the study lost WARS and KARS on Xenium: the panel used the symbols from before their renaming
    var = pd.DataFrame(index=["WARS", "KARS", "tp53"])
    vocab = Vocabulary(("ENSG1", "ENSG2", "ENSG3"), ("WARS1", "KARS1", "TP53"))
    cov = map_genes(var, vocab).coverage
    assert (cov.mapped_by_symbol, cov.mapped_by_renamed_symbol, cov.mapped_genes) == (1, 2, 3)
    assert map_genes(var, vocab, renamed={}).coverage.mapped_genes == 1
