"""Adaptive attacks on multi-branch (fused) classifiers: the joint and the detection-aware PGD.

ZePAD (Lei, Yang, Zhang, ICLR 2026; docs/methods.md, "ZePAD") has no adaptive evaluation; its
reviewers asked for one. A fused model (:class:`~encshield.models.FusedClassifier`) is
differentiable end to end (RFDM's weights included), so every white-box attack of the registry
already attacks it as a whole. These two add what an adaptive attacker of ZePAD would also try:

``joint_pgd``
    PGD on the **sum of the branches' losses** ``sum_i L(z_i, y)`` (plus ``fused_weight`` times
    the loss of the fused logits; 0 by default): every branch is pushed off the label at once,
    so the fusion cannot fall back on a branch that still classifies correctly.
``detection_aware_pgd``
    PGD on the fused loss (the CW margin, capped at ``cap = 1``) minus
    ``detection_penalty * relu(gap - threshold + margin)``, ``gap``
    the MPAE-minus-BMP confidence gap of ZePAD's DAE detector
    (:func:`encshield.models.fusion.confidence_gap` with the model's ``detector_settings``): it
    keeps the gap under the detection threshold while fooling the classifier. It returns the
    highest-objective iterate per sample (``keep_best="loss"``), i.e. it prefers undetected
    points.

On a model without branches (any other classifier) the model is its only branch and both
reduce to PGD on its loss.

Both accept every PGD setting (``steps``, ``restarts``, ``eot_samples`` ...) and the per-branch
loss ``objective`` (``ce``, ``cw``, ``dlr``); hygiene as :mod:`encshield.attacks.whitebox.base`.
Spec strings: ``joint_pgd:eps=8/255,steps=10``,
``detection_aware_pgd:eps=8/255,steps=10,detection_penalty=10``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field
from torch import nn

from encshield.attacks.whitebox.base import WHITEBOX_ATTACKS, KeepBest, WhiteboxAttack
from encshield.attacks.whitebox.objectives import resolve_objective
from encshield.attacks.whitebox.pgd import PGDConfig, run_pgd
from encshield.models.fusion import confidence_gap

__all__ = ["BranchOutputs", "DetectionAwarePGDConfig", "JointPGDConfig", "branch_objective"]


class BranchOutputs(nn.Module):
    """A (fused) classifier seen by an attack: images -> ``{"logits": fused (N, C), "branches":
    (B, N, C), "gap": (N,) or None}``.

    Args:
        model: a module with ``branch_logits(x) -> [z_i]`` and ``fuse([z_i]) -> z`` (a
            :class:`~encshield.models.FusedClassifier`); any other classifier is its own only
            branch (the attacks then reduce to PGD on its loss).
        gap: also compute the detector's confidence gap when the model has MPAE and BMP
            branches and ``detector_settings`` (else ``gap`` stays ``None``).
    """

    def __init__(self, model: nn.Module, *, gap: bool = False) -> None:
        super().__init__()
        self.model = model
        self.multi = callable(getattr(model, "branch_logits", None)) and \
            callable(getattr(model, "fuse", None))
        roles = list(getattr(model, "roles", None) or []) if self.multi else []
        self.settings = dict(getattr(model, "detector_settings", None) or {})
        self.mpae = [i for i, r in enumerate(roles) if r == "mpae"]
        self.bmp = [i for i, r in enumerate(roles) if r == "bmp"]
        self.gap = bool(gap and self.mpae and self.bmp and self.settings)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        if self.multi:
            branches = getattr(self.model, "branch_logits")(x)  # noqa: B009 - checked above
            fused = getattr(self.model, "fuse")(branches)  # noqa: B009
        else:
            fused = self.model(x)
            branches = [fused]
        out: dict[str, Any] = {"logits": fused, "branches": torch.stack(branches), "gap": None}
        if self.gap:
            k = self.settings.get("k")
            out["gap"] = confidence_gap(
                branches, self.mpae, self.bmp, statistic=self.settings.get("statistic", "mean"),
                confidence=self.settings.get("confidence", "raw"),
                k=3.0 if k is None else float(k))
        return out


def branch_objective(loss: str | Callable[..., Any], *, fused_weight: float = 0.0,
                     branch_weight: float = 1.0, detection_penalty: float = 0.0,
                     threshold: float = 0.1, margin: float = 0.0, cap: float | None = None
                     ) -> Callable[[dict[str, Any], torch.Tensor], torch.Tensor]:
    """The objective ``(BranchOutputs output, y) -> (N,)`` to maximise::

        fused_weight * min(L(z, y), cap) + branch_weight * sum_i min(L(z_i, y), cap)
            - detection_penalty * relu(gap - threshold + margin)

    ``cap`` (``None``: no cap) bounds the classification terms, as the confidence ``kappa`` of
    Carlini & Wagner (IEEE S&P 2017): once a sample is misclassified with that margin, only
    the detection penalty moves it.
    """
    fn = resolve_objective(loss)

    def term(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = fn(z, y)
        return value if cap is None else value.clamp(max=cap)

    def objective(outputs: dict[str, Any], y: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(outputs["logits"].shape[0], device=outputs["logits"].device)
        if fused_weight:
            total = total + fused_weight * term(outputs["logits"], y)
        if branch_weight:
            total = total + branch_weight * sum(term(z, y) for z in outputs["branches"])
        if detection_penalty and outputs["gap"] is not None:
            excess = torch.relu(outputs["gap"] - threshold + margin)
            total = total - detection_penalty * excess
        return total

    return objective


class JointPGDConfig(PGDConfig):
    """PGD settings plus the weights of the joint objective (``objective``: the loss ``L`` of
    each branch and of the fused logits)."""

    fused_weight: float = Field(0.0, ge=0.0)
    branch_weight: float = Field(1.0, ge=0.0)


class DetectionAwarePGDConfig(JointPGDConfig):
    """Detection-aware PGD: the fused loss, capped at ``cap`` (the CW margin by default, capped
    at 1: misclassified with a logit margin of 1), minus a penalty on the confidence gap above
    the detection threshold (``threshold``: ``None`` = the model's detector threshold).
    ``keep_best``: ``None`` = ``loss`` on a model with a detector (prefer undetected points),
    else ``misclassified`` (plain PGD)."""

    objective: str | Callable[..., Any] = "cw"
    cap: float | None = 1.0
    fused_weight: float = Field(1.0, ge=0.0)
    branch_weight: float = Field(0.0, ge=0.0)
    detection_penalty: float = Field(10.0, ge=0.0)
    threshold: float | None = None
    margin: float = Field(0.0, ge=0.0)
    keep_best: KeepBest | None = None  # type: ignore[assignment]


def _pgd_config(config: JointPGDConfig, objective: Callable[..., Any],
                keep_best: KeepBest | None = None) -> PGDConfig:
    values = {name: getattr(config, name) for name in PGDConfig.model_fields}
    values["objective"] = objective
    if keep_best is not None:
        values["keep_best"] = keep_best
    return PGDConfig(**values)


def run_joint_pgd(model: nn.Module, x: torch.Tensor, y: Any, config: JointPGDConfig,
                  seed: int = 0) -> torch.Tensor:
    """Joint PGD (see the module docstring) with a validated config."""
    objective = branch_objective(config.objective, fused_weight=config.fused_weight,
                                 branch_weight=config.branch_weight)
    return run_pgd(BranchOutputs(model), x, y, _pgd_config(config, objective), seed)


def run_detection_aware_pgd(model: nn.Module, x: torch.Tensor, y: Any,
                            config: DetectionAwarePGDConfig, seed: int = 0) -> torch.Tensor:
    """Detection-aware PGD (see the module docstring) with a validated config."""
    wrapper = BranchOutputs(model, gap=True)
    threshold = config.threshold
    if threshold is None:
        threshold = float(wrapper.settings.get("threshold", 0.1))
    objective = branch_objective(config.objective, fused_weight=config.fused_weight,
                                 branch_weight=config.branch_weight,
                                 detection_penalty=config.detection_penalty,
                                 threshold=threshold, margin=config.margin, cap=config.cap)
    keep = config.keep_best or ("loss" if wrapper.gap else "misclassified")
    return run_pgd(wrapper, x, y, _pgd_config(config, objective, keep), seed)


WHITEBOX_ATTACKS.add("joint_pgd", WhiteboxAttack(
    "joint_pgd", JointPGDConfig, run_joint_pgd,
    "PGD on the sum of a fused model's branch losses (adaptive, ZePAD)"))
WHITEBOX_ATTACKS.add("detection_aware_pgd", WhiteboxAttack(
    "detection_aware_pgd", DetectionAwarePGDConfig, run_detection_aware_pgd,
    "PGD on a fused model keeping ZePAD's confidence gap under the detection threshold"))
