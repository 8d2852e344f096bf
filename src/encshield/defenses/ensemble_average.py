"""``ensemble_average``: the reviewers' baseline for ZePAD -- the same encoders **without**
adversarial fine-tuning, one head each, logits averaged.

ZePAD's reviewers (ICLR 2026; METHODS.md 3.5) asked how much of its effect is just "more
encoders": this defense builds the branches of :class:`~encshield.defenses.zepad.ZePAD` (same
specs and defaults, :mod:`encshield.defenses.branches`) from the pre-trained encoders as they
are, trains one head per branch on the clean downstream data (the CGCL head protocol) and fuses
with ``equal`` weights (the mean of the logits; docs/methods.md, "ZePAD"). It also exposes the
confidence-gap detector, so detection is compared on the same footing.
"""

from __future__ import annotations

from pydantic import Field

from encshield.defenses.base import DEFENSES
from encshield.defenses.zepad import BranchEnsembleDefense, EnsembleConfig

__all__ = ["EnsembleAverage", "EnsembleAverageConfig"]


class EnsembleAverageConfig(EnsembleConfig):
    """:class:`~encshield.defenses.zepad.EnsembleConfig` with ``fusion="equal"``."""

    fusion: str = Field("equal")


@DEFENSES.register("ensemble_average", aliases=("ensemble", "plain_ensemble"))
class EnsembleAverage(BranchEnsembleDefense):
    """The plain ensemble: ZePAD's encoders without adversarial fine-tuning, logits averaged."""

    Config = EnsembleAverageConfig
    config: EnsembleAverageConfig
