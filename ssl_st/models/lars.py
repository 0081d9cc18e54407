"""LARS (You et al. 2017) and the warmup-cosine schedule, as Barlow Twins trains with them.

LARS is SGD with momentum whose step for each weight tensor is rescaled by a layer-wise trust ratio
``eta * ||w|| / ||g + wd * w||``, so every layer moves by a similar fraction of its own norm.
Following upstream (Richter et al. 2024, itself after Zbontar et al. 2021), 1-D parameters (biases,
batch-norm scales) get neither weight decay nor the trust ratio.

Deliberate difference from upstream: upstream built a new LARS at every training step, so its momentum
buffers were always empty and it trained without momentum. This is an ordinary optimizer, built once,
whose buffers persist across steps (and travel in ``state_dict``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio; every group option can be set per group."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.2,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        eta: float = 0.001,
        exclude_1d: bool = True,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or eta <= 0:
            raise ValueError(f"invalid LARS settings: lr={lr}, weight_decay={weight_decay}, momentum={momentum}, eta={eta}")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, exclude_1d=exclude_1d)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                adapt = not (group["exclude_1d"] and p.ndim == 1)
                if adapt:
                    update = update.add(p, alpha=group["weight_decay"])
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    # a zero weight or zero update has no meaningful ratio: fall back to plain SGD
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), group["eta"] * w_norm / u_norm, torch.ones_like(w_norm))
                    update = update * ratio
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"]
                buffer.mul_(group["momentum"]).add_(update)
                p.add_(buffer, alpha=-group["lr"])
        return loss


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, final_fraction: float = 0.001
) -> LambdaLR:
    """Linear warmup to each group's base lr over ``warmup_steps``, then a cosine decay that reaches
    ``final_fraction`` of it at ``total_steps`` (and stays there).

    Step them after every optimizer step. Step ``s`` (0-based) warms up at ``(s + 1) / warmup_steps``,
    so no step is wasted at lr 0 as in upstream's ``s / warmup_steps``.
    """
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(f"need total_steps >= 1 and warmup_steps >= 0, got {total_steps} and {warmup_steps}")
    warmup_steps = min(warmup_steps, total_steps - 1)  # leave at least one step to decay over

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        q = 0.5 * (1.0 + math.cos(math.pi * progress))
        return q + final_fraction * (1.0 - q)

    return LambdaLR(optimizer, factor)
