"""Preprocessing, as the upstream models expect it.

scTab's store (what Richter et al. trained on) scales each cell to 10,000 counts *over the model's
genes only* and applies the natural log1p. The reusability study instead scaled spatial panels to the
median library size; that variant is available as ``target_sum="median"``.

Expression may come as counts, normalised or log-normalised values (:mod:`ssl_st.io.values`, declared
by the user and recorded in ``uns['ssl_st']``); :func:`log_normalized` makes the same log1p values of
any of them, and the models (:func:`model_input`) and the domain methods
(:func:`cluster.domains.expression`) read expression through it, so nothing is logged twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.sparse as sp

from .genes import Coverage, Vocabulary, map_genes
from .io.values import COUNTS, ValueType

if TYPE_CHECKING:
    from anndata import AnnData  # annotations only: the model paths run without anndata

TargetSum = float | Literal["median"]
DEFAULT_TARGET_SUM = 1e4  # where declared normalised values go when "median" is asked for (see below)


def normalize_log1p(counts: sp.spmatrix, target_sum: TargetSum = 1e4) -> sp.csr_matrix:
    """Scale each row of ``counts`` to ``target_sum`` and take log1p; rows of zeros stay zeros."""
    matrix = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    library = np.asarray(matrix.sum(axis=1)).ravel()
    if target_sum == "median":
        nonzero = library[library > 0]
        target = float(np.median(nonzero)) if nonzero.size else 1.0
    else:
        target = float(target_sum)
    # scTab uses a divisor of 1 for empty cells, which leaves them at zero instead of NaN.
    scale = target / np.where(library > 0, library, 1.0)
    matrix.data *= np.repeat(scale, np.diff(matrix.indptr)).astype(np.float32)
    np.log1p(matrix.data, out=matrix.data)
    return matrix


def log_normalized(matrix: sp.spmatrix, values: ValueType = COUNTS, target_sum: TargetSum = 1e4) -> sp.csr_matrix:
    """log1p of each cell scaled to ``target_sum``, from expression of any declared type.

    - counts: scaled to ``target_sum`` (``"median"``: the median library size), then log1p;
    - normalized: the same, each cell rescaled from whatever sum it had;
    - log-normalized: expm1 first, then as normalized.

    For normalised inputs ``"median"`` means ``values.target_sum`` if declared, else 10,000: their
    median "library size" is only the user's arbitrary scale (x 100 would change it x 100, and with it
    log1p's curvature), while a fixed target makes the result the same whatever that scale was. Rows of
    zeros stay zeros.
    """
    if values.kind == "log-normalized":
        matrix = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
        np.expm1(matrix.data, out=matrix.data)
    if target_sum == "median" and not values.is_counts:
        target_sum = values.target_sum or DEFAULT_TARGET_SUM
    return normalize_log1p(matrix, target_sum)


def expression_matrix(adata: AnnData) -> tuple[sp.csr_matrix, ValueType]:
    """An AnnData's expression and its type: counts from ``layers['counts']`` (else ``X``); declared
    normalised values from ``X`` (:mod:`ssl_st.io.values`; checked where they came in, by the readers
    and the commands)."""
    values = ValueType.recorded(adata.uns) or COUNTS
    matrix = adata.layers["counts"] if values.is_counts and "counts" in adata.layers else adata.X
    return sp.csr_matrix(matrix, dtype=np.float32), values


def log_expression(adata: AnnData, target_sum: TargetSum = 1e4) -> sp.csr_matrix:
    """:func:`log_normalized` of an AnnData's expression (:func:`expression_matrix`)."""
    return log_normalized(*expression_matrix(adata), target_sum)


class CoverageError(ValueError):
    """Too few of a dataset's genes map onto a model's vocabulary for its results to mean anything."""


def model_input(
    adata: AnnData, vocabulary: Vocabulary, target_sum: TargetSum = 1e4, *, min_coverage: float = 0.0
) -> tuple[sp.csr_matrix, Coverage]:
    """Map expression onto the vocabulary, then normalise over the mapped genes (upstream order).

    Expression of any declared type (:func:`expression_matrix`) becomes log1p values at ``target_sum``
    (:func:`log_normalized`). Raises :class:`CoverageError` when no gene maps (a model would see only
    zeros) or when fewer than ``min_coverage`` of the dataset's genes do.
    """
    matrix, values = expression_matrix(adata)
    mapping = map_genes(adata.var, vocabulary)
    counts, coverage = mapping.apply(matrix), mapping.coverage
    if coverage.mapped_genes == 0 or coverage.dataset_fraction < min_coverage:
        raise CoverageError(
            f"only {coverage.mapped_genes} of the dataset's {coverage.dataset_genes} genes "
            f"({coverage.dataset_fraction:.0%}) map onto the {coverage.vocabulary_genes}-gene vocabulary "
            f"(min_coverage {min_coverage:.0%}); check the gene identifiers in var (index, gene_ids, "
            "feature_id, feature_name) and the species (mouse data needs orthologs), or lower min_coverage"
        )
    return log_normalized(counts, values, target_sum), coverage
