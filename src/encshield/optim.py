"""Optimisers and learning-rate schedules shared by every training loop.

* :class:`LARS` (You et al., 2017, "Large Batch Training of Convolutional Networks"), as used by
  the SimCLR/BYOL recipes and solo-learn: SGD with momentum whose per-parameter step
  ``g + wd * w`` is scaled by the trust ratio ``eta * ||w|| / (||g|| + wd * ||w|| + 1e-8)``
  (``||g||`` the norm of the loss gradient alone); with solo-learn's ``clip_lr`` the ratio
  becomes ``min(ratio / lr, 1)``. Biases and normalisation parameters (1-D tensors) are
  excluded from the adaptation and from weight decay, as in those recipes.
* :func:`warmup_cosine`: linear warm-up then cosine decay, evaluated per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Literal, overload

import torch
from pydantic import BaseModel, ConfigDict, Field


class OptimizerConfig(BaseModel):
    """Optimiser and schedule of a training run."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["sgd", "lars", "adam", "adamw"] = "lars"
    lr: float = Field(0.4, gt=0, description="base learning rate for a batch of 256")
    scale_lr_with_batch: bool = Field(True, description="lr = lr * batch_size / 256")
    weight_decay: float = Field(1e-5, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    eta: float = Field(0.02, gt=0, description="LARS trust coefficient")
    clip_lr: bool = Field(False, description="LARS: trust ratio min(ratio / lr, 1) (solo-learn)")
    warmup_epochs: float = Field(10, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr as a fraction of the peak")


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (LARS; You et al., 2017).

    For a parameter ``w`` with ``ndim > 1`` and loss gradient ``g`` (both norms non-zero) the
    step direction is ``d = (g + wd * w) * r`` with the trust ratio
    ``r = eta * ||w|| / (||g|| + wd * ||w|| + eps)``, and with ``clip_lr``
    ``r = min(r / lr, 1)`` (solo-learn's ``clip_lars_lr``: the effective rate ``lr * r`` never
    exceeds ``lr``). Then ``buf = momentum * buf + d`` (``buf = d`` at the first step) and
    ``w -= lr * buf``. Parameters with ``ndim <= 1`` (biases, BN affine), and a parameter whose
    weight or gradient norm is zero, get the plain gradient: no trust ratio, no weight decay.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        eta: float = 0.02,
        clip_lr: bool = False,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta,
                                      clip_lr=clip_lr, eps=eps))

    @overload
    def step(self, closure: None = None) -> None: ...
    @overload
    def step(self, closure: Callable[[], float]) -> float: ...
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            wd, lr = group["weight_decay"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim > 1:
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(grad)
                    trust = group["eta"] * w_norm / (g_norm + wd * w_norm + group["eps"])
                    if group.get("clip_lr", False):
                        trust = (trust / lr).clamp(max=1.0) if lr > 0 else torch.ones_like(trust)
                    scaled = grad.add(p, alpha=wd).mul_(trust)
                    grad = torch.where((w_norm > 0) & (g_norm > 0), scaled, grad)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = grad.clone()
                else:
                    buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-lr)
        return loss


def build_optimizer(
    params: Iterable[torch.nn.Parameter], config: OptimizerConfig, batch_size: int
) -> torch.optim.Optimizer:
    """The optimiser of ``config`` with its peak learning rate for ``batch_size``."""
    lr = config.lr * (batch_size / 256 if config.scale_lr_with_batch else 1.0)
    params = list(params)
    if config.name == "lars":
        return LARS(params, lr, config.weight_decay, config.momentum, config.eta,
                    clip_lr=config.clip_lr)
    if config.name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based): linear warm-up, cosine decay."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, peak_lrs: list[float], multiplier: float) -> None:
    """Set every param group's lr to its peak times ``multiplier``."""
    for group, peak in zip(optimizer.param_groups, peak_lrs, strict=True):
        group["lr"] = peak * multiplier
