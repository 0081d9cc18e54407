"""Fine-tuning and the supervised baseline, as the reusability study runs them.

Both train the upstream classifier layout (encoder layers, activation, dropout, a new linear head)
with unweighted cross-entropy, AdamW (lr 9e-4, weight decay 0.05), batch 128, and early stopping on
the validation loss (patience 20, min_delta 1e-4, best weights restored); the study's StepLR was
never stepped, so the learning rate is constant here too.

- ``fine-tune``: encoder weights from a pretrained model. ``scope="last-5"`` (the study's spatial
  runs) leaves only the last five parameter tensors of the encoder trainable, plus the head;
  ``scope="all"`` trains everything (the study's PBMC / Tabula Sapiens runs, upstream's default).
- ``supervised``: the same network from seeded random weights, everything trainable.

The headline metric is the study's: kNN (k=5) on the 64-d embedding of the trained encoder (train ->
test). The head's own test predictions are reported too, as ``head_*`` metrics.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from .. import metrics
from ..models import resolve_device
from ..nn import Classifier
from ..pp import model_input
from .celltype import TaskResult, _info, knn_predict, labels, split_indices
from .config import CellTypeConfig, FineTuneConfig

if TYPE_CHECKING:
    from anndata import AnnData

    from ..genes import Vocabulary
    from ..models import Architecture, SSLModel
    from ..models.training import EpochCallback


def _dense(matrix: sp.csr_matrix, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(matrix[rows].toarray()).to(device)


@torch.no_grad()
def _mean_loss(network: Classifier, x: sp.csr_matrix, y: torch.Tensor, rows: np.ndarray, batch: int, device) -> float:
    network.eval()
    total = 0.0
    for start in range(0, len(rows), batch):
        idx = rows[start : start + batch]
        _, logits = network(_dense(x, idx, device))
        total += nn.functional.cross_entropy(logits, y[idx], reduction="sum").item()
    return total / max(len(rows), 1)


def train_classifier(
    network: Classifier,
    x: sp.csr_matrix,
    y: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    config: FineTuneConfig,
    *,
    seed: int,
    device: torch.device,
    trainable: list[nn.Parameter],
    on_epoch: EpochCallback | None = None,
) -> dict[str, float]:
    """Cross-entropy training with early stopping on validation loss; restores the best weights.

    ``on_epoch(epoch, config.max_epochs, train_loss, val_loss)`` follows every epoch (see
    :data:`ssl_st.models.training.EpochCallback`); early stopping may end the loop sooner.
    """
    rng = np.random.default_rng(seed)
    network.to(device)
    targets = torch.from_numpy(y).to(device)
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    best, best_epoch, best_state, waited = math.inf, -1, copy.deepcopy(network.state_dict()), 0
    initial = _mean_loss(network, x, targets, val, 1024, device)
    epoch = -1
    for epoch in range(config.max_epochs):
        network.train()
        order = rng.permutation(train)
        total = torch.zeros((), device=device)  # summed on the device: no host sync per step
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            _, logits = network(_dense(x, idx, device))
            loss = nn.functional.cross_entropy(logits, targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        val_loss = _mean_loss(network, x, targets, val, 1024, device)
        if on_epoch is not None:
            on_epoch(epoch, config.max_epochs, total.item() / max(len(order), 1), val_loss)
        if val_loss < best - config.min_delta:
            best, best_epoch, best_state, waited = val_loss, epoch, copy.deepcopy(network.state_dict()), 0
        else:
            waited += 1
            if waited >= config.patience:
                break
    network.load_state_dict(best_state)
    network.eval()
    return {"initial_val_loss": initial, "best_val_loss": best, "best_epoch": float(best_epoch), "epochs_run": float(epoch + 1)}


def _evaluate(network, x, y_names, classes, train, test, k, device) -> tuple[dict[str, float], np.ndarray]:
    """Scores of the trained network: kNN on its embedding (the headline, whose test predictions are
    returned too) and its head's own predictions (``head_*``)."""
    with torch.no_grad():
        network.eval().to(device)
        parts = [network(_dense(x, np.arange(s, min(s + 4096, x.shape[0])), device)) for s in range(0, x.shape[0], 4096)]
    embedding = torch.cat([p[0] for p in parts]).cpu().numpy()
    predicted = classes[torch.cat([p[1] for p in parts]).argmax(1).cpu().numpy()]
    head = metrics.classification(y_names[test], predicted[test])
    knn = knn_predict(embedding, y_names, train, test, k)
    return {**metrics.classification(y_names[test], knn), **{f"head_{m}": v for m, v in head.items()}}, knn


def _run(adata, vocabulary, network, config, ft, seed, device, trainable_of, on_epoch) -> TaskResult:
    y_names = labels(adata, config.label_key)
    classes, y = np.unique(y_names, return_inverse=True)
    train, val, test = split_indices(adata.n_obs, seed, config.split)
    x, coverage = model_input(adata, vocabulary, config.target_sum, min_coverage=config.min_coverage)
    target = resolve_device(device)
    history = train_classifier(network, x, y, train, val, ft, seed=seed, device=target, trainable=trainable_of(network),
                               on_epoch=on_epoch)
    scores, predicted = _evaluate(network, x, y_names, classes, train, test, config.k, target)
    return TaskResult(scores, {**_info(adata, y_names, train, test, coverage), **history}, test=test, predicted=predicted)


def fine_tune(
    adata: AnnData,
    model: SSLModel,
    config: CellTypeConfig,
    ft: FineTuneConfig,
    seed: int,
    device: str = "auto",
    on_epoch: EpochCallback | None = None,
) -> TaskResult:
    n_classes = len(np.unique(labels(adata, config.label_key)))
    arch = model.architecture
    torch.manual_seed(seed)  # the new head
    network = Classifier(len(model.vocabulary), n_classes, arch.units, arch.activation, arch.dropout)
    network.encoder.load_state_dict(model.encoder.state_dict())

    def trainable(net: Classifier) -> list[nn.Parameter]:
        encoder = list(net.encoder.parameters())
        if ft.scope == "last-5":
            for p in encoder[:-5]:
                p.requires_grad_(False)
            encoder = encoder[-5:]
        return encoder + list(net.head.parameters())

    return _run(adata, model.vocabulary, network, config, ft, seed, device, trainable, on_epoch)


def supervised(
    adata: AnnData,
    vocabulary: Vocabulary,
    architecture: Architecture,
    config: CellTypeConfig,
    ft: FineTuneConfig,
    seed: int,
    device: str = "auto",
    on_epoch: EpochCallback | None = None,
) -> TaskResult:
    n_classes = len(np.unique(labels(adata, config.label_key)))
    torch.manual_seed(seed)
    network = Classifier(len(vocabulary), n_classes, architecture.units, architecture.activation, architecture.dropout)
    return _run(adata, vocabulary, network, config, ft, seed, device, lambda net: list(net.parameters()), on_epoch)
