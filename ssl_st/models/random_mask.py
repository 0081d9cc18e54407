"""Random Mask pretraining (Richter et al.'s best transfer objective).

Each (cell, gene) entry is hidden independently with probability ``mask_rate``; kept entries are scaled
by ``1 / (1 - mask_rate)``; the loss is the squared error on the hidden entries, summed and divided by
all B x G entries (upstream's normalisation, kept so loss values are comparable with theirs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import scipy.sparse as sp
import torch

from ..genes import Vocabulary
from .base import Architecture, SSLModel
from .training import AdamWConfig, pretrain_network


@dataclass(frozen=True)
class RandomMaskConfig(AdamWConfig):
    mask_rate: float = 0.5


def random_mask_loss(mask_rate: float):
    keep = 1.0 - mask_rate

    def objective(network: torch.nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        mask = torch.rand(x.shape, generator=gen, device=x.device) < keep
        _, reconstruction = network(x * mask / keep)
        hidden = ~mask
        return ((reconstruction - x) ** 2 * hidden).sum() / x.numel()

    return objective


def pretrain_random_mask(
    inputs: sp.csr_matrix,
    vocabulary: Vocabulary,
    architecture: Architecture,
    config: RandomMaskConfig,
    *,
    seed: int = 0,
    device: str = "auto",
    on_epoch: Callable[[int, float, float], None] | None = None,
    log_dir: str | Path | None = None,
) -> SSLModel:
    """Pretrain on normalised inputs already in vocabulary order (see :func:`ssl_st.pp.model_input`)."""
    return pretrain_network(
        "random-mask", inputs, vocabulary, architecture, random_mask_loss(config.mask_rate), config.loop(),
        seed=seed, device=device, on_epoch=on_epoch, log_dir=log_dir, training=asdict(config),
    )  # fmt: skip
