"""Evaluation tasks. Each returns a :class:`TaskResult`: metrics plus the facts needed to read them."""

from .celltype import CellTypeConfig, TaskResult, pca_baseline, split_indices, zero_shot
from .finetune import FineTuneConfig, fine_tune, supervised

__all__ = ["CellTypeConfig", "FineTuneConfig", "fine_tune", "supervised", "TaskResult", "pca_baseline", "split_indices", "zero_shot"]
