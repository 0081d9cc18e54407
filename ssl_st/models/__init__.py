"""User-facing models: an SSL encoder with its vocabulary, how it is trained, and its checkpoints.

The networks themselves are in :mod:`ssl_st.nn`; this package owns everything around them.
:func:`pretrain` is the one entry point over the three pretraining methods.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import scipy.sparse as sp

from ..genes import Vocabulary
from .barlow_twins import BarlowTwinsConfig, pretrain_barlow_twins
from .base import Architecture, SSLModel, resolve_device
from .checkpoints import CheckpointError
from .gp_mask import GPMaskConfig, pretrain_gp_mask
from .random_mask import RandomMaskConfig, pretrain_random_mask

METHODS = ("random-mask", "gp-mask", "barlow-twins")
CONFIGS: dict[str, type] = {
    "random-mask": RandomMaskConfig,
    "gp-mask": GPMaskConfig,
    "barlow-twins": BarlowTwinsConfig,
}


def pretrain(
    method: str,
    inputs: sp.csr_matrix,
    vocabulary: Vocabulary,
    architecture: Architecture,
    settings: dict[str, Any] | None = None,
    *,
    programs: dict[str, list[str]] | None = None,
    seed: int = 0,
    device: str = "auto",
    log_dir: str | Path | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> SSLModel:
    """Pretrain with ``method`` on normalised inputs in vocabulary order; ``settings`` override the
    method's config defaults (``CONFIGS[method]``)."""
    if method not in CONFIGS:
        raise ValueError(f"unknown pretraining method '{method}'; choose one of {', '.join(METHODS)}")
    config = CONFIGS[method](**(settings or {}))
    common = {"seed": seed, "device": device, "log_dir": log_dir, "on_epoch": on_epoch}
    if method == "random-mask":
        return pretrain_random_mask(inputs, vocabulary, architecture, config, **common)
    if method == "gp-mask":
        if not programs:
            raise ValueError("gp-mask pretraining needs gene programs (a GMT file)")
        return pretrain_gp_mask(inputs, vocabulary, architecture, config, programs, **common)
    return pretrain_barlow_twins(inputs, vocabulary, architecture, config, **common)


__all__ = [
    "CONFIGS",
    "METHODS",
    "Architecture",
    "BarlowTwinsConfig",
    "CheckpointError",
    "GPMaskConfig",
    "RandomMaskConfig",
    "SSLModel",
    "pretrain",
    "pretrain_barlow_twins",
    "pretrain_gp_mask",
    "pretrain_random_mask",
    "resolve_device",
]
