"""CellCharter's settings: neighbourhood rings on a Delaunay graph, a full-covariance mixture."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..registry import DOMAIN_METHODS
from ..settings import ExpressionSettings, GraphMethod, PCASettings, RunContext, SpatialMethod

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp
    from anndata import AnnData


@DOMAIN_METHODS.register
@dataclass(frozen=True, kw_only=True)
class CellCharter(PCASettings, ExpressionSettings, SpatialMethod):
    """CellCharter (Varrone et al. 2024, :mod:`cluster.cellcharter`): PCA(20) of expression next to
    its means over ``n_layers`` neighbourhood rings of a Delaunay graph (edges above the 99th
    length percentile cut), clustered by a full-covariance mixture that keeps the best of 5 fits."""

    name: ClassVar[str] = "cellcharter"
    head_options: ClassVar = {"gmm": {"covariance": "full", "n_init": 5}}  # the study: max_runs=5

    graph: GraphMethod = "delaunay"
    n_layers: int = 3  # neighbourhood rings (the study used 4)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {self.n_layers}")

    def from_expression(self, adata: AnnData, *, seed: int = 0) -> np.ndarray:
        return self.pca(self.expression(adata), seed=seed)

    def spatial_model(self, x: np.ndarray, adjacency: sp.csr_matrix, run: RunContext, info: dict[str, float]) -> np.ndarray:
        from ..cellcharter import aggregate_neighbors

        return aggregate_neighbors(x, adjacency, n_layers=self.n_layers)
