"""``pgd_at``: PGD adversarial fine-tuning (Madry et al., "Towards Deep Learning Models Resistant
to Adversarial Attacks", ICLR 2018).

``min_theta E[max_{||delta||_inf <= eps} CE(f(x + delta), y)]``: the inner maximisation is L-inf
PGD (eps 8/255, 10 steps of 2/255, uniform random start), the outer loss
:func:`encshield.defenses.losses.pgd_at_loss` on the adversarial examples only.
"""

from __future__ import annotations

import torch

from encshield.defenses.base import DEFENSES
from encshield.defenses.finetuning import FinetuningConfig, FinetuningDefense
from encshield.defenses.losses import pgd_at_loss
from encshield.models import Classifier

__all__ = ["PGDAdversarialTraining"]


@DEFENSES.register("pgd_at", aliases=("pgd-at", "madry"))
class PGDAdversarialTraining(FinetuningDefense):
    """``loss = mean_i CE(model(x_adv_i), y_i)`` with ``x_adv`` from CE PGD."""

    Config = FinetuningConfig

    def loss(
        self, model: Classifier, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        assert x_adv is not None
        loss = pgd_at_loss(model(x_adv), y)
        return loss, {"ce_adv": float(loss.detach())}
