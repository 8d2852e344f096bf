"""Auto-PGD (APGD): step-size-free PGD with momentum, for CE, DLR and targeted DLR.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, Algorithm 1, implemented from the paper:

* ``x(1) = P(x(0) + eta * s(grad f(x(0))))`` with ``eta(0) = 2 * eps`` and ``s`` the steepest-ascent
  direction (``sign`` for L-inf, ``g / ||g||_2`` for L2);
* ``z(k+1) = P(x(k) + eta(k) * s(grad f(x(k))))``,
  ``x(k+1) = P(x(k) + alpha (z(k+1) - x(k)) + (1 - alpha)(x(k) - x(k-1)))`` with momentum
  ``alpha = 0.75``;
* checkpoints ``w_j = ceil(p_j * N_iter)``, ``p_0 = 0``, ``p_1 = 0.22``,
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, in integers as the authors' code computes
  them (:func:`step_size_checkpoints`). At a checkpoint the step size of a sample is halved,
  and its iterate reset to its highest-loss point ``x_max`` (with the gradient there), if
  (1) the loss increased in at most ``rho * (w_j - w_{j-1})`` of the steps since the last
  checkpoint (``rho = 0.75``; ``<=`` as in the authors' code), or (2) its step size was not
  reduced at the last checkpoint and its best loss has not improved since. Condition 2 is not
  checked at the first checkpoint (there was no earlier decision), as in the authors' code.

Details fixed by the authors' reference implementation (AutoAttack) where the paper leaves them
open, so that both agree sample by sample (``tests/test_attacks_autoattack.py``): a reset keeps
the momentum term ``x(k) - x(k-1)`` with the iterate ``x(k-1)`` from before the reset, and
condition 1 compares each iterate with the loss actually evaluated at its predecessor (before
any reset). One difference is kept on purpose: the reference compares the first iterate with 0
instead of ``f(x(0))`` (an index wrap-around); we follow the paper, and
``first_comparison="zero"`` reproduces the reference (:class:`APGDConfig`).

Everything is per sample and vectorised. The gradient at ``x_max`` is stored with it, so a reset
costs no extra pass; the loss of each iterate comes from its gradient pass.

Cost: one forward pass without gradient on the clean batch (which samples are already broken;
skipped with ``keep_best="loss"``), then per restart, on the samples not yet broken only, one
forward+backward pass per step (``x(0) ... x(N-1)``) and one forward for the last iterate
``x(N)``: ``N`` backward passes, ``N + 1`` forwards (times ``eot_samples``).

Beyond the paper (AutoAttack's evaluation practice): samples misclassified on the clean input are
not attacked and returned unchanged; random start in the ball; restarts that only attack the
samples not yet broken; and, per sample, the first misclassified iterate is returned
(``keep_best="misclassified"``) or the highest-loss one (``"loss"``, the paper's output; then
every sample is attacked).

The targeted version (APGD-T, the paper's Sec. 4 with the targeted DLR loss) attacks each sample
towards its ``n_target_classes`` most likely wrong classes in turn (ranked by the clean logits;
9 in AutoAttack, fewer when the model has fewer classes), ``restarts`` runs each, keeping the
first point that is misclassified; or towards explicit ``targets`` (then success means
"classified as the target").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from encshield.attacks.whitebox.base import (
    WHITEBOX_ATTACKS,
    Ball,
    Best,
    Predict,
    Problem,
    WhiteboxAttack,
    WhiteboxAttackConfig,
    attack_context,
    clean_best,
    default_predict,
    local_generator,
    prepare_inputs,
    restarts_driver,
    usable,
)
from encshield.attacks.whitebox.objectives import Objective, cross_entropy, dlr_targeted
from encshield.attacks.whitebox.runner import attack_setup, check_labels
from encshield.config import validate
from encshield.errors import ConfigError

__all__ = [
    "APGDConfig",
    "APGDDLRConfig",
    "APGDTargetedConfig",
    "apgd",
    "apgd_targeted",
    "run_apgd",
    "run_apgd_targeted",
    "step_size_checkpoints",
]

ApgdKeep = Literal["misclassified", "loss"]
#: What condition 1 compares the first iterate with: ``f(x(0))`` (the paper) or 0 (the
#: reference implementation's index wrap-around).
FirstComparison = Literal["previous", "zero"]


class APGDIterationConfig(WhiteboxAttackConfig):
    """The iteration settings shared by APGD and APGD-T.

    Attributes:
        steps: iterations ``N_iter`` per restart (100 in AutoAttack), >= 1.
        restarts: random restarts, >= 1; the best point per sample is kept.
        rho: condition 1's fraction of increasing steps, in (0, 1) (0.75).
        momentum: ``alpha`` of the momentum update, in [0, 1] (0.75; 1 = no momentum).
        initial_step: ``eta(0)`` as a multiple of ``eps`` (2).
        random_start: start at a random point of the ball (else at ``x``).
    """

    steps: int = Field(100, ge=1)
    restarts: int = Field(1, ge=1)
    rho: float = Field(0.75, gt=0, lt=1)
    momentum: float = Field(0.75, ge=0, le=1)
    initial_step: float = Field(2.0, gt=0)
    random_start: bool = True


class APGDConfig(APGDIterationConfig):
    """APGD with cross-entropy (APGD-CE) by default.

    Attributes:
        steps, restarts, rho, momentum, initial_step, random_start: see
            :class:`APGDIterationConfig`.
        targeted: ``y`` holds target labels; maximise ``-objective(outputs, y)``.
        keep_best: ``misclassified`` (first misclassified iterate, else highest loss; samples
            misclassified on the clean input are not attacked) or ``loss``.
        first_comparison: condition 1 compares ``x(1)`` with ``f(x(0))`` (``previous``, the
            paper) or with 0 (``zero``, AutoAttack's code) - a compatibility option.
    """

    targeted: bool = False
    keep_best: ApgdKeep = "misclassified"
    first_comparison: FirstComparison = "previous"


class APGDDLRConfig(APGDConfig):
    """APGD with the DLR loss (APGD-DLR)."""

    objective: str | Callable[..., Any] = "dlr"


class APGDTargetedConfig(APGDIterationConfig):
    """APGD-T: APGD with the targeted DLR loss towards the top-k wrong classes.

    Attributes:
        steps, restarts, rho, momentum, initial_step, random_start, keep_best,
            first_comparison: as :class:`APGDConfig` (``restarts`` runs per target class).
        n_target_classes: how many of the most likely wrong classes (by clean logits) are
            tried in turn (9 in AutoAttack; capped at the number of classes - 1).
        targets: explicit target labels int64 ``(N,)`` instead of the top-k loop; then a
            sample counts as broken when classified as its target.
        objective: ``dlr_targeted`` (default), ``ce`` (minimise CE to the target) or a callable
            ``(outputs, (y, targets)) -> (N,)`` to maximise.
    """

    objective: str | Callable[..., Any] = "dlr_targeted"
    keep_best: ApgdKeep = "misclassified"
    first_comparison: FirstComparison = "previous"
    n_target_classes: int = Field(9, ge=1)
    targets: torch.Tensor | None = None


def step_size_checkpoints(steps: int) -> list[int]:
    """APGD's checkpoints ``w_j`` for ``steps = N_iter`` (Croce & Hein, ICML 2020, Sec. 3.2).

    The paper's ``w_j = ceil(p_j * N_iter)`` with ``p_0 = 0``, ``p_1 = 0.22`` and
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, in integers as the authors' code
    computes them: the first interval is ``floor(0.22 N)``, each next one is shorter by
    ``floor(0.03 N)`` down to ``floor(0.06 N)`` (each of the three at least 1), and ``w_j`` are
    their running sums. Returns the ``w_j <= steps``, increasing; e.g. 100 steps ->
    ``[22, 41, 57, 70, 80, 87, 93, 99]`` and 20 steps -> ``[4, 7, 9, 10, 11, ..., 20]``.
    """
    if steps < 1:
        return []
    interval = max(int(0.22 * steps), 1)
    decrease = max(int(0.03 * steps), 1)
    shortest = max(int(0.06 * steps), 1)
    points: list[int] = []
    w = interval
    while w <= steps:
        points.append(w)
        interval = max(interval - decrease, shortest)
        w += interval
    return points


def _apgd_once(
    problem: Problem,
    ball: Ball,
    start: torch.Tensor,
    *,
    steps: int,
    eta0: float,
    rho: float,
    alpha: float,
    mode: str,
    first_comparison: str = "previous",
) -> Best:
    """One APGD run (Algorithm 1) from ``start``; returns the best point per sample.

    ``steps`` forward+backward passes (``x(0) ... x(N-1)``) and one forward (``x(N)``).
    """
    n = start.shape[0]
    view = (n, *([1] * (start.dim() - 1)))
    best = Best(start, mode)
    x_k = start
    loss, success, grad = problem.evaluate(x_k, grad=True)
    assert grad is not None
    best.update(x_k, loss, success)
    x_max, f_max, g_max = x_k.clone(), loss.clone(), grad.clone()
    eta = torch.full(view, eta0, device=start.device, dtype=start.dtype)
    # x(1) = P(x(0) + eta * s(grad)): plain step, no momentum yet.
    x_prev = x_k
    x_k = ball.project_(ball.step_(x_k.clone(), grad, eta))
    marks = set(step_size_checkpoints(steps))
    last_mark = 0
    increases = torch.zeros(n, device=start.device, dtype=torch.int32)
    prev_loss = torch.zeros_like(loss) if first_comparison == "zero" else loss
    # condition 2 needs "not reduced at the last checkpoint": nothing was decided at w_0 = 0.
    reduced = torch.ones(n, device=start.device, dtype=torch.bool)
    fmax_at_mark = f_max.clone()
    for k in range(1, steps):
        loss, success, grad = problem.evaluate(x_k, grad=True)
        assert grad is not None
        best.update(x_k, loss, success)
        increases += loss > prev_loss
        improved = loss > f_max
        with torch.no_grad():
            torch.where(improved.view(view), x_k, x_max, out=x_max)
            torch.where(improved.view(view), grad, g_max, out=g_max)
            torch.where(improved, loss, f_max, out=f_max)
        prev_loss = loss
        if k in marks:
            condition1 = increases <= rho * (k - last_mark)
            condition2 = ~reduced & (fmax_at_mark >= f_max)
            reduced = condition1 | condition2
            fmax_at_mark = f_max.clone()
            if bool(reduced.any()):
                r = reduced.view(view)
                eta = torch.where(r, eta * 0.5, eta)
                x_k = torch.where(r, x_max, x_k)
                grad = torch.where(r, g_max, grad)
            increases.zero_()
            last_mark = k
        with torch.no_grad():
            z = ball.project_(ball.step_(x_k.clone(), grad, eta))
            # x(k+1) = x(k) + alpha (z - x(k)) + (1 - alpha)(x(k) - x(k-1)), in this order of
            # operations (as the reference, for bitwise agreement), into new buffers; after a
            # reset x(k) = x_max and x(k-1) is still the iterate before the reset.
            momentum = (x_k - x_prev).mul_(1 - alpha)
            new = z.sub_(x_k).mul_(alpha).add_(x_k).add_(momentum)
            ball.project_(new)
        x_prev, x_k = x_k, new
    return best.score(problem, x_k)


def _apgd_restarts(
    problem: Problem,
    ball: Ball,
    config: APGDConfig | APGDTargetedConfig,
    generator: torch.Generator,
    overall: Best,
) -> Best:
    """``config.restarts`` APGD runs (:func:`_apgd_once` with the config's step-size rule,
    momentum and bookkeeping) merged into ``overall``, which is returned."""

    def once(sub: Problem, sub_ball: Ball, start: torch.Tensor) -> Best:
        return _apgd_once(sub, sub_ball, start, steps=config.steps,
                          eta0=config.initial_step * config.eps, rho=config.rho,
                          alpha=config.momentum, mode=config.keep_best,
                          first_comparison=config.first_comparison)

    return restarts_driver(problem, ball, restarts=config.restarts, mode=config.keep_best,
                           generator=generator, random_start=config.random_start, run_once=once,
                           overall=overall)


def run_apgd(
    model: nn.Module, x: torch.Tensor, y: Any, config: APGDConfig, seed: int = 0
) -> torch.Tensor:
    """APGD with a validated :class:`APGDConfig` (see :func:`apgd`)."""
    with attack_setup(model, x, y, config, seed, targeted=config.targeted) as run:
        overall = clean_best(run.problem, run.x, config.keep_best)
        best = _apgd_restarts(run.problem, run.ball, config, run.generator, overall)
    return best.x


def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: Any,
    *,
    eps: float = 8 / 255,
    norm: Literal["linf", "l2"] = "linf",
    objective: str | Objective = "ce",
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    momentum: float = 0.75,
    initial_step: float = 2.0,
    random_start: bool = True,
    targeted: bool = False,
    eot_samples: int = 1,
    keep_best: ApgdKeep = "misclassified",
    first_comparison: FirstComparison = "previous",
    predict: Predict | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """APGD (Croce & Hein, ICML 2020) with CE (``objective="ce"``), DLR (``"dlr"``) or any loss.

    Args:
        model: images float ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K)`` (or any outputs a
            custom ``objective`` understands).
        x: clean images float ``(N, C, H, W)`` in [0, 1].
        y: labels int64 ``(N,)`` (targets when ``targeted``) or a custom objective's reference.
        eps: budget (L-inf in [0, 1] pixel units, or L2 per sample).
        norm: ``linf`` or ``l2``.
        objective, steps, restarts, rho, momentum, initial_step, random_start, targeted,
        keep_best, first_comparison: see :class:`APGDConfig`.
        eot_samples: passes averaged per gradient and per loss (EOT).
        predict: ``outputs -> labels (N,)`` for the success test.
        seed: seeds random starts and the model's randomness (global RNG restored).

    Returns:
        ``x_adv`` like ``x``, in [0, 1] and within the budget.
    """
    config = validate(APGDConfig, dict(
        eps=eps, norm=norm, objective=objective, steps=steps, restarts=restarts, rho=rho,
        momentum=momentum, initial_step=initial_step, random_start=random_start,
        targeted=targeted, eot_samples=eot_samples, keep_best=keep_best,
        first_comparison=first_comparison, predict=predict))
    return run_apgd(model, x, y, config, seed)


def _targeted_objective(objective: Any) -> Objective:
    if objective == "ce":
        return lambda outputs, ref: -cross_entropy(outputs, ref[1])
    if objective in ("dlr_targeted", "dlr_t"):
        return dlr_targeted
    if isinstance(objective, str):
        raise ConfigError(
            f"apgd_t objective must be 'dlr_targeted', 'ce' or a callable "
            f"(outputs, (y, targets)) -> (N,), got {objective!r}"
        )
    custom: Callable[[Any, Any], torch.Tensor] = objective
    return custom


def run_apgd_targeted(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: APGDTargetedConfig, seed: int = 0
) -> torch.Tensor:
    """APGD-T with a validated :class:`APGDTargetedConfig` (see :func:`apgd_targeted`)."""
    x = prepare_inputs(x)
    y = usable(check_labels(x, y, "apgd_t"), x.device)
    objective = _targeted_objective(config.objective)
    with attack_context(model, seed, x.device):
        ball = Ball(x, config.eps, config.norm)
        generator = local_generator(seed, x.device)

        def problem_for(targets: torch.Tensor, hit_target: bool) -> Problem:
            return Problem(model, objective, (y, targets), targets if hit_target else y,
                           targeted=hit_target, predict=config.predict,
                           eot_samples=config.eot_samples)

        if config.targets is not None:
            targets = usable(config.targets, x.device)
            if targets.shape != y.shape or targets.is_floating_point():
                raise ConfigError(f"targets must be int64 of shape {tuple(y.shape)}")
            problem = problem_for(targets, True)
            overall = clean_best(problem, x, config.keep_best)
            return _apgd_restarts(problem, ball, config, generator, overall).x
        # the clean logits rank the targets and mark the samples already broken; with EOT they
        # are averaged, and "broken" is the majority vote of the passes (as Problem.evaluate)
        total: torch.Tensor | None = None
        votes = torch.zeros(x.shape[0], dtype=torch.int32, device=x.device)
        predict = config.predict or default_predict
        for _ in range(config.eot_samples):
            with torch.no_grad():
                outputs = model(x)
            logits = outputs.get("logits") if isinstance(outputs, dict) else outputs
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                raise ConfigError("apgd_t ranks target classes by the logits (N, C) of the model")
            total = logits.float() if total is None else total.add_(logits.float())
            clean = predict(outputs)
            if clean is not None:
                votes += clean.detach() != y
        assert total is not None
        num_classes = total.shape[1]
        ranked = total.scatter(1, y[:, None], float("-inf"))
        order = ranked.argsort(dim=1, descending=True)
        overall = Best(x, config.keep_best)
        if config.keep_best == "misclassified":
            overall.success |= votes * 2 > config.eot_samples
        for rank in range(min(config.n_target_classes, num_classes - 1)):
            _apgd_restarts(problem_for(order[:, rank], False), ball, config, generator, overall)
    return overall.x


def apgd_targeted(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 8 / 255,
    norm: Literal["linf", "l2"] = "linf",
    objective: str | Objective = "dlr_targeted",
    steps: int = 100,
    restarts: int = 1,
    n_target_classes: int = 9,
    targets: torch.Tensor | None = None,
    rho: float = 0.75,
    momentum: float = 0.75,
    initial_step: float = 2.0,
    random_start: bool = True,
    eot_samples: int = 1,
    keep_best: ApgdKeep = "misclassified",
    first_comparison: FirstComparison = "previous",
    predict: Predict | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """APGD-T (Croce & Hein, ICML 2020): targeted DLR towards the top-k wrong classes.

    Args:
        model: images float ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K)``, K >= 4 for DLR.
        x: clean images float ``(N, C, H, W)`` in [0, 1].
        y: true labels int64 ``(N,)``.
        n_target_classes: most likely wrong classes tried in turn (capped at K - 1).
        targets: explicit targets int64 ``(N,)`` instead (success = classified as target).
        Other arguments: as :func:`apgd` / :class:`APGDTargetedConfig`.

    Returns:
        ``x_adv`` like ``x``, in [0, 1] and within the budget. Samples misclassified on the
        clean input are returned unchanged in the top-k mode.
    """
    config = validate(APGDTargetedConfig, dict(
        eps=eps, norm=norm, objective=objective, steps=steps, restarts=restarts,
        n_target_classes=n_target_classes, targets=targets, rho=rho, momentum=momentum,
        initial_step=initial_step, random_start=random_start, eot_samples=eot_samples,
        keep_best=keep_best, first_comparison=first_comparison, predict=predict))
    return run_apgd_targeted(model, x, y, config, seed)


WHITEBOX_ATTACKS.add("apgd_ce", WhiteboxAttack(
    "apgd_ce", APGDConfig, run_apgd, "APGD with cross-entropy (Croce & Hein 2020)"),
    aliases=("apgd",))
WHITEBOX_ATTACKS.add("apgd_dlr", WhiteboxAttack(
    "apgd_dlr", APGDDLRConfig, run_apgd, "APGD with the DLR loss (Croce & Hein 2020)"))
WHITEBOX_ATTACKS.add("apgd_t", WhiteboxAttack(
    "apgd_t", APGDTargetedConfig, run_apgd_targeted,
    "APGD-T: targeted DLR towards the top-k classes (Croce & Hein 2020)"),
    aliases=("apgd_targeted",))
