"""Tools that compute on an AnnData and write under a documented key."""

from __future__ import annotations

from anndata import AnnData

from .genes import Coverage
from .models import SSLModel
from .pp import TargetSum, model_input


def embed(
    adata: AnnData,
    model: SSLModel,
    *,
    key: str | None = None,
    target_sum: TargetSum = 1e4,
    device: str = "auto",
) -> Coverage:
    """Embed ``adata`` with ``model``; writes ``adata.obsm[key]`` (default ``X_<method>``).

    Raw counts are read from ``layers['counts']`` (else ``X``), mapped onto the model's vocabulary and
    normalised over the mapped genes, as upstream preprocessing does. Returns the gene coverage.
    """
    inputs, coverage = model_input(adata, model.vocabulary, target_sum)
    adata.obsm[key or f"X_{model.method.replace('-', '_')}"] = model.embed(inputs, device=device)
    adata.uns.setdefault("ssl_st", {})[key or model.method] = coverage.as_dict()
    return coverage
