"""Training of the graph autoencoders: one optimiser/loop config, one set-up, one epoch loop.

STAGATE and GraphST train the same way: full batch on one spatial graph, one Adam step per epoch
on the loss of the whole slide, seeded so that the same seed gives the same embedding on a
machine. :class:`TrainingConfig` holds what that loop needs; :func:`start_fit` does the set-up both
share (validate the inputs, put the graph and features on the device, seed, build the network) and
:meth:`FullBatchFit.train` runs the loop. The networks themselves are pure ``nn.Module`` classes in
:mod:`cluster.stagate` and :mod:`cluster.graphst`; what is model-specific here is each model's
loss and what it hands back.

Both fits take ``x``, cells x features (dense or scipy sparse; densified), and ``adjacency``, the
symmetric scipy sparse spatial graph (n x n; its diagonal and edge weights are ignored), and call
``progress(epoch, loss)`` after every epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from ._torch import as_features, resolve_device, seed_everything
from .graphst import GraphSTNet, RowShuffler, graphst_operators
from .settings import EpochCallback, GraphSTVariant
from .stagate import STAGATENet, stagate_graph

__all__ = [
    "EpochCallback", "FitResult", "FullBatchFit", "GraphSTConfig", "GraphSTResult", "STAGATEConfig", "STAGATEResult",
    "TrainingConfig", "fit_graphst", "fit_stagate", "run_epochs", "start_fit",
]

G = TypeVar("G")
Features = np.ndarray | sp.spmatrix
Device = str | torch.device


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """Full-batch Adam: ``epochs`` steps at ``learning_rate``, L2 ``weight_decay`` and, when set,
    gradient-norm clipping at ``gradient_clip``."""

    epochs: int = 1000
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    gradient_clip: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")


@dataclass(frozen=True, kw_only=True)
class STAGATEConfig(TrainingConfig):
    """STAGATE_pyG's ``train_STAGATE`` defaults."""

    hidden: tuple[int, int] = (512, 30)
    """Width of the attention layer, then of the embedding."""
    weight_decay: float = 1e-4
    gradient_clip: float | None = 5.0


@dataclass(frozen=True, kw_only=True)
class GraphSTConfig(TrainingConfig):
    """Upstream ``GraphST.__init__``'s defaults (no weight decay, no clipping)."""

    latent: int = 64
    epochs: int = 600
    alpha: float = 10.0
    """Weight of the reconstruction loss."""
    beta: float = 1.0
    """Weight of the contrastive (discriminator) loss."""
    variant: GraphSTVariant = "10X"
    """Upstream's code path: graph normalisation and whether the output is L2-normalised."""


@dataclass(frozen=True)
class FitResult:
    """What a fit hands back: the embedding the clustering head consumes, plus its provenance."""

    embedding: np.ndarray
    """n x d float32, rows in the order of the input cells."""
    losses: tuple[float, ...]
    """Training loss per epoch."""
    seconds: float
    """Wall time of the whole fit (graph preparation, training, final forward pass)."""
    device: str
    """Where it ran, e.g. ``"cpu"`` or ``"cuda:0"``."""


@dataclass(frozen=True)
class STAGATEResult(FitResult):
    """``embedding`` is STAGATE's ``z`` (n x hidden[-1])."""


@dataclass(frozen=True)
class GraphSTResult(FitResult):
    """``embedding`` is upstream's ``emb`` (the reconstruction ``h``, n x features, L2-normalised
    rows for ``variant="sparse"``); ``latent`` is the hidden code ``z`` (n x latent)."""

    latent: np.ndarray


