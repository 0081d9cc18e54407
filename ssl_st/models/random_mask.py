"""Random Mask pretraining (Richter et al.'s best transfer objective).

Each (cell, gene) entry is hidden independently with probability ``mask_rate``; kept entries are scaled
by ``1 / (1 - mask_rate)``; the loss is the squared error on the hidden entries, summed and divided by
all B x G entries (upstream's normalisation, kept so loss values are comparable with theirs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .registry import PRETRAINING, AdamWConfig, Programs

if TYPE_CHECKING:
    import torch

    from ..genes import Vocabulary
    from .architecture import Network
    from .training import LossFn


def hidden_error(reconstruction: torch.Tensor, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """Squared error on the hidden entries, summed and divided by all B x G entries (upstream's
    normalisation, shared by the masked objectives)."""
    return ((reconstruction - x) ** 2 * hidden).sum() / x.numel()


def random_mask_loss(mask_rate: float) -> LossFn:
    import torch

    keep = 1.0 - mask_rate

    def loss_fn(network: torch.nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        mask = torch.rand(x.shape, generator=gen, device=x.device) < keep
        _, reconstruction = network(x * mask / keep)
        return hidden_error(reconstruction, x, ~mask)

    return loss_fn


@PRETRAINING.register
@dataclass(frozen=True)
class RandomMaskConfig(AdamWConfig):
    """Random Mask: every entry hidden with probability ``mask_rate``; AdamW (module docstring)."""

    name: ClassVar[str] = "random-mask"
    network: ClassVar[Network] = "masked-autoencoder"

    mask_rate: float = 0.5

    def loss(self, vocabulary: Vocabulary, programs: Programs | None) -> tuple[LossFn, dict[str, Any]]:
        return random_mask_loss(self.mask_rate), {}
