"""The non-spatial baselines: a head on PCA(20) of expression (or on an embedding), no graph at all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..registry import DOMAIN_METHODS
from ..settings import DomainMethod, ExpressionSettings, PCASettings

if TYPE_CHECKING:
    import numpy as np
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
