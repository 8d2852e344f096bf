"""``ssp``: the feature-disruption objective of the Self-Supervised Perturbation (Naseer, Khan,
Hayat, Khan, Porikli, "A Self-supervised Approach for Adversarial Robustness", CVPR 2020), in its
universal variant as implemented by the PAP repository's baseline (docs/methods.md, "Universal
attacks").

Label-free, feature space: hook an intermediate layer ``phi`` of the encoder (default
``layer2`` of our ResNets, configurable with any name of ``Encoder.layer_names()``), and maximise
``MSE(phi(x)^2, phi(x + delta)^2)`` over a universal delta by sign-gradient ascent
(:mod:`encshield.attacks.universal._ascent`), delta initialised ``U(-eps, eps)`` and clipped to
``[-eps, eps]``; the clean squared activations are computed without gradient per batch.

Step budget. PAP used ``alpha = 2e-4`` with ``eps = 0.05`` and 10k-30k iterations of batch 16 at
224 px. For the CPU tiers (10/255, 32-64 px, a few thousand surrogate images) the defaults are
``steps=300`` of batch 32 with ``alpha = 2e-3`` (~eps/20, so the delta can cross the whole budget
about 7 times): on a width-16 ResNet-18 at 32 px the objective is within a few per cent of its
value after 1,000 steps at ``alpha = 1e-3`` (about 20-30 s on one CPU core). The number of steps
does not depend on the surrogate set's size (it is cycled). Use more steps and a smaller alpha
at the paper tier.
The forward stops at the hooked layer (no cost for the layers above it). Images are clamped to
[0, 1] (the official code does not clip ``x + delta`` during training).

Objective (lower = better for the attacker): ``-MSE(phi(x)^2, phi(x')^2)`` per image.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from encshield.attacks.perturbation import Perturbation
from encshield.attacks.universal._ascent import SignAscentConfig, perturb, sign_ascent
from encshield.attacks.universal.base import (
    UNIVERSAL_ATTACKS,
    ActivationTap,
    FitContext,
    UniversalAttack,
)

__all__ = ["SSP"]


@UNIVERSAL_ATTACKS.register("ssp")
class SSP(UniversalAttack):
    """Universal SSP: maximise the distortion of squared intermediate activations."""

    paper = (
        "Naseer, Khan, Hayat, Khan, Porikli. A Self-supervised Approach for Adversarial "
        "Robustness. CVPR 2020 (universal variant of the PAP repository)"
    )
    objective_name = "negative MSE between squared clean and perturbed activations of the layer"

    class Config(SignAscentConfig):
        layer: str = Field("layer2", description="hooked layer (a name of Encoder.layer_names())")

    config: Config

    def _fit(self, context: FitContext) -> Perturbation:
        tap = ActivationTap(context.encoder, self.config.layer)
        layer = self.config.layer

        def loss(x: torch.Tensor, delta: torch.Tensor, step: int) -> torch.Tensor:
            with torch.no_grad():
                clean = tap(x)[layer].pow(2)
            return (tap(perturb(x, delta))[layer].pow(2) - clean).pow(2).mean()

        delta = sign_ascent(context, self.config, loss, self.name)
        return Perturbation("additive", delta.cpu(), eps=context.eps)

    def _objective_state(
        self, encoder: nn.Module, surrogate_head: nn.Module | None, perturbation: Perturbation
    ) -> Any:
        return ActivationTap(encoder, self.config.layer)

    def _objective_values(
        self, encoder: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, state: Any
    ) -> torch.Tensor:
        layer = self.config.layer
        clean: torch.Tensor = state(x)[layer]
        adv: torch.Tensor = state(x_adv)[layer]
        return -(adv.pow(2) - clean.pow(2)).pow(2).flatten(1).mean(1)
