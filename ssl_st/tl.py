"""Tools that compute on an AnnData and write under a documented key."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData

    from .genes import Coverage
    from .models import SSLModel
    from .pp import TargetSum


def embedding_key(name: str) -> str:
    """The ``obsm`` key of a model's embedding: ``X_`` + its name with ``-`` as ``_`` (``X_random_mask``)."""
    return "X_" + name.replace("-", "_")


def embed(
    adata: AnnData,
    model: SSLModel,
    *,
    key: str | None = None,
    target_sum: TargetSum = 1e4,
    min_coverage: float = 0.0,
    device: str = "auto",
    batch_size: int = 4096,
) -> Coverage:
    """Embed ``adata`` with ``model`` into ``adata.obsm[key]`` (default ``embedding_key(model.method)``).

    Raw counts are read from ``layers['counts']`` (else ``X``; declared normalised or log-normalised
    values from ``X``, see :mod:`ssl_st.io.values`), mapped onto the model's vocabulary and normalised
    over the mapped genes, as upstream preprocessing does (:func:`ssl_st.pp.model_input`, which raises
    :class:`ssl_st.pp.CoverageError` below ``min_coverage``). The gene coverage is
    returned and recorded in ``adata.uns['ssl_st'][key]``.
    """
    from .pp import model_input  # here, so that embedding_key stays cheap to import

    inputs, coverage = model_input(adata, model.vocabulary, target_sum, min_coverage=min_coverage)
    key = key or embedding_key(model.method)
    adata.obsm[key] = model.embed(inputs, batch_size=batch_size, device=device)
    adata.uns.setdefault("ssl_st", {})[key] = coverage.as_dict()
    return coverage
