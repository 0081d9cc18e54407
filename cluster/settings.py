"""What a spatial-domain method is: its settings, as one frozen dataclass that also carries its behaviour.

Every method is the same three steps, which is what lets one record describe STAGATE, GraphST,
CellCharter and the non-spatial baselines, fed with genes or with any ``obsm`` embedding:

1. a *representation* (:meth:`DomainMethod.representation`): log-normalised expression (or its
   PCA), or an ``obsm`` entry as it is (the study's -RM / -GP / -BT variants put a 64-d SSL
   embedding where the genes were);
2. a *spatial model* on the neighbour graph (:meth:`SpatialMethod.spatial_model`): STAGATE or
   GraphST learn an embedding, CellCharter concatenates neighbourhood means, the neighbour-average
   baseline averages over neighbours; the other baselines skip it;
3. a *head* (:meth:`DomainMethod.make_head`: a :class:`Head` of :data:`cluster.HEADS`) that cuts
   the result into domains: the mclust-EEE stand-in (a tied-covariance Gaussian mixture), k-means,
   or Leiden with a resolution searched to reach ``n_domains``.

A method's class holds only the settings that apply to it, with concrete defaults, named flat as
configs and tuning spaces name them (``per_method: {stagate: {epochs: 100}}``, a space over
``epochs``, ``learning_rate``, ``k``), so a tuned value drops in with :func:`dataclasses.replace`.
Groups of settings that several methods share are the mixins here (:class:`HeadSettings`,
:class:`GraphSettings`, :class:`ExpressionSettings`, :class:`PCASettings`,
:class:`TrainingSettings`); each checks its own fields when an instance is made.

:class:`DomainConfig` is the run-time record: one method's settings plus what describes the data
(``use_rep``, ``library_key``) and the task (``n_domains``).

This module imports nothing heavy: numpy, AnnData, torch and scikit-learn are imported by the
behaviour methods when they run.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .registry import DOMAIN_METHODS, HEADS

if TYPE_CHECKING:
    import numpy as np
    import scipy.sparse as sp
    from anndata import AnnData

    from .heads import HeadResult
    from .training import FitResult

GraphMethod = Literal["radius", "knn", "delaunay"]
Covariance = Literal["tied", "full", "diag"]  # of a Gaussian mixture: mclust EEE, VVV, VVI
TargetSum = float | Literal["median"]
GraphSTVariant = Literal["10X", "sparse"]
"""GraphST's code path (upstream's ``datatype``): ``"10X"`` for spots, ``"sparse"`` for Stereo-seq,
Slide-seq and other single-cell-resolution data (:class:`cluster.training.GraphSTConfig`)."""
EpochCallback = Callable[[int, float], None]
"""Called after every training epoch with the 1-based epoch number and that epoch's loss."""


@dataclass(frozen=True)
class RunContext:
    """How one :func:`cluster.find_domains` call runs a method: not settings, so not in its record."""

    seed: int = 0
    device: str = "auto"
    spatial_key: str = "spatial"
    library_key: str | None = None  # obs column of slices: graphs never cross them
    progress: EpochCallback | None = None


@dataclass(frozen=True, kw_only=True)
class _Checked:
    """Root of the settings mixins: each mixin checks its fields, then hands on to the next."""

    def __post_init__(self) -> None:
        pass


