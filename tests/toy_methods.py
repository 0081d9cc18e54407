"""A new SSL objective and a new spatial-domain method, each one decorated class in one file.

This is what CONTRIBUTING.md walks through: nothing in ``ssl_st``, ``cluster`` or ``grid`` names
these classes, yet a config can use them as soon as this module is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cluster import DOMAIN_METHODS
from cluster.settings import ExpressionSettings, PCASettings, RunContext, SpatialMethod
from ssl_st.models import PRETRAINING
from ssl_st.models.registry import AdamWConfig


@PRETRAINING.register
@dataclass(frozen=True)
class ToyDenoise(AdamWConfig):
    """A denoising autoencoder: Gaussian noise in, clean expression out."""

    name: ClassVar[str] = "toy-denoise"
    network: ClassVar[str] = "masked-autoencoder"

    noise: float = 0.5

    def loss(self, vocabulary, programs):
        import torch

        def loss_fn(network, x, gen):
            noisy = x + self.noise * torch.randn(x.shape, generator=gen, device=x.device)
            return ((network(noisy)[1] - x) ** 2).mean()

        return loss_fn, {}


@DOMAIN_METHODS.register
@dataclass(frozen=True, kw_only=True)
class ToyNeighbourMean(PCASettings, ExpressionSettings, SpatialMethod):
    """Each cell's PCA features averaged with its spatial neighbours' ``rounds`` times, then the mixture."""

    name: ClassVar[str] = "toy-neighbour-mean"

    k: int = 8
    rounds: int = 2

    def from_expression(self, adata, *, seed: int = 0):
        return self.pca(self.expression(adata), seed=seed)

    def spatial_model(self, x, adjacency, run: RunContext, info: dict[str, float]):
        import numpy as np
        import scipy.sparse as sp

        degree = np.asarray(adjacency.sum(axis=1)).ravel() + 1.0
        step = sp.diags(1.0 / degree) @ (adjacency + sp.identity(adjacency.shape[0]))
        for _ in range(self.rounds):
            x = step @ x
        info["rounds"] = float(self.rounds)
        return np.asarray(x, dtype=np.float32)
