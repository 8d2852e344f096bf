"""``advencoder``: Adv-PER, the universal perturbation of AdvEncoder (Zhou, Li, Wang, Hu, Zhang, Xu,
Jin, "Downstream-agnostic Adversarial Examples", ICCV 2023), docs/methods.md, "Universal attacks".

A generator ``G`` (DCGAN-style stack of transposed convolutions) maps a fixed noise vector ``z``
(sampled once from the seed) to a ``3 x H x W`` map; the universal perturbation is
``delta = eps * tanh(G'(z))`` (``output="scaled_tanh"``, default) or the official
``clamp(tanh(G'(z)), -eps, eps)`` (``output="clamp"``), where ``G'`` is ``G`` without its final
``tanh``. ``G`` is trained with Adam (lr 2e-4, betas (0.5, 0.999)) to minimise, on the attacker's
surrogate images,

    L = alpha * L_adv + L_q + L_hfc,   alpha = 5
    L_adv = -InfoNCE(q = E(x), k = E(x'))   (temperature 0.1, positives on the diagonal, the
                                             other perturbed images of the batch as negatives)
    L_q   = MSE(x', x)
    L_hfc = -MSE(H(x'), H(x))   H = FFT high-pass: fft2, fftshift, zero a centred disc of radius r,
                                inverse shift, inverse FFT, real part

so that each ``x' = clamp(x + delta, 0, 1)`` is pushed away from its own clean feature while the
perturbation stays in the high frequencies. ``r`` = 8 at 64 px, scaled with the image size
(``radius * min(H, W) / 64``, i.e. 4 at 32 px).

Generator: ``ConvTranspose(nz -> 8 ngf, 4x4) -> [ConvTranspose(c -> c/2, stride 2)]* -> 3``, each
hidden layer with BatchNorm + ReLU, weights N(0, 0.02). The number of stride-2 stages adapts to the
image size (the map is generated at the smallest ``4 * 2^n >= max(H, W)`` and centre-cropped): at 64
px with ``ngf=128`` it is exactly the official 100 -> 1024 -> 512 -> 256 -> 128 -> 3 stack.

Deviations from the official code (documented on purpose):

* The official generator draws ``z`` for a whole batch (``B x 100``) and fuses the ``B``
  generated images into one map with a 3x3 convolution that treats the **batch axis as
  channels**, which ties the generator to the batch size (256). Here ``z`` is a single vector and
  ``G(z)`` is directly the one map, independent of the batch size; its BatchNorm layers normalise
  over the spatial positions of that one map (batch statistics in training and at the end alike;
  no running statistics).
* ``output="scaled_tanh"`` (default) instead of clamping: the official clamp saturates most
  pixels of a freshly initialised generator at ``±eps``, where the gradient is zero.
* ``x' = clamp(x + delta, 0, 1)`` (the official ``x + delta`` is unclipped; our encoders take
  pixels in [0, 1] and the project's protocol clamps by default).
* Budget: ``epochs`` defaults to 5 with batch 64 (the official 20 epochs of batch 256 on
  ImageNet are a GPU budget): 160 Adam steps on 2,000 surrogate images, which on a width-16
  ResNet-18 at 32 px already gets most of the feature displacement that 10 epochs get (cosine
  distance 0.120 vs 0.125 on a partly trained SimCLR encoder, against 0.001 for random noise);
  ``ngf`` defaults to 64 (half the official width; the generator is not the bottleneck, the
  encoder is). Use ``ngf=128, epochs=20, batch_size=256`` at the paper tier.

Objective (lower = better for the attacker): minus the mean cosine distance
``1 - cos(E(x), E(x'))``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from encshield.attacks.perturbation import Perturbation
from encshield.attacks.universal.base import (
    UNIVERSAL_ATTACKS,
    FitContext,
    UniversalAttack,
    UniversalAttackConfig,
    cosine_distance,
)
from encshield.errors import ConfigError

__all__ = ["AdvEncoder", "AdvEncoderConfig", "PerturbationGenerator", "high_pass"]


class PerturbationGenerator(nn.Module):
    """DCGAN-style generator: a fixed ``z`` ``(1, nz, 1, 1)`` -> pre-activation ``(1, C, H, W)``.

    Args:
        size: ``(H, W)`` of the output (generated at ``4 * 2^n >= max(H, W)``, centre-cropped).
        nz: length of ``z``.
        ngf: channels of the last hidden layer (the first has ``ngf * 2^(n-1)``).
        channels: output channels.
        generator: seeded ``torch.Generator`` for the N(0, 0.02) initialisation.
    """

    def __init__(
        self,
        size: tuple[int, int],
        nz: int = 100,
        ngf: int = 64,
        channels: int = 3,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        full, stages = 8, 1
        while full < max(self.size):
            full *= 2
            stages += 1
        self.full = full
        widths = [ngf * 2 ** (stages - 1 - i) for i in range(stages)]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(nz, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0], track_running_stats=False),
            nn.ReLU(True),
        ]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [
                nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False),
                nn.BatchNorm2d(b, track_running_stats=False),
                nn.ReLU(True),
            ]
        layers.append(nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False))
        self.net = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.ConvTranspose2d):
                nn.init.normal_(module.weight, 0.0, 0.02, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02, generator=generator)
                nn.init.zeros_(module.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(z)
        h, w = self.size
        top, left = (self.full - h) // 2, (self.full - w) // 2
        return out[:, :, top : top + h, left : left + w]


def high_pass(x: torch.Tensor, radius: float) -> torch.Tensor:
    """FFT high-pass of images ``(N, C, H, W)``: zero the centred disc of ``radius`` (in
    frequency bins) of the shifted spectrum, return the real part of the inverse transform."""
    h, w = x.shape[-2:]
    ys = torch.arange(h, device=x.device, dtype=torch.float32) - h // 2
    xs = torch.arange(w, device=x.device, dtype=torch.float32) - w // 2
    keep = (ys.view(-1, 1).pow(2) + xs.view(1, -1).pow(2)) >= radius**2
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1)) * keep
    filtered: torch.Tensor = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real
    return filtered


class AdvEncoderConfig(UniversalAttackConfig):
    """Settings of Adv-PER / Adv-PAT."""

    batch_size: int = Field(64, ge=1, description="surrogate images per step (official: 256)")
    epochs: int = Field(5, ge=1, description="passes over the surrogate images (official: 20)")
    lr: float = Field(2e-4, gt=0, description="Adam learning rate")
    betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas")
    alpha: float = Field(5.0, ge=0, description="weight of L_adv")
    quality_weight: float = Field(1.0, ge=0, description="weight of L_q = MSE(x', x)")
    hfc_weight: float = Field(1.0, ge=0, description="weight of L_hfc")
    temperature: float = Field(0.1, gt=0, description="InfoNCE temperature")
    radius: float = Field(8.0, ge=0, description="high-pass radius at radius_reference_size px")
    radius_reference_size: int = Field(64, ge=1, description="image size at which radius holds")
    nz: int = Field(100, ge=1, description="length of the fixed noise z")
    ngf: int = Field(64, ge=1, description="generator width (official: 128)")


@UNIVERSAL_ATTACKS.register("advencoder", aliases=("adv_per", "adv-per", "advencoder_per"))
class AdvEncoder(UniversalAttack):
    """Adv-PER: a generator-made universal perturbation that pushes features away from their
    clean versions (InfoNCE) while staying in the high frequencies."""

    paper = (
        "Zhou, Li, Wang, Hu, Zhang, Xu, Jin. Downstream-agnostic Adversarial Examples. ICCV 2023 "
        "(Adv-PER)"
    )
    objective_name = "negative mean cosine distance between E(x) and E(x')"

    class Config(AdvEncoderConfig):
        output: Literal["scaled_tanh", "clamp"] = Field(
            "scaled_tanh",
            description="delta = eps * tanh(G'(z)) or the official clamp(tanh(G'(z)), -eps, eps)",
        )

    config: Config

    # ----------------------------------------------------------------- what the map becomes

    def _setup(self, context: FitContext) -> None:
        """Hook for the patch variant (placement)."""

    def _perturbed(self, x: torch.Tensor, raw: torch.Tensor, context: FitContext) -> torch.Tensor:
        """Images perturbed by the generator's pre-activation map ``raw`` ``(1, C, H, W)``."""
        return (x + self._delta(raw, context.eps)).clamp(0, 1)

    def _delta(self, raw: torch.Tensor, eps: float) -> torch.Tensor:
        if self.config.output == "scaled_tanh":
            return eps * torch.tanh(raw)
        return torch.tanh(raw).clamp(-eps, eps)

    def _result(self, raw: torch.Tensor, context: FitContext) -> Perturbation:
        delta = self._delta(raw, context.eps)[0].clamp(-context.eps, context.eps)
        return Perturbation("additive", delta.detach().cpu(), eps=context.eps)

    # ----------------------------------------------------------------- training

    def _fit(self, context: FitContext) -> Perturbation:
        cfg = self.config
        c, h, w = context.image_shape
        if min(h, w) < 2:
            raise ConfigError(f"{self.name} needs images of at least 2x2 pixels, got {h}x{w}")
        self._setup(context)
        net = PerturbationGenerator(
            (h, w), cfg.nz, cfg.ngf, c, generator=context.generator
        ).to(context.device)
        net.train()
        z = context.randn(1, cfg.nz, 1, 1)
        params = [p for p in net.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
        radius = cfg.radius * min(h, w) / cfg.radius_reference_size
        encoder = context.encoder
        steps_per_epoch = math.ceil(context.num_images / cfg.batch_size)
        with context.bar(cfg.epochs * steps_per_epoch, self.name) as advance:
            for epoch in range(cfg.epochs):
                sums = {"loss": 0.0, "adv": 0.0, "quality": 0.0, "hfc": 0.0, "cos_dist": 0.0}
                seen = 0
                for x in context.epoch(cfg.batch_size):
                    with torch.no_grad():
                        q = F.normalize(encoder(x), dim=1)
                    x_adv = self._perturbed(x, net(z), context)
                    k = F.normalize(encoder(x_adv), dim=1)
                    logits = q @ k.t() / cfg.temperature
                    targets = torch.arange(x.shape[0], device=x.device)
                    l_adv = -F.cross_entropy(logits, targets)
                    l_q = F.mse_loss(x_adv, x)
                    l_hfc = -F.mse_loss(high_pass(x_adv, radius), high_pass(x, radius))
                    loss = cfg.alpha * l_adv + cfg.quality_weight * l_q + cfg.hfc_weight * l_hfc
                    grads = torch.autograd.grad(loss, params)
                    for parameter, grad in zip(params, grads):
                        parameter.grad = grad
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    b = int(x.shape[0])
                    seen += b
                    with torch.no_grad():
                        cos_dist = float((1 - (q * k).sum(1)).sum())
                    for key, value in (("loss", loss), ("adv", l_adv), ("quality", l_q),
                                       ("hfc", l_hfc)):
                        sums[key] += float(value.detach()) * b
                    sums["cos_dist"] += cos_dist
                    advance(1, info=f"loss {float(loss.detach()):.4g}")
                context.history.append(
                    {"epoch": epoch + 1, **{k: v / max(seen, 1) for k, v in sums.items()}}
                )
        with torch.no_grad():
            return self._result(net(z), context)

    # ----------------------------------------------------------------- objective

    def _objective_values(
        self, encoder: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, state: Any
    ) -> torch.Tensor:
        return -cosine_distance(encoder(x), encoder(x_adv))
