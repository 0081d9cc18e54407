"""Zero-shot embedding of sharded datasets through Ray Data (the shared 2-CPU test Ray): the same
numbers as :func:`ssl_st.tl.embed` on the AnnData, gathered back in cell order with the cell ids,
for cell shards (two encoder actors, batches that straddle shards) and for a Merlin split."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from ssl_st import tl
from ssl_st.genes import Vocabulary
from ssl_st.models import Architecture, SSLModel
from ssl_st.shards import EmbedOptions, ModelRef, embed_shards, open_source, read_embedding, shard_anndata

from .test_shards import N_STORE_GENES, panel, vocabulary, write_merlin_store

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_ray_data_embedding_equals_tl_embed(tmp_path, ray_address):
    adata = panel(n_cells=300, n_genes=15)
    model = SSLModel.random_init(vocabulary(), Architecture(units=(32, 16)), seed=3)
    checkpoint = model.save(tmp_path / "model.ckpt")
    # Shards of 70 cells, batches of 48: batches straddle shards, and two actors finish in any order.
    shard_anndata(adata, tmp_path / "shards", rows_per_shard=70)
    result = embed_shards(ModelRef(str(checkpoint)), tmp_path / "shards", tmp_path / "emb",
                          options=EmbedOptions(actors=2, batch_size=48))
    want = adata.copy()
    coverage = tl.embed(want, model, key="X_ref", device="cpu")
    gathered = read_embedding(tmp_path / "emb")
    assert list(gathered.cell_ids) == list(adata.obs_names)
    np.testing.assert_allclose(gathered.values, want.obsm["X_ref"], rtol=1e-5, atol=1e-5)
    assert result.coverage == coverage and result.manifest.info["coverage"] == coverage.as_dict()
    assert gathered.manifest.info["method"] == "random-init" and result.latent_dim == 16
    # What `ssl-st embed` leaves on disk: Parquet shards of cell id + the 16-d vector, nothing else.
    files = sorted((tmp_path / "emb").glob("*.parquet"))
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == 300
    assert set(pq.read_schema(files[0]).names) == {"row", "cell_id", "embedding"}


def test_merlin_split_embeds_in_order(tmp_path, ray_address):
    truth = write_merlin_store(tmp_path / "store", cells={"test": (40, 25, 35)})
    store_genes = Vocabulary.from_parquet(tmp_path / "store" / "var.parquet")
    model = SSLModel.random_init(store_genes, Architecture(units=(32, 16)), seed=4)
    checkpoint = model.save(tmp_path / "model.ckpt")
    source = open_source(tmp_path / "store", split="test")
    embed_shards(checkpoint, source, tmp_path / "emb", options=EmbedOptions(actors=1, batch_size=30))
    gathered = read_embedding(tmp_path / "emb")
    x, _ = truth["test"]
    assert list(gathered.cell_ids) == [f"test:{i}" for i in range(100)]
    # X is the model's own genes, already log1p-normalised: it goes in as it is.
    want = model.embed(sp.csr_matrix(x), device="cpu")
    np.testing.assert_allclose(gathered.values, want, rtol=1e-5, atol=1e-5)
    assert gathered.manifest.info["split"] == "test" and x.shape[1] == N_STORE_GENES
