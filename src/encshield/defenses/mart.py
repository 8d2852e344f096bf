"""``mart``: MART adversarial fine-tuning (Wang, Zou, Yi, Bailey, Ma, Gu, "Improving Adversarial
Robustness Requires Revisiting Misclassified Examples", ICLR 2020).

Inner maximisation: CE PGD (L-inf, eps 8/255, 10 steps of 2/255, random start), as in the paper.
The start is uniform in the eps-ball by default (the shared loop's); ``attack_start="gaussian"``
starts at ``x + 0.001 * N(0, I)`` as the official MART code (``YisenWang/MART``, ``mart_loss``;
there with eps 0.031 and step 0.007, settable through ``attack``). Our start is clipped to
[0, 1] before the first forward; the official code clips only after the first step.
Outer loss: :func:`encshield.defenses.losses.mart_loss`
``mean_i [BCE(p_adv_i, y_i) + beta * KL(p_clean_i || p_adv_i) * (1 - p_clean_i[y_i])]``,
``beta = 6`` (the paper's CIFAR-10 value).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from encshield.attacks.whitebox import pgd
from encshield.defenses.base import DEFENSES
from encshield.defenses.finetuning import FinetuningConfig, PairedLogitsDefense
from encshield.defenses.losses import mart_loss
from encshield.models import Classifier

__all__ = ["MART", "MARTConfig"]


class MARTConfig(FinetuningConfig):
    """Shared-loop settings plus ``beta`` (weight of the misclassification-aware KL term) and the
    inner attack's start.

    Attributes:
        beta: weight of the KL term, >= 0 (6, the paper's CIFAR-10 value).
        attack_start: ``uniform`` in the eps-ball (default) or ``gaussian``:
            ``x + attack_start_std * N(0, I)``, the official MART code's start.
        attack_start_std: standard deviation of the Gaussian start (0.001 as the official code).
    """

    beta: float = Field(6.0, ge=0.0)
    attack_start: Literal["uniform", "gaussian"] = "uniform"
    attack_start_std: float = Field(0.001, gt=0.0)

    @model_validator(mode="after")
    def _start_needs_random_start(self) -> MARTConfig:
        if self.attack_start == "gaussian" and not self.attack.random_start:
            raise ValueError(
                "attack_start='gaussian' is a random start; it needs attack.random_start=True "
                "(allowed values: True)"
            )
        return self


@DEFENSES.register("mart")
class MART(PairedLogitsDefense):
    """``loss = BCE(p_adv, y) + beta * KL(p_clean || p_adv) * (1 - p_clean[y])``."""

    Config = MARTConfig
    config: MARTConfig
    loss_name = "mart"

    def attack(
        self, model: Classifier, x: torch.Tensor, y: torch.Tensor, seed: int
    ) -> torch.Tensor:
        """CE PGD with the configured start (``keep_best="last"``, Madry's update)."""
        cfg = self.config
        if cfg.attack_start == "uniform":
            return super().attack(model, x, y, seed)
        a = cfg.attack
        return pgd(model, x, y, eps=a.eps, steps=a.steps, step_size=a.step_size,
                   random_start=True, start_distribution="normal",
                   start_std=cfg.attack_start_std, objective="ce", keep_best="last", seed=seed)

    def paired_loss(
        self, logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        return mart_loss(logits_clean, logits_adv, y, beta=self.config.beta)
