"""Networks with the upstream layout, checkpoints, Random Mask pretraining, the registry of
pretraining methods, and embedding into an AnnData."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import ClassVar

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from ssl_st import tl
from ssl_st.genes import Vocabulary
from ssl_st.models import (
    PRETRAINING,
    AdamWConfig,
    Architecture,
    BarlowTwinsConfig,
    GPMaskConfig,
    RandomMaskConfig,
    SSLModel,
    pretrain,
)
from ssl_st.models.random_mask import random_mask_loss
from ssl_st.nn import BarlowTwins, MaskedAutoencoder
from ssl_st.pp import CoverageError


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
    model = config.train(inputs, _vocab(80), arch, seed=0, device="cpu")
    history = model.training
    assert history["val_loss"][-1] < 0.7 * history["val_loss"][0]
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history["mask_rate"] == 0.5 and history["learning_rate"] == 3e-3 and history["seed"] == 0
    # the entry point by name, with settings over the class defaults, is the same run
    again = pretrain("random-mask", inputs, _vocab(80), arch, {"epochs": 8, "batch_size": 64, "learning_rate": 3e-3},
                     seed=0, device="cpu")
    assert again.method == "random-mask" and again.training == history
    np.testing.assert_array_equal(model.embed(inputs), again.embed(inputs))


def test_builtin_methods_are_registered_once_with_their_network():
    # built-ins first, in the order the registry names them; then registered objectives such as this
    # module's toy (other test modules may have registered theirs in this process too)
    assert list(PRETRAINING)[:3] == ["random-mask", "gp-mask", "barlow-twins"] and "toy-shuffle" in PRETRAINING
    builtin = [PRETRAINING[name] for name in list(PRETRAINING)[:3]]
    assert builtin == [RandomMaskConfig, GPMaskConfig, BarlowTwinsConfig]
    assert [cls.network for cls in builtin] == ["masked-autoencoder"] * 2 + ["barlow-twins"]
    assert [cls.needs_programs for cls in builtin] == [False, True, False]
    arch = Architecture(units=(8, 4), projector=(6, 6))
    assert isinstance(arch.build(20, "barlow-twins"), BarlowTwins)
    for method in ("random-mask", "gp-mask", "random-init", "masked-autoencoder"):
        assert isinstance(arch.build(20, method), MaskedAutoencoder)
    with pytest.raises(ValueError, match="unknown pretraining method 'random-msk'; did you mean 'random-mask'"):
        arch.build(20, "random-msk")


def test_pretrain_takes_a_name_or_a_config_and_checks_what_a_method_needs():
    inputs, arch = _inputs(64, 30), Architecture(units=(8, 4), dropout=0.0)
    with pytest.raises(ValueError, match="unknown pretraining method 'gp_mask'; did you mean 'gp-mask'"):
        pretrain("gp_mask", inputs, _vocab(30), arch)
    with pytest.raises(ValueError, match="gp-mask pretraining needs gene programs"):
        pretrain("gp-mask", inputs, _vocab(30), arch, {"epochs": 1})
    with pytest.raises(TypeError, match="mask_rate"):
        pretrain("barlow-twins", inputs, _vocab(30), arch, {"mask_rate": 0.3})
    # settings given with a config override it
    config = RandomMaskConfig(epochs=1, batch_size=32)
    model = pretrain(config, inputs, _vocab(30), arch, {"mask_rate": 0.25}, device="cpu")
    assert model.training["mask_rate"] == 0.25 and model.training["epochs_run"] == 1


@PRETRAINING.register
@dataclass(frozen=True)
class ShuffleConfig(AdamWConfig):
    """A toy objective registered only in this process: reconstruct cells from gene-shuffled inputs."""

    name: ClassVar[str] = "toy-shuffle"
    network: ClassVar[str] = "masked-autoencoder"

    def loss(self, vocabulary, programs):
        def loss_fn(network, x, gen):
            order = torch.randperm(x.shape[1], generator=gen, device=x.device)
            return ((network(x[:, order])[1] - x) ** 2).mean()

        return loss_fn, {"n_genes": len(vocabulary)}


def test_a_new_objective_is_one_registered_class_and_its_models_load_anywhere(tmp_path):
    inputs = _inputs(200, 40)
    model = pretrain("toy-shuffle", inputs, _vocab(40), Architecture(units=(16, 8)), {"epochs": 2}, device="cpu")
    assert model.method == "toy-shuffle" and model.training["n_genes"] == 40 and len(model.training["val_loss"]) == 2
    model.save(tmp_path / "toy")
    sp.save_npz(tmp_path / "inputs.npz", inputs)
    # a fresh interpreter that never registered the toy objective reads its network off the checkpoint
    script = (
        "import sys, numpy as np, scipy.sparse as sp; from ssl_st.models import PRETRAINING, SSLModel\n"
        "model = SSLModel.load(sys.argv[1]); assert 'toy-shuffle' not in PRETRAINING\n"
        "np.save(sys.argv[2], model.embed(sp.load_npz(sys.argv[3])))\nprint(model.method)"
    )
    args = [str(tmp_path / "toy"), str(tmp_path / "embedding.npy"), str(tmp_path / "inputs.npz")]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "toy-shuffle"
    np.testing.assert_array_equal(np.load(tmp_path / "embedding.npy"), model.embed(inputs))


def test_embed_writes_one_key_and_records_coverage():
    vocabulary = _vocab(30)
    model = SSLModel.random_init(vocabulary, Architecture(units=(8, 4)), seed=0)
    counts = sp.csr_matrix(np.random.default_rng(0).poisson(1.0, (25, 25)).astype(np.float32))
    ids = [*vocabulary.ids[:20], *(f"ENSG9{i:010d}" for i in range(5))]  # 5 genes the model does not read
    adata = ad.AnnData(X=counts, var=pd.DataFrame({"gene_ids": ids}, index=[f"S{i}" for i in range(25)]))
    assert tl.embedding_key("random-init") == "X_random_init"
    coverage = tl.embed(adata, model, device="cpu")
    assert adata.obsm["X_random_init"].shape == (25, 4)
    assert adata.uns["ssl_st"]["X_random_init"] == coverage.as_dict() and coverage.mapped_genes == 20
    tl.embed(adata, model, key="X_mine", batch_size=7, device="cpu")
    np.testing.assert_allclose(adata.obsm["X_mine"], adata.obsm["X_random_init"], rtol=1e-5, atol=1e-6)
    with pytest.raises(CoverageError, match=r"only 20 of the dataset's 25 genes \(80%\).*min_coverage 90%"):
        tl.embed(adata, model, min_coverage=0.9)
