"""Preprocessing, as the upstream models expect it.

scTab's store (what Richter et al. trained on) scales each cell to 10,000 counts *over the model's
genes only* and applies the natural log1p. The reusability study instead scaled spatial panels to the
median library size; that variant is available as ``target_sum="median"``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .genes import Coverage, Vocabulary, to_vocabulary

TargetSum = float | Literal["median"]


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


class CoverageError(ValueError):
    """Too few of a dataset's genes map onto a model's vocabulary for its results to mean anything."""


def model_input(
    adata: AnnData, vocabulary: Vocabulary, target_sum: TargetSum = 1e4, *, min_coverage: float = 0.0
) -> tuple[sp.csr_matrix, Coverage]:
    """Map raw counts onto the vocabulary, then normalise over the mapped genes (upstream order).

    Raises :class:`CoverageError` when no gene maps (a model would see only zeros) or when fewer than
    ``min_coverage`` of the dataset's genes do.
    """
    counts, coverage = to_vocabulary(adata, vocabulary)
    if coverage.mapped_genes == 0 or coverage.dataset_fraction < min_coverage:
        raise CoverageError(
            f"only {coverage.mapped_genes} of the dataset's {coverage.dataset_genes} genes "
            f"({coverage.dataset_fraction:.0%}) map onto the {coverage.vocabulary_genes}-gene vocabulary "
            f"(min_coverage {min_coverage:.0%}); check the gene identifiers in var (index, gene_ids, "
            "feature_id, feature_name) and the species (mouse data needs orthologs), or lower min_coverage"
        )
    return normalize_log1p(counts, target_sum), coverage
