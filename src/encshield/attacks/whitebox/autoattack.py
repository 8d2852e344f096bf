"""AutoAttack: the standard ensemble of parameter-free attacks, run in sequence.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, Sec. 5: APGD-CE, then APGD-T (targeted DLR towards the 9
most likely wrong classes, or all of them when the model has fewer than 10 classes), then FAB-T,
then Square (Andriushchenko et al., ECCV 2020; 5000 queries), each with 1 restart and 100
iterations, each run only on the samples that every earlier attack left robust. The robust
accuracy is that of the per-sample worst case over the ensemble.

Default components here: ``apgd_ce``, ``apgd_t``, ``square``. **FAB-T is not implemented** in
encshield, so the default ensemble is the standard one without it (FAB-T rarely breaks a sample
that APGD-T left robust; Croce & Hein, Table 2, but the evaluation is a lower bound of the
standard one's strength). ``apgd_dlr`` can be added (the "plus" version's untargeted DLR).

Per sample the attack returns the first successful adversarial example in the sequence (the
worst case), else the point returned by the last attack that ran on it. Samples misclassified on
the clean input are returned unchanged. Each component is the encshield attack of that name
(:data:`WHITEBOX_ATTACKS`) with this configuration's ``eps``, ``norm``, ``eot_samples``,
``predict``, seed and its own settings below; ``tests/test_attacks_autoattack.py`` compares the
ensemble with the authors' reference implementation (``pyautoattack``, test-only).

Cost: one forward without gradient on the clean batch and one after each component (on its
inputs), plus each component's own cost on the samples still robust.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from encshield.attacks.whitebox.apgd import APGDConfig, APGDDLRConfig, APGDTargetedConfig
from encshield.attacks.whitebox.base import (
    WHITEBOX_ATTACKS,
    Predict,
    WhiteboxAttack,
    WhiteboxAttackConfig,
    attack_context,
    clean_best,
    make_problem,
    prepare_inputs,
)
from encshield.attacks.whitebox.runner import check_labels
from encshield.attacks.whitebox.square import SquareConfig
from encshield.config import validate

__all__ = ["AUTOATTACK_COMPONENTS", "AutoAttackConfig", "autoattack", "run_autoattack"]

#: The attacks an ensemble may contain, in AutoAttack's naming.
AUTOATTACK_COMPONENTS = ("apgd_ce", "apgd_dlr", "apgd_t", "square")
Component = Literal["apgd_ce", "apgd_dlr", "apgd_t", "square"]


class AutoAttackConfig(WhiteboxAttackConfig):
    """The ensemble and the settings of its components (AutoAttack's "standard" defaults).

    Attributes:
        attacks: components run in this order (``apgd_ce``, ``apgd_t``, ``square`` by default;
            also ``apgd_dlr``). FAB-T is not available.
        steps: APGD iterations per restart (100).
        restarts: APGD-CE / APGD-DLR restarts (1 in the standard version).
        n_target_classes: APGD-T target classes (9; capped at the number of classes - 1).
        queries: Square iterations (5000); ``p_init`` its initial window fraction (0.8).
        rho: APGD's condition-1 fraction (0.75).
        objective: fixed per component; only ``ce`` (the default) is accepted.
    """

    attacks: tuple[Component, ...] = ("apgd_ce", "apgd_t", "square")
    steps: int = Field(100, ge=1)
    restarts: int = Field(1, ge=1)
    n_target_classes: int = Field(9, ge=1)
    queries: int = Field(5000, ge=1)
    p_init: float = Field(0.8, gt=0, le=1)
    rho: float = Field(0.75, gt=0, lt=1)

    @field_validator("attacks")
    @classmethod
    def _some_attacks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            allowed = ", ".join(AUTOATTACK_COMPONENTS)
            raise ValueError(f"at least one attack; allowed values: {allowed}")
        if len(set(value)) != len(value):
            raise ValueError(f"attacks listed twice in {list(value)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AutoAttackConfig:
        if self.objective != "ce":
            raise ValueError("autoattack fixes the loss of each component; leave objective='ce'")
        if self.norm != "linf" and "square" in self.attacks:
            raise ValueError("square is L-inf only; for norm='l2' list attacks without 'square'")
        return self

    def component(self, name: str) -> WhiteboxAttackConfig:
        """The validated configuration of the component ``name``."""
        shared = dict(eps=self.eps, norm=self.norm, eot_samples=self.eot_samples,
                      predict=self.predict)
        if name in ("apgd_ce", "apgd_dlr"):
            cls = APGDConfig if name == "apgd_ce" else APGDDLRConfig
            return validate(cls, dict(shared, steps=self.steps, restarts=self.restarts,
                                      rho=self.rho))
        if name == "apgd_t":
            return validate(APGDTargetedConfig, dict(
                shared, steps=self.steps, restarts=1, rho=self.rho,
                n_target_classes=self.n_target_classes))
        return validate(SquareConfig, dict(shared, queries=self.queries, p_init=self.p_init))


def run_autoattack(
    model: nn.Module, x: torch.Tensor, y: Any, config: AutoAttackConfig, seed: int = 0
) -> torch.Tensor:
    """The ensemble with a validated :class:`AutoAttackConfig` (see :func:`autoattack`)."""
    x = prepare_inputs(x)
    y = check_labels(x, y, "autoattack").to(x.device)
    x_adv = x.clone()
    with attack_context(model, seed, x.device):
        problem = make_problem(model, x, y, "ce", targeted=False, predict=config.predict,
                               eot_samples=config.eot_samples)
        broken = clean_best(problem, x, "misclassified").success
        for name in config.attacks:
            robust = (~broken).nonzero().squeeze(1)
            if robust.numel() == 0:
                break
            attack = WHITEBOX_ATTACKS.get(name)
            result = attack.run(model, x[robust], y[robust], config.component(name), seed)
            _, success, _ = problem.subset(robust).evaluate(result, grad=False)
            assert success is not None
            # broken now: this (first) success; still robust: the latest attack's point
            x_adv[robust] = result
            broken[robust] = success
    return x_adv


def autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float = 8 / 255,
    norm: Literal["linf", "l2"] = "linf",
    attacks: tuple[Component, ...] = ("apgd_ce", "apgd_t", "square"),
    steps: int = 100,
    restarts: int = 1,
    n_target_classes: int = 9,
    queries: int = 5000,
    p_init: float = 0.8,
    rho: float = 0.75,
    eot_samples: int = 1,
    predict: Predict | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """AutoAttack (Croce & Hein, ICML 2020): the per-sample worst case over an attack sequence.

    Args:
        model: images float ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K)`` (K >= 4 for APGD-T).
        x: clean images float ``(N, C, H, W)`` in [0, 1].
        y: true labels int64 ``(N,)``.
        eps: budget (L-inf in [0, 1] pixel units, or L2 per sample without Square).
        attacks, steps, restarts, n_target_classes, queries, p_init, rho: see
            :class:`AutoAttackConfig`.
        eot_samples: passes averaged per gradient and per loss in every component (EOT).
        predict: ``outputs -> labels (N,)`` for the success test.
        seed: passed to every component (random starts, random search).

    Returns:
        ``x_adv`` like ``x``: per sample the first successful adversarial example of the
        sequence, else the last component's point; clean-misclassified samples unchanged.
    """
    config = validate(AutoAttackConfig, dict(
        eps=eps, norm=norm, attacks=attacks, steps=steps, restarts=restarts,
        n_target_classes=n_target_classes, queries=queries, p_init=p_init, rho=rho,
        eot_samples=eot_samples, predict=predict))
    return run_autoattack(model, x, y, config, seed)


WHITEBOX_ATTACKS.add("autoattack", WhiteboxAttack(
    "autoattack", AutoAttackConfig, run_autoattack,
    "AutoAttack ensemble: APGD-CE, APGD-T, Square in sequence, worst case per sample "
    "(Croce & Hein 2020; no FAB-T)"), aliases=("aa",))
