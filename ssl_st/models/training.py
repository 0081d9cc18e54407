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
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

# (network, dense batch, random generator) -> scalar loss
Objective = Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]
EpochCallback = Callable[[int, float, float], None]
# (network, optimizer steps per epoch) -> optimizer and an optional scheduler stepped after every step
OptimizerFactory = Callable[[nn.Module, int], tuple[torch.optim.Optimizer, "torch.optim.lr_scheduler.LRScheduler | None"]]


@dataclass(frozen=True)
class LoopConfig:
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    gradient_clip: float | None = 1.0
    validation_fraction: float = 0.1
    drop_last: bool = False  # objectives with batch statistics (Barlow Twins) need full batches


@dataclass(frozen=True)
class AdamWConfig:
    """The AdamW schedule the masked autoencoders share (upstream: lr 1e-3, weight decay 0.01, clip 1)."""

    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    validation_fraction: float = 0.1
    gradient_clip: float = 1.0

    def loop(self) -> LoopConfig:
        return LoopConfig(**{f.name: getattr(self, f.name) for f in fields(AdamWConfig)})


def _batches(matrix: sp.csr_matrix, order: np.ndarray, size: int, device: torch.device, drop_last: bool = False):
    stop = len(order) - (len(order) % size if drop_last and len(order) >= size else 0)
    for start in range(0, stop, size):
        rows = order[start : start + size]
        yield torch.from_numpy(matrix[rows].toarray()).to(device, non_blocking=True)


def fit(
    network: nn.Module,
    objective: Objective,
    inputs: sp.csr_matrix,
    config: LoopConfig,
    *,
    seed: int,
    device: torch.device,
    on_epoch: EpochCallback | None = None,
    make_optimizer: OptimizerFactory | None = None,
    log_dir: str | Path | None = None,
) -> dict:
    """Train ``network`` on ``objective``; restore the weights of the best validation epoch.

    The optimizer defaults to AdamW(learning_rate, weight_decay). ``log_dir`` receives TensorBoard
    curves (``loss/train``, ``loss/val`` per epoch, ``lr`` per step).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(inputs.shape[0])
    n_val = int(round(len(order) * config.validation_fraction))
    val_rows, train_rows = order[:n_val], order[n_val:]
    if len(train_rows) < (config.batch_size if config.drop_last else 1):
        raise ValueError(f"{len(train_rows)} training cells cannot fill one batch of {config.batch_size}; lower batch_size")
    network.to(device)
    steps_per_epoch = len(train_rows) // config.batch_size if config.drop_last else math.ceil(len(train_rows) / config.batch_size)
    if make_optimizer is None:
        optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        scheduler = None
    else:
        optimizer, scheduler = make_optimizer(network, steps_per_epoch)
    writer = _writer(log_dir)
    step_gen = torch.Generator(device=device).manual_seed(seed)
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
    best = (math.inf, -1, copy.deepcopy(network.state_dict()))
    steps = 0
    for epoch in range(config.epochs):
        network.train()
        total, count = 0.0, 0
        for batch in _batches(inputs, rng.permutation(train_rows), config.batch_size, device, config.drop_last):
            loss = objective(network, batch, step_gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.gradient_clip:
                nn.utils.clip_grad_norm_(network.parameters(), config.gradient_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if writer is not None:
                writer.add_scalar("lr", optimizer.param_groups[0]["lr"], steps)
            total += loss.item() * len(batch)
            count += len(batch)
            steps += 1
        train_loss = total / max(count, 1)
        val_loss = _evaluate(network, objective, inputs, val_rows, config.batch_size, device, seed)
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        if writer is not None:
            writer.add_scalar("loss/train", train_loss, epoch)
            writer.add_scalar("loss/val", val_loss, epoch)
        if val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(network.state_dict()))
        if on_epoch is not None:
            on_epoch(epoch, train_loss, val_loss)
    if writer is not None:
        writer.close()
    network.load_state_dict(best[2])
    network.eval()
    return {**history, "best_epoch": best[1], "epochs_run": config.epochs, "steps": steps}


def _writer(log_dir: str | Path | None):
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter  # optional cost: only when curves are wanted

    return SummaryWriter(log_dir=str(log_dir))


@torch.no_grad()
def _evaluate(network, objective, inputs, rows, batch_size, device, seed) -> float:
    if len(rows) == 0:
        return math.nan
    network.eval()
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    total = sum(float(objective(network, b, gen)) * len(b) for b in _batches(inputs, rows, batch_size, device))
    return total / len(rows)


def pretrain_network(
    method: str,
    inputs: sp.csr_matrix,
    vocabulary,
    architecture,
    objective: Objective,
    config: LoopConfig,
    *,
    seed: int,
    device: str,
    on_epoch: EpochCallback | None = None,
    log_dir: str | Path | None = None,
    make_optimizer: OptimizerFactory | None = None,
    training: dict | None = None,
):
    """The common run of every pretraining method: seeded init of the method's network, :func:`fit`,
    and an :class:`~ssl_st.models.SSLModel` whose ``training`` record holds ``training`` + history."""
    from .base import SSLModel, resolve_device  # base imports nothing from here; avoid a cycle anyway

    torch.manual_seed(seed)
    network = architecture.build(len(vocabulary), method)
    history = fit(
        network, objective, inputs, config, seed=seed, device=resolve_device(device),
        on_epoch=on_epoch, make_optimizer=make_optimizer, log_dir=log_dir,
    )  # fmt: skip
    network.cpu()
    return SSLModel(network, vocabulary, architecture, method, {**(training or {}), "seed": seed, **history})
