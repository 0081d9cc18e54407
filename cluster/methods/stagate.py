"""STAGATE's settings: a graph-attention autoencoder on a 6-NN graph, the mixture on its embedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..registry import DOMAIN_METHODS
from ..settings import ExpressionSettings, RunContext, SpatialMethod, TrainingSettings

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp
    from anndata import AnnData


@DOMAIN_METHODS.register
@dataclass(frozen=True, kw_only=True)
class STAGATE(TrainingSettings, ExpressionSettings, SpatialMethod):
    """STAGATE (Dong & Zhang 2022, :mod:`cluster.stagate`): upstream's 512/30 network, Adam at 1e-3
    for 1000 epochs, on a 6-NN graph (about the degree of the Visium radius graph; a radius depends
    on the units of the coordinates, so it is opt-in); the mixture (mclust EEE) on the 30-d
    embedding. Expression goes in log-normalised, without a PCA."""

    name: ClassVar[str] = "stagate"

    def from_expression(self, adata: AnnData, *, seed: int = 0) -> np.ndarray:
        return self.expression(adata)

    def spatial_model(self, x: np.ndarray, adjacency: sp.csr_matrix, run: RunContext, info: dict[str, float]) -> np.ndarray:
        from ..training import STAGATEConfig, fit_stagate

        config = STAGATEConfig(epochs=self.epochs, learning_rate=self.learning_rate)
        return self.record_fit(fit_stagate(x, adjacency, config, seed=run.seed, device=run.device, progress=run.progress), info)
