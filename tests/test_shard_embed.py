"""Zero-shot embedding of a Merlin split through Ray Data (the shared 2-CPU test Ray): the same
numbers as a plain forward pass, gathered back in cell order with the cell ids. Cell shards (two
encoder actors, batches that straddle shards) through the CLI: ``tests/test_shard_cli.py``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ssl_st.genes import Vocabulary
from ssl_st.models import Architecture, SSLModel
from ssl_st.shards import EmbedOptions, embed_shards, open_source, read_embedding

from .test_shards import N_STORE_GENES, write_merlin_store

pytestmark = [pytest.mark.ray, pytest.mark.slow]


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
