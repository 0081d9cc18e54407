"""User-facing models: an SSL encoder with its vocabulary, how it is trained, and its checkpoints.

The networks themselves are in :mod:`ssl_st.nn`; this package owns everything around them.
:func:`pretrain` is the one entry point over the pretraining methods of :data:`PRETRAINING`.

Importing this package, reading an :class:`Architecture` or a method's config, and listing the
methods import no torch; :class:`SSLModel`, :func:`resolve_device` and :class:`CheckpointError` are
loaded on first use.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .._lazy import lazy_attributes
from .architecture import Architecture
from .barlow_twins import BarlowTwinsConfig
from .gp_mask import GPMaskConfig
from .random_mask import RandomMaskConfig
from .registry import PRETRAINING, AdamWConfig, Pretraining

if TYPE_CHECKING:
    import scipy.sparse as sp

    from ..genes import Vocabulary
    from .base import SSLModel, resolve_device
    from .checkpoints import CheckpointError

__getattr__, __dir__ = lazy_attributes(
    __name__, {"SSLModel": ".base", "resolve_device": ".base", "CheckpointError": ".checkpoints"}
)


def pretrain(
    method: str | Pretraining,
    inputs: sp.csr_matrix,
    vocabulary: Vocabulary,
    architecture: Architecture,
    settings: dict[str, Any] | None = None,
    **run: Any,
) -> SSLModel:
    """Pretrain with ``method`` (a name in :data:`PRETRAINING`, or a method's config) on normalised
    inputs in vocabulary order; ``settings`` override the method's settings (for a name: its class
    defaults). ``run`` takes :meth:`Pretraining.train`'s options: ``programs``, ``seed``, ``device``,
    ``log_dir``, ``on_epoch``."""
    plan = PRETRAINING[method](**(settings or {})) if isinstance(method, str) else replace(method, **(settings or {}))
    return plan.train(inputs, vocabulary, architecture, **run)


__all__ = [
    "PRETRAINING",
    "AdamWConfig",
    "Architecture",
    "BarlowTwinsConfig",
    "CheckpointError",
    "GPMaskConfig",
    "Pretraining",
    "RandomMaskConfig",
    "SSLModel",
    "pretrain",
    "resolve_device",
]