# --- heads: what a method's ``head`` names -------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """A head's options; :meth:`cut` clusters with them (the functions of :mod:`cluster.heads`).
    Subclasses register in :data:`cluster.HEADS`."""

    name: ClassVar[str]

    def check(self, n_domains: int | None, resolution: float | None, *, what: str | None = None) -> None:
        """Raise ValueError if this head cannot run with ``n_domains`` and ``resolution``; ``what``
        names the caller in the message (default: the head)."""
        if n_domains is None:
            raise ValueError(f"{what or self.name} needs n_domains (the number of domains)")
        if resolution is not None:
            raise ValueError(f"resolution applies to leiden only, not {self.name}")

    def cut(self, x: Any, n_domains: int | None = None, *, resolution: float | None = None, seed: int = 0) -> HeadResult:
        """Domains of ``x``: labels 0 = largest, with what it took to get them."""
        from .heads import HeadResult

        self.check(n_domains, resolution)
        labels, info = self._labels(x, n_domains, resolution, seed)
        return HeadResult(labels=labels, method=self.name, n_found=int(labels.max()) + 1, info=info)

    def _labels(self, x: Any, n_domains: Any, resolution: Any, seed: int) -> tuple[np.ndarray, dict[str, float]]:
        raise NotImplementedError


@HEADS.register
@dataclass(frozen=True)
class GaussianMixtureHead(Head):
    """:func:`cluster.heads.gmm`: tied covariance (mclust EEE) by default, one fit."""

    name: ClassVar[str] = "gmm"

    covariance: Covariance = "tied"
    n_init: int = 1
    max_iter: int = 100
    reg_covar: float = 1e-6

    def _labels(self, x: Any, n_domains: Any, resolution: Any, seed: int) -> tuple[np.ndarray, dict[str, float]]:
        from .heads import gmm

        labels = gmm(x, n_domains, covariance=self.covariance, seed=seed, n_init=self.n_init, max_iter=self.max_iter,
                     reg_covar=self.reg_covar)
        return labels, {}


@HEADS.register
@dataclass(frozen=True)
class KMeansHead(Head):
    """:func:`cluster.heads.kmeans` with ``n_init`` k-means++ starts."""

    name: ClassVar[str] = "kmeans"

    n_init: int = 10

    def _labels(self, x: Any, n_domains: Any, resolution: Any, seed: int) -> tuple[np.ndarray, dict[str, float]]:
        from .heads import kmeans

        return kmeans(x, n_domains, seed=seed, n_init=self.n_init), {}


@HEADS.register
@dataclass(frozen=True)
class LeidenHead(Head):
    """:func:`cluster.heads.leiden` at a fixed resolution, or :func:`cluster.heads.search_resolution`
    for ``n_domains``."""

    name: ClassVar[str] = "leiden"

    n_neighbors: int = 15
    n_iterations: int = -1
    low: float = 0.01  # the resolution search: its bracket, its steps and its tolerance
    high: float = 3.0
    max_iter: int = 20
    tol: float = 1e-3

    def check(self, n_domains: int | None, resolution: float | None, *, what: str | None = None) -> None:
        if n_domains is None and resolution is None:
            raise ValueError("leiden needs n_domains (a resolution is searched) or a fixed resolution")

    def _labels(self, x: Any, n_domains: Any, resolution: Any, seed: int) -> tuple[np.ndarray, dict[str, float]]:
        from .heads import leiden, search_resolution

        if resolution is not None:
            labels = leiden(x, resolution, n_neighbors=self.n_neighbors, seed=seed, n_iterations=self.n_iterations)
            info = {"resolution": float(resolution)}
            if n_domains is not None:
                info["reached"] = float(int(labels.max()) + 1 == n_domains)
            return labels, info
        search = search_resolution(
            x, n_domains, n_neighbors=self.n_neighbors, seed=seed, low=self.low, high=self.high, max_iter=self.max_iter,
            tol=self.tol, n_iterations=self.n_iterations,
        )
        info = {"resolution": search.resolution, "reached": float(search.reached), "n_trials": float(len(search.trials))}
        return search.labels, info


# --- the groups of settings ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HeadSettings(_Checked):
    """Which head cuts the domains (a name in :data:`cluster.HEADS`)."""

    head: str = "gmm"
    resolution: float | None = None  # leiden: a fixed resolution instead of a search for n_domains

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head not in HEADS:
            raise ValueError(HEADS.unknown(self.head))
        if self.resolution is not None and not self.resolution > 0:
            raise ValueError(f"resolution must be positive, got {self.resolution}")


NEIGHBOURHOOD_CELLS = 25
"""The neighbourhood scale of a spatial domain at imaging (single-cell) resolution: how many cells
a spatial method's output should average over.

