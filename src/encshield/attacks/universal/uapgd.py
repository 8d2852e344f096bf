"""``uapgd``: universal adversarial perturbation by enhanced PGD (Deng & Karam, "Universal
adversarial attack via enhanced projected gradient descent", ICIP 2020; "UAPEPGD" in the PAP
repository), on a surrogate classifier of the encoder.

Algorithm (docs/methods.md, "Universal attacks"): walk over the surrogate images in a seeded random
order; for each image the surrogate classifier does not yet misclassify (prediction on ``x + delta``
equal to the prediction on ``x``), run at most ``steps`` (10) steps of a momentum-like sign-PGD on a
per-image perturbation ``delta0`` (starting at 0) that maximises the cross-entropy of the
L2-normalised surrogate logits ``z / ||z||_2`` of ``x + delta + delta0`` with respect to the clean
prediction (METHODS.md 6.3: "CE(normalised logits, clean label)"; the PAP code normalises the logits
before the cross-entropy, which bounds them to the unit sphere and so changes the gradient's
direction and its sign pattern, not just its scale)::

    v      <- momentum * v + weight_decay * (x + delta0) + grad      (momentum 0.5, wd 1e-5)
    delta0 <- delta0 + alpha * sign(v)

stopping as soon as the image is fooled; then ``delta <- clip(delta + delta0, -eps, eps)``.
``alpha`` is 0.002 for the first 10,000 visited images and 0.0002 afterwards. Passes repeat until
the surrogate fooling rate reaches ``target_fooling_rate`` (0.8) or ``max_passes`` (5).

The label is the surrogate classifier's clean prediction (label-agnostic fooling, like UAP),
not a ground-truth label. Images are clamped to [0, 1] whenever they are fed to the model. The
surrogate classifier is described in :mod:`encshield.attacks.universal._classifier`.

Objective (lower = better for the attacker): the surrogate classifier's agreement rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from encshield.attacks.universal._classifier import (
    ClassifierAttack,
    ClassifierAttackConfig,
    LogitsFn,
)
from encshield.attacks.universal.base import UNIVERSAL_ATTACKS, FitContext

__all__ = ["UAPGD", "normalized_cross_entropy"]


def normalized_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the L2-normalised logits ``z / ||z||_2`` (UAPGD's loss).

    Deng & Karam, ICIP 2020, as run in the PAP repository (METHODS.md 6.3). The argmax, i.e. the
    label, is unchanged by the normalisation. Logits ``(N, C)``, labels int64 ``(N,)``.
    """
    return F.cross_entropy(F.normalize(logits, dim=1), labels)


@UNIVERSAL_ATTACKS.register("uapgd", aliases=("uapepgd", "upgd"))
class UAPGD(ClassifierAttack):
    """Universal perturbation from per-image momentum sign-PGD steps on a surrogate classifier."""

    paper = (
        "Deng, Karam. Universal adversarial attack via enhanced projected gradient descent. "
        "ICIP 2020"
    )

    class Config(ClassifierAttackConfig):
        steps: int = Field(10, ge=1, description="maximum PGD steps per not-yet-fooled image")
        step_size: float = Field(0.002, gt=0, description="alpha for the first images")
        step_size_late: float = Field(0.0002, gt=0, description="alpha afterwards")
        decay_after_images: int = Field(
            10_000, ge=0, description="visited images after which alpha becomes step_size_late"
        )
        momentum: float = Field(0.5, ge=0, lt=1, description="velocity decay")
        weight_decay: float = Field(1e-5, ge=0, description="coefficient of (x + delta0) in v")

    config: Config

    def _update(
        self,
        fn: LogitsFn,
        x: torch.Tensor,
        y: torch.Tensor,
        delta: torch.Tensor,
        context: FitContext,
        index: int,
    ) -> torch.Tensor:
        cfg = self.config
        alpha = cfg.step_size if index < cfg.decay_after_images else cfg.step_size_late
        delta0 = torch.zeros_like(x)
        velocity = torch.zeros_like(x)
        for _ in range(cfg.steps):
            delta0.requires_grad_(True)
            logits = fn((x + delta + delta0).clamp(0, 1))
            if int(logits.argmax(1)) != int(y):
                delta0 = delta0.detach()
                break
            loss = normalized_cross_entropy(logits, y)
            (grad,) = torch.autograd.grad(loss, delta0)
            delta0 = delta0.detach()
            velocity = cfg.momentum * velocity + cfg.weight_decay * (x + delta0) + grad
            delta0 = delta0 + alpha * velocity.sign()
        return delta + delta0[0]
