"""Projected gradient descent (PGD), L-inf and L2.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018: start at a uniformly random point of the ball, take ``steps`` steepest-ascent
steps of size ``step_size`` on the loss (``sign`` of the gradient for L-inf, the normalised
gradient for L2), projecting onto the ball and [0, 1] after each step; the step size defaults to
``2.5 * eps / steps`` (the paper's rule, so that the walk can cross the ball).

Beyond the paper (as in AutoAttack's bookkeeping): per sample the attack returns the first
misclassified iterate, else the highest-loss one (``keep_best="misclassified"``, the default for
evaluation), or the highest-loss iterate (``"loss"``), or Madry's plain last iterate (``"last"``,
e.g. inside adversarial training). With ``restarts > 1`` each restart begins at a new random
start and only attacks the samples not yet broken; the best point per sample is kept, and the
first restarts are exactly those of a run with fewer restarts, so more restarts never hurt. With
an explicit ``step_size`` the first ``k`` iterates do not depend on ``steps``, so more steps
never hurt either.

Cost: ``steps * restarts * eot_samples`` forward+backward passes w.r.t. the input, plus one
forward per restart to score the last iterate (none with ``keep_best="last"``); the loss of each
iterate is taken from its gradient pass.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from encshield.attacks.whitebox.base import (
    WHITEBOX_ATTACKS,
    Ball,
    Best,
    KeepBest,
    Norm,
    Predict,
    Problem,
    WhiteboxAttack,
    WhiteboxAttackConfig,
    restarts_driver,
)
from encshield.attacks.whitebox.objectives import Objective
from encshield.attacks.whitebox.runner import attack_setup
from encshield.config import validate

__all__ = ["PGDConfig", "PGDL2Config", "pgd", "run_pgd"]


class PGDConfig(WhiteboxAttackConfig):
    """PGD (L-inf by default).

    Attributes:
        eps: budget (default 8/255 for L-inf).
        steps: gradient steps per restart, >= 1.
        step_size: step per iteration; ``None`` = ``2.5 * eps / steps`` (Madry et al.).
        random_start: start at a random point of the ball (else at ``x``).
        start_distribution: ``uniform`` in the ball (Madry et al.) or ``normal``:
            ``x + start_std * N(0, I)`` (the official MART and TRADES code, std 0.001).
        start_std: standard deviation of the ``normal`` start, > 0.
        restarts: random restarts, >= 1; the best point per sample is kept.
        targeted: ``y`` holds target labels; maximise ``-objective(outputs, y)``; success =
            classified as the target.
        keep_best: ``misclassified`` | ``loss`` | ``last`` (see the module docstring).
    """

    steps: int = Field(10, ge=1)
    step_size: float | None = Field(None, gt=0)
    random_start: bool = True
    start_distribution: Literal["uniform", "normal"] = "uniform"
    start_std: float = Field(0.001, gt=0)
    restarts: int = Field(1, ge=1)
    targeted: bool = False
    keep_best: KeepBest = "misclassified"

    @model_validator(mode="after")
    def _last_needs_one_restart(self) -> PGDConfig:
        if self.keep_best == "last" and self.restarts != 1:
            raise ValueError("keep_best='last' needs restarts=1 (several restarts keep the best)")
        return self


class PGDL2Config(PGDConfig):
    """PGD in the L2 ball (default budget 0.5 per sample, as in the usual CIFAR-10 L2 setting)."""

    eps: float = Field(0.5, gt=0)
    norm: Norm = "l2"


def _pgd_once(
    problem: Problem, ball: Ball, start: torch.Tensor, *, steps: int, step_size: float, mode: str
) -> Best:
    """One PGD run from ``start`` (modified in place); returns the best point per sample."""
    x_adv = start
    best = Best(x_adv, mode)
    for _ in range(steps):
        loss, success, grad = problem.evaluate(x_adv, grad=True)
        best.update(x_adv, loss, success)
        assert grad is not None
        ball.step_(x_adv, grad, step_size)
        ball.project_(x_adv)
    return best.score(problem, x_adv)


def run_pgd(
    model: nn.Module, x: torch.Tensor, y: Any, config: PGDConfig, seed: int = 0
) -> torch.Tensor:
    """PGD with a validated :class:`PGDConfig` (see :func:`pgd`)."""
    step_size = (config.step_size if config.step_size is not None
                 else 2.5 * config.eps / config.steps)
    with attack_setup(model, x, y, config, seed, targeted=config.targeted) as run:
        problem, ball, generator = run.problem, run.ball, run.generator

        def start_point() -> torch.Tensor:
            return ball.random_start(generator, distribution=config.start_distribution,
                                     std=config.start_std)

        if config.keep_best == "last":
            x_adv = start_point() if config.random_start else run.x.clone()
            for _ in range(config.steps):
                _, _, grad = problem.evaluate(x_adv, grad=True)
                assert grad is not None
                ball.step_(x_adv, grad, step_size)
                ball.project_(x_adv)
            return x_adv

        def once(sub: Problem, sub_ball: Ball, start: torch.Tensor) -> Best:
            return _pgd_once(sub, sub_ball, start, steps=config.steps, step_size=step_size,
                             mode=config.keep_best)

        best = restarts_driver(problem, ball, restarts=config.restarts, mode=config.keep_best,
                               generator=generator, random_start=config.random_start,
                               run_once=once, start_distribution=config.start_distribution,
                               start_std=config.start_std)
    return best.x


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: Any,
    *,
    eps: float = 8 / 255,
    norm: Norm = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    start_distribution: Literal["uniform", "normal"] = "uniform",
    start_std: float = 0.001,
    restarts: int = 1,
    targeted: bool = False,
    objective: str | Objective = "ce",
    eot_samples: int = 1,
    keep_best: KeepBest = "misclassified",
    predict: Predict | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """PGD (Madry et al., ICLR 2018) in the L-inf or L2 ball around ``x``.

    Args:
        model: images float ``(N, C, H, W)`` in [0, 1] -> outputs (logits ``(N, K)``, features,
            or anything a custom ``objective`` understands).
        x: clean images float ``(N, C, H, W)`` in [0, 1].
        y: labels int64 ``(N,)`` (target labels when ``targeted``), reference features
            ``(N, D)`` for a feature objective, or whatever a custom objective takes (a tensor or
            a tuple of tensors indexed by sample).
        eps: budget: L-inf in [0, 1] pixel units (8/255) or L2 norm per sample.
        norm: ``linf`` or ``l2``.
        steps, step_size, random_start, start_distribution, start_std, restarts, targeted,
            keep_best: see :class:`PGDConfig`.
        objective: name in :data:`~encshield.attacks.whitebox.objectives.OBJECTIVES` or a
            callable ``(outputs, y) -> (N,)`` to maximise.
        eot_samples: gradients (and losses) averaged over that many passes (EOT).
        predict: ``outputs -> labels (N,)`` for the success test (default argmax of logits).
        seed: seeds the random starts and the model's own randomness (global RNG restored).

    Returns:
        ``x_adv``: same shape/dtype/device as ``x``, in [0, 1], within the budget, detached.
    """
    config = validate(PGDConfig, dict(
        eps=eps, norm=norm, steps=steps, step_size=step_size, random_start=random_start,
        start_distribution=start_distribution, start_std=start_std, restarts=restarts,
        targeted=targeted, objective=objective, eot_samples=eot_samples, keep_best=keep_best,
        predict=predict))
    return run_pgd(model, x, y, config, seed)


WHITEBOX_ATTACKS.add("pgd", WhiteboxAttack(
    "pgd", PGDConfig, run_pgd, "PGD L-inf (Madry et al. 2018), random start, restarts"),
    aliases=("pgd_linf",))
WHITEBOX_ATTACKS.add("pgd_l2", WhiteboxAttack(
    "pgd_l2", PGDL2Config, run_pgd, "PGD L2 (Madry et al. 2018), random start, restarts"))
