"""``SSLModel``: a network, the gene vocabulary it reads, and versioned metadata.

On disk a model is three files side by side, each named after the checkpoint, so that any number of
models share a folder:

- ``<name>.ckpt`` — the weights in the published layout (:mod:`.checkpoints`), so one loader reads
  ours and theirs;
- ``<name>.var.parquet`` — the vocabulary (``feature_id``, ``feature_name``) in input order;
- ``<name>.json`` — ssl-st's metadata: ``format_version``, method, ``layout`` (the network kind),
  architecture, training history. Optional: published checkpoints have none, and their architecture
  is read off the weight shapes. The network is always built from the checkpoint's own layout, so a
  model loads whether or not the method that trained it is registered in the loading process.

The published layout has one ``var.parquet`` for all its checkpoints; :meth:`SSLModel.load` falls
back to it (and so do model folders written before the vocabulary was named after its checkpoint).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from .. import __version__
from ..files import CHECKPOINT_NAME, ModelFileError, model_files, replace_dir, staging_dir, vocabulary_path
from ..genes import Vocabulary
from ..nn import BarlowTwins, Classifier
from . import checkpoints
from .architecture import UPSTREAM_PROJECTOR_UNITS, Architecture

FORMAT_VERSION = 1
# Below this fill fraction the first layer multiplies sparse rows (measured by bench/embed_throughput.py).
SPARSE_FIRST_LAYER_BELOW = 0.25


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class SSLModel:
    """A (pre)trained encoder that embeds cells given in its vocabulary's gene order."""

    def __init__(
        self,
        network: nn.Module,
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
    def encoder(self) -> nn.Module:
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
        """Encoder output (the raw last Linear, eval mode) for normalised inputs in vocabulary order."""
        if inputs.shape[1] != len(self.vocabulary):
            raise ValueError(
                f"inputs have {inputs.shape[1]} genes but the model reads {len(self.vocabulary)}; "
                "map them with ssl_st.pp.model_input first"
            )
        target = resolve_device(device)
        encoder = self.encoder.to(target).eval()
        inputs = sp.csr_matrix(inputs, dtype=np.float32)
        out = np.empty((inputs.shape[0], self.latent_dim), dtype=np.float32)
        first, rest = encoder[0], encoder[1:]
        weight_t = first.weight.t().contiguous()
        sparse = inputs.nnz < SPARSE_FIRST_LAYER_BELOW * inputs.shape[0] * inputs.shape[1]
        for start in range(0, inputs.shape[0], batch_size):
            block = inputs[start : start + batch_size]
            if sparse:
                # The first Linear holds ~95 % of the encoder's FLOPs and a panel fills ~2 % of its
                # 19k inputs: multiply the CSR rows directly instead of densifying them.
                with warnings.catch_warnings():  # "sparse CSR support is in beta"
                    warnings.simplefilter("ignore", UserWarning)
                    x = torch.sparse_csr_tensor(
                        torch.from_numpy(block.indptr.astype(np.int64)),
                        torch.from_numpy(block.indices.astype(np.int64)),
                        torch.from_numpy(block.data),
                        size=block.shape,
                        check_invariants=False,  # scipy already guarantees a valid CSR
                    ).to(target)
                    hidden = torch.sparse.mm(x, weight_t) + first.bias
            else:
                hidden = first(torch.from_numpy(block.toarray()).to(target, non_blocking=True))
            out[start : start + block.shape[0]] = rest(hidden).cpu().numpy()
        return out

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint (a ``.ckpt`` path, or a directory for ``model.ckpt``) and, beside it,
        its JSON sidecar and vocabulary (:func:`vocabulary_path`); returns the checkpoint path.

        A directory is written whole into a temporary sibling and renamed into place, replacing any
        model there (:func:`ssl_st.files.replace_dir`): a reader sees the old model or the new one,
        never a new checkpoint beside an old vocabulary. Given a ``.ckpt`` path in a shared folder,
        each file is replaced atomically on its own, the checkpoint last.
        """
        path = Path(path)
        if path.is_dir() or not path.suffix:
            staged = staging_dir(path)
            try:
                self.save(staged / CHECKPOINT_NAME)
                replace_dir(staged, path)
            finally:
                if staged.exists():  # the save failed part-way: leave nothing half-written behind
                    shutil.rmtree(staged, ignore_errors=True)
            return path / CHECKPOINT_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        layout = "barlow-twins" if isinstance(self.network, BarlowTwins) else "masked-autoencoder"
        meta = {
            "format_version": FORMAT_VERSION,
            "ssl_st_version": __version__,
            "method": self.method,
            "layout": layout,
            "n_genes": len(self.vocabulary),
            "architecture": self.architecture.to_json(),
            "training": self.training,
        }
        sidecar, genes = path.with_suffix(".json"), vocabulary_path(path)
        tmp_sidecar, tmp_genes = sidecar.with_name(f".{sidecar.name}.tmp"), genes.with_name(f".{genes.name}.tmp")
        try:
            tmp_sidecar.write_text(json.dumps(meta, indent=1, default=float))
            self.vocabulary.to_parquet(tmp_genes)
            os.replace(tmp_sidecar, sidecar)
            os.replace(tmp_genes, genes)
        finally:
            for tmp in (tmp_sidecar, tmp_genes):
                tmp.unlink(missing_ok=True)
        checkpoints.write(
            path, self.network, layout, epoch=int(self.training.get("epochs_run", 0)), global_step=int(self.training.get("steps", 0))
        )
        return path

    @classmethod
    def load(cls, path: str | Path, *, genes: str | Path | None = None, trusted: bool = False) -> SSLModel:
        """Load a checkpoint in any published layout, or one written by :meth:`save`.

        ``genes`` is the vocabulary file; without it, the one named after the checkpoint
        (:func:`vocabulary_path`), else the published layout's ``var.parquet`` beside it.
        """
        try:
            ckpt, genes = model_files(path, genes)
        except ModelFileError as exc:
            raise checkpoints.CheckpointError(str(exc)) from None
        layout, state = checkpoints.read(ckpt, trusted=trusted)
        shape = checkpoints.shape_of(layout, state)
        vocabulary = Vocabulary.from_parquet(genes)
        if len(vocabulary) != shape.n_genes:
            raise checkpoints.CheckpointError(
                f"{ckpt} reads {shape.n_genes} genes but {genes} lists {len(vocabulary)}; pass the matching var.parquet"
            )
        sidecar = ckpt.with_suffix(".json")
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise checkpoints.CheckpointError(f"{sidecar}: written by a newer ssl-st (format {meta['format_version']}); upgrade ssl-st")
        if "architecture" in meta:
            architecture = Architecture.from_json(meta["architecture"])
        else:  # a published file: upstream settings (SELU; the masked models' decoder ends in a Sigmoid)
            architecture = Architecture(
                units=shape.units,
                dropout=0.0 if layout == "barlow-twins" else 0.1,
                output_activation="sigmoid",
                projector=shape.projector or UPSTREAM_PROJECTOR_UNITS,
            )
        if layout == "classifier":
            network: nn.Module = Classifier(shape.n_genes, shape.n_classes or 1, shape.units, "relu", 0.0)
            method = meta.get("method", "supervised")
        else:  # the layout is the network kind: no need to know (or register) the method that trained it
            method = meta.get("method", layout)
            network = architecture.build(shape.n_genes, layout)
        checkpoints.load_strict(network, state, ckpt)
        network.eval()
        return cls(network, vocabulary, architecture, method, meta.get("training"))
