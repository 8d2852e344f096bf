"""Square Attack (L-inf): score-based random search, no gradients.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020 (Algorithms 1 and 2, L-inf), implemented from the paper:

* initialisation: vertical stripes, ``x_hat = P(x + delta)`` with ``delta[c, :, j] = +-eps``
  drawn uniformly per channel ``c`` and column ``j``;
* each iteration proposes, per sample, a square window of side
  ``s = max(round(sqrt(p * h * w)), 1)`` (at most ``min(h, w)``) at a uniformly random position,
  where the perturbation of every channel ``c`` is set to a random ``+-eps`` (the paper's
  ``rho in {-2 eps, 2 eps}^c`` added to ``x_hat`` and projected: the same point);
  the rest of ``x_hat`` is kept. The proposal is accepted when it lowers the margin loss
  ``z_y - max_{j != y} z_j`` (here: raises the objective ``cw``), or misclassifies the sample;
* the fraction ``p`` of the image a window covers starts at ``p_init = 0.8`` and is halved after
  iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 (the paper's schedule for 10,000
  queries; ``rescale_schedule=True`` stretches it to ``queries``, AutoAttack keeps it as is).

Every sample gets its own window and signs (the authors' code draws one window per batch). A
sample stops being attacked when it is misclassified (``keep_best="misclassified"``: the first
misclassifying point is returned, else the lowest-margin one), and samples misclassified on the
clean input are not attacked. Cost: one forward without gradient on the clean batch, then
``1 + queries`` forwards (times ``eot_samples``) on the samples not yet broken; no backward pass.
Only L-inf is implemented.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn

from encshield.attacks.whitebox.base import (
    WHITEBOX_ATTACKS,
    Ball,
    Best,
    KeepBest,
    Predict,
    Problem,
    WhiteboxAttack,
    WhiteboxAttackConfig,
    clean_best,
    restarts_driver,
)
from encshield.attacks.whitebox.objectives import Objective
from encshield.attacks.whitebox.runner import attack_setup
from encshield.config import validate

__all__ = ["SquareConfig", "run_square", "square", "square_fraction"]

#: Iterations after which the paper halves ``p`` (for a budget of 10,000 queries).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


class SquareConfig(WhiteboxAttackConfig):
    """Square Attack (L-inf).

    Attributes:
        objective: loss to maximise; ``cw`` (default) is minus the paper's margin loss.
        queries: iterations after the stripe initialisation (5000 in AutoAttack), >= 1.
        p_init: initial fraction of the image covered by a window, in (0, 1] (0.8).
        rescale_schedule: stretch the halving iterations from 10,000 to ``queries`` queries.
        restarts: runs from new stripes on the samples not yet broken, >= 1.
        targeted: ``y`` holds targets; maximise ``-objective(outputs, y)``.
        keep_best: ``misclassified`` (first misclassifying point, else best) or ``loss``.
    """

    objective: str | Callable[..., Any] = "cw"
    queries: int = Field(5000, ge=1)
    p_init: float = Field(0.8, gt=0, le=1)
    rescale_schedule: bool = False
    restarts: int = Field(1, ge=1)
    targeted: bool = False
    keep_best: KeepBest = "misclassified"

    @model_validator(mode="after")
    def _linf_only(self) -> SquareConfig:
        if self.norm != "linf":
            raise ValueError("square implements the L-inf attack only; allowed values: linf")
        if self.keep_best == "last":
            raise ValueError("square keeps the best point; allowed values: misclassified, loss")
        return self


def square_fraction(iteration: int, queries: int, p_init: float, rescale: bool = False) -> float:
    """The fraction ``p`` of the image covered by the window at ``iteration`` (0-based).

    ``p_init`` halved after each of iterations 10, 50, 200, ..., 8000 (Andriushchenko et al.,
    ECCV 2020, for 10,000 queries); with ``rescale`` the iteration is first mapped to
    ``int(iteration / queries * 10000)``.
    """
    if rescale:
        iteration = int(iteration / queries * 10000)
    halvings = sum(1 for boundary in _HALVINGS if iteration > boundary)
    return float(p_init / 2**halvings)


def _window_side(p: float, h: int, w: int) -> int:
    return min(max(int(round(math.sqrt(p * h * w))), 1), h, w)


def _square_once(
    problem: Problem,
    ball: Ball,
    config: SquareConfig,
    generator: torch.Generator,
) -> Best:
    """One run of Algorithm 1 on ``ball.x``; returns the best point per sample."""
    x, eps = ball.x, ball.eps
    n, c, h, w = x.shape
    device, dtype = x.device, x.dtype
    best = Best(x, config.keep_best)

    def signs(shape: tuple[int, ...]) -> torch.Tensor:
        bits = torch.randint(0, 2, shape, generator=generator, device=device)
        return bits.to(dtype).mul_(2).sub_(1)

    stripes = signs((n, c, 1, w)).mul_(eps).expand(n, c, h, w)
    start = ball.project_(x + stripes)
    loss, success, _ = problem.evaluate(start, grad=False)
    best.update(start, loss, success)
    # broken samples stop being attacked unless the highest loss is wanted
    stop_broken = success is not None and config.keep_best == "misclassified"
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    active = torch.arange(n, device=device)
    for iteration in range(config.queries):
        if stop_broken:
            active = (~best.success).nonzero().squeeze(1)
            if active.numel() == 0:
                break
        m = active.numel()
        side = _window_side(square_fraction(iteration, config.queries, config.p_init,
                                            config.rescale_schedule), h, w)
        top = torch.randint(0, h - side + 1, (m,), generator=generator, device=device)
        left = torch.randint(0, w - side + 1, (m,), generator=generator, device=device)
        in_rows = (rows >= top[:, None]) & (rows < (top + side)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + side)[:, None])
        window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
        x_active = x[active]
        vertex = (x_active + signs((m, c, 1, 1)).mul_(eps)).clamp_(0.0, 1.0)
        proposal = torch.where(window, vertex, best.x[active])
        loss, success, _ = problem.subset(active).evaluate(proposal, grad=False)
        best.update_at(active, proposal, loss, success)
    return best


def run_square(
    model: nn.Module, x: torch.Tensor, y: Any, config: SquareConfig, seed: int = 0
) -> torch.Tensor:
    """Square Attack with a validated :class:`SquareConfig` (see :func:`square`)."""
    with attack_setup(model, x, y, config, seed, targeted=config.targeted) as run:

        def once(sub: Problem, sub_ball: Ball, _start: torch.Tensor) -> Best:
            return _square_once(sub, sub_ball, config, run.generator)

        best = restarts_driver(run.problem, run.ball, restarts=config.restarts,
                               mode=config.keep_best, generator=run.generator, random_start=False,
                               run_once=once, overall=clean_best(run.problem, run.x,
                                                                 config.keep_best))
    return best.x


def square(
    model: nn.Module,
    x: torch.Tensor,
    y: Any,
    *,
    eps: float = 8 / 255,
    queries: int = 5000,
    p_init: float = 0.8,
    rescale_schedule: bool = False,
    restarts: int = 1,
    targeted: bool = False,
    objective: str | Objective = "cw",
    eot_samples: int = 1,
    keep_best: KeepBest = "misclassified",
    predict: Predict | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Square Attack (Andriushchenko et al., ECCV 2020), L-inf, from model outputs only.

    Args:
        model: images float ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K)``.
        x: clean images float ``(N, C, H, W)`` in [0, 1].
        y: labels int64 ``(N,)`` (targets when ``targeted``).
        eps: L-inf budget in [0, 1] pixel units.
        queries, p_init, rescale_schedule, restarts, targeted, objective, keep_best: see
            :class:`SquareConfig`.
        eot_samples: forward passes averaged per evaluated point (EOT).
        predict: ``outputs -> labels (N,)`` for the success test.
        seed: seeds the random search (the global RNG is restored).

    Returns:
        ``x_adv`` like ``x``, in [0, 1] and within the budget.
    """
    config = validate(SquareConfig, dict(
        eps=eps, queries=queries, p_init=p_init, rescale_schedule=rescale_schedule,
        restarts=restarts, targeted=targeted, objective=objective, eot_samples=eot_samples,
        keep_best=keep_best, predict=predict))
    return run_square(model, x, y, config, seed)


WHITEBOX_ATTACKS.add("square", WhiteboxAttack(
    "square", SquareConfig, run_square,
    "Square Attack: L-inf random search on the margin, no gradients (Andriushchenko et al. 2020)"))
