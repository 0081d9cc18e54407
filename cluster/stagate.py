"""STAGATE: a graph-attention autoencoder over the spatial neighbour graph (Dong & Zhang 2022).

Why it is here: STAGATE is the reference spatial-domain method whose embedding, clustered, most
later methods compare against. It learns a low-dimensional code per cell by reconstructing the
cell's expression from attention-weighted neighbourhoods, so cells in one tissue domain end up
close even when their own profiles are noisy.

Follows STAGATE_pyG (``STAGATE.py``, ``gat_conv.py``, ``Train_STAGATE.py``, ``utils.py``):

* graph: the spatial graph's pattern plus self-loops (``utils.Transfer_pytorch_Data`` adds ``I``);
* encoder: ``h1 = ELU(att1(x W1))``, ``z = h1 W2`` (conv2 has ``attention=False``: the layer is
  the bare linear map, no propagation);
* decoder: ``h3 = ELU(att1(z W2^T))`` reusing conv1's attention coefficients (tied attention),
  ``x_hat = h3 W1^T`` (conv4 is linear too);
* attention: one head, no bias, no dropout; logits ``a_src . W x_j + a_dst . W x_i``, then
  **sigmoid, then softmax over the neighbours of i** (STAGATE's choice, not GAT's LeakyReLU; the
  earliest pyG commit still had LeakyReLU, the released package and the TF original use sigmoid);
* init: Xavier-normal with gain 1.414 for weights and attention vectors;
* training (:func:`cluster.training.fit_stagate`): Adam(lr 1e-3, weight decay 1e-4),
  MSE(x, x_hat), gradient-norm clipping at 5, 1000 full-batch epochs; the embedding is ``z`` from a
  final forward pass.

This module holds the network and the graph it runs on, nothing that trains it.

Deviations, on purpose:

* **True weight tying.** STAGATE_pyG copies ``W2^T`` / ``W1^T`` into separate decoder parameters
  (``conv3.lin_src.data = conv2.lin_src.transpose(0, 1)``) at each forward pass: values are tied
  but the reconstruction gradient through the decoder never reaches the encoder weights (the
  decoder copies get Adam updates that are overwritten next epoch). The TensorFlow original ties
  them for real, as the paper describes; here the decoder uses the transposed encoder parameters
  themselves, so gradients flow through both uses. Attention tying was already true upstream.
* **Fused aggregation.** The attention layer is a torch_geometric ``MessagePassing``: per-edge
  coefficients come from ``edge_updater`` and ``torch_geometric.utils.softmax``; the weighted
  neighbour sum uses a CSR product (``cluster._torch.weighted_spmm``) instead of materialising
  one 512-float message per edge. Same numbers (``propagate`` is kept as the reference path and
  tested against it), several times less memory at slide scale.
* Edge weights of the input graph are ignored (upstream uses ``np.nonzero`` too) and the graph
  must be symmetric.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.utils import softmax

from ._torch import Graph, as_adjacency, make_graph, weighted_spmm

__all__ = ["STAGATEConv", "STAGATENet", "stagate_graph"]

_GAIN = 1.414  # upstream's xavier_normal_ gain for every weight and attention vector


class STAGATEConv(MessagePassing):
    """One STAGATE graph-attention layer: ``out_i = sum_j alpha_ij (x_j W)`` with
    ``alpha_i. = softmax_j(sigmoid(a_src . x_j W + a_dst . x_i W))`` over i's neighbours.

    ``attention=False`` makes it the bare linear map ``x W`` (upstream's conv2/conv4).
    """

    def __init__(self, in_channels: int, out_channels: int, *, attention: bool = True) -> None:
        super().__init__(aggr="add", node_dim=0)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.attention = attention
        # Stored (in, out) as upstream's lin_src, so the decoder can use weight.t() directly.
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels))
        if attention:
            self.att_src = nn.Parameter(torch.empty(out_channels))
            self.att_dst = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("att_src", None)
            self.register_parameter("att_dst", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.weight, gain=_GAIN)
        if self.attention:
            # Upstream's (1, 1, C) attention tensors: xavier fans (C, C) -> std = gain / sqrt(C).
            std = _GAIN / float(np.sqrt(self.out_channels))
            for p in (self.att_src, self.att_dst):
                nn.init.normal_(p, std=std)

    def coefficients(self, h: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Per-edge attention, normalised over each target's incoming edges, from ``h = x W``."""
        alpha_src = h @ self.att_src
        alpha_dst = h @ self.att_dst
        return self.edge_updater(edge_index, alpha=(alpha_src, alpha_dst), size=(h.size(0), h.size(0)))

    def edge_update(
        self, alpha_j: torch.Tensor, alpha_i: torch.Tensor, index: torch.Tensor, dim_size: int | None
    ) -> torch.Tensor:
        return softmax(torch.sigmoid(alpha_j + alpha_i), index, num_nodes=dim_size)

    def message(self, x_j: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        return x_j * coef.unsqueeze(-1)

    def forward(
        self, x: torch.Tensor, graph: Graph, *, fused: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns ``(out, coef)``; ``coef`` is None for a linear (``attention=False``) layer.

        ``fused=False`` aggregates with ``propagate`` (one message per edge): the reference path,
        kept for tests and for readers who know PyG.
        """
        h = x @ self.weight
        if not self.attention:
            return h, None
        coef = self.coefficients(h, graph.edge_index)
        return self.weighted_sum(h, coef, graph, fused=fused), coef

    def weighted_sum(self, h: torch.Tensor, coef: torch.Tensor, graph: Graph, *, fused: bool = True) -> torch.Tensor:
        """``sum_j coef_ij h_j`` per node, ``coef`` in the graph's edge order."""
        if fused:
            return weighted_spmm(coef, h, graph)
        return self.propagate(graph.edge_index, x=h, coef=coef, size=(graph.n, graph.n))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, attention={self.attention})"


class STAGATENet(nn.Module):
    """The autoencoder; ``forward(x, graph) -> (z, x_hat)``. Training lives in :func:`cluster.training.fit_stagate`."""

    def __init__(self, n_inputs: int, hidden: tuple[int, int] = (512, 30)) -> None:
        super().__init__()
        if len(hidden) != 2:
            raise ValueError(f"hidden must be (attention width, embedding width), got {hidden}")
        width, latent = hidden
        self.conv1 = STAGATEConv(n_inputs, width, attention=True)
        self.conv2 = STAGATEConv(width, latent, attention=False)

    def encode(self, x: torch.Tensor, graph: Graph, *, fused: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, coef)``: the embedding and conv1's attention, which the decoder reuses."""
        h1, coef = self.conv1(x, graph, fused=fused)
        z, _ = self.conv2(F.elu(h1), graph)
        assert coef is not None
        return z, coef

    def decode(self, z: torch.Tensor, coef: torch.Tensor, graph: Graph, *, fused: bool = True) -> torch.Tensor:
        # conv3 = (W2^T, conv1's attention); conv4 = W1^T, no propagation.
        h3 = F.elu(self.conv1.weighted_sum(z @ self.conv2.weight.t(), coef, graph, fused=fused))
        return h3 @ self.conv1.weight.t()

    def forward(self, x: torch.Tensor, graph: Graph, *, fused: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        z, coef = self.encode(x, graph, fused=fused)
        return z, self.decode(z, coef, graph, fused=fused)


def stagate_graph(adjacency: sp.spmatrix, n_cells: int, device: torch.device) -> Graph:
    """The graph STAGATE propagates over: the validated spatial pattern plus self-loops."""
    a = as_adjacency(adjacency, n_cells)
    return make_graph(a + sp.eye(n_cells, dtype=np.float32, format="csr"), device)
