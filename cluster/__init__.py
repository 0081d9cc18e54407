"""cluster: spatial-domain clustering of sections, fed with genes or with SSL embeddings.

- :mod:`cluster.registry`: :data:`DOMAIN_METHODS` and :data:`HEADS`, the methods and heads by name;
- :mod:`cluster.settings`: what a method is (one frozen settings class each, in :mod:`cluster.methods`)
  and :class:`DomainConfig`, the run-time record;
- :mod:`cluster.domains`: :func:`find_domains`, the one verb that runs a method and writes ``obs['domain']``;
- :mod:`cluster.graph`: spatial neighbour graphs (radius, kNN, Delaunay) into ``obsp`` as squidpy does;
- :mod:`cluster.stagate`, :mod:`cluster.graphst`: the graph autoencoders' networks, on torch-geometric;
  :mod:`cluster.training`: how both are trained;
- :mod:`cluster.cellcharter`: neighbourhood aggregation;
- :mod:`cluster.heads`: Gaussian mixture (mclust EEE stand-in), k-means, Leiden with resolution search;
- :mod:`cluster.metrics`: ARI/NMI/homogeneity/completeness and CHAOS/PAS/ASW by neighbour search;
- :mod:`cluster.tune`: Ray Tune + Optuna search with a label-free objective (or an explicit oracle).

It takes arrays or AnnData objects and knows nothing of the grid. Importing it, reading the
registries and making settings import neither torch, scikit-learn, torch-geometric, Ray nor AnnData;
the functions below that need them are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .registry import DOMAIN_METHODS, HEADS
from .settings import DomainConfig, DomainMethod

if TYPE_CHECKING:
    from .domains import DomainResult, find_domains, output_key, score_domains
    from .graph import spatial_neighbors

_LAZY = {
    "DomainResult": "domains",
    "find_domains": "domains",
    "output_key": "domains",
    "score_domains": "domains",
    "spatial_neighbors": "graph",
}

__all__ = [
    "DOMAIN_METHODS", "HEADS", "DomainConfig", "DomainMethod", "DomainResult", "find_domains", "output_key",
    "score_domains", "spatial_neighbors",
]


def __getattr__(name: str) -> Any:  # PEP 562: the functions load their module on first use
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cluster' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
