"""Barlow Twins pretraining (Zbontar et al. 2021) as Richter et al. (2024) apply it to expression.

Two views of a batch go through the encoder, a projector and an affine-free batch norm; the loss pushes
their cross-correlation matrix ``c`` towards the identity:
``sum_i (1 - c_ii)^2 + lambd * sum_{i != j} c_ij^2``. Views follow upstream after its revision: view 1
is dropout(negative-binomial noise(x)), view 2 is the clean x. The optimizer is LARS with base lr
``batch_size / 256`` (x ``learning_rate_weights`` for weights, x ``learning_rate_biases`` for 1-D
parameters), linear warmup and cosine decay; no gradient clipping, only full training batches.

Deliberate differences from upstream:

* ``c`` is divided by the *actual* batch size; upstream divided by the configured one, which scales
  down the correlations of any smaller batch (here: validation's last batch).
* LARS keeps its momentum across steps; upstream rebuilt it every step (see :mod:`.lars`).
* The schedule spans the configured epochs; the best-validation checkpoint is chosen on the whole
  validation set, not on single batches.
* ``learning_rate_weights`` defaults to 2.0, not 0.2. Under linear batch scaling, progress per epoch
  grows with the number of cells; upstream's 0.2 (for ~15 M cells) left a 1,500-cell demo encoder
  near random-weight zero-shot quality after 30 epochs, and 2.0 also trained better on 8,000 cells.
  At batch 256 a LARS step with momentum then moves a layer by ~2 % of its norm, the order of Barlow
  Twins' ImageNet recipe (lr 1.6 at batch 2048) and of upstream's momentum-free steps at batch 8192.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import scipy.sparse as sp
import torch
from torch.optim.lr_scheduler import LambdaLR

from ..genes import Vocabulary
from .base import Architecture, SSLModel
from .lars import LARS, warmup_cosine
from .training import LoopConfig, OptimizerFactory, pretrain_network

NEGBIN_TOTAL_COUNT = 10
NOISE_TARGET_SUM = 1e4


@dataclass(frozen=True)
class BarlowTwinsConfig:
    epochs: int = 30
    batch_size: int = 256
    lambd: float = 0.0051
    negbin_intensity: float = 0.2
    dropout_intensity: float = 0.1
    # times base lr = batch_size / 256 (upstream's scaling); upstream's 0.2 barely leaves the random
    # init in the few hundred steps a demo-sized atlas gives (module docstring)
    learning_rate_weights: float = 2.0
    learning_rate_biases: float = 0.0048
    weight_decay: float = 1e-5
    warmup_epochs: int = 1  # upstream: 10 of 1000 epochs
    validation_fraction: float = 0.1

    @property
    def base_learning_rate(self) -> float:
        return self.batch_size / 256

    def loop(self) -> LoopConfig:
        return LoopConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.base_learning_rate * self.learning_rate_weights,
            weight_decay=self.weight_decay,
            gradient_clip=None,
            validation_fraction=self.validation_fraction,
            drop_last=True,  # batch norm and the cross-correlation need full batches
        )


def negbin_noise(x: torch.Tensor, intensity: float, gen: torch.Generator) -> torch.Tensor:
    """Add ``intensity * log1p(noise normalised to 10,000 per cell)``, noise ~ NB(10, p), p ~ U(0, 1).

    NB(r, p) (torch's convention, mean ``r p / (1 - p)``) is sampled as Poisson(Gamma(r, scale
    p / (1 - p))), drawing only from ``gen`` (``torch.distributions`` samplers take no generator).
    """
    probs = torch.rand(x.shape, generator=gen, device=x.device)
    gamma = torch._standard_gamma(torch.full_like(x, NEGBIN_TOTAL_COUNT), generator=gen)
    counts = torch.poisson(gamma * probs / (1.0 - probs), generator=gen)
    noise = torch.log1p(counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0) * NOISE_TARGET_SUM)
    return (x + intensity * noise).clamp_min(0.0)


def dropout_augmentation(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Zero each entry with probability ``p`` and scale the rest by ``1 / (1 - p)`` (inverted dropout)."""
    if p <= 0:
        return x
    keep = torch.rand(x.shape, generator=gen, device=x.device) >= p
    return x * keep / (1.0 - p)


def cross_correlation_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    """Barlow Twins loss of two batch-normalised embeddings (B x D each)."""
    c = z1.T @ z2 / z1.shape[0]  # the actual batch size, not the configured one (upstream)
    diagonal = torch.diagonal(c)
    on = (1.0 - diagonal).pow(2).sum()
    off = c.pow(2).sum() - diagonal.pow(2).sum()
    return on + lambd * off


def barlow_twins_loss(
    network: torch.nn.Module,
    x: torch.Tensor,
    gen: torch.Generator,
    lambd: float = 0.0051,
    negbin_intensity: float = 0.2,
    dropout_intensity: float = 0.1,
) -> torch.Tensor:
    """Objective for :func:`ssl_st.models.training.fit` (``network`` a :class:`ssl_st.nn.BarlowTwins`)."""
    view = dropout_augmentation(negbin_noise(x, negbin_intensity, gen), dropout_intensity, gen)
    _, z1 = network(view)
    _, z2 = network(x)
    return cross_correlation_loss(z1, z2, lambd)


def lars_factory(config: BarlowTwinsConfig) -> OptimizerFactory:
    """``make_optimizer`` for :func:`fit`: LARS over weights and 1-D parameters, warmup + cosine."""

    def make(network: torch.nn.Module, steps_per_epoch: int) -> tuple[LARS, LambdaLR]:
        params = [p for p in network.parameters() if p.requires_grad]
        base = config.base_learning_rate
        groups = [
            {"params": [p for p in params if p.ndim > 1], "lr": base * config.learning_rate_weights},
            {"params": [p for p in params if p.ndim == 1], "lr": base * config.learning_rate_biases},
        ]
        optimizer = LARS(groups, weight_decay=config.weight_decay)
        total = config.epochs * steps_per_epoch
        return optimizer, warmup_cosine(optimizer, config.warmup_epochs * steps_per_epoch, total)

    return make


def pretrain_barlow_twins(
    inputs: sp.csr_matrix,
    vocabulary: Vocabulary,
    architecture: Architecture,
    config: BarlowTwinsConfig,
    *,
    seed: int = 0,
    device: str = "auto",
    on_epoch: Callable[[int, float, float], None] | None = None,
    log_dir: str | Path | None = None,
) -> SSLModel:
    """Pretrain on normalised inputs already in vocabulary order (see :func:`ssl_st.pp.model_input`)."""
    objective = partial(
        barlow_twins_loss,
        lambd=config.lambd,
        negbin_intensity=config.negbin_intensity,
        dropout_intensity=config.dropout_intensity,
    )
    return pretrain_network(
        "barlow-twins", inputs, vocabulary, architecture, objective, config.loop(),
        seed=seed, device=device, on_epoch=on_epoch, log_dir=log_dir,
        make_optimizer=lars_factory(config), training=asdict(config),
    )  # fmt: skip
