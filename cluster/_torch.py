"""Shared torch plumbing for the graph autoencoders (STAGATE, GraphST).

Both models train full-batch on one spatial graph, so they share the same needs: validate the
arrays they are handed, put one copy of the graph on the device, aggregate over neighbours with
per-edge weights, seed every generator. Keeping that here keeps the model files about the models;
the training loop itself is :mod:`cluster.training`.

The neighbour aggregation is the one place where performance matters. The textbook message-passing
form gathers a message per edge (``E x C`` floats) before summing; with STAGATE's 512 hidden units
and a 200k-cell slide that is several GB per layer, more for the backward pass. ``weighted_spmm``
instead does a CSR sparse x dense product forward, the transposed product for the node gradient and
a sampled dense-dense product (SDDMM) for the edge-weight gradient, so memory stays
``O(E + n x C)``. On CPU it is also ~1.5x faster than gather/scatter (measured, 50k nodes, C=512).
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch


def seed_everything(seed: int) -> None:
    """Seed every generator the fit may touch (Python, numpy, torch incl. all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks the first GPU when there is one; anything else is passed to torch."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
    return resolved


def as_features(x: Any) -> np.ndarray:
    """The expression/embedding matrix as a dense C-contiguous float32 array, validated.

    Inputs are HVG panels or embeddings (hundreds to a few thousand columns), so densifying once is
    cheaper than sparse arithmetic in every epoch.
    """
    if sp.issparse(x):
        x = x.toarray()
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-D cells x features matrix, got shape {x.shape}")
    if x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"x needs at least 2 cells and 1 feature, got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"x contains NaN or infinite values (in {bad} cells)")
    return x


def as_adjacency(adjacency: Any, n_cells: int) -> sp.csr_matrix:
    """The spatial graph as a binary, symmetric CSR matrix without self-loops.

    Both upstream models use only the graph's pattern (STAGATE: ``np.nonzero``; GraphST: 0/1
    kNN), so edge weights such as distances are dropped. The diagonal is dropped too: the models
    add self-loops themselves, each in its own way.
    """
    if not sp.issparse(adjacency):
        raise ValueError(f"adjacency must be a scipy sparse matrix, got {type(adjacency).__name__}")
    if adjacency.shape != (n_cells, n_cells):
        raise ValueError(
            f"adjacency shape {adjacency.shape} does not match x: expected ({n_cells}, {n_cells})"
        )
    a = sp.csr_matrix(adjacency, copy=True)
    a.sum_duplicates()
    if a.nnz and not np.isfinite(a.data).all():
        raise ValueError("adjacency contains NaN or infinite edge weights")
    a = (a - sp.diags(a.diagonal())).tocsr()  # setdiag(0) would store explicit zeros
    a.eliminate_zeros()
    a.data = np.ones_like(a.data, dtype=np.float32)
    a = a.astype(np.float32)
    if (a != a.T).nnz:
        raise ValueError("adjacency must be symmetric (symmetrise a directed kNN graph first)")
    return a


@dataclass(frozen=True)
class Graph:
    """A fixed graph in CSR form (rows = receiving node i, columns = sending node j) plus what the
    backward pass needs: the transposed CSR and the permutation from edge order to that order.

    ``edge_index`` is the same edge list in torch_geometric layout ``[source j, target i]``, in
    CSR order, so per-edge tensors line up with both.
    """

    n: int
    rowptr: torch.Tensor
    col: torch.Tensor
    rowptr_t: torch.Tensor
    col_t: torch.Tensor
    perm_t: torch.Tensor
    edge_index: torch.Tensor

    @property
    def num_edges(self) -> int:
        return int(self.col.numel())


def make_graph(pattern: sp.spmatrix, device: torch.device) -> Graph:
    """Move a sparsity pattern (scipy, any format) to ``device`` as a :class:`Graph`, once."""
    a = sp.csr_matrix(pattern)
    a.sum_duplicates()
    a.sort_indices()
    n = a.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(a.indptr))
    cols = a.indices.astype(np.int64)
    # Transposed CSR: order edges by (column, row); perm_t maps that order back to edge ids.
    perm_t = np.lexsort((rows, cols))
    rowptr_t = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(cols, minlength=n), out=rowptr_t[1:])

    def put(arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64)).to(device)

    return Graph(
        n=n,
        rowptr=put(a.indptr),
        col=put(cols),
        rowptr_t=put(rowptr_t),
        col_t=put(rows[perm_t]),
        perm_t=put(perm_t),
        edge_index=put(np.stack([cols, rows])),
    )


def _csr(rowptr: torch.Tensor, col: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    with warnings.catch_warnings():
        # "CSR support is in beta" / "invariant checks disabled": informational, once per call.
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(rowptr, col, values, (n, n))


class _WeightedSpmm(torch.autograd.Function):
    """``out[i] = sum_j w_ij h[j]`` over the edges of a fixed graph, differentiable in w and h."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, h: torch.Tensor, graph: Graph) -> torch.Tensor:
        ctx.graph = graph
        ctx.save_for_backward(values, h)
        return torch.sparse.mm(_csr(graph.rowptr, graph.col, values, graph.n), h)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        values, h = ctx.saved_tensors
        graph: Graph = ctx.graph
        grad_values = grad_h = None
        grad_out = grad_out.contiguous()
        if ctx.needs_input_grad[1]:
            transposed = _csr(graph.rowptr_t, graph.col_t, values[graph.perm_t], graph.n)
            grad_h = torch.sparse.mm(transposed, grad_out)
        if ctx.needs_input_grad[0]:
            # dL/dw_ij = <grad_out[i], h[j]>, sampled only at the graph's edges (SDDMM).
            pattern = _csr(graph.rowptr, graph.col, torch.zeros_like(values), graph.n)
            grad_values = torch.sparse.sampled_addmm(pattern, grad_out, h.t(), beta=0.0).values()
        return grad_values, grad_h, None


def weighted_spmm(values: torch.Tensor, h: torch.Tensor, graph: Graph) -> torch.Tensor:
    """Neighbour sum weighted per edge; ``values`` is in the graph's CSR edge order."""
    return _WeightedSpmm.apply(values, h, graph)
