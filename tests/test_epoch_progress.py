"""Every training loop in ssl_st reports each epoch with its index and the loop's total, so that a
caller can show progress and an ETA (issue 11, finding 7): pretraining, fine-tuning, supervised."""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from ssl_st.genes import Vocabulary
from ssl_st.models import Architecture, RandomMaskConfig, SSLModel
from ssl_st.tasks import CellTypeConfig, FineTuneConfig, fine_tune, supervised

N_GENES = 30
VOCABULARY = Vocabulary(tuple(f"ENSG{i:011d}" for i in range(N_GENES)), tuple(f"G{i}" for i in range(N_GENES)))
ARCH = Architecture(units=(16, 8), dropout=0.0)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, float, float]] = []

    def __call__(self, epoch: int, total: int, train_loss: float, val_loss: float) -> None:
        self.calls.append((epoch, total, train_loss, val_loss))


@pytest.fixture(scope="module")
def section() -> ad.AnnData:
    """120 cells of three types that differ in which genes they express."""
    rng = np.random.default_rng(0)
    types = rng.integers(0, 3, 120)
    rates = 0.3 + 4.0 * (np.arange(N_GENES)[None, :] % 3 == types[:, None])
    adata = ad.AnnData(X=sp.csr_matrix(rng.poisson(rates).astype(np.float32)),
                       var=pd.DataFrame({"gene_ids": VOCABULARY.ids}, index=list(VOCABULARY.symbols)))
    adata.obs["cell_type"] = [f"type{t}" for t in types]
    return adata


def test_pretraining_reports_every_epoch_of_its_total():
    rng = np.random.default_rng(0)
    inputs = sp.csr_matrix(np.log1p(rng.poisson(1.0, (96, N_GENES))).astype(np.float32))
    recorder = Recorder()
    model = RandomMaskConfig(epochs=3, batch_size=32).train(inputs, VOCABULARY, ARCH, device="cpu", on_epoch=recorder)
    assert [(epoch, total) for epoch, total, _, _ in recorder.calls] == [(0, 3), (1, 3), (2, 3)]
    assert [c[2] for c in recorder.calls] == model.training["train_loss"]
    assert [c[3] for c in recorder.calls] == model.training["val_loss"]


def test_fine_tuning_reports_every_epoch_and_its_maximum(section):
    recorder = Recorder()
    model = SSLModel.random_init(VOCABULARY, ARCH, seed=0)
    ft = FineTuneConfig(batch_size=32, max_epochs=3, patience=10)
    result = fine_tune(section, model, CellTypeConfig(), ft, seed=0, device="cpu", on_epoch=recorder)
    assert [(epoch, total) for epoch, total, _, _ in recorder.calls] == [(0, 3), (1, 3), (2, 3)]
    assert all(math.isfinite(c[2]) and c[2] > 0 for c in recorder.calls)
    assert min(c[3] for c in recorder.calls) == result.info["best_val_loss"]


def test_early_stopping_ends_the_reports_before_the_total(section):
    recorder = Recorder()
    # after the first epoch none improves by min_delta: patience 1 stops the loop at the second
    ft = FineTuneConfig(batch_size=32, max_epochs=200, patience=1, min_delta=10.0)
    result = supervised(section, VOCABULARY, ARCH, CellTypeConfig(), ft, seed=0, device="cpu", on_epoch=recorder)
    assert [(epoch, total) for epoch, total, _, _ in recorder.calls] == [(0, 200), (1, 200)]
    assert result.info["epochs_run"] == 2
