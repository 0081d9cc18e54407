"""``Architecture``: the widths and activations of an encoder, and which network a method trains.

A config-level object: reading or validating one imports no torch; :meth:`Architecture.build` imports
:mod:`ssl_st.nn` when a network is actually made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from .registry import PRETRAINING

if TYPE_CHECKING:
    from torch import nn

Activation = Literal["selu", "relu"]
OutputActivation = Literal["identity", "sigmoid", "softplus"]
# The networks an SSL objective trains; each is also a published checkpoint layout.
Network = Literal["masked-autoencoder", "barlow-twins"]
NETWORKS: tuple[Network, ...] = ("masked-autoencoder", "barlow-twins")

UPSTREAM_ENCODER_UNITS = (512, 512, 256, 256, 64)
UPSTREAM_PROJECTOR_UNITS = (256, 256, 512, 512)


def network_of(method: str) -> Network:
    """The network ``method`` trains: a network kind names itself, ``random-init`` is the masked
    autoencoder at its initial weights, a pretraining method says so in its registered class."""
    if method in NETWORKS:
        return cast(Network, method)
    if method == "random-init":
        return "masked-autoencoder"
    return PRETRAINING[method].network


@dataclass(frozen=True)
class Architecture:
    """Widths and activations of the encoder (the decoder mirrors it; the projector is Barlow Twins')."""

    units: tuple[int, ...] = UPSTREAM_ENCODER_UNITS
    dropout: float = 0.1
    activation: Activation = "selu"
    output_activation: OutputActivation = "identity"
    projector: tuple[int, ...] = UPSTREAM_PROJECTOR_UNITS

    def __post_init__(self) -> None:
        if len(self.units) < 2 or min(self.units) < 1:
            raise ValueError("encoder units need at least two positive widths, e.g. [256, 64]")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("encoder dropout must be in [0, 1)")

    def build(self, n_genes: int, method: str = "masked-autoencoder") -> nn.Module:
        """The untrained network of ``method`` (see :func:`network_of`) for ``n_genes`` inputs."""
        from ..nn import BarlowTwins, MaskedAutoencoder

        if network_of(method) == "barlow-twins":
            return BarlowTwins(n_genes, self.units, self.activation, self.dropout, self.projector)
        return MaskedAutoencoder(n_genes, self.units, self.activation, self.dropout, self.output_activation)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "units": list(self.units), "projector": list(self.projector)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Architecture:
        return cls(**{**data, "units": tuple(data["units"]), "projector": tuple(data.get("projector", UPSTREAM_PROJECTOR_UNITS))})
