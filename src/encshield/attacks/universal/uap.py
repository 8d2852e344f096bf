"""``uap``: Universal Adversarial Perturbations (Moosavi-Dezfooli, Fawzi, Fawzi, Frossard,
"Universal adversarial perturbations", CVPR 2017), on a surrogate classifier of the encoder.

Algorithm (paper, Alg. 1; docs/methods.md, "Universal attacks"): ``delta = 0``; pass over the
surrogate images in a seeded random order; whenever the surrogate classifier's label of
``x + delta`` still equals its label of ``x``, add the DeepFool perturbation of ``x + delta``
(Moosavi-Dezfooli et al., CVPR 2016: top-10 candidate classes, overshoot 0.02, at most 50
iterations) and project delta onto the L-inf ball ``[-eps, eps]``; stop after the pass in which the
fooling rate on the surrogate set reaches ``target_fooling_rate`` (0.8) or after ``max_passes`` (5).

DeepFool here is batched over the candidate classes: the image is replicated once per candidate
and one backward gives every candidate's gradient. ``norm="l2"`` (default) is the classic
DeepFool step (``|f_k| / ||w_k||_2`` along ``w_k``) followed by the L-inf projection, as in the
reference implementations; ``norm="linf"`` uses DeepFool's L-inf variant (``|f_k| / ||w_k||_1``
along ``sign(w_k)``), which spends the budget faster.

Deviations from the PAP-repo baseline (docs/methods.md, "Universal attacks"): no data augmentation
of the surrogate images; images are clamped to [0, 1] whenever ``x + delta`` is fed to the model
(the encoder's pixel contract), so DeepFool works on the clamped image. The surrogate classifier is
described in :mod:`encshield.attacks.universal._classifier`.

Objective (lower = better for the attacker): the surrogate classifier's agreement rate.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from encshield.attacks.universal._classifier import (
    ClassifierAttack,
    ClassifierAttackConfig,
    LogitsFn,
)
from encshield.attacks.universal.base import UNIVERSAL_ATTACKS, FitContext

__all__ = ["UAP", "deepfool"]


def deepfool(
    fn: LogitsFn,
    x: torch.Tensor,
    *,
    num_candidates: int = 10,
    overshoot: float = 0.02,
    max_iter: int = 50,
    norm: Literal["l2", "linf"] = "l2",
) -> torch.Tensor:
    """The DeepFool perturbation ``r`` of one image ``x`` ``(1, C, H, W)`` in [0, 1].

    Iterates the linearised minimal step towards the closest of the top ``num_candidates``
    classes (ranked by the logits at ``x``) until the label of ``clamp(x + (1 + overshoot) r)``
    changes or ``max_iter`` iterations; returns ``(1 + overshoot) * r`` (shape of ``x``). Each
    iteration is one forward/backward of a batch of ``num_candidates`` copies of the image.
    """
    with torch.no_grad():
        logits = fn(x)
    label = int(logits.argmax(1))
    k = min(int(num_candidates), int(logits.shape[1]))
    candidates = logits[0].argsort(descending=True)[:k]
    if int(candidates[0]) != label:  # ties: keep the predicted label first
        candidates = torch.cat(
            [candidates.new_tensor([label]), candidates[candidates != label]]
        )[:k]
    column = candidates.view(k, 1)
    r_total = torch.zeros_like(x)
    for _ in range(int(max_iter)):
        probe = (x + (1 + overshoot) * r_total).clamp(0, 1).expand(k, *x.shape[1:]).clone()
        probe.requires_grad_(True)
        out = fn(probe)
        if int(out[0].argmax()) != label:
            break
        selected = out.gather(1, column).squeeze(1)  # row j: logit of candidate j
        (grads,) = torch.autograd.grad(selected.sum(), probe)
        w = (grads[1:] - grads[:1]).flatten(1)
        f = (selected[1:] - selected[0]).detach()
        if norm == "l2":
            size = w.norm(dim=1)
        else:
            size = w.abs().sum(dim=1)
        distance = f.abs() / (size + 1e-12)
        best = int(distance.argmin())
        if norm == "l2":
            step = (distance[best] + 1e-4) * w[best] / (size[best] + 1e-12)
        else:
            step = (distance[best] + 1e-4) * w[best].sign()
        r_total = r_total + step.view_as(x)
    return ((1 + overshoot) * r_total).detach()


@UNIVERSAL_ATTACKS.register("uap")
class UAP(ClassifierAttack):
    """Universal adversarial perturbation by accumulated DeepFool steps on a surrogate
    classifier."""

    paper = (
        "Moosavi-Dezfooli, Fawzi, Fawzi, Frossard. Universal adversarial perturbations. CVPR 2017"
    )

    class Config(ClassifierAttackConfig):
        num_candidates: int = Field(10, ge=2, description="DeepFool: top-k candidate classes")
        overshoot: float = Field(0.02, ge=0, description="DeepFool overshoot")
        max_iter: int = Field(50, ge=1, description="DeepFool: maximum iterations per image")
        norm: Literal["l2", "linf"] = Field(
            "l2", description="DeepFool step: l2 (then L-inf projection) or the linf variant"
        )

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
        r = deepfool(
            fn,
            (x + delta).clamp(0, 1),
            num_candidates=cfg.num_candidates,
            overshoot=cfg.overshoot,
            max_iter=cfg.max_iter,
            norm=cfg.norm,
        )
        return delta + r[0]
