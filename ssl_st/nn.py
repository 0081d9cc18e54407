"""Pure ``torch.nn`` networks with the layouts of Richter et al.'s published checkpoints.

Layer indices matter: checkpoints address parameters as ``encoder.{0,3,6,9,12}.weight`` because each
hidden block is ``Linear -> activation -> Dropout``. Keep these classes free of training logic and of
data handling; the training loops live in :mod:`ssl_st.models`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

# The vocabulary of widths and activations is the config's (torch-free) own.
from .models.architecture import UPSTREAM_ENCODER_UNITS, UPSTREAM_PROJECTOR_UNITS, Activation, OutputActivation

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

    def __getitem__(self, idx: int | slice) -> nn.Module:
        # A slice is a plain Sequential of the same modules with their original indices, so that
        # e.g. the encoder part of a classifier has the keys of an SSL encoder ("0.weight", ...).
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)


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


class BarlowTwins(nn.Module):
    """Backbone encoder, projector and a non-affine batch norm (raw keys ``backbone.*``,
    ``projector.*``, ``bn.*``, as in the published ``BarlowTwins.ckpt``).

    Projector: ``Linear(no bias) -> BatchNorm -> ReLU`` for each hidden width, then a plain
    ``Linear(no bias)``. Upstream hard-codes its input width to 64; here it follows the encoder.
    """

    def __init__(
        self,
        n_genes: int,
        units: Sequence[int] = UPSTREAM_ENCODER_UNITS,
        activation: Activation = "selu",
        dropout: float = 0.0,
        projector: Sequence[int] = UPSTREAM_PROJECTOR_UNITS,
    ) -> None:
        super().__init__()
        self.backbone = MLP(n_genes, units, activation, dropout)
        layers: list[nn.Module] = []
        width = units[-1]
        for hidden in projector[:-1]:
            layers += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, projector[-1], bias=False))
        self.projector = nn.Sequential(*layers)
        self.bn = nn.BatchNorm1d(projector[-1], affine=False)

    @property
    def encoder(self) -> MLP:
        return self.backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.backbone(x)
        return latent, self.bn(self.projector(latent))


class Classifier(nn.Module):
    """Encoder layers plus a class head in one ``classifier`` Sequential (upstream ``MLPClassifier``
    keys ``classifier.{0,3,...,15}`` and the buffers ``class_weights`` and ``child_lookup``).

    ``classifier[:-3]`` is the encoder (its output is the embedding that kNN reads); the last three
    children are activation, dropout and the head. Upstream uses ReLU throughout, even when it
    copies in SELU-trained encoder weights; here the activation is chosen to match the encoder.
    """

    def __init__(
        self,
        n_genes: int,
        n_classes: int,
        units: Sequence[int] = UPSTREAM_ENCODER_UNITS,
        activation: Activation = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.classifier = MLP(n_genes, [*units, n_classes], activation, dropout)
        self.register_buffer("class_weights", torch.ones(n_classes))
        self.register_buffer("child_lookup", torch.eye(n_classes, dtype=torch.int64))

    @property
    def encoder(self) -> nn.Sequential:
        return self.classifier[:-3]

    @property
    def head(self) -> nn.Sequential:
        return self.classifier[-3:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.encoder(x)
        return latent, self.head(latent)
