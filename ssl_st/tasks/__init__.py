"""Evaluation tasks. Each returns a :class:`TaskResult`: metrics plus the facts needed to read them."""

from .celltype import CellTypeConfig, TaskResult, pca_baseline, split_indices, zero_shot

__all__ = ["CellTypeConfig", "TaskResult", "pca_baseline", "split_indices", "zero_shot"]
