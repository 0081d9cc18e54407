"""The baselines: a head on PCA(20) of expression (or on an embedding) with no graph at all, and
the trivial spatial reference, the same head after averaging over each cell's spatial neighbours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..registry import DOMAIN_METHODS
from ..settings import (
    NEIGHBOURHOOD_CELLS,
    DomainMethod,
    ExpressionSettings,
    PCASettings,
    RunContext,
    SpatialMethod,
    knn_for,
)

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp
    from anndata import AnnData


@dataclass(frozen=True, kw_only=True)
class ExpressionBaseline(PCASettings, ExpressionSettings, DomainMethod):
    """A head on PCA(``pca_components``) of log-normalised expression; an ``obsm`` input is taken as it is."""

    def from_expression(self, adata: AnnData, *, seed: int = 0) -> np.ndarray:
        return self.pca(self.expression(adata), seed=seed)


@DOMAIN_METHODS.register
@dataclass(frozen=True, kw_only=True)
class GMM(ExpressionBaseline):
    """The mixture (mclust EEE stand-in) on expression alone."""

    name: ClassVar[str] = "gmm"


@DOMAIN_METHODS.register
@dataclass(frozen=True, kw_only=True)
class KMeans(ExpressionBaseline):
    """k-means on expression alone."""

    name: ClassVar[str] = "kmeans"

    head: str = "kmeans"


@DOMAIN_METHODS.register
@dataclass(frozen=True, kw_only=True)
class Leiden(ExpressionBaseline):
    """Leiden on a kNN graph of expression, its resolution searched for ``n_domains`` (or fixed)."""

    name: ClassVar[str] = "leiden"

    head: str = "leiden"


@DOMAIN_METHODS.register
@dataclass(frozen=True, kw_only=True)
class NeighbourAverage(PCASettings, ExpressionSettings, SpatialMethod):
    """The trivial spatial reference: log-normalised expression (or an ``obsm`` input) averaged over
    each cell and its neighbours on the spatial graph (the graph settings and default scale of
    STAGATE), then the ``gmm`` baseline's head on PCA(``pca_components``) of that average.

    Nothing is learned, so a spatial model earns its training only where it beats this: at single-
    cell resolution a domain is a mixture of cell types that shows in a neighbourhood's mean before
    any model sees it. On simulated sections (``bench/neighbourhood_scale.py``, 3 sections x 3 seeds)
    it scores ARI 0.82 at the default scale, GraphST 0.80 and STAGATE 0.76 at theirs, and all three
    0.43-0.68 at upstream's 3- and 6-NN graphs (seed 0). The embedding stored is that PCA (cells x
    ``pca_components``), which is what the head clusters."""

    name: ClassVar[str] = "neighbour-average"

    k: int = knn_for(NEIGHBOURHOOD_CELLS)  # one hop, as STAGATE's embedding

    def from_expression(self, adata: AnnData, *, seed: int = 0) -> np.ndarray:
        return self.expression(adata)

    def spatial_model(self, x: np.ndarray, adjacency: sp.csr_matrix, run: RunContext, info: dict[str, float]) -> np.ndarray:
        from ..cellcharter import neighbourhood_mean

        # Averaged first, then the PCA: the components are fitted to the averaged profiles, whose
        # variance is the domains' mixtures rather than the cell types'.
        return self.pca(neighbourhood_mean(x, adjacency), seed=run.seed)
