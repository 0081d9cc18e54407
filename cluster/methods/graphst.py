"""GraphST's settings: a contrastive GCN autoencoder on a 3-NN graph, the mixture on PCA(20) of its output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..registry import DOMAIN_METHODS
from ..settings import ExpressionSettings, PCASettings, RunContext, SpatialMethod, TrainingSettings

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp
    from anndata import AnnData


@DOMAIN_METHODS.register
@dataclass(frozen=True, kw_only=True)
class GraphST(TrainingSettings, PCASettings, ExpressionSettings, SpatialMethod):
    """GraphST (Long et al. 2023, :mod:`cluster.graphst`): upstream's defaults, a 3-NN graph and 600
    epochs of Adam at 1e-3 on ``alpha`` x reconstruction + ``beta`` x contrastive loss. Expression
    is scaled to unit variance and clipped at 10, as upstream preprocesses it; the head clusters
    PCA(``pca_components``) of the embedding, as upstream's ``clustering`` does."""

    name: ClassVar[str] = "graphst"

    k: int = 3
    epochs: int = 600
    alpha: float = 10.0  # weight of the reconstruction loss
    beta: float = 1.0  # weight of the contrastive loss

    def from_expression(self, adata: AnnData, *, seed: int = 0) -> np.ndarray:
        import numpy as np

        x = self.expression(adata)
        std = x.std(axis=0)
        return np.minimum(x / np.where(std > 0, std, 1.0), 10.0)

    def spatial_model(self, x: np.ndarray, adjacency: sp.csr_matrix, run: RunContext, info: dict[str, float]) -> np.ndarray:
        from ..training import GraphSTConfig, fit_graphst

        config = GraphSTConfig(epochs=self.epochs, learning_rate=self.learning_rate, alpha=self.alpha, beta=self.beta)
        return self.record_fit(fit_graphst(x, adjacency, config, seed=run.seed, device=run.device, progress=run.progress), info)

    def head_input(self, x: np.ndarray, embedding: np.ndarray | None, *, seed: int = 0) -> np.ndarray:
        return self.pca(embedding, seed=seed) if embedding is not None else x