def run_epochs(
    loss_fn: Callable[[], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    *,
    clip_params: list[torch.nn.Parameter] | None = None,
    clip_norm: float | None = None,
    progress: EpochCallback | None = None,
) -> tuple[float, ...]:
    """Full-batch training: one optimiser step per epoch on the loss of the whole graph.

    Memory stays flat over epochs: nothing of an epoch outlives it but one float in ``history``.
    """
    history: torch.Tensor | None = None
    for epoch in range(1, epochs + 1):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        if clip_norm is not None and clip_params is not None:
            torch.nn.utils.clip_grad_norm_(clip_params, clip_norm)
        optimizer.step()
        # The loss history stays on the device (reading it every epoch would sync a GPU for
        # nothing), *copied* into one preallocated buffer. Keeping each ``loss.detach()`` kept its
        # storage alive: on CPU ``F.mse_loss`` (torch 2.13) returns a 0-d tensor over a storage as
        # large as its input, so STAGATE held an n x genes buffer per epoch (7 MB on 621 spots x
        # 3,000 genes, 7.8 GB after 1,000 epochs), and GraphST's small per-epoch losses pinned
        # freed heap chunks, so glibc grew its heap instead of reusing them (+70 MiB per 100
        # epochs). bench/cluster_scaling.py --memory measures both, before and after.
        if history is None:
            history = torch.empty(epochs, dtype=loss.dtype, device=loss.device)
        history[epoch - 1] = loss.detach()
        if progress is not None:
            progress(epoch, float(loss.detach()))
        del loss  # before the next forward pass allocates, not after it
    if history is None:
        return ()
    return tuple(float(v) for v in history.cpu().tolist())


@dataclass
class FullBatchFit(Generic[G]):
    """One slide on one device, ready to train: features ``x``, the model's graph, the network."""

    x: torch.Tensor
    graph: G
    model: nn.Module
    device: torch.device
    started: float

    def train(self, loss_fn: Callable[[], torch.Tensor], config: TrainingConfig, progress: EpochCallback | None) -> tuple[float, ...]:
        """``config.epochs`` Adam steps on ``loss_fn``; leaves the model in eval mode."""
        params = list(self.model.parameters())
        optimizer = torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.model.train()
        clip = params if config.gradient_clip is not None else None
        losses = run_epochs(loss_fn, optimizer, config.epochs, clip_params=clip, clip_norm=config.gradient_clip, progress=progress)
        self.model.eval()
        return losses

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @staticmethod
    def numpy(t: torch.Tensor) -> np.ndarray:
        return t.cpu().numpy().astype(np.float32, copy=False)


def start_fit(
    x: Features,
    adjacency: Any,
    *,
    graph: Callable[[Any, int, torch.device], G],
    network: Callable[[int], nn.Module],
    seed: int,
    device: Device,
) -> FullBatchFit[G]:
    """Validate ``x``, build the model's ``graph(adjacency, n_cells, device)``, seed every generator,
    then build ``network(n_features)`` on the device (the seed decides its initial weights)."""
    started = time.perf_counter()
    features = as_features(x)
    dev = resolve_device(device)
    operators = graph(adjacency, features.shape[0], dev)
    seed_everything(seed)
    model = network(features.shape[1]).to(dev)
    return FullBatchFit(torch.from_numpy(features).to(dev), operators, model, dev, started)


def fit_stagate(x: Features, adjacency: sp.spmatrix, config: STAGATEConfig = STAGATEConfig(), *, seed: int = 0,
                device: Device = "auto", progress: EpochCallback | None = None) -> STAGATEResult:
    """Train STAGATE on one slide (MSE(x, x_hat)) and return the embedding ``z`` (float32)."""
    fit = start_fit(x, adjacency, graph=stagate_graph, network=lambda n: STAGATENet(n, tuple(config.hidden)),
                    seed=seed, device=device)

    def loss_fn() -> torch.Tensor:
        _, x_hat = fit.model(fit.x, fit.graph)
        return F.mse_loss(fit.x, x_hat)

    losses = fit.train(loss_fn, config, progress)
    with torch.no_grad():
        z, _ = fit.model.encode(fit.x, fit.graph)
    return STAGATEResult(embedding=fit.numpy(z), losses=losses, seconds=fit.seconds(), device=str(fit.device))


def fit_graphst(x: Features, adjacency: sp.spmatrix, config: GraphSTConfig = GraphSTConfig(), *, seed: int = 41,
                device: Device = "auto", progress: EpochCallback | None = None) -> GraphSTResult:
    """Train GraphST on one slide, on ``alpha * MSE(x, h) + beta * (BCE(ret) + BCE(ret_a))`` against a
    row-shuffled corruption; the embedding is the reconstruction ``h``, ``latent`` the code ``z``."""
    fit = start_fit(x, adjacency, graph=lambda a, n, dev: graphst_operators(a, n, config.variant, dev),
                    network=lambda n: GraphSTNet(n, config.latent), seed=seed, device=device)
    labels = torch.zeros(fit.x.shape[0], 2, device=fit.device)
    labels[:, 0] = 1.0  # column 0 scores the positive pair, column 1 the corrupted one
    corrupt = RowShuffler(seed)

    def loss_fn() -> torch.Tensor:
        _, h, ret, ret_a = fit.model(fit.x, corrupt(fit.x), fit.graph)
        contrastive = F.binary_cross_entropy_with_logits(ret, labels) + F.binary_cross_entropy_with_logits(ret_a, labels)
        return config.alpha * F.mse_loss(fit.x, h) + config.beta * contrastive

    losses = fit.train(loss_fn, config, progress)
    with torch.no_grad():
        z = fit.model.encode(fit.x, fit.graph)
        h = fit.model.decode(z, fit.graph)
        if config.variant == "sparse":
            h = F.normalize(h, p=2, dim=1)
    return GraphSTResult(embedding=fit.numpy(h), losses=losses, seconds=fit.seconds(), device=str(fit.device),
                         latent=fit.numpy(z))
