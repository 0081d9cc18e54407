"""User-facing models: an SSL encoder with its vocabulary, how it is trained, and its checkpoints.

The networks themselves are in :mod:`ssl_st.nn`; this package owns everything around them.
"""

from .base import Architecture, SSLModel, resolve_device
from .random_mask import PretrainConfig, pretrain_random_mask

__all__ = ["Architecture", "PretrainConfig", "SSLModel", "pretrain_random_mask", "resolve_device"]
