"""Loading the published checkpoint layouts at full size, and `ssl-st embed` against a plain forward pass."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from ssl_st.models import CheckpointError, SSLModel
from ssl_st.models.checkpoints import read

from .conftest import run_cli_here
from .published_fixtures import (
    expected_encoder,
    gene_table,
    write_barlow_twins_checkpoint,
    write_masked_checkpoint,
    write_var_parquet,
)


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sc_pretrained")
    write_var_parquet(root / "Pretrained Models" / "var.parquet")
    write_masked_checkpoint(root / "Pretrained Models" / "RandomMask.ckpt", with_optimizer=False)
    write_barlow_twins_checkpoint(root / "Pretrained Models" / "BarlowTwins.ckpt", seed=1)
    return root / "Pretrained Models"


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """300 cells measuring 400 of the model's genes, some by Ensembl ID (10x layout), a few unknown."""
    genes = gene_table()
    rng = np.random.default_rng(0)
    picked = genes.iloc[rng.choice(len(genes), 400, replace=False)]
    counts = rng.poisson(1.5, (300, 402)).astype(np.float32)
    var = pd.DataFrame(
        {"gene_ids": [*picked["feature_id"], "ENSG99999999998", "ENSG99999999999"]},
        index=[*(s.lower() for s in picked["feature_name"]), "NEAT1", "MALAT1"],
    )
    adata = ad.AnnData(X=sp.csr_matrix(counts), var=var)
    adata.layers["counts"] = adata.X.copy()
    path = tmp_path_factory.mktemp("cells") / "cells.h5ad"
    adata.write_h5ad(path)
    return path, picked


def _plain_forward(checkpoint, cells, picked) -> np.ndarray:
    """The reference computation, written out by hand: place genes, scale to 1e4, log1p, forward."""
    genes = gene_table()
    column = {g: i for i, g in enumerate(genes["feature_id"])}
    counts = ad.read_h5ad(cells).X.toarray()
    x = np.zeros((counts.shape[0], len(genes)), dtype=np.float32)
    for j, gid in enumerate(picked["feature_id"]):
        x[:, column[gid]] = counts[:, j]
    x = np.log1p(x / x.sum(1, keepdims=True) * 1e4)
    weights = expected_encoder(checkpoint)
    h = torch.from_numpy(x)
    for layer in (0, 3, 6, 9, 12):
        h = h @ weights[f"{layer}.weight"].T + weights[f"{layer}.bias"]
        if layer != 12:
            h = torch.selu(h)
    return h.numpy()


@pytest.mark.parametrize("name,layout", [("RandomMask.ckpt", "masked-autoencoder"), ("BarlowTwins.ckpt", "barlow-twins")])
def test_published_layouts_load_by_content(hub_dir, tmp_path, name, layout):
    # renamed, so only the content can tell what the file is
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes((hub_dir / name).read_bytes())
    assert read(renamed)[0] == layout
    model = SSLModel.load(renamed, genes=hub_dir / "var.parquet")
    assert model.architecture.units == (512, 512, 256, 256, 64)
    assert len(model.vocabulary) == 19331
    for key, value in expected_encoder(hub_dir / name).items():
        assert torch.equal(model.encoder.state_dict()[key], value)


@pytest.mark.parametrize("name", ["RandomMask.ckpt", "BarlowTwins.ckpt"])
def test_embed_cli_equals_a_plain_forward_pass(hub_dir, cells, tmp_path, name):
    path, picked = cells
    out = tmp_path / "embedded.h5ad"
    result = run_cli_here("embed", str(hub_dir / name), str(path), "--out", str(out), "--key", "X_ssl", check=True)
    assert "400/402 genes mapped" in result.stdout
    embedded = ad.read_h5ad(out)
    np.testing.assert_allclose(embedded.obsm["X_ssl"], _plain_forward(hub_dir / name, path, picked), atol=1e-5, rtol=1e-5)
    assert embedded.uns["ssl_st"]["X_ssl"]["mapped_genes"] == 400


def test_mismatched_checkpoint_lists_every_bad_key(hub_dir, tmp_path):
    state = torch.load(hub_dir / "BarlowTwins.ckpt", weights_only=True)
    del state["backbone.3.bias"]
    state["backbone.99.weight"] = torch.zeros(1)
    state["projector.0.weight"] = torch.zeros(256, 32)
    torch.save(state, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError) as info:
        SSLModel.load(tmp_path / "bad.ckpt", genes=hub_dir / "var.parquet")
    message = str(info.value)
    assert "missing (1): backbone.3.bias" in message
    assert "unexpected (1): backbone.99.weight" in message
    assert "projector.0.weight: file (256, 32) vs network (256, 64)" in message


def test_one_misshaped_tensor_is_named_itself(hub_dir, tmp_path):
    # widths are read off the weights: without a consistency check, the network was built around the
    # bad tensor and five *other* keys were reported as mis-shaped
    ckpt = torch.load(hub_dir / "RandomMask.ckpt", weights_only=True)
    ckpt["state_dict"]["encoder.3.weight"] = torch.zeros(500, 512)
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError) as info:
        SSLModel.load(tmp_path / "bad.ckpt", genes=hub_dir / "var.parquet")
    message = str(info.value)
    assert "bad.ckpt" in message and "encoder.3.weight is (500, 512)" in message
    assert "encoder.6.weight" in message and "mis-shaped (" not in message


def test_pickled_objects_need_an_explicit_trust(hub_dir, tmp_path):
    legacy = {"state_dict": torch.load(hub_dir / "RandomMask.ckpt", weights_only=True)["state_dict"],
              "hyper_parameters": {"activation": torch.nn.SELU}}  # a class: only a full unpickle restores it
    torch.save(legacy, tmp_path / "legacy.ckpt")
    with pytest.raises(CheckpointError, match="trusted"):
        SSLModel.load(tmp_path / "legacy.ckpt", genes=hub_dir / "var.parquet")
    assert SSLModel.load(tmp_path / "legacy.ckpt", genes=hub_dir / "var.parquet", trusted=True).latent_dim == 64
    refused = run_cli_here("embed", str(tmp_path / "legacy.ckpt"), "x.h5ad", "--out", str(tmp_path / "o.h5ad"),
                      "--genes", str(hub_dir / "var.parquet"))
    assert refused.returncode == 2 and "--trusted" in refused.stderr


def test_wrong_gene_order_file_is_refused(hub_dir, tmp_path):
    write_var_parquet(tmp_path / "var.parquet", n_genes=100)
    with pytest.raises(CheckpointError, match="reads 19331 genes but .* lists 100"):
        SSLModel.load(hub_dir / "RandomMask.ckpt", genes=tmp_path / "var.parquet")


def test_saved_model_round_trips_bit_for_bit_in_the_published_layout(hub_dir, tmp_path):
    model = SSLModel.load(hub_dir / "BarlowTwins.ckpt", genes=hub_dir / "var.parquet")
    path = model.save(tmp_path / "copy" / "bt.ckpt")
    raw = torch.load(path, weights_only=True)
    original = torch.load(hub_dir / "BarlowTwins.ckpt", weights_only=True)
    assert list(raw) == list(original)  # a bare state dict with the published keys, in order
    assert all(torch.equal(raw[k], original[k]) for k in original)
    again = SSLModel.load(path)
    assert again.method == "barlow-twins"
