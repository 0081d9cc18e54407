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

import numpy as np
from anndata import AnnData
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

from .. import metrics
from ..genes import Vocabulary
from ..models import SSLModel
from ..pp import TargetSum, model_input


@dataclass(frozen=True)
class CellTypeConfig:
    label_key: str = "cell_type"
    k: int = 5
    split: tuple[float, float, float] = (0.70, 0.15, 0.15)
    target_sum: TargetSum = 1e4
    pca_components: int = 64
    min_coverage: float = 0.0  # fraction of the dataset's genes that must map onto the vocabulary


class CoverageError(ValueError):
    """Too few of a dataset's genes map onto a model's vocabulary for its results to mean anything."""


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


def checked_input(adata: AnnData, vocabulary: Vocabulary, config: CellTypeConfig):
    """Model-space inputs, refusing datasets whose genes barely reach the vocabulary."""
    inputs, coverage = model_input(adata, vocabulary, config.target_sum)
    if coverage.mapped_genes == 0 or coverage.dataset_fraction < config.min_coverage:
        raise CoverageError(
            f"only {coverage.mapped_genes} of the dataset's {coverage.dataset_genes} genes "
            f"({coverage.dataset_fraction:.0%}) map onto the {coverage.vocabulary_genes}-gene vocabulary "
            f"(min_coverage {config.min_coverage:.0%}); check the gene identifiers in var (index, gene_ids, "
            "feature_id, feature_name) and the species (mouse data needs orthologs), or lower min_coverage"
        )
    return inputs, coverage


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


def _info(adata: AnnData, y: np.ndarray, train: np.ndarray, test: np.ndarray, coverage) -> dict[str, float]:
    return {
        "n_cells": float(adata.n_obs),
        "n_train": float(len(train)),
        "n_test": float(len(test)),
        "n_classes": float(len(np.unique(y))),
        "genes_mapped": float(coverage.mapped_genes),
        "vocabulary_coverage": coverage.vocabulary_fraction,
    }


def zero_shot(adata: AnnData, model: SSLModel, config: CellTypeConfig, seed: int, device: str = "auto") -> TaskResult:
    y = labels(adata, config.label_key)
    train, _, test = split_indices(adata.n_obs, seed, config.split)
    inputs, coverage = checked_input(adata, model.vocabulary, config)
    embedding = model.embed(inputs, device=device)
    return TaskResult(knn_scores(embedding, y, train, test, config.k), _info(adata, y, train, test, coverage))


def pca_baseline(adata: AnnData, vocabulary: Vocabulary, config: CellTypeConfig, seed: int) -> TaskResult:
    y = labels(adata, config.label_key)
    train, _, test = split_indices(adata.n_obs, seed, config.split)
    inputs, coverage = checked_input(adata, vocabulary, config)
    # Zero-filled vocabulary columns add nothing to PCA; dropping them keeps a 19k-gene space cheap.
    dense = inputs[:, np.unique(inputs.indices)].toarray()
    n_components = min(config.pca_components, len(train) - 1, dense.shape[1])
    pca = PCA(n_components=n_components, random_state=seed).fit(dense[train])
    embedding = pca.transform(dense).astype(np.float32)
    return TaskResult(knn_scores(embedding, y, train, test, config.k), _info(adata, y, train, test, coverage))
