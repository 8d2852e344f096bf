"""``mart``: MART adversarial fine-tuning (Wang, Zou, Yi, Bailey, Ma, Gu, "Improving Adversarial
Robustness Requires Revisiting Misclassified Examples", ICLR 2020).

Inner maximisation: CE PGD (L-inf, eps 8/255, 10 steps of 2/255, random start), as in the paper.
Outer loss: :func:`encshield.defenses.losses.mart_loss`
``mean_i [BCE(p_adv_i, y_i) + beta * KL(p_clean_i || p_adv_i) * (1 - p_clean_i[y_i])]``,
``beta = 6`` (the paper's CIFAR-10 value).
"""

from __future__ import annotations

import torch
from pydantic import Field

from encshield.defenses.base import DEFENSES
from encshield.defenses.finetuning import FinetuningConfig, FinetuningDefense
from encshield.defenses.losses import mart_loss
from encshield.models import Classifier

__all__ = ["MART", "MARTConfig"]


class MARTConfig(FinetuningConfig):
    """Shared-loop settings plus ``beta`` (weight of the misclassification-aware KL term)."""

    beta: float = Field(6.0, ge=0.0)


@DEFENSES.register("mart")
class MART(FinetuningDefense):
    """``loss = BCE(p_adv, y) + beta * KL(p_clean || p_adv) * (1 - p_clean[y])``."""

    Config = MARTConfig

    def loss(
        self, model: Classifier, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        assert x_adv is not None
        # separate forwards, as in the papers' code (BatchNorm batch statistics per input set)
        logits_clean, logits_adv = model(x), model(x_adv)
        loss = mart_loss(logits_clean, logits_adv, y, beta=self.config.beta)  # type: ignore[attr-defined]
        return loss, {"mart": float(loss.detach())}
