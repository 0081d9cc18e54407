"""GraphST: a GCN autoencoder with graph self-supervised contrastive learning (Long et al. 2023).

Why it is here: GraphST is the second widely used spatial-domain baseline, and a different bet
from STAGATE: fixed (non-learned) neighbour averaging plus a DGI-style contrastive term that makes
each cell's code agree with its own neighbourhood summary and disagree with a corrupted graph's.

Follows JinmiaoChenLab/GraphST (``GraphST.py`` ``train``, ``model.py`` ``Encoder`` /
``Encoder_sparse``, ``preprocess.py``):

* ``z = A_hat (x W1)`` (GCN layer, no bias, dropout 0), ``emb = ReLU(z)``;
  ``h = A_hat (z W2)`` (reconstruction);
* corruption: every epoch the rows of ``x`` are shuffled (``permutation``) and pushed through the
  same encoder, giving ``emb_a``;
* readout: ``g = sigmoid(L2normalise(mean of emb over each cell's neighbours and itself))``
  (``AvgReadout`` with ``graph_neigh + I``), likewise ``g_a``;
* bilinear discriminator (``nn.Bilinear(64, 64, 1)``): ``ret = [D(emb, g), D(emb_a, g)]``,
  ``ret_a = [D(emb_a, g_a), D(emb, g_a)]``, each against labels ``[1, 0]``
  (``add_contrastive_label``);
* loss ``alpha * MSE(x, h) + beta * (BCEwithlogits(ret) + BCEwithlogits(ret_a))``, Adam
  (lr 1e-3, no weight decay), 600 epochs, seed 41, Xavier-uniform init;
* output: upstream stores ``adata.obsm['emb']`` = the **reconstruction** ``h`` (second output of
  the encoder), not the hidden ``z``, and its clustering runs PCA(20) on it before mclust/leiden.
  ``GraphSTResult.embedding`` (:mod:`cluster.training`) is therefore ``h`` (n x features);
  ``latent`` also gives ``z`` (upstream's ``hiden_emb``, n x 64).

Training is :func:`cluster.training.fit_graphst`; this module holds the network, its fixed graph
operators and the corruption, nothing that trains them.

Upstream has two code paths keyed on ``datatype``; :attr:`cluster.training.GraphSTConfig.variant`
picks one:

* ``"10X"`` (upstream default, dense): ``A_hat = D^-1/2 A D^-1/2 + I`` (``preprocess_adj``),
  embedding = ``h``;
* ``"sparse"`` (upstream's ``Stereo``/``Slide``): ``A_hat = D~^-1/2 (A + I) D~^-1/2`` (the usual
  GCN renormalisation, ``preprocess_adj_sparse``), embedding = row-wise L2-normalised ``h``.

Deviations, on purpose:

* Upstream's readout mask ``graph_neigh`` is the *directed* kNN graph, its GCN graph the
  symmetrised one; both come from the one symmetric ``adjacency`` here (graph building is
  ``cluster.graph``'s job).
* Both variants are computed sparse: ``A_hat`` and the row-normalised readout matrix are built once
  in scipy and applied with a CSR product (``cluster._torch.weighted_spmm``), never as dense
  ``n x n`` matrices (upstream's 10X path is dense, O(n^2) memory). A CSR product beats
  ``torch_geometric.nn.GCNConv`` on CPU here: without ``torch_sparse`` GCNConv gathers one message
  per edge, i.e. ``E x n_genes`` floats for the decoder layer, and re-normalises the graph every
  call unless cached; ``"10X"``'s ``+ I`` after normalisation is not a GCNConv normalisation anyway.
* The corruption permutation comes from a ``torch.Generator`` seeded with ``seed`` on the CPU,
  so it is the same sequence on every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from ._torch import Graph, as_adjacency, make_graph, weighted_spmm

__all__ = ["GraphSTNet", "GraphSTOperators", "RowShuffler", "graphst_operators"]


@dataclass(frozen=True)
class GraphSTOperators:
    """The two fixed linear operators GraphST applies, with their per-edge values.

    ``propagate``: the GCN matrix ``A_hat``; ``readout``: the row-mean over a cell and its
    neighbours. Both share one pattern (adjacency + self-loops), so one :class:`Graph` serves.
    """

    graph: Graph
    gcn_values: torch.Tensor
    readout_values: torch.Tensor

    def propagate(self, h: torch.Tensor) -> torch.Tensor:
        return weighted_spmm(self.gcn_values, h, self.graph)

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        return weighted_spmm(self.readout_values, h, self.graph)


def graphst_operators(
    adjacency: sp.spmatrix, n_cells: int, variant: str, device: torch.device
) -> GraphSTOperators:
    """Validate the spatial graph and build ``A_hat`` and the readout matrix on ``device``."""
    a = as_adjacency(adjacency, n_cells).astype(np.float64)
    eye = sp.eye(n_cells, format="csr")
    with_loops = (a + eye).tocsr()
    with_loops.sort_indices()

    if variant == "10X":
        deg = np.asarray(a.sum(axis=1)).ravel()
        inv_sqrt = np.zeros_like(deg)
        np.divide(1.0, np.sqrt(deg), out=inv_sqrt, where=deg > 0)  # isolated cells: 0, as upstream
        d = sp.diags(inv_sqrt)
        gcn = (d @ a @ d + eye).tocsr()
    elif variant == "sparse":
        d = sp.diags(1.0 / np.sqrt(np.asarray(with_loops.sum(axis=1)).ravel()))
        gcn = (d @ with_loops @ d).tocsr()
    else:
        raise ValueError(f"variant must be '10X' or 'sparse', got {variant!r}")
    gcn.sort_indices()
    readout = sp.diags(1.0 / np.asarray(with_loops.sum(axis=1)).ravel()) @ with_loops
    readout = readout.tocsr()
    readout.sort_indices()
    # Values are handed over in edge order, so both matrices must have exactly the graph's pattern
    # (they do: A_hat has A's off-diagonal entries and a positive diagonal).
    for m in (gcn, readout):
        if not (np.array_equal(m.indptr, with_loops.indptr) and np.array_equal(m.indices, with_loops.indices)):
            raise AssertionError("GraphST operator does not share the graph's sparsity pattern")

    def values(m: sp.csr_matrix) -> torch.Tensor:
        return torch.from_numpy(m.data.astype(np.float32)).to(device)

    return GraphSTOperators(
        graph=make_graph(with_loops, device), gcn_values=values(gcn), readout_values=values(readout)
    )


class GraphSTNet(nn.Module):
    """Encoder, decoder and discriminator. ``forward(x, x_corrupt, ops)`` returns
    ``(z, h, ret, ret_a)`` as upstream's ``Encoder.forward`` does."""

    def __init__(self, n_inputs: int, latent: int = 64) -> None:
        super().__init__()
        self.weight1 = nn.Parameter(torch.empty(n_inputs, latent))
        self.weight2 = nn.Parameter(torch.empty(latent, n_inputs))
        self.discriminator = nn.Bilinear(latent, latent, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.weight1)
        nn.init.xavier_uniform_(self.weight2)
        nn.init.xavier_uniform_(self.discriminator.weight)
        nn.init.zeros_(self.discriminator.bias)

    def encode(self, x: torch.Tensor, ops: GraphSTOperators) -> torch.Tensor:
        """The hidden code ``z`` (pre-ReLU)."""
        return ops.propagate(x @ self.weight1)

    def decode(self, z: torch.Tensor, ops: GraphSTOperators) -> torch.Tensor:
        return ops.propagate(z @ self.weight2)

    def summary(self, emb: torch.Tensor, ops: GraphSTOperators) -> torch.Tensor:
        """Each cell's neighbourhood summary ``g`` (AvgReadout, then sigmoid)."""
        return torch.sigmoid(F.normalize(ops.readout(emb), p=2, dim=1))

    def discriminate(self, g: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Logits ``[D(positive, g), D(negative, g)]``, n x 2.

        ``D(x, g) = x^T W g + b`` is ``nn.Bilinear``'s formula (its parameters, its init), computed as
        ``(x * (g W^T)).sum(1) + b`` with ``g W^T`` shared by both columns: the same numbers to float
        rounding (~1e-7 relative per call; the same domains after training), while ``torch.bilinear``
        (``_trilinear`` and its backward, ~30x slower on CPU) took most of a GraphST epoch: 1,500 cells
        66 -> 27 ms per epoch, 2,500 cells 190 -> 37 ms, one thread."""
        weight = self.discriminator.weight[0]  # (latent, latent); one output
        projected = g @ weight.t()
        logits = torch.stack([(positive * projected).sum(dim=1), (negative * projected).sum(dim=1)], dim=1)
        return logits + self.discriminator.bias

    def forward(
        self, x: torch.Tensor, x_corrupt: torch.Tensor, ops: GraphSTOperators
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encode(x, ops)
        h = self.decode(z, ops)
        emb = F.relu(z)
        emb_a = F.relu(self.encode(x_corrupt, ops))
        g = self.summary(emb, ops)
        g_a = self.summary(emb_a, ops)
        return z, h, self.discriminate(g, emb, emb_a), self.discriminate(g_a, emb_a, emb)


class RowShuffler:
    """Draws the corrupted view: ``x`` with its rows shuffled, a fresh permutation per call.

    Its own CPU generator (seeded with the fit's seed) makes the sequence of shuffles
    reproducible and identical on every device.
    """

    def __init__(self, seed: int) -> None:
        self._generator = torch.Generator(device="cpu").manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        perm = torch.randperm(x.shape[0], generator=self._generator)
        return x[perm.to(x.device)]
