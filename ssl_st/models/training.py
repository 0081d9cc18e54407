"""A small, explicit training loop for self-supervised objectives on sparse single-cell matrices.

Batches stay sparse on the host and are densified one at a time on the device, because a dense
cells x 19,331 float32 matrix is 77 KB per cell. Validation uses a fixed, seeded view of the
objective's randomness so that its loss is comparable across epochs (upstream resamples the mask in
every validation step, which makes "best validation checkpoint" partly a lottery).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

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


def _batches(matrix: sp.csr_matrix, order: np.ndarray, size: int, device: torch.device, drop_last: bool = False,
             rank: int = 0, world: int = 1):
    """Dense batches of ``size`` rows in ``order``; of each, worker ``rank`` of ``world`` takes every
    ``world``-th row (a batch too small to give every worker a row is skipped by all of them)."""
    stop = len(order) - (len(order) % size if drop_last and len(order) >= size else 0)
    for start in range(0, stop, size):
        rows = order[start : start + size]
        if world > 1:
            if len(rows) < world:
                continue
            rows = rows[rank::world]
        yield torch.from_numpy(matrix[rows].toarray()).to(device, non_blocking=True)


class BatchSource(Protocol):
    """Where a :class:`TrainingLoop` gets its batches: the in-memory matrix (:class:`MatrixBatches`)
    or a stream of shards (:class:`ssl_st.shards.stream.StreamBatches`). The loop is the same for
    both; a source decides the sampling, the held-out cells and what of it a checkpoint must keep."""

    steps_per_epoch: int  # optimiser steps in every epoch (the schedule is built from it)
    n_validation: int  # held-out cells

    def train_batches(self, epoch: int) -> Iterator[torch.Tensor]:
        """This worker's dense batches of ``epoch``."""

    def validation_batches(self) -> Iterator[torch.Tensor]:
        """Every held-out cell, the same batches every epoch."""

    def epoch_facts(self) -> dict[str, Any]:
        """Anything about the epoch just trained worth keeping in the history (one value per key)."""

    def state_dict(self) -> dict[str, Any]:
        """What the next epoch's sampling depends on (merged into the loop's checkpoint)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MatrixBatches:
    """Batches from a CSR matrix in memory: a seeded split into training and validation cells, and a
    fresh permutation of the training cells every epoch, drawn from one generator whose state
    travels in the checkpoint (key ``rng``). Of each global batch, worker ``rank`` of ``world`` takes
    every ``world``-th row, so the steps do not depend on the number of workers."""

    def __init__(self, inputs: sp.csr_matrix, plan: Pretraining, *, seed: int, device: torch.device, rank: int = 0,
                 world: int = 1) -> None:
        self.inputs, self.batch_size, self.drop_last = inputs, plan.batch_size, plan.drop_last
        self.device, self.rank, self.world = device, rank, world
        self.rng = np.random.default_rng(seed)
        order = self.rng.permutation(inputs.shape[0])
        n_val = int(round(len(order) * plan.validation_fraction))
        self.val_rows, self.train_rows = order[:n_val], order[n_val:]
        if len(self.train_rows) < (plan.batch_size if plan.drop_last else 1):
            raise ValueError(f"{len(self.train_rows)} training cells cannot fill one batch of {plan.batch_size}; "
                             "lower batch_size")
        per_epoch = len(self.train_rows) / plan.batch_size
        self.steps_per_epoch = int(per_epoch) if plan.drop_last else math.ceil(per_epoch)
        self.n_validation = len(self.val_rows)

    def train_batches(self, epoch: int) -> Iterator[torch.Tensor]:
        return _batches(self.inputs, self.rng.permutation(self.train_rows), self.batch_size, self.device,
                        self.drop_last, self.rank, self.world)

    def validation_batches(self) -> Iterator[torch.Tensor]:
        return _batches(self.inputs, self.val_rows, self.batch_size, self.device)

    def epoch_facts(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


class TrainingLoop:
    """The epochs of one pretraining run, resumable at any epoch boundary.

    One process (``rank=0, world=1``, as :func:`fit` runs it) or one data-parallel worker of
    ``world`` (:mod:`ssl_st.models.distributed`): every worker steps on the gradient averaged over
    workers, which ``network`` (a DDP wrapper there) does. ``inputs`` is the batch source: a CSR
    matrix (wrapped in :class:`MatrixBatches`: every worker draws the same seeded split and the same
    global batches and takes every ``world``-th cell of each, so the steps and the learning-rate
    schedule do not depend on the number of workers, and one worker trains exactly as :func:`fit`)
    or any :class:`BatchSource` (a stream of shards). Each worker draws its masks from its own
    generator (``seed + rank``). :meth:`state_dict` holds everything the next epoch depends on, the
    random states included.
    """

    def __init__(self, network: nn.Module, loss_fn: LossFn, inputs: sp.csr_matrix | BatchSource, plan: Pretraining,
                 *, seed: int, device: torch.device, module: nn.Module | None = None, rank: int = 0, world: int = 1,
                 log_dir: str | Path | None = None) -> None:
        self.network, self.module = network, module if module is not None else network  # module: unwrapped
        self.loss_fn, self.plan, self.seed, self.device = loss_fn, plan, seed, device
        self.rank, self.world = rank, world
        self.source: BatchSource = (MatrixBatches(inputs, plan, seed=seed, device=device, rank=rank, world=world)
                                    if sp.issparse(inputs) else inputs)
        self.module.to(device)
        self.steps_per_epoch = self.source.steps_per_epoch
        self.optimizer, self.scheduler = plan.optimizer(self.module, self.steps_per_epoch)
        self.writer = _writer(log_dir)
        self.step_gen = torch.Generator(device=device).manual_seed(seed + rank)
        self.history: dict[str, list[Any]] = {"train_loss": [], "val_loss": []}
        self.best = (math.inf, -1, copy.deepcopy(self.module.state_dict()))
        self.epoch, self.steps = 0, 0

    def run_epoch(self) -> tuple[float, float]:
        """Train one epoch, then validate; returns (train loss, validation loss)."""
        plan, network = self.plan, self.network
        network.train()
        total, count = 0.0, 0
        for batch in self.source.train_batches(self.epoch):
            loss = self.loss_fn(network, batch, self.step_gen)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if plan.gradient_clip:
                nn.utils.clip_grad_norm_(self.module.parameters(), plan.gradient_clip)
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            if self.writer is not None:
                self.writer.add_scalar("lr", self.optimizer.param_groups[0]["lr"], self.steps)
            total += loss.item() * len(batch)
            count += len(batch)
            self.steps += 1
        if self.world > 1:  # the epoch's loss over every worker's cells
            import torch.distributed as dist

            sums = torch.tensor([total, count], dtype=torch.float64, device=self.device)
            dist.all_reduce(sums)
            total, count = float(sums[0]), int(sums[1])
        train_loss = total / max(count, 1)
        # Every worker validates on all validation cells with the same weights and the same seeded
        # generator, so all of them agree on the best epoch without communicating.
        val_loss = _evaluate(network, self.loss_fn, self.source, self.device, self.seed)
        self.history["train_loss"].append(train_loss)
        self.history["val_loss"].append(val_loss)
        for key, value in self.source.epoch_facts().items():
            self.history.setdefault(key, []).append(value)
        if self.writer is not None:
            self.writer.add_scalar("loss/train", train_loss, self.epoch)
            self.writer.add_scalar("loss/val", val_loss, self.epoch)
        if val_loss < self.best[0]:
            self.best = (val_loss, self.epoch, copy.deepcopy(self.module.state_dict()))
        self.epoch += 1
        return train_loss, val_loss

    def state_dict(self) -> dict:
        """What the next epoch depends on: the weights, optimiser and schedule, the best epoch so far,
        the batch source's state (the shared batch order), and this worker's random states (:meth:`worker_state`)."""
        return {"epoch": self.epoch, "steps": self.steps, "history": copy.deepcopy(self.history),
                "best": self.best, "network": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                **self.source.state_dict(), "worker": self.worker_state()}

    def worker_state(self) -> dict:
        """This worker's own random states: its mask generator, and torch's global generator, which
        dropout draws from (one per worker of a data-parallel run)."""
        state = {"step_gen": self.step_gen.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.steps, self.history, self.best = state["epoch"], state["steps"], state["history"], state["best"]
        self.module.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.source.load_state_dict(state)
        worker = state["worker"]
        self.step_gen.set_state(worker["step_gen"])
        torch.set_rng_state(worker["torch"])
        if "cuda" in worker and self.device.type == "cuda":
            torch.cuda.set_rng_state(worker["cuda"], self.device)

    def finish(self) -> dict:
        """Restore the best validation epoch's weights; returns the run's record."""
        if self.writer is not None:
            self.writer.close()
        self.module.load_state_dict(self.best[2])
        self.module.eval()
        return {**self.history, "best_epoch": self.best[1], "epochs_run": self.epoch, "steps": self.steps}


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
    """Train ``network`` on ``loss_fn`` with the loop settings and optimizer of ``plan`` in this
    process; restore the weights of the best validation epoch.

    ``log_dir`` receives TensorBoard curves (``loss/train``, ``loss/val`` per epoch, ``lr`` per step).
    """
    loop = TrainingLoop(network, loss_fn, inputs, plan, seed=seed, device=device, log_dir=log_dir)
    while loop.epoch < plan.epochs:
        train_loss, val_loss = loop.run_epoch()
        if on_epoch is not None:
            on_epoch(loop.epoch - 1, plan.epochs, train_loss, val_loss)
    return loop.finish()


def _writer(log_dir: str | Path | None):
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter  # optional cost: only when curves are wanted

    return SummaryWriter(log_dir=str(log_dir))


@torch.no_grad()
def _evaluate(network, loss_fn, source: BatchSource, device, seed) -> float:
    """The mean loss over the held-out cells, with the objective's randomness drawn from a generator
    seeded the same way every epoch."""
    if source.n_validation == 0:
        return math.nan
    network.eval()
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    total = sum(float(loss_fn(network, b, gen)) * len(b) for b in source.validation_batches())
    return total / source.n_validation
