"""Networks with the upstream layout, checkpoints, and Random Mask pretraining."""

from __future__ import annotations

import json

import numpy as np
import scipy.sparse as sp
import torch

from ssl_st.genes import Vocabulary
from ssl_st.models import Architecture, RandomMaskConfig, SSLModel, pretrain_random_mask
from ssl_st.models.random_mask import random_mask_loss
from ssl_st.nn import MaskedAutoencoder


def test_upstream_state_dict_layout_at_full_size():
    net = MaskedAutoencoder(19331)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert len(shapes) == 20
    assert shapes["encoder.0.weight"] == (512, 19331)
    assert shapes["encoder.12.weight"] == (64, 256)
    assert shapes["decoder.0.0.weight"] == (256, 64)
    assert shapes["decoder.0.12.weight"] == (19331, 512)
    assert sum(v.numel() for v in net.encoder.parameters()) == 10_374_208
    assert sum(v.numel() for v in net.parameters()) == 20_767_683


def _vocab(n: int) -> Vocabulary:
    return Vocabulary(tuple(f"ENSG{i:011d}" for i in range(n)), tuple(f"G{i}" for i in range(n)))


def _inputs(n_cells: int, n_genes: int, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    programs = rng.random((4, n_genes)) < 0.2
    labels = rng.integers(0, 4, n_cells)
    rates = 0.2 + 3.0 * programs[labels]
    return sp.csr_matrix(np.log1p(rng.poisson(rates)).astype(np.float32))


def test_save_load_round_trips_bit_for_bit(tmp_path):
    model = SSLModel.random_init(_vocab(50), Architecture(units=(16, 8), dropout=0.2), seed=3)
    model.save(tmp_path / "m")
    loaded = SSLModel.load(tmp_path / "m")
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, loaded.network.state_dict()[key])
    assert loaded.vocabulary == model.vocabulary and loaded.architecture == model.architecture
    payload = torch.load(tmp_path / "m" / "model.ckpt", weights_only=True)
    assert set(payload) == {"epoch", "global_step", "state_dict"}  # what upstream loaders read
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["format_version"] == 1 and meta["method"] == "random-init"
    x = _inputs(20, 50)
    np.testing.assert_array_equal(model.embed(x), loaded.embed(x))


def test_random_mask_loss_ignores_kept_entries():
    net = MaskedAutoencoder(10, units=(4, 2), dropout=0.0)
    x = torch.rand(3, 10)
    gen = torch.Generator().manual_seed(0)
    loss_full_mask = random_mask_loss(0.999)(net, x, gen)
    assert loss_full_mask > 0
    # with (almost) nothing hidden the loss vanishes: kept entries never count
    assert random_mask_loss(1e-6)(net, x, torch.Generator().manual_seed(0)) < 1e-4 * loss_full_mask.item()


def test_pretraining_lowers_its_own_loss_and_is_seeded():
    inputs = _inputs(600, 80)
    arch = Architecture(units=(32, 16), dropout=0.0)
    config = RandomMaskConfig(epochs=8, batch_size=64, learning_rate=3e-3)
    model = pretrain_random_mask(inputs, _vocab(80), arch, config, seed=0, device="cpu")
    history = model.training
    assert history["val_loss"][-1] < 0.7 * history["val_loss"][0]
    assert history["train_loss"][-1] < history["train_loss"][0]
    again = pretrain_random_mask(inputs, _vocab(80), arch, config, seed=0, device="cpu")
    np.testing.assert_array_equal(model.embed(inputs), again.embed(inputs))
