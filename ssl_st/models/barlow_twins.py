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

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from .registry import PRETRAINING, Pretraining, Programs

if TYPE_CHECKING:
    import torch
    from torch.optim.lr_scheduler import LambdaLR

    from ..genes import Vocabulary
    from .architecture import Network
    from .lars import LARS
    from .training import LossFn

NEGBIN_TOTAL_COUNT = 10
NOISE_TARGET_SUM = 1e4


def negbin_noise(x: torch.Tensor, intensity: float, gen: torch.Generator) -> torch.Tensor:
    """Add ``intensity * log1p(noise normalised to 10,000 per cell)``, noise ~ NB(10, p), p ~ U(0, 1).

    NB(r, p) (torch's convention, mean ``r p / (1 - p)``) is sampled as Poisson(Gamma(r, scale
    p / (1 - p))), drawing only from ``gen`` (``torch.distributions`` samplers take no generator).
    """
    import torch

    probs = torch.rand(x.shape, generator=gen, device=x.device)
    gamma = torch._standard_gamma(torch.full_like(x, NEGBIN_TOTAL_COUNT), generator=gen)
    counts = torch.poisson(gamma * probs / (1.0 - probs), generator=gen)
    noise = torch.log1p(counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0) * NOISE_TARGET_SUM)
    return (x + intensity * noise).clamp_min(0.0)


def dropout_augmentation(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Zero each entry with probability ``p`` and scale the rest by ``1 / (1 - p)`` (inverted dropout)."""
    import torch

    if p <= 0:
        return x
    keep = torch.rand(x.shape, generator=gen, device=x.device) >= p
    return x * keep / (1.0 - p)


def cross_correlation_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    """Barlow Twins loss of two batch-normalised embeddings (B x D each)."""
    import torch

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
    """The loss for :func:`ssl_st.models.training.fit` (``network`` a :class:`ssl_st.nn.BarlowTwins`)."""
    view = dropout_augmentation(negbin_noise(x, negbin_intensity, gen), dropout_intensity, gen)
    _, z1 = network(view)
    _, z2 = network(x)
    return cross_correlation_loss(z1, z2, lambd)


@PRETRAINING.register
@dataclass(frozen=True)
class BarlowTwinsConfig(Pretraining):
    """Barlow Twins: a noisy and a clean view, cross-correlation pushed to identity; LARS (module docstring)."""

    name: ClassVar[str] = "barlow-twins"
    network: ClassVar[Network] = "barlow-twins"
    drop_last: ClassVar[bool] = True  # batch norm and the cross-correlation need full batches

    lambd: float = 0.0051
    negbin_intensity: float = 0.2
    dropout_intensity: float = 0.1
    # times base lr = batch_size / 256 (upstream's scaling); upstream's 0.2 barely leaves the random
    # init in the few hundred steps a demo-sized atlas gives (module docstring)
    learning_rate_weights: float = 2.0
    learning_rate_biases: float = 0.0048
    weight_decay: float = 1e-5
    warmup_epochs: int = 1  # upstream: 10 of 1000 epochs

    @property
    def base_learning_rate(self) -> float:
        return self.batch_size / 256

    def loss(self, vocabulary: Vocabulary, programs: Programs | None) -> tuple[LossFn, dict[str, Any]]:
        loss_fn = partial(
            barlow_twins_loss,
            lambd=self.lambd,
            negbin_intensity=self.negbin_intensity,
            dropout_intensity=self.dropout_intensity,
        )
        return loss_fn, {}

    def optimizer(self, network: torch.nn.Module, steps_per_epoch: int) -> tuple[LARS, LambdaLR]:
        """LARS over weights and 1-D parameters, linear warmup then cosine decay."""
        from .lars import LARS, warmup_cosine

        params = [p for p in network.parameters() if p.requires_grad]
        base = self.base_learning_rate
        groups = [
            {"params": [p for p in params if p.ndim > 1], "lr": base * self.learning_rate_weights},
            {"params": [p for p in params if p.ndim == 1], "lr": base * self.learning_rate_biases},
        ]
        optimizer = LARS(groups, weight_decay=self.weight_decay)
        total = self.epochs * steps_per_epoch
        return optimizer, warmup_cosine(optimizer, self.warmup_epochs * steps_per_epoch, total)
