"""``trades``: TRADES adversarial fine-tuning (Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan,
"Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019).

Inner maximisation: L-inf PGD maximising ``KL(p_clean || p_adv)``
(:func:`encshield.defenses.losses.trades_inner_objective`) with the clean probabilities of the
model (eval mode, detached) as the reference. The paper starts from ``x + 0.001 * N(0, I)``; we
use the shared loop's uniform random start in the eps-ball (the KL has a zero gradient at
``x_adv = x``, so a random start is needed; ``attack.random_start=False`` is refused). Outer loss:
:func:`encshield.defenses.losses.trades_loss` ``CE(z_clean, y) + beta * KL(p_clean || p_adv)``,
``beta = 6`` (the paper's CIFAR-10 value).
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from encshield.attacks.whitebox import pgd
from encshield.defenses.base import DEFENSES
from encshield.defenses.finetuning import FinetuningConfig, PairedLogitsDefense
from encshield.defenses.losses import trades_inner_objective, trades_loss
from encshield.models import Classifier
from encshield.models.modules import restored_modes

__all__ = ["TRADES", "TRADESConfig"]


class TRADESConfig(FinetuningConfig):
    """Shared-loop settings plus ``beta`` (robustness/accuracy trade-off)."""

    beta: float = Field(6.0, ge=0.0)

    @model_validator(mode="after")
    def _needs_random_start(self) -> TRADESConfig:
        if not self.attack.random_start:
            raise ValueError(
                "attack.random_start=False is not allowed for trades: the KL objective has a "
                "zero gradient at the clean input; allowed values: True"
            )
        return self


@DEFENSES.register("trades")
class TRADES(PairedLogitsDefense):
    """``loss = CE(z_clean, y) + beta * KL(p_clean || p_adv)``."""

    Config = TRADESConfig
    config: TRADESConfig
    loss_name = "trades"

    def attack(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, seed: int
    ) -> torch.Tensor:
        a = self.config.attack
        with restored_modes(model), torch.no_grad():
            model.eval()
            clean_probs = torch.softmax(model(x), dim=1)
        return pgd(model, x, clean_probs, eps=a.eps, steps=a.steps, step_size=a.step_size,
                   random_start=a.random_start, objective=trades_inner_objective,
                   keep_best="last", seed=seed)

    def paired_loss(
        self, logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        return trades_loss(logits_clean, logits_adv, y, beta=self.config.beta)
