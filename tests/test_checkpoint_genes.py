"""Every checkpoint carries its own gene list, so that models share a folder (issue 11, finding 6)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import scipy.sparse as sp

from ssl_st.genes import Vocabulary
from ssl_st.models import Architecture, CheckpointError, RandomMaskConfig, SSLModel

ARCH = Architecture(units=(16, 8), dropout=0.0)


def _vocab(n: int, offset: int) -> Vocabulary:
    return Vocabulary(tuple(f"ENSG{i:011d}" for i in range(offset, offset + n)), tuple(f"G{i}" for i in range(offset, offset + n)))


def _inputs(n_cells: int, n_genes: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    return sp.csr_matrix(np.log1p(rng.poisson(1.0, (n_cells, n_genes))).astype(np.float32))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Two models pretrained (for real, briefly) into one folder: same width, different genes."""
    folder = tmp_path_factory.mktemp("runs")
    models = {}
    for name, offset, seed in (("a", 0, 0), ("b", 1000, 1)):
        model = RandomMaskConfig(epochs=2, batch_size=32).train(_inputs(96, 30, seed), _vocab(30, offset), ARCH,
                                                                 seed=seed, device="cpu")
        model.save(folder / f"{name}.ckpt")
        models[name] = model
    return folder, models


def test_two_models_in_one_folder_each_load_with_their_own_genes(shared):
    folder, models = shared
    x = _inputs(10, 30, 2)
    for name, model in models.items():
        loaded = SSLModel.load(folder / f"{name}.ckpt")
        assert loaded.vocabulary == model.vocabulary and loaded.method == "random-mask"
        np.testing.assert_array_equal(loaded.embed(x, device="cpu"), model.embed(x, device="cpu"))
    assert sorted(p.name for p in folder.iterdir()) == ["a.ckpt", "a.json", "a.var.parquet", "b.ckpt", "b.json",
                                                        "b.var.parquet"]


def test_explicit_genes_come_first_then_the_sidecar_then_the_published_var_parquet(shared, tmp_path):
    folder, models = shared
    # an explicit file wins over the sidecar, and is checked against the weights
    wrong = tmp_path / "wrong.parquet"
    _vocab(31, 0).to_parquet(wrong)
    with pytest.raises(CheckpointError, match="reads 30 genes but .*wrong.parquet lists 31"):
        SSLModel.load(folder / "a.ckpt", genes=wrong)
    assert SSLModel.load(folder / "a.ckpt", genes=folder / "b.var.parquet").vocabulary == models["b"].vocabulary
    # the published layout: checkpoints beside one var.parquet, no sidecars
    published = tmp_path / "Pretrained Models"
    published.mkdir()
    shutil.copy(folder / "a.ckpt", published / "RandomMask.ckpt")
    with pytest.raises(CheckpointError, match=r"RandomMask\.var\.parquet or .*var\.parquet"):
        SSLModel.load(published / "RandomMask.ckpt")
    shutil.copy(folder / "a.var.parquet", published / "var.parquet")
    assert SSLModel.load(published / "RandomMask.ckpt").vocabulary == models["a"].vocabulary
    # a sidecar named after the checkpoint wins over the folder's var.parquet
    shutil.copy(folder / "b.ckpt", published / "mine.ckpt")
    shutil.copy(folder / "b.var.parquet", published / "mine.var.parquet")
    assert SSLModel.load(published / "mine.ckpt").vocabulary == models["b"].vocabulary


def test_a_model_folder_holds_its_vocabulary_named_after_its_checkpoint(shared, tmp_path):
    _, models = shared
    path = models["a"].save(tmp_path / "model")
    assert path == tmp_path / "model" / "model.ckpt"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.ckpt", "model.json", "model.var.parquet"]
    assert SSLModel.load(tmp_path / "model").vocabulary == models["a"].vocabulary
    # a folder written before the vocabulary was named after its checkpoint still loads
    (path.parent / "model.var.parquet").rename(path.parent / "var.parquet")
    assert SSLModel.load(tmp_path / "model").vocabulary == models["a"].vocabulary
