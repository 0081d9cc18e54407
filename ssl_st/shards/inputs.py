"""A batch of shard rows -> the model input :func:`ssl_st.pp.model_input` makes of the same cells.

``model_input`` maps a dataset's genes onto the vocabulary and normalises each cell over the mapped
genes; both steps work row by row, so applying them to a batch of rows gives exactly that batch's
rows of the whole-dataset result. The mapping and the coverage check are done once, by the same
functions (:func:`ssl_st.genes.map_genes`, ``model_input`` itself on an empty AnnData with the
dataset's var), and each batch then goes through :meth:`GeneMapping.apply` and
:func:`ssl_st.pp.log_normalized`.

Two row layouts come in: sparse cell shards (``indices`` + ``counts`` list columns, :mod:`.format`)
and the Merlin store's dense ``X`` (log1p of each cell scaled to 10,000 over the 19,331 genes,
:mod:`.merlin`). Merlin values are passed on untouched when the store's genes are the model's
vocabulary, in order (what the published models were trained on); otherwise they are mapped like any
declared log-normalised values.

The one dataset-wide quantity, ``target_sum="median"`` over counts (the median library size), has no
per-batch equivalent and is refused; normalised values' "median" is a per-cell target and works.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from ..genes import Coverage, GeneMapping, Vocabulary, map_genes
from ..io.values import ValueType
from ..pp import TargetSum, log_normalized, model_input

if TYPE_CHECKING:
    from .source import Source


@dataclass(frozen=True)
class InputPlan:
    """How a batch becomes model input: which layout, the gene mapping (None: already in vocabulary
    order and normalised, Merlin X of the model's own genes), the values' type and the target sum."""

    dense: bool
    n_genes: int  # the dataset's genes (columns of a batch before mapping)
    mapping: GeneMapping | None
    values: ValueType
    target_sum: TargetSum


def _same_genes(var: pd.DataFrame, vocabulary: Vocabulary) -> bool:
    return len(var) == len(vocabulary) and Vocabulary.from_var(var).ids == vocabulary.ids


def plan_inputs(var: pd.DataFrame, vocabulary: Vocabulary, *, values: ValueType, dense: bool = False,
                target_sum: TargetSum = 1e4, min_coverage: float = 0.0) -> tuple[InputPlan, Coverage]:
    """The :class:`InputPlan` and gene coverage of a dataset with genes ``var``; raises
    :class:`ssl_st.pp.CoverageError` as ``model_input`` does, before any cell is read."""
    if target_sum == "median" and values.is_counts:
        raise ValueError("target_sum='median' (the median library size) needs every cell at once; a sharded "
                         "dataset is embedded batch by batch: use the upstream 10,000 (cp10k)")
    if dense and _same_genes(var, vocabulary):
        n = len(vocabulary)
        return InputPlan(True, n, None, values, target_sum), Coverage(n, n, n, n, 0)
    from anndata import AnnData

    with warnings.catch_warnings():  # a Merlin var has a RangeIndex: AnnData's "transforming to str" note
        warnings.simplefilter("ignore")
        probe = AnnData(X=sp.csr_matrix((0, len(var)), dtype=np.float32), var=var, uns={"ssl_st": values.as_uns()})
    _, coverage = model_input(probe, vocabulary, target_sum, min_coverage=min_coverage)  # its check and error
    return InputPlan(dense, len(var), map_genes(var, vocabulary), values, target_sum), coverage


def _list_parts(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(indptr from 0, flat values) of a list column, whatever its chunking and slice offset."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size
        return np.arange(len(array) + 1, dtype=np.int64) * size, array.flatten()
    offsets = array.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0], array.flatten()


def sparse_rows(batch: pa.Table, n_genes: int) -> sp.csr_matrix:
    """The ``indices``/``counts`` list columns of a cell-shard batch as a cells x dataset-genes CSR."""
    indptr, indices = _list_parts(batch.column("indices"))
    counts_ptr, counts = _list_parts(batch.column("counts"))
    if not np.array_equal(indptr, counts_ptr):
        raise ValueError("a shard row has different numbers of indices and counts: the shard is damaged")
    return sp.csr_matrix(
        (counts.to_numpy(zero_copy_only=False).astype(np.float32, copy=False),
         indices.to_numpy(zero_copy_only=False), indptr),
        shape=(batch.num_rows, n_genes),
    )


def dense_rows(batch: pa.Table, n_genes: int, column: str = "X") -> np.ndarray:
    """A Merlin batch's fixed-length ``X`` lists as a cells x genes float32 array."""
    indptr, values = _list_parts(batch.column(column))
    lengths = np.diff(indptr)
    if lengths.size and not (lengths == n_genes).all():
        bad = int(lengths[lengths != n_genes][0])
        raise ValueError(f"a row of {column} holds {bad} values but var.parquet lists {n_genes} genes: "
                         "the part is damaged or belongs to another store")
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(batch.num_rows, n_genes)


def batch_inputs(plan: InputPlan, batch: pa.Table) -> sp.csr_matrix:
    """Model input (cells x vocabulary, normalised) for a batch of rows."""
    if plan.dense:
        matrix: sp.spmatrix = sp.csr_matrix(dense_rows(batch, plan.n_genes))
        if plan.mapping is None:
            return matrix
    else:
        matrix = sparse_rows(batch, plan.n_genes)
    return log_normalized(plan.mapping.apply(matrix), plan.values, plan.target_sum)


def read_inputs(source: Source, vocabulary: Vocabulary, *, target_sum: TargetSum = 1e4,
                min_coverage: float = 0.0) -> tuple[sp.csr_matrix, Coverage]:
    """Every cell of a checked ``source`` as the model input (sparse, in row order), as
    ``model_input`` makes it of the same cells; reads one file at a time, so what it holds at once
    is the sparse result and one shard. For pretraining from shards."""
    import pyarrow.parquet as pq

    plan, coverage = plan_inputs(source.var(), vocabulary, values=source.values, dense=source.dense,
                                 target_sum=target_sum, min_coverage=min_coverage)
    columns = ["X"] if source.dense else ["indices", "counts"]
    parts = [batch_inputs(plan, pq.read_table(f, columns=columns)) for f in source.files]
    if not parts:
        return sp.csr_matrix((0, len(vocabulary)), dtype=np.float32), coverage
    return sp.vstack(parts, format="csr"), coverage
