"""Sign-gradient ascent of a universal delta: the optimiser of SSP and PAP/L4A.

Each step draws a mini-batch of surrogate images (seeded, reshuffled every pass), computes the
attack's loss of ``clamp(x + delta, 0, 1)`` (to maximise), takes its gradient with respect to the
delta only (:func:`torch.autograd.grad`) and applies
``delta <- clip(delta + alpha * sign(grad), -eps, eps)``, as in the PAP repository's implementations
(docs/methods.md, "Universal attacks"). The delta starts at ``U(-eps, eps)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field

from encshield.attacks.universal.base import FitContext, UniversalAttackConfig

__all__ = ["SignAscentConfig", "perturb", "sign_ascent"]


def perturb(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``clamp(x + delta, 0, 1)`` (differentiable in ``delta`` where not clamped)."""
    return (x + delta).clamp(0, 1)


class SignAscentConfig(UniversalAttackConfig):
    """Optimisation settings of the sign-ascent attacks (SSP, PAP)."""

    batch_size: int = Field(32, ge=1, description="surrogate images per step")
    steps: int = Field(
        300, ge=1, description="ascent steps (mini-batches); the surrogate set is cycled"
    )
    step_size: float = Field(
        2e-3, gt=0,
        description="alpha of delta <- delta + alpha * sign(grad) (pixels in [0, 1])",
    )
    init: Literal["uniform", "zero"] = Field(
        "uniform", description="initial delta: uniform U(-eps, eps) or zero"
    )


def sign_ascent(
    context: FitContext,
    config: SignAscentConfig,
    loss: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    description: str,
) -> torch.Tensor:
    """Maximise ``loss(x, delta, step)`` (a scalar) over the universal delta; returns it
    ``(C, H, W)``.

    ``x`` is the clean float batch and ``delta`` the differentiable universal delta (apply it with
    :func:`perturb`). The mean loss over every tenth of the run is appended to
    ``context.history``.
    """
    eps = context.eps
    if config.init == "uniform":
        delta = context.uniform_delta()
    else:
        delta = torch.zeros(context.image_shape, device=context.device)
    batches = context.stream(config.batch_size)
    chunk = max(1, config.steps // 10)
    running, count = 0.0, 0
    with context.bar(config.steps, description) as advance:
        for step in range(config.steps):
            x = next(batches)
            delta.requires_grad_(True)
            value = loss(x, delta, step)
            (grad,) = torch.autograd.grad(value, delta)
            with torch.no_grad():
                delta = (delta + config.step_size * grad.sign()).clamp(-eps, eps)
            running += float(value.detach())
            count += 1
            if (step + 1) % chunk == 0 or step + 1 == config.steps:
                context.history.append({"step": step + 1, "loss": running / count})
                advance(count, info=f"loss {running / count:.4g}")
                running, count = 0.0, 0
    return delta.detach()
