"""A small, explicit training loop for self-supervised objectives on sparse single-cell matrices.

Batches stay sparse on the host and are densified one at a time on the device, because a dense
cells x 19,331 float32 matrix is 77 KB per cell. Validation uses a fixed, seeded view of the
objective's randomness so that its loss is comparable across epochs (upstream resamples the mask in
every validation step, which makes "best validation checkpoint" partly a lottery).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

if TYPE_CHECKING:
    from .registry import Pretraining

# (network, dense batch, random generator) -> scalar loss
LossFn = Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]
# Called after every epoch of every training loop in ssl_st (pretraining here, fine-tuning and the
# supervised baseline in :mod:`ssl_st.tasks.finetune`) as ``on_epoch(epoch, total, train_loss,
# val_loss)``: ``epoch`` counts from 0 and ``total`` is the most epochs the loop will run, so that a
# caller can draw a bar and an ETA without knowing the loop's config. A loop with early stopping
# (fine-tuning) may end before ``epoch + 1 == total``; it never runs more.
EpochCallback = Callable[[int, int, float, float], None]


def _batches(matrix: sp.csr_matrix, order: np.ndarray, size: int, device: torch.device, drop_last: bool = False):
    stop = len(order) - (len(order) % size if drop_last and len(order) >= size else 0)
    for start in range(0, stop, size):
        rows = order[start : start + size]
        yield torch.from_numpy(matrix[rows].toarray()).to(device, non_blocking=True)


def fit(
    network: nn.Module,
    loss_fn: LossFn,
    inputs: sp.csr_matrix,
    plan: Pretraining,
    *,
    seed: int,
    device: torch.device,
    on_epoch: EpochCallback | None = None,
    log_dir: str | Path | None = None,
) -> dict:
    """Train ``network`` on ``loss_fn`` with the loop settings and optimizer of ``plan``; restore the
    weights of the best validation epoch.

    ``log_dir`` receives TensorBoard curves (``loss/train``, ``loss/val`` per epoch, ``lr`` per step).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(inputs.shape[0])
    n_val = int(round(len(order) * plan.validation_fraction))
    val_rows, train_rows = order[:n_val], order[n_val:]
    if len(train_rows) < (plan.batch_size if plan.drop_last else 1):
        raise ValueError(f"{len(train_rows)} training cells cannot fill one batch of {plan.batch_size}; lower batch_size")
    network.to(device)
    steps_per_epoch = len(train_rows) // plan.batch_size if plan.drop_last else math.ceil(len(train_rows) / plan.batch_size)
    optimizer, scheduler = plan.optimizer(network, steps_per_epoch)
    writer = _writer(log_dir)
    step_gen = torch.Generator(device=device).manual_seed(seed)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    best = (math.inf, -1, copy.deepcopy(network.state_dict()))
    steps = 0
    for epoch in range(plan.epochs):
        network.train()
        total, count = 0.0, 0
        for batch in _batches(inputs, rng.permutation(train_rows), plan.batch_size, device, plan.drop_last):
            loss = loss_fn(network, batch, step_gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if plan.gradient_clip:
                nn.utils.clip_grad_norm_(network.parameters(), plan.gradient_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if writer is not None:
                writer.add_scalar("lr", optimizer.param_groups[0]["lr"], steps)
            total += loss.item() * len(batch)
            count += len(batch)
            steps += 1
        train_loss = total / max(count, 1)
        val_loss = _evaluate(network, loss_fn, inputs, val_rows, plan.batch_size, device, seed)
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        if writer is not None:
            writer.add_scalar("loss/train", train_loss, epoch)
            writer.add_scalar("loss/val", val_loss, epoch)
        if val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(network.state_dict()))
        if on_epoch is not None:
            on_epoch(epoch, plan.epochs, train_loss, val_loss)
    if writer is not None:
        writer.close()
    network.load_state_dict(best[2])
    network.eval()
    return {**history, "best_epoch": best[1], "epochs_run": plan.epochs, "steps": steps}


def _writer(log_dir: str | Path | None):
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter  # optional cost: only when curves are wanted

    return SummaryWriter(log_dir=str(log_dir))


@torch.no_grad()
def _evaluate(network, loss_fn, inputs, rows, batch_size, device, seed) -> float:
    if len(rows) == 0:
        return math.nan
    network.eval()
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    total = sum(float(loss_fn(network, b, gen)) * len(b) for b in _batches(inputs, rows, batch_size, device))
    return total / len(rows)