At single-cell resolution a domain is a *mixture* of cell types: no cell says which domain it is in,
and the mixture shows only in a mean over enough neighbours, yet not so many that thin domains
blur. ``bench/neighbourhood_scale.py`` measured it on simulated sections whose layers are 4 to 28
cell spacings thick: the plain neighbourhood average, STAGATE and GraphST all do best when their
output is worth about 25 cells (the neighbourhood average: ARI 0.68 at 7 cells, 0.80 at 25, no
better beyond). Upstream's graphs (STAGATE 6-NN, GraphST 3-NN) were set for Visium spots, each
already an average of several cells; they stay reachable (``k: 6``). Each method's default ``k``
is :func:`knn_for` this scale and the hops its output mixes."""


def knn_for(cells: int, hops: int = 1) -> int:
    """The ``k`` of a kNN graph whose ``hops``-hop neighbourhood average is worth about ``cells`` cells.

    An average over a cell and its k nearest neighbours weighs k + 1 cells equally. Repeating it
    spreads like a random walk, whose variance grows linearly with the steps, so h hops are worth
    about h (k + 1) cells (the effective count ``(sum w)^2 / sum w^2``; measured 2.0x for two hops
    at k = 6 to 32 on a jittered section).
    """
    return max(1, math.ceil(cells / hops) - 1)


@dataclass(frozen=True, kw_only=True)
class GraphSettings(_Checked):
    """The spatial neighbour graph (:func:`cluster.graph.spatial_neighbors`)."""

    graph: GraphMethod = "knn"
    k: int = 6  # knn graph: neighbours per cell (the spatial models default to knn_for(NEIGHBOURHOOD_CELLS))
    radius: float | None = None  # radius graph, in the units of the coordinates
    percentile: float = 99.0  # delaunay graph: drop edges above this length percentile

    def __post_init__(self) -> None:
        super().__post_init__()
        choices = typing.get_args(GraphMethod)
        if self.graph not in choices:
            raise ValueError(f"unknown graph '{self.graph}'; choose one of {', '.join(choices)}")
        if self.graph == "radius" and self.radius is None:
            raise ValueError("graph radius needs radius (in the units of obsm['spatial'])")
        if self.graph != "radius" and self.radius is not None:
            raise ValueError(f"radius is only used by graph 'radius', not graph '{self.graph}'; set graph: radius as well")
        if isinstance(self.k, bool) or int(self.k) != self.k or self.k < 1:
            raise ValueError(f"k must be an integer >= 1, got {self.k!r}")
        if not 0 < self.percentile <= 100:
            raise ValueError(f"percentile must lie in (0, 100], got {self.percentile!r}")

    def neighbours(self, adata: AnnData, *, spatial_key: str = "spatial", library_key: str | None = None) -> sp.csr_matrix:
        """Build the graph into ``adata.obsp`` (squidpy's keys) and return its connectivities."""
        from .graph import spatial_neighbors

        spatial_neighbors(
            adata, method=self.graph, k=self.k, radius=self.radius,
            percentile=self.percentile if self.graph == "delaunay" else None,
            library_key=library_key, spatial_key=spatial_key,
        )
        return adata.obsp["spatial_connectivities"]


@dataclass(frozen=True, kw_only=True)
class ExpressionSettings(_Checked):
    """How expression becomes the input when the method reads genes (``use_rep="X"``)."""

    n_top_genes: int = 3000
    target_sum: TargetSum = "median"  # the study normalised spatial data to the median

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_top_genes < 1:
            raise ValueError(f"n_top_genes must be at least 1, got {self.n_top_genes}")
        if self.target_sum != "median" and not (isinstance(self.target_sum, (int, float)) and self.target_sum > 0):
            raise ValueError(f"target_sum must be 'median' or a positive number, got {self.target_sum!r}")

    def expression(self, adata: AnnData) -> np.ndarray:
        """Log-normalised expression of the most variable genes (:func:`cluster.domains.expression`)."""
        from .domains import expression

        return expression(adata, target_sum=self.target_sum, n_top_genes=self.n_top_genes)


@dataclass(frozen=True, kw_only=True)
class PCASettings(_Checked):
    """A PCA on the way: of expression (baselines, CellCharter) or of an embedding (GraphST's head)."""

    pca_components: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pca_components < 1:
            raise ValueError(f"pca_components must be at least 1, got {self.pca_components}")

    def pca(self, x: Any, *, seed: int = 0) -> np.ndarray:
        from .heads import pca

        return pca(x, self.pca_components, seed=seed)


@dataclass(frozen=True, kw_only=True)
class TrainingSettings(_Checked):
    """Full-batch training of a graph autoencoder (the rest of its optimiser is the model's own)."""

    epochs: int = 1000
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

    @staticmethod
    def record_fit(fit: FitResult, info: dict[str, float]) -> np.ndarray:
        """Put a fit's provenance into ``info`` and return its embedding."""
        info["train_s"] = fit.seconds
        info["epochs"] = float(len(fit.losses))
        info["final_loss"] = float(fit.losses[-1]) if fit.losses else float("nan")
        return fit.embedding


# --- methods ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DomainMethod(HeadSettings):
    """Base of every spatial-domain method's settings; subclasses register in :data:`cluster.DOMAIN_METHODS`.

    A subclass names itself (``name``), adds its settings as fields with concrete defaults (mixing
    in the groups above) and says how it reads expression (:meth:`from_expression`); a method on
    the spatial graph derives from :class:`SpatialMethod` and adds :meth:`SpatialMethod.spatial_model`.
    """

    name: ClassVar[str]
    needs_coordinates: ClassVar[bool] = False
    head_options: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    """Options of the head by head name, where this method's differ from the head's defaults."""

    def representation(self, adata: AnnData, use_rep: str = "X", *, seed: int = 0) -> np.ndarray:
        """The features the spatial model (or the head) sees: ``obsm[use_rep]`` as it is, or, for
        ``"X"``, what :meth:`from_expression` makes of the counts."""
        import numpy as np

        if use_rep != "X":
            from .domains import obsm_features

            return obsm_features(adata, use_rep)
        return np.asarray(self.from_expression(adata, seed=seed)).astype(np.float32, copy=False)

    def from_expression(self, adata: AnnData, *, seed: int = 0) -> np.ndarray:
        """The method's input made from the section's counts."""
        raise NotImplementedError(f"{type(self).__name__} does not say how it reads expression (from_expression)")

    def spatial_embedding(self, adata: AnnData, x: np.ndarray, run: RunContext, info: dict[str, float]) -> np.ndarray | None:
        """The spatial model's embedding of ``x`` (stored as ``obsm['X_<name>']``), or None for none."""
        return None

    def head_input(self, x: np.ndarray, embedding: np.ndarray | None, *, seed: int = 0) -> np.ndarray:
        """What the head clusters: the spatial embedding, or the representation where there is none."""
        return x if embedding is None else embedding

    def make_head(self) -> Head:
        """The head named by ``head``, with this method's options for it."""
        return HEADS[self.head](**self.head_options.get(self.head, {}))

    def check_domains(self, n_domains: int | None) -> None:
        """Raise ValueError if the head cannot run with this ``n_domains`` (and ``resolution``)."""
        self.make_head().check(n_domains, self.resolution, what=f"method {self.name} with head {self.head}")


@dataclass(frozen=True, kw_only=True)
class SpatialMethod(GraphSettings, DomainMethod):
    """A method that models the spatial neighbour graph: builds the graph, then :meth:`spatial_model`."""

    needs_coordinates: ClassVar[bool] = True

    def spatial_embedding(self, adata: AnnData, x: np.ndarray, run: RunContext, info: dict[str, float]) -> np.ndarray:
        adjacency = self.neighbours(adata, spatial_key=run.spatial_key, library_key=run.library_key)
        info["mean_degree"] = float(adata.uns["spatial_neighbors"]["mean_degree"])
        return self.spatial_model(x, adjacency, run, info)

    def spatial_model(self, x: np.ndarray, adjacency: sp.csr_matrix, run: RunContext, info: dict[str, float]) -> np.ndarray:
        """The embedding of ``x`` on the graph ``adjacency``; may add numbers to ``info``."""
        raise NotImplementedError(f"{type(self).__name__} has no spatial_model")


def tunable_fields(cls: type[DomainMethod]) -> tuple[str, ...]:
    """The settings of a method class that a search may tune: its fields that hold a number."""
    hints = typing.get_type_hints(cls)
    return tuple(f.name for f in dataclasses.fields(cls) if _is_number(hints.get(f.name)))


def _is_number(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
    else:
        members = [annotation]
    return bool(members) and all(a in (int, float) for a in members)


# --- the run-time record ------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainConfig:
    """One method's settings, what it reads and how many domains it cuts.

    ``settings`` is an instance of a method class (``DOMAIN_METHODS["stagate"](epochs=100)``);
    ``use_rep`` is ``"X"`` (expression from ``layers['counts']``, or ``X``) or an ``obsm`` key;
    ``library_key`` names the obs column of slices (graphs never cross them, metrics are per slice).
    """

    settings: DomainMethod
    n_domains: int | None = None
    use_rep: str = "X"
    library_key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.settings, DomainMethod):
            raise TypeError(
                f"settings must be a spatial-domain method's settings, e.g. DOMAIN_METHODS['stagate'](), "
                f"got {type(self.settings).__name__}"
            )
        self.settings.check_domains(self.n_domains)
        if self.n_domains is not None and self.n_domains < 2:
            raise ValueError("n_domains must be at least 2")

    @property
    def method(self) -> str:
        """The method's registered name."""
        return self.settings.name

    @classmethod
    def from_name(
        cls, method: str, *, n_domains: int | None = None, use_rep: str = "X", library_key: str | None = None,
        **settings: Any,
    ) -> DomainConfig:
        """``DomainConfig.from_name("stagate", n_domains=6, epochs=100)``: the method's settings class
        from :data:`cluster.DOMAIN_METHODS`, made with ``settings``; unknown names are a ValueError."""
        method_cls = DOMAIN_METHODS[method]
        known = {f.name for f in dataclasses.fields(method_cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"{method} has no setting '{unknown[0]}' (its settings: {', '.join(sorted(known))})")
        return cls(method_cls(**settings), n_domains=n_domains, use_rep=use_rep, library_key=library_key)

    def params(self) -> dict[str, Any]:
        """The record ``find_domains`` stores in ``uns``: the method, its settings, n_domains, the input
        (unset values left out: they cannot be written to every h5ad)."""
        params = {"method": self.method, **dataclasses.asdict(self.settings),
                  "n_domains": self.n_domains, "use_rep": self.use_rep, "library_key": self.library_key}
        return {k: v for k, v in params.items() if v is not None}
