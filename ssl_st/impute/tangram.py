"""Tangram-style mapping ("cells" mode) of reference cells onto spatial cells, in torch on the CPU.

As in ``tangram/mapping_optimizer.py`` (Biancalani et al. 2021): a free matrix ``W`` (reference cells
x spatial cells, standard-normal start) gives ``M = softmax(W, dim=1)``, so each reference cell is a
distribution over the spatial cells. The predicted spatial expression is ``M^T S`` (``S``: reference
training genes) and Adam minimises

    loss = - lambda_g1 * mean_genes cos(M^T S, G)[columns]
           - lambda_g2 * mean_cells cos(M^T S, G)[rows]
           + lambda_d  * KL(d || M.sum(0) / n_ref)

with ``G`` the measured spatial training genes and ``d`` the density prior (``rna_count_based``: a
cell's share of all spatial counts over the training genes; ``uniform``: ``1 / n_spatial``). As in
Tangram's ``map_cells_to_space``, ``lambda_g1 = 1`` and ``lambda_d = 1`` when a density prior is
given. The imputed expression of a spatial cell is the ``M``-weighted average of its reference cells'
expression, i.e. the column of ``M^T X`` divided by the column sum of ``M``; Tangram's
``project_genes`` returns the unnormalised ``M^T X``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn.functional import cosine_similarity, kl_div, softmax

from ..threads import limited_threads


def tangram_weights(
    ref_log: np.ndarray,
    spatial_log: np.ndarray,
    density: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    lambda_g2: float,
    seed: int,
    threads: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Spatial-cell x reference-cell weights (rows sum to one) and the training scores.

    ``threads`` caps the CPU threads for the fit only (:func:`ssl_st.threads.limited_threads`).
    """
    with limited_threads(threads):
        S = torch.from_numpy(np.ascontiguousarray(ref_log, dtype=np.float32))
        G = torch.from_numpy(np.ascontiguousarray(spatial_log, dtype=np.float32))
        d = torch.from_numpy(np.asarray(density, dtype=np.float32))
        # A private generator: seeding the global torch RNG would change other code's random streams.
        generator = torch.Generator().manual_seed(seed)
        W = torch.randn(S.shape[0], G.shape[0], generator=generator, dtype=torch.float32).requires_grad_()
        optimiser = torch.optim.Adam([W], lr=learning_rate)
        history: list[float] = []
        for epoch in range(epochs):
            M = softmax(W, dim=1)
            predicted = M.t() @ S
            gene_score = cosine_similarity(predicted, G, dim=0).mean()
            loss = -gene_score
            if lambda_g2:
                loss = loss - lambda_g2 * cosine_similarity(predicted, G, dim=1).mean()
            # KL(d || d_pred) with KLDivLoss(reduction="sum") as Tangram writes it: log of the prediction first
            loss = loss + kl_div(torch.log(M.sum(dim=0) / M.shape[0]), d, reduction="sum")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if epoch % 50 == 0 or epoch == epochs - 1:
                history.append(round(gene_score.item(), 4))
        with torch.no_grad():
            M = softmax(W, dim=1)
            score = float(cosine_similarity(M.t() @ S, G, dim=0).mean())
            mass = M.sum(dim=0, keepdim=True)
            weights = (M / mass).t().contiguous().numpy()  # normalise per spatial cell: a weighted average
        info = {"train_score": round(score, 4), "score_history": history, "epochs": epochs}
        return weights, info
