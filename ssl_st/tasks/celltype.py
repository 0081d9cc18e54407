"""Cell-type prediction on frozen embeddings, as the reusability study defines it.

- split: random, cell-level, *not* stratified, 70/15/15 by seed (``train_test_split`` twice: 15 % test,
  then 17.65 % of the rest as validation), exactly the study's calls;
- zero-shot: the frozen encoder embeds every cell; kNN (k=5, Euclidean, uniform votes) is fit on the
  train split and predicts the test split;
- PCA baseline: PCA(64) fit on the train split of the same model-space inputs, then the same kNN.

The study's seed drives only the split. Here it also seeds every model-side random choice, so that a
seed names a reproducible run rather than a split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

from .. import metrics, tl
from ..pp import model_input
from .config import CellTypeConfig

if TYPE_CHECKING:
    from anndata import AnnData

    from ..genes import Coverage, Vocabulary
    from ..models import SSLModel


@dataclass(frozen=True)
class TaskResult:
    metrics: dict[str, float]
    info: dict[str, float] = field(default_factory=dict)


def split_indices(n: int, seed: int, split: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
    """Train/validation/test row indices, reproducing the study's two ``train_test_split`` calls."""
    _, val_fraction, test_fraction = split
    rows = np.arange(n)
    rest, test = train_test_split(rows, test_size=test_fraction, random_state=seed)
    train, val = train_test_split(rest, test_size=val_fraction / (1.0 - test_fraction), random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


def labels(adata: AnnData, key: str) -> np.ndarray:
    if key not in adata.obs:
        raise KeyError(
            f"label column '{key}' not found in obs (columns: {', '.join(map(str, adata.obs.columns))}); "
            "set label_key in the task's config"
        )
    return adata.obs[key].astype(str).to_numpy()


def knn_scores(embedding: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, k: int) -> dict[str, float]:
    knn = KNeighborsClassifier(n_neighbors=k).fit(embedding[train], y[train])
    return metrics.classification(y[test], knn.predict(embedding[test]))


def _info(adata: AnnData, y: np.ndarray, train: np.ndarray, test: np.ndarray, coverage: Coverage) -> dict[str, float]:
    return {
        "n_cells": float(adata.n_obs),
        "n_train": float(len(train)),
        "n_test": float(len(test)),
        "n_classes": float(len(np.unique(y))),
        "genes_mapped": float(coverage.mapped_genes),
        "vocabulary_coverage": coverage.vocabulary_fraction,
    }


def zero_shot(adata: AnnData, model: SSLModel, config: CellTypeConfig, seed: int, device: str = "auto") -> TaskResult:
    """kNN on the frozen encoder's embedding, which stays in ``adata.obsm`` as :func:`ssl_st.tl.embed`
    writes it (key ``tl.embedding_key(model.method)``)."""
    y = labels(adata, config.label_key)
    train, _, test = split_indices(adata.n_obs, seed, config.split)
    key = tl.embedding_key(model.method)
    coverage = tl.embed(
        adata, model, key=key, target_sum=config.target_sum, min_coverage=config.min_coverage, device=device
    )
    return TaskResult(knn_scores(adata.obsm[key], y, train, test, config.k), _info(adata, y, train, test, coverage))


def pca_baseline(adata: AnnData, vocabulary: Vocabulary, config: CellTypeConfig, seed: int) -> TaskResult:
    y = labels(adata, config.label_key)
    train, _, test = split_indices(adata.n_obs, seed, config.split)
    inputs, coverage = model_input(adata, vocabulary, config.target_sum, min_coverage=config.min_coverage)
    # Zero-filled vocabulary columns add nothing to PCA; dropping them keeps a 19k-gene space cheap.
    dense = inputs[:, np.unique(inputs.indices)].toarray()
    n_components = min(config.pca_components, len(train) - 1, dense.shape[1])
    pca = PCA(n_components=n_components, random_state=seed).fit(dense[train])
    embedding = pca.transform(dense).astype(np.float32)
    return TaskResult(knn_scores(embedding, y, train, test, config.k), _info(adata, y, train, test, coverage))
