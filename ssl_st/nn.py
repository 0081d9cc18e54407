"""Pure ``torch.nn`` networks with the layouts of Richter et al.'s published checkpoints.

Layer indices matter: checkpoints address parameters as ``encoder.{0,3,6,9,12}.weight`` because each
hidden block is ``Linear -> activation -> Dropout``. Keep these classes free of training logic and of
data handling; the training loops live in :mod:`ssl_st.models`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

Activation = Literal["selu", "relu"]
OutputActivation = Literal["identity", "sigmoid", "softplus"]

UPSTREAM_ENCODER_UNITS = (512, 512, 256, 256, 64)

_ACTIVATIONS: dict[str, type[nn.Module]] = {"selu": nn.SELU, "relu": nn.ReLU}
_OUTPUTS: dict[str, type[nn.Module]] = {
    "identity": nn.Identity,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
}


class MLP(nn.Sequential):
    """``[Linear, activation, Dropout] * (L-1)`` then a plain ``Linear`` (no activation after it)."""

    def __init__(
        self,
        in_features: int,
        units: Sequence[int],
        activation: Activation = "selu",
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for hidden in units[:-1]:
            layers += [nn.Linear(width, hidden), _ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, units[-1]))
        super().__init__(*layers)


class MaskedAutoencoder(nn.Module):
    """Encoder plus mirrored decoder: the Random Mask / GP Mask network (keys ``encoder.*``,
    ``decoder.0.*``).

    Upstream ends the decoder in a Sigmoid although its targets are log1p values up to ~9, so it can
    never reconstruct an expressed gene. The output activation is therefore configurable and defaults
    to ``identity``; ``sigmoid`` reproduces upstream. It holds no parameters, so checkpoints stay
    key-compatible either way.
    """

    def __init__(
        self,
        n_genes: int,
        units: Sequence[int] = UPSTREAM_ENCODER_UNITS,
        activation: Activation = "selu",
        dropout: float = 0.1,
        output_activation: OutputActivation = "identity",
    ) -> None:
        super().__init__()
        decoder_units = [*reversed(units[:-1]), n_genes]
        self.encoder = MLP(n_genes, units, activation, dropout)
        self.decoder = nn.Sequential(
            MLP(units[-1], decoder_units, activation, dropout), _OUTPUTS[output_activation]()
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.encoder(x)
        return latent, self.decoder(latent)
