"""Per-sample feature-space PGD on an encoder: the strongest downstream-agnostic attacker.

Madry et al.'s PGD (ICLR 2018) run on the encoder alone, maximising the distance between the
features of the adversarial image and those of the clean image (computed once, detached):
``1 - cos(f(x_adv), f(x))`` (``distance="cosine"``) or ``||f(x_adv) - f(x)||_2`` (``"l2"``).
It needs no labels and no downstream model, so it is the per-sample upper bound of what a
downstream-agnostic (universal) perturbation crafted on the encoder can do; the DAE tables use
it as a control. Per sample the highest-distance iterate is returned.

Cost: ``steps * eot_samples`` forward+backward passes of the encoder plus two forwards (clean
features, scoring the last iterate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from encshield.attacks.whitebox.base import (
    Ball,
    Problem,
    attack_context,
    local_generator,
    prepare_inputs,
)
from encshield.attacks.whitebox.objectives import (
    feature_cosine_distance,
    feature_l2_distance,
)
from encshield.attacks.whitebox.pgd import _pgd_once
from encshield.errors import ConfigError
from encshield.registry import Registry

__all__ = ["ENCODER_ATTACKS", "feature_pgd"]

#: Per-sample attacks on an encoder alone: ``fn(encoder, x, *, eps, seed, **config) -> x_adv``.
ENCODER_ATTACKS: Registry[Callable[..., torch.Tensor]] = Registry("encoder attack")

_DISTANCES = {"cosine": feature_cosine_distance, "l2": feature_l2_distance}


@ENCODER_ATTACKS.register("feature_pgd")
def feature_pgd(
    encoder: nn.Module,
    x: torch.Tensor,
    *,
    eps: float = 10 / 255,
    steps: int = 20,
    step_size: float | None = None,
    random_start: bool = True,
    distance: Literal["cosine", "l2"] = "cosine",
    norm: Literal["linf", "l2"] = "linf",
    eot_samples: int = 1,
    seed: int = 0,
) -> torch.Tensor:
    """Maximise the feature distance to the clean features within the budget.

    Args:
        encoder: images float ``(N, C, H, W)`` in [0, 1] -> features ``(N, D)`` (any shape
            ``(N, ...)`` is flattened).
        x: clean images float ``(N, C, H, W)`` in [0, 1].
        eps: budget (default 10/255, the DAE protocol's L-inf budget).
        steps: PGD steps, >= 1.
        step_size: ``None`` = ``2.5 * eps / steps``.
        random_start: start at a uniform random point of the ball.
        distance: ``cosine`` (``1 - cos``) or ``l2``.
        norm: threat model ``linf`` or ``l2``.
        eot_samples: passes averaged per gradient (stochastic encoders).
        seed: seeds the random start and the encoder's randomness (global RNG restored).

    Returns:
        ``x_adv`` like ``x``, in [0, 1], within the budget: per sample the iterate with the
        largest feature distance.
    """
    if distance not in _DISTANCES:
        raise ConfigError(f"distance must be one of {sorted(_DISTANCES)}, got {distance!r}")
    if norm not in ("linf", "l2"):
        raise ConfigError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if not eps > 0 or steps < 1 or eot_samples < 1 or (step_size is not None and step_size <= 0):
        raise ConfigError(
            f"feature_pgd needs eps > 0, steps >= 1, eot_samples >= 1 and step_size > 0; got "
            f"eps={eps}, steps={steps}, eot_samples={eot_samples}, step_size={step_size}"
        )
    x = prepare_inputs(x)
    step = step_size if step_size is not None else 2.5 * eps / steps
    with attack_context(encoder, seed, x.device):
        with torch.no_grad():
            reference = encoder(x).detach()
        problem = Problem(encoder, _DISTANCES[distance], reference, None, eot_samples=eot_samples)
        ball = Ball(x, eps, norm)
        start = ball.random_start(local_generator(seed, x.device)) if random_start else x.clone()
        best = _pgd_once(problem, ball, start, steps=steps, step_size=step, mode="loss")
    return best.x
