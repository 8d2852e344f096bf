"""Shared machinery of the per-sample white-box attacks.

Every attack of this package maps ``(model, x, y) -> x_adv`` and keeps the same hygiene:

* ``x`` is checked with :func:`encshield.images.check_images` (float ``(N, C, H, W)`` in [0, 1]);
  ``x_adv`` has the same shape, dtype and device, lies in [0, 1] and within the budget
  (L-inf ``|x_adv - x| <= eps``; L2 ``||x_adv - x||_2 <= eps`` per sample), and is detached.
* gradients come only from ``torch.autograd.grad(loss, x_adv)``: parameters never get ``.grad``
  (also when they require grad, e.g. inside an adversarial-training loop) and autograd computes
  no weight gradients.
* the model is put in eval mode for the attack (BatchNorm uses its running statistics and never
  updates them; dropout is off unless the model forces it) and the previous mode of every
  submodule is restored afterwards, also on errors.
* randomness is seeded: random starts come from a local :class:`torch.Generator` seeded with
  ``seed``; the global RNG (which stochastic models such as dropout or random transforms draw
  from) is forked, seeded with ``seed`` and restored, so an attack is deterministic for a seed
  and leaves the caller's RNG state untouched.
* EOT (Athalye et al., ICML 2018): with ``eot_samples = k`` the gradient is averaged over ``k``
  forward/backward passes of a stochastic model, and so is the loss used for every acceptance
  decision (best point, APGD's step-size conditions). A sample counts as misclassified when it
  is misclassified in more than half of the ``k`` passes.

This module holds the registry :data:`WHITEBOX_ATTACKS` (uniform call
``attack(model, x, y, *, eps, seed=0, **config) -> x_adv``), the pydantic base configuration and
the internal helpers the attacks share (the attacked problem, the threat-model ball, best-point
bookkeeping and the restart driver).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from encshield.attacks.whitebox.objectives import (
    OBJECTIVES,
    Objective,
    reference_kind,
    resolve_objective,
)
from encshield.config import validate
from encshield.errors import ConfigError
from encshield.images import check_images
from encshield.registry import Registry

__all__ = [
    "WHITEBOX_ATTACKS",
    "WhiteboxAttackConfig",
    "KeepBest",
    "Norm",
    "Predict",
    "WhiteboxAttack",
    "attack_context",
    "clean_best",
    "default_predict",
]

#: Threat model: L-inf or L2 ball around the clean image (intersected with [0, 1]).
Norm = Literal["linf", "l2"]
#: Which point an attack returns per sample: the first misclassified iterate (else the one with
#: the highest loss), the highest-loss iterate, or the last iterate (Madry's plain PGD).
KeepBest = Literal["misclassified", "loss", "last"]
#: ``predict(outputs) -> labels (N,)``: the prediction used to decide "misclassified".
Predict = Callable[[Any], torch.Tensor]


class WhiteboxAttackConfig(BaseModel):
    """Fields every white-box attack shares (subclassed per attack with its own defaults).

    Attributes:
        eps: budget, > 0 (L-inf in pixel units of [0, 1], e.g. 8/255; or L2 norm per sample).
        norm: ``linf`` or ``l2``.
        objective: a name of :data:`~encshield.attacks.whitebox.objectives.OBJECTIVES` or a
            callable ``(outputs, y) -> (N,)`` to maximise.
        eot_samples: forward/backward passes averaged per gradient (EOT), >= 1.
        predict: ``outputs -> labels (N,)`` deciding "misclassified"; default: argmax of logits
            ``(N, C)`` (or of ``outputs["logits"]`` for dict outputs). Without a prediction
            (e.g. feature outputs) the attack keeps the highest-loss point.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    eps: float = Field(8 / 255, gt=0)
    norm: Norm = "linf"
    objective: str | Callable[..., Any] = "ce"
    eot_samples: int = Field(1, ge=1)
    predict: Callable[..., Any] | None = None

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in OBJECTIVES:
            raise ValueError(
                f"unknown objective {value!r}; allowed values: {', '.join(OBJECTIVES.names())} "
                "or a callable (outputs, y) -> (N,)"
            )
        return value

    def values(self) -> dict[str, Any]:
        """The fields as a dict (objects kept as they are, no copies)."""
        return {name: getattr(self, name) for name in type(self).model_fields}


RunFn = Callable[[nn.Module, torch.Tensor, Any, Any, int], torch.Tensor]


