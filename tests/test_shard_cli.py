"""``ssl-st data shard``, ``pretrain --workers 2`` and ``embed`` on a shard directory, run as a user
runs them: the shards stream through Ray Data (the shared test Ray, joined through RAY_ADDRESS) into
two Ray Train workers on two nodes, one of which is lost mid-run, and into embedding shards equal to
the .h5ad path's ``obsm``; bad input exits 2 naming the file and writes nothing."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from ssl_st import tl
from ssl_st.models import Architecture, SSLModel
from ssl_st.shards import read_embedding, shard, verify
from ssl_st.shards.stream import epoch_order

from .conftest import run_cli_here
from .test_distributed_training import registered_epoch
from .test_shards import panel, vocabulary

SMALL = 80 * 1024**2  # Ray's minimum object store


@pytest.fixture
def files(tmp_path):
    adata = panel(n_cells=200, n_genes=15)
    adata.write_h5ad(tmp_path / "cells.h5ad")
    SSLModel.random_init(vocabulary(), Architecture(units=(32, 16)), seed=3).save(tmp_path / "m.ckpt")
    return tmp_path


def test_data_shard_writes_a_checked_directory(files):
    result = run_cli_here("data", "shard", str(files / "cells.h5ad"), "--out", str(files / "shards"),
                     "--rows-per-shard", "64", check=True)
    assert "200 cells x 15 genes in 4 shard(s) (h5ad, counts)" in result.stdout
    manifest = verify(files / "shards")
    assert [s.rows for s in manifest.shards] == [64, 64, 64, 8] and manifest.spatial


@pytest.mark.parametrize(("args", "message"), [
    (("missing.h5ad",), "missing.h5ad"),
    (("cells.h5ad", "--rows-per-shard", "0"), "rows"),
    (("cells.h5ad", "--counts-layer", "nope"), "--counts-layer"),
])
def test_data_shard_refuses_bad_input_and_writes_nothing(files, args, message):
    result = run_cli_here("data", "shard", *(str(files / a) if a.endswith(".h5ad") else a for a in args),
                     "--out", str(files / "shards"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    assert not (files / "shards").exists() and not list(files.glob(".shards.*"))


def _is_subsequence(part: list[int], whole: list[int]) -> bool:
    it = iter(whole)
    return all(x in it for x in part)


@pytest.mark.ray
@pytest.mark.slow
def test_pretrain_on_two_workers_over_two_nodes_from_shards_survives_losing_one_then_embed_the_shards(
        files, ray_cluster, ray_address, monkeypatch):
    """Issue 12: `ssl-st pretrain --workers 2` streams shards into two Ray Train workers, one per node
    (each asks for 2 CPUs: the head's and an added node's). The added node is removed after the first
    registered checkpoint and a replacement joins: the group resumes from that checkpoint, re-reading
    every epoch in its seeded file order, and finishes every epoch with a falling validation loss. The
    checkpoint it writes is one `ssl-st embed` loads: the shards' embedding equals the .h5ad path's.
    (That a resumed run ends with the weights of an uninterrupted one: tests/test_distributed_training.py.)"""
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    shard(files / "cells.h5ad", files / "shards", rows_per_shard=25)  # 8 files (`data shard`: the tests above)
    epochs = 4  # the node goes after the first registered epoch; a streamed epoch takes seconds: most are ahead
    storage = files / "p-train"  # Ray Train's run directory goes in here once the trainer starts
    outcome: dict = {}
    # The second node is there from the start, so the driver's epoch clock (a 0-CPU actor) could land
    # on the node that goes, which would end the run: ssl_st.shards.stream.epoch_clock keeps it on the
    # driver's node.
    nodes = [ray_cluster.add_node(num_cpus=2, object_store_memory=SMALL)]
    try:
        run = threading.Thread(target=lambda: outcome.update(trained=run_cli_here(
            "pretrain", str(files / "shards"), "--method", "random-mask", "--units", "32,16", "--epochs", str(epochs),
            "--batch-size", "32", "--workers", "2", "--cpus-per-worker", "2", "--shuffle-buffer", "64",
            "--device", "cpu", "--out", str(files / "p.ckpt"))))
        run.start()
        deadline = time.monotonic() + 240
        while registered_epoch(storage) is None and run.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert registered_epoch(storage) is not None, f"no checkpoint registered: {outcome}"
        ray_cluster.remove_node(nodes.pop())
        nodes.append(ray_cluster.add_node(num_cpus=2, object_store_memory=SMALL))
        run.join(timeout=300)
        assert not run.is_alive(), "the run did not finish after losing a node"
    finally:
        for node in nodes:
            ray_cluster.remove_node(node)
    trained = outcome["trained"]
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "random-mask checkpoint from 2 worker(s)" in trained.stdout
    model = SSLModel.load(files / "p.ckpt")
    training = model.training
    assert training["resumed"], "the finishing attempt did not start from a checkpoint"
    assert training["workers"] == 2 and len(training["val_loss"]) == epochs
    assert training["stream"]["train_cells"] == 180 and training["stream"]["validation_cells"] == 20
    # each step takes a global batch split over the workers: as many steps as one process takes
    assert training["steps"] == epochs * -(-180 // 32)
    assert training["val_loss"][-1] < training["val_loss"][0]
    orders = training["shard_order"]  # the files of every epoch, the resumed ones too, in the seeded order
    assert orders == [epoch_order(0, e, 8).tolist() for e in range(epochs)] and len({tuple(o) for o in orders}) == epochs
    for seen, order in zip(training["shards_seen"], orders):  # worker 0's files, in the epoch's order
        assert seen and _is_subsequence(seen, order), (seen, order)
    # two encoder actors over eight files, each read in batches of 50: actors finish in any order
    result = run_cli_here("embed", str(files / "p.ckpt"), str(files / "shards"), "--out", str(files / "emb"),
                     "--device", "cpu", "--batch-size", "50", "--actors", "2", check=True)
    assert "200 cells x 16-d embedding" in result.stdout and "15/15 genes mapped" in result.stdout
    want = panel(n_cells=200, n_genes=15)
    tl.embed(want, model, key="X_ref", device="cpu")  # what `embed` on the .h5ad writes
    got = read_embedding(files / "emb")
    assert list(got.cell_ids) == list(want.obs_names)
    np.testing.assert_allclose(got.values, want.obsm["X_ref"], rtol=1e-5, atol=1e-5)
    assert got.manifest.info["method"] == "random-mask" and got.manifest.info["coverage"]["mapped_genes"] == 15
    # what is left on disk: Parquet shards of row, cell id and the 16-d vector, nothing else
    parts = sorted((files / "emb").glob("*.parquet"))
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in parts) == 200
    assert set(pq.read_schema(parts[0]).names) == {"row", "cell_id", "embedding"}


def test_embed_refuses_what_does_not_apply_to_shards(files):
    run_cli_here("data", "shard", str(files / "cells.h5ad"), "--out", str(files / "shards"), check=True)
    for extra, message in ((("--normalize", "median"), "--normalize median"),):
        result = run_cli_here("embed", str(files / "m.ckpt"), str(files / "shards"), "--out", str(files / "emb"), *extra,
                         "--device", "cpu")
        assert result.returncode == 2 and message in result.stdout + result.stderr, extra
    (files / "shards" / "part-00000.parquet").write_bytes(b"truncated")
    result = run_cli_here("embed", str(files / "m.ckpt"), str(files / "shards"), "--out", str(files / "emb"), "--device", "cpu")
    assert result.returncode == 2 and "part-00000.parquet" in result.stdout + result.stderr
    assert not (files / "emb").exists()
    assert os.listdir(files) and not [p for p in os.listdir(files) if p.startswith(".emb")]
