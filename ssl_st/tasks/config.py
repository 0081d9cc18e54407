"""The tasks' settings, importable without torch or scikit-learn (a grid validates them up front)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..pp import TargetSum


@dataclass(frozen=True)
class CellTypeConfig:
    label_key: str = "cell_type"
    k: int = 5
    split: tuple[float, float, float] = (0.70, 0.15, 0.15)
    target_sum: TargetSum = 1e4
    pca_components: int = 64
    min_coverage: float = 0.0  # fraction of the dataset's genes that must map onto the vocabulary


@dataclass(frozen=True)
class FineTuneConfig:
    learning_rate: float = 9e-4
    weight_decay: float = 0.05
    batch_size: int = 128
    max_epochs: int = 500
    patience: int = 20
    min_delta: float = 1e-4
    scope: Literal["last-5", "all"] = "last-5"
