"""Evaluation tasks. Each returns a :class:`TaskResult`: metrics plus the facts needed to read them.

The configs import nothing heavy; the tasks themselves (torch, scikit-learn) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from .config import CellTypeConfig, FineTuneConfig

if TYPE_CHECKING:
    from ..pp import CoverageError
    from .celltype import TaskResult, pca_baseline, split_indices, zero_shot, zero_shot_embedded
    from .finetune import fine_tune, supervised

__getattr__, __dir__ = lazy_attributes(
    __name__,
    {
        "CoverageError": "..pp",
        "TaskResult": ".celltype",
        "pca_baseline": ".celltype",
        "split_indices": ".celltype",
        "zero_shot": ".celltype",
        "zero_shot_embedded": ".celltype",
        "fine_tune": ".finetune",
        "supervised": ".finetune",
    },
)

__all__ = [
    "CellTypeConfig",
    "CoverageError",
    "FineTuneConfig",
    "TaskResult",
    "fine_tune",
    "pca_baseline",
    "split_indices",
    "supervised",
    "zero_shot",
    "zero_shot_embedded",
]