@dataclass(frozen=True)
class WhiteboxAttack:
    """A registered per-sample attack: ``attack(model, x, y, *, eps, seed=0, **config)``.

    Attributes:
        name: registry name.
        config_class: its pydantic configuration (defaults for every field).
        run: ``run(model, x, y, config, seed) -> x_adv``.
        summary: one line for listings.
    """

    name: str
    config_class: type[WhiteboxAttackConfig]
    run: RunFn
    summary: str = ""

    @property
    def norm(self) -> str:
        """The threat model of the default configuration (``linf`` or ``l2``)."""
        return str(self.config_class.model_fields["norm"].default)

    def config(self, **values: Any) -> WhiteboxAttackConfig:
        """A validated configuration; raises ConfigError naming the field and the bad value."""
        return validate(self.config_class, values)

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: Any,
        *,
        eps: float | None = None,
        seed: int = 0,
        **config: Any,
    ) -> torch.Tensor:
        """Attack ``x`` (float ``(N, C, H, W)`` in [0, 1]) with labels ``y`` -> ``x_adv``.

        ``eps`` defaults to the configuration's default budget; ``**config`` are fields of
        :attr:`config_class`.
        """
        if eps is not None:
            config["eps"] = eps
        return self.run(model, x, y, self.config(**config), seed)


#: The per-sample white-box attacks by name (``pgd``, ``pgd_l2``, ``apgd_ce``, ``apgd_dlr``,
#: ``apgd_t``, ``fgsm``, ``square``, ``autoattack``).
WHITEBOX_ATTACKS: Registry[WhiteboxAttack] = Registry("white-box attack")


# --------------------------------------------------------------------------------- context


@contextmanager
def attack_context(model: nn.Module, seed: int, device: torch.device) -> Iterator[None]:
    """Eval mode + seeded, forked global RNG + grad enabled; restores everything afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    devices: list[int] = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    try:
        model.eval()
        with torch.random.fork_rng(devices=devices):
            torch.default_generator.manual_seed(seed)
            for index in devices:
                with torch.cuda.device(index):
                    torch.cuda.manual_seed(seed)
            with torch.inference_mode(False), torch.enable_grad():
                yield
    finally:
        for module, training in modes:
            module.training = training


def local_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (random starts never touch global RNG)."""
    return torch.Generator(device=device).manual_seed(int(seed))


def prepare_inputs(x: torch.Tensor) -> torch.Tensor:
    """Check the pixel contract and return a detached tensor usable by autograd."""
    check_images(x, "attack input x")
    x = x.detach()
    if x.is_inference():
        x = x.clone()
    return x


# --------------------------------------------------------------------------------- problem


def default_predict(outputs: Any) -> torch.Tensor | None:
    """argmax of logits ``(N, C)`` (or of ``outputs["logits"]``); ``None`` when unknown."""
    if isinstance(outputs, Mapping):
        outputs = outputs.get("logits")
    if isinstance(outputs, torch.Tensor) and outputs.dim() == 2:
        return outputs.argmax(dim=1)
    return None


def select(reference: Any, index: torch.Tensor | None) -> Any:
    """``reference[index]`` for a tensor or a tuple/list of tensors (``None`` = everything)."""
    if index is None or reference is None:
        return reference
    if isinstance(reference, torch.Tensor):
        return reference[index]
    if isinstance(reference, (tuple, list)):
        return type(reference)(select(item, index) for item in reference)
    raise ConfigError(
        "y must be a tensor (or a tuple of tensors) indexed by sample, got "
        f"{type(reference).__name__}"
    )


def usable(reference: Any, device: torch.device) -> Any:
    """Move tensors to ``device``; clone inference-mode tensors so autograd may save them."""
    if isinstance(reference, torch.Tensor):
        reference = reference.to(device)
        return reference.clone() if reference.is_inference() else reference
    if isinstance(reference, (tuple, list)):
        return type(reference)(usable(item, device) for item in reference)
    return reference


def _check_reference(reference: Any, n: int) -> None:
    items = reference if isinstance(reference, (tuple, list)) else [reference]
    for item in items:
        if not isinstance(item, torch.Tensor):
            raise ConfigError(
                f"y must be a tensor or a tuple of tensors, got {type(item).__name__}")
        if item.dim() == 0 or item.shape[0] != n:
            raise ConfigError(
                f"y has shape {tuple(item.shape)}; expected its first dimension to be the "
                f"batch size {n} of x"
            )


