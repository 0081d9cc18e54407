"""``ImputeConfig``: an imputation's settings, importable without numpy, torch or scikit-learn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ImputeConfig:
    method: Literal["spage", "tangram"]
    n_pv: int = 30  # spage: principal vectors
    k: int = 50  # spage: neighbours
    epochs: int = 300  # tangram: optimisation steps
    learning_rate: float = 0.1  # tangram
    density_prior: Literal["uniform", "rna_count_based"] = "rna_count_based"  # tangram
    lambda_g2: float = 0.0  # tangram: weight of the per-cell cosine term (Tangram's default is 0)
    max_reference_cells: int = 5000  # tangram: bounds the dense reference x spatial mapping matrix
    threads: int | None = None  # tangram: CPU threads during the fit (None: the process's setting)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("spage", "tangram"):
            raise ValueError(f"unknown imputation method {self.method!r}; choose 'spage' or 'tangram'")
        if self.density_prior not in ("uniform", "rna_count_based"):
            raise ValueError(f"density_prior must be 'uniform' or 'rna_count_based', not {self.density_prior!r}")
        for name in ("n_pv", "k", "epochs", "max_reference_cells"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
