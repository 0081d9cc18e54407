"""Pretraining streamed from shards (issue 12, item 3).

Without Ray: the sampler (files in a seeded order per epoch, then a shuffle buffer) gives every
training cell exactly once per epoch, in another order every epoch, as the same model input the
in-memory path builds. With the shared 2-CPU test Ray: two Ray Train workers train Random Mask from
a shard directory through ``get_dataset_shard``; one dies in epoch 3 and the run resumes from the
epoch-2 checkpoint, re-reading the epoch in its seeded file order; the validation loss falls and the
checkpoint loads and embeds."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ssl_st import datasets
from ssl_st.genes import Vocabulary
from ssl_st.models import Architecture, SSLModel
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

from .test_distributed_training import CrashOnce

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


def _is_subsequence(part: list[int], whole: list[int]) -> bool:
    it = iter(whole)
    return all(x in it for x in part)


@pytest.mark.ray
@pytest.mark.slow
def test_two_workers_stream_shards_resume_and_embed(shards, tmp_path, ray_address):
    from ssl_st.models.distributed import Workers, train_data_parallel

    folder, vocabulary = shards
    marker = tmp_path / "crashed"
    plan = CrashOnce(epochs=3, batch_size=64, marker=str(marker), rank=1)
    model = train_data_parallel(plan, open_source(folder / "shards"), vocabulary, Architecture(units=(32, 16)),
                                workers=Workers(count=2, max_failures=1), seed=SEED, storage=tmp_path / "run",
                                stream=StreamOptions(shuffle_buffer=64))
    training = model.training
    assert marker.exists() and training["resumed"], "the worker did not die and resume from the checkpoint"
    assert training["stream"]["train_cells"] == 360 and training["stream"]["validation_cells"] == 40
    assert training["steps"] == 3 * 6  # 180 cells a worker, batches of 32
    assert training["val_loss"][-1] < training["val_loss"][0]
    orders = training["shard_order"]
    assert orders == [epoch_order(SEED, e, 8).tolist() for e in range(3)] and len({tuple(o) for o in orders}) == 3
    for seen, order in zip(training["shards_seen"], orders):  # worker 0's files, in the epoch's order
        assert seen and _is_subsequence(seen, order), (seen, order)
    path = model.save(tmp_path / "stream.ckpt")
    loaded = SSLModel.load(path)
    assert loaded.training["stream"]["data"] == "stream"
    # it embeds like any checkpoint (`ssl-st embed` of a streamed checkpoint: tests/test_shard_cli.py)
    import anndata as ad

    from ssl_st import tl

    cells = ad.read_h5ad(folder / "cells.h5ad")
    tl.embed(cells, loaded, key="X_stream", device="cpu")
    assert cells.obsm["X_stream"].shape == (N_CELLS, 16) and np.isfinite(cells.obsm["X_stream"]).all()