@dataclass
class Problem:
    """What to maximise on a batch, and when a sample counts as broken.

    Attributes:
        model: the attacked model (images in [0, 1] -> outputs).
        objective: per-sample loss ``(outputs, reference) -> (N,)`` to maximise (signed already).
        reference: passed to the objective (labels, features, (labels, targets)...).
        labels: labels for the success test, or ``None`` (then only the loss counts).
        targeted: success = ``predict == labels`` (targeted) instead of ``!=``.
        predict: outputs -> predicted labels.
        eot_samples: passes averaged per evaluation.
    """

    model: nn.Module
    objective: Objective
    reference: Any
    labels: torch.Tensor | None
    targeted: bool = False
    predict: Predict | None = None
    eot_samples: int = 1

    def subset(self, index: torch.Tensor | None) -> Problem:
        if index is None:
            return self
        return replace(self, reference=select(self.reference, index),
                       labels=None if self.labels is None else self.labels[index])

    def _loss(self, outputs: Any, n: int) -> torch.Tensor:
        loss = self.objective(outputs, self.reference)
        if not isinstance(loss, torch.Tensor) or loss.shape != (n,):
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ConfigError(
                f"the attack objective must return a per-sample loss of shape ({n},), got {shape}"
            )
        return loss

    def _success(self, outputs: Any) -> torch.Tensor | None:
        if self.labels is None:
            return None
        predicted = (self.predict or default_predict)(outputs)
        if predicted is None:
            return None
        predicted = predicted.detach()
        return predicted == self.labels if self.targeted else predicted != self.labels

    def evaluate(
        self, x: torch.Tensor, *, grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Loss ``(N,)`` (EOT mean), success ``(N,)`` bool or None, gradient (EOT mean) or None.

        ``x`` is not modified and its autograd state is left alone (a detached alias is used).
        """
        n = x.shape[0]
        total_loss: torch.Tensor | None = None
        total_grad: torch.Tensor | None = None
        hits: torch.Tensor | None = None
        known = True
        for _ in range(self.eot_samples):
            if grad:
                leaf = x.detach().requires_grad_(True)
                outputs = self.model(leaf)
                loss = self._loss(outputs, n)
                (g,) = torch.autograd.grad(loss.sum(), leaf)
                total_grad = g if total_grad is None else total_grad.add_(g)
            else:
                with torch.no_grad():
                    outputs = self.model(x)
                    loss = self._loss(outputs, n)
            loss = loss.detach()
            total_loss = loss if total_loss is None else total_loss.add_(loss)
            success = self._success(outputs) if known else None
            if success is None:
                known = False
            else:
                hits = success.to(torch.int32) if hits is None else hits.add_(success)
            del outputs
        assert total_loss is not None
        k = self.eot_samples
        if k > 1:
            total_loss.div_(k)
            if total_grad is not None:
                total_grad.div_(k)
        success = hits * 2 > k if (known and hits is not None) else None
        return total_loss, success, total_grad


def make_problem(
    model: nn.Module,
    x: torch.Tensor,
    y: Any,
    objective: str | Objective,
    *,
    targeted: bool,
    predict: Predict | None,
    eot_samples: int,
) -> Problem:
    """Build the problem for the usual ``(model, x, y)`` attacks.

    ``targeted``: ``y`` holds target labels, the attack maximises ``-objective(outputs, y)`` and a
    sample is broken when it is classified as its target. Feature objectives (or a floating
    ``y``) have no success test: the highest-loss point is kept.
    """
    fn = resolve_objective(objective)
    kind = reference_kind(objective)
    if kind == "labels_and_targets":
        raise ConfigError(
            f"objective {objective!r} needs (labels, targets); use the apgd_t attack for "
            "targeted DLR, or objective='ce' with targeted=True"
        )
    _check_reference(y, x.shape[0])
    y = usable(y, x.device)
    is_labels = isinstance(y, torch.Tensor) and y.dim() == 1 and not y.is_floating_point()
    if kind == "labels" and not is_labels:
        raise ConfigError(f"objective {objective!r} needs int64 labels y of shape (N,)")
    labels = y if is_labels and kind != "features" else None
    reference = y
    if targeted:
        base = fn

        def fn(outputs: Any, ref: Any) -> torch.Tensor:  # noqa: F811 - signed wrapper
            return -base(outputs, ref)

    return Problem(model, fn, reference, labels, targeted=targeted, predict=predict,
                   eot_samples=eot_samples)


# ------------------------------------------------------------------------------ threat model


class Ball:
    """The feasible set ``{x' : ||x' - x|| <= eps} ∩ [0, 1]^d`` and its ascent step.

    For L-inf the bounds ``max(x - eps, 0)`` and ``min(x + eps, 1)`` are precomputed, so the
    projection is one clamp.
    """

    def __init__(self, x: torch.Tensor, eps: float, norm: str) -> None:
        self.x = x
        self.eps = float(eps)
        self.norm = norm
        if norm == "linf":
            self.lower = (x - self.eps).clamp_(min=0.0)
            self.upper = (x + self.eps).clamp_(max=1.0)
        elif norm != "l2":  # pragma: no cover - validated by the configs
            raise ConfigError(f"norm must be 'linf' or 'l2', got {norm!r}")

    def subset(self, index: torch.Tensor | None) -> Ball:
        if index is None:
            return self
        ball = Ball.__new__(Ball)
        ball.x, ball.eps, ball.norm = self.x[index], self.eps, self.norm
        if self.norm == "linf":
            ball.lower, ball.upper = self.lower[index], self.upper[index]
        return ball

    @torch.no_grad()
    def project_(self, x_adv: torch.Tensor) -> torch.Tensor:
        """Project ``x_adv`` onto the feasible set, in place."""
        if self.norm == "linf":
            return torch.clamp(x_adv, self.lower, self.upper, out=x_adv)
        delta = x_adv.sub_(self.x)
        norms = delta.flatten(1).norm(dim=1).clamp_(min=1e-12)
        factor = (self.eps / norms).clamp_(max=1.0)
        delta.mul_(factor.view(-1, *([1] * (delta.dim() - 1))))
        return delta.add_(self.x).clamp_(0.0, 1.0)

    @torch.no_grad()
    def step_(self, x_adv: torch.Tensor, grad: torch.Tensor,
              step: float | torch.Tensor) -> torch.Tensor:
        """Steepest-ascent step in place: ``sign(g)`` (L-inf) or ``g / ||g||_2`` (L2).

        ``grad`` is overwritten; ``step`` is a float or a per-sample tensor ``(N, 1, 1, 1)``.
        """
        if self.norm == "linf":
            direction = grad.sign_()
        else:
            norms = grad.flatten(1).norm(dim=1).clamp_(min=1e-12)
            direction = grad.div_(norms.view(-1, *([1] * (grad.dim() - 1))))
        if isinstance(step, torch.Tensor):
            return x_adv.addcmul_(step, direction)
        return x_adv.add_(direction, alpha=step)

    def random_start(
        self, generator: torch.Generator, distribution: str = "uniform", std: float = 0.001
    ) -> torch.Tensor:
        """A point drawn uniformly from the ball (then clipped to [0, 1]).

        ``distribution="normal"``: ``x + std * N(0, I)`` instead (MART's and TRADES' small
        Gaussian start), projected onto the ball and [0, 1].
        """
        x = self.x
        if distribution == "normal":
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            return self.project_(noise.mul_(std).add_(x))
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            start = noise.mul_(2 * self.eps).sub_(self.eps).add_(x)
        else:
            direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            norms = direction.flatten(1).norm(dim=1).clamp_(min=1e-12)
            d = x[0].numel()
            radius = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
            radius = radius.pow_(1.0 / d).mul_(self.eps)
            start = direction.mul_((radius / norms).view(-1, *([1] * (x.dim() - 1)))).add_(x)
        return self.project_(start)


# ------------------------------------------------------------------------------- best points


class Best:
    """Per-sample best point so far.

    ``misclassified``: the first point that breaks the sample; until then the highest-loss one.
    ``loss``: the highest-loss point. A problem without a success test behaves as ``loss``.
    """

    def __init__(self, like: torch.Tensor, mode: str) -> None:
        n = like.shape[0]
        self.mode = mode
        self.x = like.clone()
        self.loss = torch.full((n,), float("-inf"), device=like.device, dtype=torch.float32)
        self.success = torch.zeros(n, dtype=torch.bool, device=like.device)

    def _take(self, loss: torch.Tensor, success: torch.Tensor | None) -> torch.Tensor:
        better = loss.float() > self.loss
        if self.mode == "misclassified" and success is not None:
            take = (success | better) & ~self.success
            self.success |= success
            return take
        if success is not None:
            self.success |= success
        return better

    @torch.no_grad()
    def update(self, x: torch.Tensor, loss: torch.Tensor, success: torch.Tensor | None) -> None:
        """Offer the points ``x`` with their loss and success for the whole batch."""
        take = self._take(loss, success)
        torch.where(take.view(-1, *([1] * (x.dim() - 1))), x, self.x, out=self.x)
        torch.where(take, loss.float(), self.loss, out=self.loss)

    def score(self, problem: Problem, x: torch.Tensor) -> Best:
        """Offer the points ``x`` of the whole batch, scored by one gradient-free evaluation of
        ``problem`` (``eot_samples`` forwards); returns ``self``."""
        loss, success, _ = problem.evaluate(x, grad=False)
        self.update(x, loss, success)
        return self

    @torch.no_grad()
    def update_at(
        self, index: torch.Tensor, x: torch.Tensor, loss: torch.Tensor, success: torch.Tensor | None
    ) -> None:
        """Offer the points ``x`` of the samples ``index`` (int64 ``(M,)``) with their loss and
        success (``x``, ``loss``, ``success`` hold ``M`` rows)."""
        mine_loss, mine_success = self.loss[index], self.success[index]
        better = loss.float() > mine_loss
        if self.mode == "misclassified" and success is not None:
            take = (success | better) & ~mine_success
        else:
            take = better
        if success is not None:
            self.success[index] = mine_success | success
        chosen = index[take]
        self.x[chosen] = x[take]
        self.loss[chosen] = loss.float()[take]

    @torch.no_grad()
    def merge(self, index: torch.Tensor | None, other: Best) -> None:
        """Offer the best points ``other`` found on the samples ``index`` (``None`` = all)."""
        mine_loss = self.loss if index is None else self.loss[index]
        mine_success = self.success if index is None else self.success[index]
        better = other.loss > mine_loss
        if self.mode == "misclassified":
            take = (other.success | better) & ~mine_success
        else:
            take = better
        if index is None:
            self.success |= other.success
            torch.where(take.view(-1, *([1] * (other.x.dim() - 1))), other.x, self.x, out=self.x)
            torch.where(take, other.loss, self.loss, out=self.loss)
            return
        self.success[index] = mine_success | other.success
        chosen = index[take]
        self.x[chosen] = other.x[take]
        self.loss[chosen] = other.loss[take]


def clean_best(problem: Problem, x: torch.Tensor, mode: str) -> Best:
    """A :class:`Best` holding the clean points, with the samples already broken on ``x`` marked.

    One forward pass (times ``eot_samples``) without gradient. The restarts driver then attacks
    only the other samples, and a sample broken on its clean input is returned unchanged: as in
    AutoAttack, which attacks only the points its model classifies correctly. With
    ``mode="loss"`` or without a success test nothing is marked and no pass is spent.
    """
    best = Best(x, mode)
    if mode == "misclassified" and problem.labels is not None:
        _, success, _ = problem.evaluate(x, grad=False)
        if success is not None:
            best.success |= success
    return best


def restarts_driver(
    problem: Problem,
    ball: Ball,
    *,
    restarts: int,
    mode: str,
    generator: torch.Generator,
    random_start: bool,
    run_once: Callable[[Problem, Ball, torch.Tensor], Best],
    overall: Best | None = None,
    start_distribution: str = "uniform",
    start_std: float = 0.001,
) -> Best:
    """Run ``run_once`` ``restarts`` times and keep the best point per sample.

    Restart ``r`` starts from the ``r``-th random start drawn for the *whole* batch, so the first
    restarts of a run with more restarts are exactly the restarts of a run with fewer: more
    restarts never give a worse point. With ``mode="misclassified"`` a restart only attacks the
    samples no earlier restart has broken. ``start_distribution`` / ``start_std``: see
    :meth:`Ball.random_start`.
    """
    overall = overall if overall is not None else Best(ball.x, mode)
    for _ in range(restarts):
        start = (ball.random_start(generator, start_distribution, start_std) if random_start
                 else ball.x.clone())
        index: torch.Tensor | None = None
        if mode == "misclassified" and problem.labels is not None:
            active = ~overall.success
            if not bool(active.any()):
                break
            if not bool(active.all()):
                index = active.nonzero().squeeze(1)
        result = run_once(problem.subset(index), ball.subset(index),
                          start if index is None else start[index])
        overall.merge(index, result)
    return overall

