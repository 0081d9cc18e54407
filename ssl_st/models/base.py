"""``SSLModel``: a network, the gene vocabulary it reads, and versioned metadata.

Checkpoints keep the Lightning layout of the published files (a dict with ``state_dict`` whose keys
are ``encoder.*`` / ``decoder.0.*``), so one loader serves ours and theirs, plus an ``ssl_st`` entry
with an explicit ``format_version`` describing the architecture and how the weights were made. The
vocabulary travels beside the checkpoint as ``var.parquet``, as on the hub.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .. import __version__
from ..genes import Vocabulary
from ..nn import UPSTREAM_ENCODER_UNITS, Activation, MaskedAutoencoder, OutputActivation

FORMAT_VERSION = 1
CHECKPOINT_NAME = "model.ckpt"
VOCABULARY_NAME = "var.parquet"


@dataclass(frozen=True)
class Architecture:
    """Widths and activations of the encoder (the decoder mirrors it)."""

    units: tuple[int, ...] = UPSTREAM_ENCODER_UNITS
    dropout: float = 0.1
    activation: Activation = "selu"
    output_activation: OutputActivation = "identity"

    def build(self, n_genes: int) -> MaskedAutoencoder:
        return MaskedAutoencoder(n_genes, self.units, self.activation, self.dropout, self.output_activation)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class SSLModel:
    """A (pre)trained encoder that embeds cells given in its vocabulary's gene order."""

    def __init__(
        self,
        network: MaskedAutoencoder,
        vocabulary: Vocabulary,
        architecture: Architecture,
        method: str,
        training: dict[str, Any] | None = None,
    ) -> None:
        self.network = network
        self.vocabulary = vocabulary
        self.architecture = architecture
        self.method = method
        self.training = training or {}

    @property
    def encoder(self) -> torch.nn.Module:
        return self.network.encoder

    @property
    def latent_dim(self) -> int:
        return self.architecture.units[-1]

    @classmethod
    def random_init(cls, vocabulary: Vocabulary, architecture: Architecture, seed: int) -> SSLModel:
        """The untrained network: the baseline a pretrained encoder must beat."""
        torch.manual_seed(seed)
        return cls(architecture.build(len(vocabulary)), vocabulary, architecture, "random-init", {"seed": seed})

    @torch.no_grad()
    def embed(self, inputs: sp.spmatrix, batch_size: int = 4096, device: str = "auto") -> np.ndarray:
        """Encoder output (the raw 64-d last Linear, eval mode) for normalised inputs in vocabulary order."""
        if inputs.shape[1] != len(self.vocabulary):
            raise ValueError(
                f"inputs have {inputs.shape[1]} genes but the model reads {len(self.vocabulary)}; "
                "map them with ssl_st.pp.model_input first"
            )
        target = resolve_device(device)
        encoder = self.encoder.to(target).eval()
        inputs = sp.csr_matrix(inputs, dtype=np.float32)
        out = np.empty((inputs.shape[0], self.latent_dim), dtype=np.float32)
        for start in range(0, inputs.shape[0], batch_size):
            block = torch.from_numpy(inputs[start : start + batch_size].toarray()).to(target)
            out[start : start + len(block)] = encoder(block).cpu().numpy()
        return out

    def save(self, directory: str | Path) -> Path:
        """Write ``model.ckpt`` and ``var.parquet`` into ``directory``; returns the checkpoint path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        payload = {
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "epoch": int(self.training.get("epochs_run", 0)),
            "global_step": int(self.training.get("steps", 0)),
            "ssl_st": {
                "format_version": FORMAT_VERSION,
                "ssl_st_version": __version__,
                "method": self.method,
                "n_genes": len(self.vocabulary),
                "architecture": {**asdict(self.architecture), "units": list(self.architecture.units)},
                "training": self.training,
            },
        }
        path = directory / CHECKPOINT_NAME
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        self.vocabulary.to_parquet(directory / VOCABULARY_NAME)
        tmp.replace(path)  # the checkpoint appears last, whole, so its presence means "complete"
        return path

    @classmethod
    def load(cls, path: str | Path) -> SSLModel:
        """Load a checkpoint written by :meth:`save` (a file, or the directory holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / CHECKPOINT_NAME
        payload = torch.load(path, map_location="cpu", weights_only=True)
        meta = payload.get("ssl_st") if isinstance(payload, dict) else None
        if meta is None:
            raise ValueError(f"{path}: not an ssl-st checkpoint (no 'ssl_st' metadata entry)")
        if meta["format_version"] > FORMAT_VERSION:
            raise ValueError(
                f"{path}: written by a newer ssl-st (format {meta['format_version']}); upgrade ssl-st"
            )
        arch = dict(meta["architecture"])
        architecture = Architecture(**{**arch, "units": tuple(arch["units"])})
        vocabulary = Vocabulary.from_parquet(path.parent / VOCABULARY_NAME)
        network = architecture.build(len(vocabulary))
        network.load_state_dict(payload["state_dict"], strict=True)
        return cls(network, vocabulary, architecture, meta["method"], meta.get("training"))
