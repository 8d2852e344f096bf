"""``pap``: Pre-trained Adversarial Perturbations / L4A, "Lure for Attack" (Ban & Dong,
"Pre-trained Adversarial Perturbations", NeurIPS 2022), docs/methods.md, "Universal attacks".

Label-free, low-level feature attack on a pre-trained encoder: maximise the energy (mean squared
activation) of a *low* layer of the encoder at ``x + delta`` by sign-gradient ascent
(:mod:`encshield.attacks.universal._ascent`), delta initialised ``U(-eps, eps)`` and clipped to
``[-eps, eps]``. Three variants:

* ``base`` (L4A_base): ``mean(phi_l(x + delta)^2)``, ``l`` = ``layer`` (default ``layer1``; the
  PAP README hooks the stem of its ImageNet ResNet, docs/methods.md, "Universal attacks" allows
  conv1/bn1/relu or layer1 for the family's encoders). On a CIFAR-stem ResNet (one 3x3 convolution,
  no max-pool) the stem is too shallow: chosen on the attacker's side only (mean cosine distance of
  the encoder's embedding between x and x + delta on held-out Tiny-ImageNet images, zoo SimCLR tiny
  encoder), the stem objective moved the embedding 0.014 (uniform noise of the same budget: 0.008),
  ``layer1`` 0.138 (SSP: 0.197). ``layer="relu"`` gives the README's stem variant.
* ``fuse`` (L4A_fuse): ``mean(phi_l^2) + fuse_weight * mean(phi_l2^2)`` with ``l2`` =
  ``fuse_layer`` (default ``relu``, the stem: the pair stem + layer1). ``fuse_weight`` defaults
  to 1.0 (both layers weighted equally; the method notes give no value for it; configurable).
* ``ugs`` (L4A_ugs, uniform Gaussian sampling): every step concatenates ``noise_images`` (8)
  Gaussian-noise images to the real batch and maximises
  ``mean(phi_l(noise + delta)^2) + real_weight * mean(phi_l(real + delta)^2)``,
  ``real_weight`` = 0.01 (the README's lambda). Each noise image has per-channel mean
  ``U(0.4, 0.6)`` and std ``U(0.05, 0.10)``; those statistics are resampled every
  ``noise_resample_every`` (20) steps, the pixels are drawn afresh every step (clamped to [0, 1]).

Step budget: the PAP repository uses ``alpha = 2e-4`` with ``eps = 0.05`` and 10k-30k
iterations at 224 px; the CPU-tier defaults here are 300 steps of batch 32 with ``alpha = 2e-3``
(see :mod:`encshield.attacks.universal.ssp`; the stem objective converges within ~50
steps). ``eps`` defaults to the family's 10/255. The forward stops at the deepest hooked layer.
Images are clamped to [0, 1] (the official code does not clip ``x + delta`` during training).

Objective (lower = better for the attacker): minus the per-image activation energy being
maximised, on the given images: ``-(mean(phi_l(x')^2) [+ fuse_weight * mean(phi_l2(x')^2)])``;
for ``ugs``, ``-(mean(phi_l(n_i + delta)^2) + real_weight * mean(phi_l(x_i')^2))`` where every
given image ``x_i`` is paired with one Gaussian-noise image ``n_i`` drawn (with the configured
statistics) from a fixed seed, so that different perturbations are compared on the same noise.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from encshield.attacks.perturbation import Perturbation
from encshield.attacks.universal._ascent import SignAscentConfig, perturb, sign_ascent
from encshield.attacks.universal.base import (
    UNIVERSAL_ATTACKS,
    ActivationTap,
    FitContext,
    UniversalAttack,
)

__all__ = ["PAP"]

#: Seed of the noise images paired with the real images by the ugs objective.
OBJECTIVE_NOISE_SEED = 0


def _energy(activation: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared activation ``(N,)``."""
    return activation.pow(2).flatten(1).mean(1)


