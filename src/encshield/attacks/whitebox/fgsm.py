"""Fast gradient sign method (FGSM): one steepest-ascent step.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015:
``x_adv = clip(x + eps * sign(grad_x loss))``. Options: an L2 step (``g / ||g||_2``), a random
start in the ball before the step (R+FGSM-style; Tramèr et al., ICLR 2018, and the "fast"
adversarial training of Wong et al., ICLR 2020), targeted steps and EOT-averaged gradients.

Cost: one forward+backward pass w.r.t. the input (times ``eot_samples``). Used by the sanity
checks (:mod:`encshield.attacks.whitebox.sanity`): a one-step attack that beats an iterative one
is a symptom of gradient masking.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from encshield.attacks.whitebox.base import (
    WHITEBOX_ATTACKS,
    Predict,
    WhiteboxAttack,
    WhiteboxAttackConfig,
)
from encshield.attacks.whitebox.objectives import Objective
from encshield.attacks.whitebox.runner import attack_setup
from encshield.config import validate

__all__ = ["FGSMConfig", "fgsm", "run_fgsm"]


class FGSMConfig(WhiteboxAttackConfig):
    """FGSM.

    Attributes:
        step_size: size of the step; ``None`` = ``eps`` (the step ends on the ball's surface).
        random_start: take the step from a uniform random point of the ball instead of ``x``.
        targeted: ``y`` holds target labels; step on ``-objective(outputs, y)``.
    """

    step_size: float | None = Field(None, gt=0)
    random_start: bool = False
    targeted: bool = False


def run_fgsm(
    model: nn.Module, x: torch.Tensor, y: Any, config: FGSMConfig, seed: int = 0
) -> torch.Tensor:
    """FGSM with a validated :class:`FGSMConfig` (see :func:`fgsm`)."""
    step = config.step_size if config.step_size is not None else config.eps
    with attack_setup(model, x, y, config, seed, targeted=config.targeted) as run:
        ball = run.ball
        x_adv = ball.random_start(run.generator) if config.random_start else run.x.clone()
        _, _, grad = run.problem.evaluate(x_adv, grad=True)
        assert grad is not None
        ball.step_(x_adv, grad, step)
        return ball.project_(x_adv)


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: Any,
    *,
    eps: float = 8 / 255,
    norm: Literal["linf", "l2"] = "linf",
    step_size: float | None = None,
    random_start: bool = False,
    targeted: bool = False,
    objective: str | Objective = "ce",
    eot_samples: int = 1,
    predict: Predict | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """FGSM (Goodfellow et al., ICLR 2015): one signed-gradient (or L2) step of size ``eps``.

    Args:
        model: images float ``(N, C, H, W)`` in [0, 1] -> outputs (logits ``(N, K)``).
        x: clean images float ``(N, C, H, W)`` in [0, 1].
        y: labels int64 ``(N,)`` (targets when ``targeted``) or a custom objective's reference.
        eps: budget (L-inf in [0, 1] pixel units, or L2 per sample).
        Other arguments: see :class:`FGSMConfig` / :func:`encshield.attacks.whitebox.pgd`.

    Returns:
        ``x_adv`` like ``x``, in [0, 1] and within the budget.
    """
    config = validate(FGSMConfig, dict(
        eps=eps, norm=norm, step_size=step_size, random_start=random_start, targeted=targeted,
        objective=objective, eot_samples=eot_samples, predict=predict))
    return run_fgsm(model, x, y, config, seed)


WHITEBOX_ATTACKS.add("fgsm", WhiteboxAttack(
    "fgsm", FGSMConfig, run_fgsm, "FGSM: one signed-gradient step (Goodfellow et al. 2015)"))
