"""Defenses of downstream models fine-tuned from pre-trained encoders.

* :mod:`encshield.defenses.losses`: the adversarial fine-tuning losses, pure functions on logits:
  :func:`pgd_at_loss` (Madry et al., ICLR 2018), :func:`trades_loss` and its inner-attack objective
  :func:`trades_inner_objective` (Zhang et al., ICML 2019), :func:`mart_loss` (Wang et al.,
  ICLR 2020) and Gen-AF's :func:`genetic_regularization` (Zhou et al., IEEE S&P 2024).
"""

from encshield.defenses.losses import (
    genetic_regularization,
    mart_loss,
    pgd_at_loss,
    trades_inner_objective,
    trades_loss,
)

__all__ = [
    "genetic_regularization",
    "mart_loss",
    "pgd_at_loss",
    "trades_inner_objective",
    "trades_loss",
]
