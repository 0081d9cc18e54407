"""``ssl-st data shard`` and ``ssl-st embed`` on a shard directory, run as a user runs them: the
shards stream through Ray Data (the shared test Ray, joined through RAY_ADDRESS) into embedding
shards equal to the .h5ad path's ``obsm``; bad input exits 2 naming the file and writes nothing."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from ssl_st import tl
from ssl_st.models import Architecture, SSLModel
from ssl_st.shards import read_embedding, verify

from .conftest import run_cli
from .test_shards import panel, vocabulary


@pytest.fixture
def files(tmp_path):
    adata = panel(n_cells=200, n_genes=15)
    adata.write_h5ad(tmp_path / "cells.h5ad")
    SSLModel.random_init(vocabulary(), Architecture(units=(32, 16)), seed=3).save(tmp_path / "m.ckpt")
    return tmp_path


def test_data_shard_writes_a_checked_directory(files):
    result = run_cli("data", "shard", str(files / "cells.h5ad"), "--out", str(files / "shards"),
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
    result = run_cli("data", "shard", *(str(files / a) if a.endswith(".h5ad") else a for a in args),
                     "--out", str(files / "shards"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    assert not (files / "shards").exists() and not list(files.glob(".shards.*"))


@pytest.mark.ray
@pytest.mark.slow
def test_pretrain_on_two_workers_from_shards_then_embed_the_shards(files, ray_address, monkeypatch):
    """Issue 12: `ssl-st pretrain --workers 2` trains from shards and writes a checkpoint that
    `ssl-st embed` loads; the shards' embedding equals the .h5ad path's for the same model."""
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    run_cli("data", "shard", str(files / "cells.h5ad"), "--out", str(files / "shards"), "--rows-per-shard", "64",
            check=True)
    trained = run_cli("pretrain", str(files / "shards"), "--method", "random-mask", "--units", "32,16", "--epochs", "2",
                      "--batch-size", "32", "--workers", "2", "--device", "cpu", "--out", str(files / "p.ckpt"), check=True)
    assert "random-mask checkpoint from 2 worker(s)" in trained.stdout
    model = SSLModel.load(files / "p.ckpt")
    assert model.training["workers"] == 2 and len(model.training["val_loss"]) == 2
    # each step takes a global batch split over the workers: as many steps as one process takes
    train_cells = 200 - round(200 * 0.1)
    assert model.training["steps"] == 2 * -(-train_cells // 32)
    assert model.training["val_loss"][1] < model.training["val_loss"][0]
    # two encoder actors, batches of 50 over shards of 64: batches straddle shards, actors finish in any order
    result = run_cli("embed", str(files / "p.ckpt"), str(files / "shards"), "--out", str(files / "emb"),
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
    run_cli("data", "shard", str(files / "cells.h5ad"), "--out", str(files / "shards"), check=True)
    for extra, message in ((("--normalize", "median"), "--normalize median"),):
        result = run_cli("embed", str(files / "m.ckpt"), str(files / "shards"), "--out", str(files / "emb"), *extra,
                         "--device", "cpu")
        assert result.returncode == 2 and message in result.stdout + result.stderr, extra
    (files / "shards" / "part-00000.parquet").write_bytes(b"truncated")
    result = run_cli("embed", str(files / "m.ckpt"), str(files / "shards"), "--out", str(files / "emb"), "--device", "cpu")
    assert result.returncode == 2 and "part-00000.parquet" in result.stdout + result.stderr
    assert not (files / "emb").exists()
    assert os.listdir(files) and not [p for p in os.listdir(files) if p.startswith(".emb")]
