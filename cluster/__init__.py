"""cluster: spatial-domain clustering of sections, fed with genes or with SSL embeddings.

- :mod:`cluster.graph`: spatial neighbour graphs (radius, kNN, Delaunay) into ``obsp`` as squidpy does;
- :mod:`cluster.stagate`, :mod:`cluster.graphst`: the graph autoencoders, on torch-geometric;
- :mod:`cluster.cellcharter`: neighbourhood aggregation;
- :mod:`cluster.heads`: Gaussian mixture (mclust EEE stand-in), k-means, Leiden with resolution search;
- :mod:`cluster.domains`: :func:`find_domains`, the one verb that chains them and writes ``obs['domain']``;
- :mod:`cluster.metrics`: ARI/NMI/homogeneity/completeness and CHAOS/PAS/ASW by neighbour search;
- :mod:`cluster.tune`: Ray Tune + Optuna search with a label-free objective (or an explicit oracle).

It takes arrays or AnnData objects and knows nothing of the grid.
"""

from .domains import METHODS, DomainConfig, DomainResult, find_domains, score_domains
from .graph import spatial_neighbors

__all__ = ["METHODS", "DomainConfig", "DomainResult", "find_domains", "score_domains", "spatial_neighbors"]
