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


def model_input(
    adata: AnnData, vocabulary: Vocabulary, target_sum: TargetSum = 1e4
) -> tuple[sp.csr_matrix, Coverage]:
    """Map raw counts onto the vocabulary, then normalise over the mapped genes (upstream order)."""
    counts, coverage = to_vocabulary(adata, vocabulary)
    return normalize_log1p(counts, target_sum), coverage
