"""``genaf_stage1``: Gen-AF stage 1, genetic-driven dual-track adversarial fine-tuning (Zhou, Hu,
Zhang, Li, Li, Jin, "Securely Fine-tuning Pre-trained Encoders Against Adversarial Examples",
IEEE S&P 2024), as specified in docs/methods.md, "Defenses".

* Dual track: encoder and head trained together with two Adam optimisers (encoder lr 1e-4, head
  lr 5e-3, weight decay 8e-4, ExponentialLR 0.96 per epoch): the shared loop's defaults.
* Inner attack: L-inf PGD on the CE, eps 0.03, 10 steps of 0.007, **no** random start (the
  official code's settings; all configurable), model in eval mode.
* Loss: ``CE(z_adv, y) + lambda_gr * L_GR(A, B, y, w)`` with
  :func:`encshield.defenses.losses.genetic_regularization` (``lambda_gr = 20``, ``tanh_scale = 32``,
  ``shift = 2``, summed), ``B`` = adversarial logits of the current model, ``w_i`` = per-sample CE
  of the current model's clean logits (not detached, as in the code), and ``A`` chosen by:

  - ``feature_space="logits"`` (default, the code) or ``"encoder"`` (encoder features instead of
    logits, the paper's/ZePAD's description), for both ``A`` and ``B``;
  - ``anchor="current"`` (default, the code: ``A`` from the current model on clean inputs) or
    ``"frozen_pretrained"`` (``A`` from a frozen copy of the pre-trained encoder: its features,
    or, in logit space, the initial head on them; no gradient flows into the anchor), the
    "genetic" inheritance of the pre-trained topology the paper's name refers to.

Deliberate differences from the official code (docs/methods.md, "Defenses"): the attack sees the
same normalised model as training (normalisation inside the Encoder), attack gradients never reach
the parameters' ``.grad`` (the loop checks it) and the optimisers are created once.
``paper_code_compat`` is only **recorded**: the official code's bugs (un-normalised attack inputs,
attack-gradient leak) are not reproduced, whatever its value.

Epochs default to the paper's 50 (ZePAD's copy uses 20); tests and the tiny tier override them.

The names ``genaf`` / ``gen-af`` belong to the full two-stage defense
(:class:`encshield.defenses.genaf_stage2.GenAF`, stage 1 here followed by stage 2).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from encshield.defenses.base import DEFENSES
from encshield.defenses.finetuning import (
    AttackSettings,
    FinetuningConfig,
    FinetuningDefense,
)
from encshield.defenses.losses import genetic_regularization
from encshield.models import Classifier, Encoder

__all__ = ["GenAFStage1", "GenAFStage1Config"]


class GenAFStage1Config(FinetuningConfig):
    """Shared-loop settings with Gen-AF stage 1's attack and genetic-regularisation knobs."""

    attack: AttackSettings = Field(
        default_factory=lambda: AttackSettings(eps=0.03, steps=10, step_size=0.007,
                                               random_start=False)
    )
    lambda_gr: float = Field(20.0, ge=0.0)
    tanh_scale: float = Field(32.0, gt=0.0)
    shift: float = 2.0
    feature_space: Literal["logits", "encoder"] = "logits"
    anchor: Literal["current", "frozen_pretrained"] = "current"
    paper_code_compat: bool = Field(
        False,
        description="Recorded only. The official code's defects (PGD on un-normalised inputs, "
        "attack gradients leaking into parameter .grad) are NOT implemented.",
    )

    @model_validator(mode="after")
    def _anchor_needs_a_trained_head(self) -> GenAFStage1Config:
        """A frozen anchor in logit space is the pre-trained encoder *with the initial head*;
        a random initial head makes the anchor logits noise (the regulariser then pulls the
        model towards a random classifier), so that combination is refused."""
        if self.anchor == "frozen_pretrained" and self.feature_space == "logits" \
                and self.head_init == "random":
            raise ValueError(
                "anchor=frozen_pretrained with feature_space=logits needs head_init=trained "
                "(a random initial head makes the anchor's logits meaningless); set "
                "head_init=trained or feature_space=encoder")
        return self


@DEFENSES.register("genaf_stage1")
class GenAFStage1(FinetuningDefense):
    """Gen-AF stage 1: ``CE(z_adv, y) + lambda_gr * L_GR(A, B, y, CE(z_clean, y))``."""

    Config = GenAFStage1Config
    config: GenAFStage1Config

    def setup(self, model: Classifier, pretrained: Encoder) -> None:
        self._anchor: Classifier | None = None
        if self.config.anchor == "frozen_pretrained":
            anchor = Classifier(pretrained, copy.deepcopy(model.head)).eval()
            for p in anchor.parameters():
                p.requires_grad_(False)
            self._anchor = anchor

    def _anchor_side(self, x: torch.Tensor) -> torch.Tensor:
        assert self._anchor is not None
        with torch.no_grad():
            feats: torch.Tensor = self._anchor.encoder(x)
            if self.config.feature_space == "encoder":
                return feats
            logits: torch.Tensor = self._anchor.head(feats)
            return logits

    def loss(
        self, model: Classifier, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        assert x_adv is not None
        cfg = self.config
        feats_clean = model.encoder(x)
        logits_clean = model.head(feats_clean)
        feats_adv = model.encoder(x_adv)
        logits_adv = model.head(feats_adv)
        ce_adv = F.cross_entropy(logits_adv, y)
        weights = F.cross_entropy(logits_clean, y, reduction="none")
        if cfg.anchor == "frozen_pretrained":
            a = self._anchor_side(x)
        else:
            a = feats_clean if cfg.feature_space == "encoder" else logits_clean
        b = feats_adv if cfg.feature_space == "encoder" else logits_adv
        gr = genetic_regularization(a, b, y, weights, tanh_scale=cfg.tanh_scale, shift=cfg.shift,
                                    reduction="sum")
        loss = ce_adv + cfg.lambda_gr * gr
        return loss, {"ce_adv": float(ce_adv.detach()), "gr": float(gr.detach())}

    def extra_record(self) -> dict[str, Any]:
        return {
            "paper_code_compat": bool(self.config.paper_code_compat),
            "paper_code_compat_note": "recorded only; the official code's un-normalised attack "
            "and attack-gradient leak are not reproduced",
        }
