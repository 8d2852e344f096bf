"""``standard``: full fine-tuning of encoder + head on the clean cross-entropy (no attack).

The baseline "standard fine-tuning" of the CGCL family's tables (Gen-AF, Zhou et al., IEEE S&P
2024; ZePAD): same dual-track optimisation as the adversarial defenses (encoder Adam lr 1e-4, head
Adam lr 5e-3, weight decay 8e-4, ExponentialLR 0.96), clean examples only.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from encshield.defenses.base import DEFENSES
from encshield.defenses.finetuning import FinetuningConfig, FinetuningDefense
from encshield.models import Classifier

__all__ = ["StandardFinetuning"]


@DEFENSES.register("standard", aliases=("standard_finetuning", "sft"))
class StandardFinetuning(FinetuningDefense):
    """Clean fine-tuning: ``loss = CE(model(x), y)``."""

    Config = FinetuningConfig
    uses_attack: ClassVar[bool] = False

    def loss(
        self, model: Classifier, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        loss = F.cross_entropy(model(x), y)
        return loss, {"ce": float(loss.detach())}
