"""``random_noise``: the control "attack", i.i.d. uniform noise ``U(-eps, eps)`` per pixel.

Not an attack from the literature but the baseline every universal attack must beat: a learned
perturbation that does no better than random noise of the same L-inf budget has learned nothing.
The noise is drawn from a generator seeded with ``seed`` (``distribution="sign"`` draws
``±eps`` per pixel instead, the corners of the L-inf ball, which has the largest L2 energy of any
perturbation in the budget).

Objective (lower = better for the attacker): minus the mean cosine distance
``1 - cos(E(x), E(x'))`` between clean and perturbed features.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from encshield.attacks.perturbation import Perturbation
from encshield.attacks.universal.base import (
    UNIVERSAL_ATTACKS,
    FitContext,
    UniversalAttack,
    UniversalAttackConfig,
    cosine_distance,
)

__all__ = ["RandomNoise"]


@UNIVERSAL_ATTACKS.register("random_noise", aliases=("random", "noise"))
class RandomNoise(UniversalAttack):
    """Uniform random noise in the L-inf ball (control)."""

    paper = "control: i.i.d. noise U(-eps, eps) per pixel (no learning)"
    objective_name = "negative mean cosine distance between E(x) and E(x')"

    class Config(UniversalAttackConfig):
        distribution: Literal["uniform", "sign"] = Field(
            "uniform", description="uniform: U(-eps, eps); sign: ±eps with probability 1/2 each"
        )

    config: Config

    def _fit(self, context: FitContext) -> Perturbation:
        if self.config.distribution == "uniform":
            delta = context.uniform_delta()
        else:
            delta = torch.where(context.rand(*context.image_shape) < 0.5, -1.0, 1.0) * context.eps
        delta = delta.clamp(-context.eps, context.eps)
        return Perturbation("additive", delta.cpu(), eps=context.eps)

    def _objective_values(
        self, encoder: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, state: Any
    ) -> torch.Tensor:
        return -cosine_distance(encoder(x), encoder(x_adv))
