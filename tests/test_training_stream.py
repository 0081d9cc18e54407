"""Pretraining streamed from shards (issue 12, item 3).

Without Ray: the sampler (files in a seeded order per epoch, then a shuffle buffer) gives every
training cell exactly once per epoch, in another order every epoch, as the same model input the
in-memory path builds. On Ray (two Ray Train workers streaming a shard directory through
``get_dataset_shard``, one lost mid-run: the run resumes from the last checkpoint, re-reading every epoch
in its seeded file order, the validation loss falls and the checkpoint embeds), through the CLI:
``tests/test_shard_cli.py::test_pretrain_on_two_workers_over_two_nodes_from_shards_survives_losing_one_then_embed_the_shards``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ssl_st import datasets
from ssl_st.genes import Vocabulary
from ssl_st.shards import open_source, shard_anndata
from ssl_st.shards.inputs import plan_inputs, read_inputs
from ssl_st.shards.stream import (
    Rows,
    StreamOptions,
    block_rows,
    block_specs,
    buffer_rng,
    buffered_batches,
    epoch_order,
    held_out_rows,
    local_blocks,
    read_validation,
)


N_CELLS, ROWS_PER_SHARD, SEED = 400, 50, 3


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """400 atlas cells in 8 shards, their h5ad, and the vocabulary (the dataset's own genes)."""
    folder = tmp_path_factory.mktemp("stream")
    adata = datasets.generate("atlas", n_cells=N_CELLS)
    adata.write_h5ad(folder / "cells.h5ad")
    shard_anndata(adata, folder / "shards", rows_per_shard=ROWS_PER_SHARD)
    return folder, Vocabulary.from_var(adata.var)


def _epoch(source, vocabulary, epoch: int, *, batch: int = 16, buffer: int = 120):
    held_out = held_out_rows(source.n_rows, 0.1, SEED)
    plan, _ = plan_inputs(source.var(), vocabulary, values=source.values)
    specs = block_specs(source, held_out)
    order = epoch_order(SEED, epoch, len(specs))
    blocks = (block_rows(plan, table) for table in local_blocks(specs, order))
    return held_out, order, list(buffered_batches(blocks, batch, buffer, buffer_rng(SEED, epoch, 0)))


def test_block_shuffle_gives_every_training_cell_once_per_epoch_in_a_new_order(shards):
    folder, vocabulary = shards
    source = open_source(folder / "shards")
    whole, _ = read_inputs(source, vocabulary)  # the in-memory path's model input
    seen = []
    for epoch in range(2):
        held_out, order, batches = _epoch(source, vocabulary, epoch)
        ids = np.concatenate([b.ids for b in batches])
        assert len(held_out) == 40 and sorted(ids) == sorted(set(range(N_CELLS)) - set(held_out.tolist()))
        assert [len(b) for b in batches] == [16] * 22 + [8]  # 360 cells
        for b in batches[:3]:  # the rows are the cells' model input, mapped and normalised per block
            np.testing.assert_allclose(b.matrix.toarray(), whole[b.ids].toarray(), rtol=1e-6)
        seen.append((order.tolist(), ids.tolist()))
    assert sorted(seen[0][0]) == list(range(8)) and seen[0][0] != seen[1][0], "the file order did not change"
    assert seen[0][1] != seen[1][1]
    # the same epoch reshuffles the same way (what a resumed epoch relies on)
    assert [b.ids.tolist() for b in _epoch(source, vocabulary, 1)[2]] == [b.ids.tolist() for b in _epoch(
        source, vocabulary, 1)[2]]
    # the held-out cells are the in-memory loop's draw, read as the same model input
    plan, _ = plan_inputs(source.var(), vocabulary, values=source.values)
    np.testing.assert_allclose(read_validation(source, plan, held_out).toarray(), whole[held_out].toarray(), rtol=1e-6)


def test_shuffle_buffer_mixes_blocks_and_drops_only_the_last_short_batch():
    blocks = [Rows(sp.csr_matrix(np.full((10, 2), i, np.float32)), np.arange(10 * i, 10 * i + 10)) for i in range(5)]
    batches = list(buffered_batches(iter(blocks), 8, 20, np.random.default_rng(0), drop_last=True))
    assert [len(b) for b in batches] == [8] * 6  # 50 rows: 2 short rows dropped at the end
    assert len({int(v) for v in batches[0].matrix.toarray()[:, 0]}) > 1, "a batch drew from one block only"
    ids = np.concatenate([b.ids for b in batches])
    assert len(set(ids.tolist())) == 48
    with pytest.raises(ValueError, match="shuffle_buffer"):
        StreamOptions(shuffle_buffer=0)