@UNIVERSAL_ATTACKS.register("pap", aliases=("l4a",))
class PAP(UniversalAttack):
    """L4A: lift the low-level activation energy of the encoder (base / fuse / ugs)."""

    paper = "Ban, Dong. Pre-trained Adversarial Perturbations. NeurIPS 2022 (L4A)"
    objective_name = "negative activation energy mean(phi(x')^2) of the hooked layer(s)"

    class Config(SignAscentConfig):
        variant: Literal["base", "fuse", "ugs"] = Field("base", description="L4A variant")
        layer: str = Field("layer1", description="low layer (a name of Encoder.layer_names())")
        fuse_layer: str = Field("relu", description="second layer of the fuse variant")
        fuse_weight: float = Field(1.0, ge=0, description="weight of fuse_layer (fuse)")
        real_weight: float = Field(0.01, ge=0, description="weight of the real-image term (ugs)")
        noise_images: int = Field(8, ge=1, description="Gaussian-noise images per step (ugs)")
        noise_resample_every: int = Field(
            20, ge=1, description="steps between resampling the noise statistics (ugs)"
        )
        noise_mean: tuple[float, float] = Field((0.4, 0.6), description="U range of the means")
        noise_std: tuple[float, float] = Field((0.05, 0.10), description="U range of the stds")

        @model_validator(mode="after")
        def _ranges(self) -> PAP.Config:
            for name in ("noise_mean", "noise_std"):
                lo, hi = getattr(self, name)
                if not 0 <= lo <= hi:
                    raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high")
            return self

    config: Config

    def _layers(self) -> list[str]:
        if self.config.variant == "fuse":
            return [self.config.layer, self.config.fuse_layer]
        return [self.config.layer]

    def _energy_terms(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        value = _energy(acts[self.config.layer])
        if self.config.variant == "fuse":
            value = value + self.config.fuse_weight * _energy(acts[self.config.fuse_layer])
        return value

    def _fit(self, context: FitContext) -> Perturbation:
        cfg = self.config
        tap = ActivationTap(context.encoder, self._layers())
        c, h, w = context.image_shape
        stats: dict[str, torch.Tensor] = {}

        def noise(step: int) -> torch.Tensor:
            if step % cfg.noise_resample_every == 0 or not stats:
                lo, hi = cfg.noise_mean
                stats["mean"] = lo + (hi - lo) * context.rand(cfg.noise_images, c, 1, 1)
                lo, hi = cfg.noise_std
                stats["std"] = lo + (hi - lo) * context.rand(cfg.noise_images, c, 1, 1)
            pixels = context.randn(cfg.noise_images, c, h, w)
            return (stats["mean"] + stats["std"] * pixels).clamp(0, 1)

        def loss(x: torch.Tensor, delta: torch.Tensor, step: int) -> torch.Tensor:
            if cfg.variant != "ugs":
                return self._energy_terms(tap(perturb(x, delta))).mean()
            batch = perturb(torch.cat([noise(step), x]), delta)
            energy = _energy(tap(batch)[cfg.layer])
            k = cfg.noise_images
            return energy[:k].mean() + cfg.real_weight * energy[k:].mean()

        delta = sign_ascent(context, cfg, loss, f"{self.name}[{cfg.variant}]")
        return Perturbation("additive", delta.cpu(), eps=context.eps)

    def _noise_images(self, n: int, shape: tuple[int, ...], generator: torch.Generator,
                      device: torch.device) -> torch.Tensor:
        """``n`` Gaussian-noise images with per-image, per-channel mean/std drawn from the
        configured ranges (the objective's deterministic stand-in for the ugs noise batch)."""
        c, h, w = shape
        lo, hi = self.config.noise_mean
        mean = lo + (hi - lo) * torch.rand(n, c, 1, 1, generator=generator)
        lo, hi = self.config.noise_std
        std = lo + (hi - lo) * torch.rand(n, c, 1, 1, generator=generator)
        pixels = torch.randn(n, c, h, w, generator=generator)
        return (mean + std * pixels).clamp(0, 1).to(device)

    def _objective_state(
        self, encoder: nn.Module, surrogate_head: nn.Module | None, perturbation: Perturbation
    ) -> Any:
        generator = torch.Generator().manual_seed(OBJECTIVE_NOISE_SEED)
        return ActivationTap(encoder, self._layers()), generator, perturbation

    def _objective_values(
        self, encoder: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, state: Any
    ) -> torch.Tensor:
        tap, generator, perturbation = state
        if self.config.variant != "ugs":
            return -self._energy_terms(tap(x_adv))
        # ugs maximises noise energy + real_weight * real energy: pair every image with one
        # seeded noise image (the same noise for every perturbation compared).
        noise = self._noise_images(x.shape[0], tuple(x.shape[1:]), generator, x.device)
        energy_noise = _energy(tap(perturbation.apply(noise))[self.config.layer])
        energy_real = _energy(tap(x_adv)[self.config.layer])
        return -(energy_noise + self.config.real_weight * energy_real)
