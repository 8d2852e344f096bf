"""DINO (Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin, "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021): self-distillation without labels. A student
(encoder + head) is trained to match the output distribution of a teacher, an EMA copy of the
student, whose logits are centred and sharpened (:func:`~encshield.ssl.losses.dino_loss`,
:func:`~encshield.ssl.losses.dino_center_update`).

Head (paper, Sec. 3.1 and Appendix): a 3-layer MLP (hidden 2048, GELU) to a 256-d bottleneck,
L2 normalisation, then a weight-normalised linear layer without bias to ``K`` prototypes whose
weight-norm magnitude ``g`` is fixed at 1 (``norm_last_layer = True``, the paper's default and
solo-learn's). The MLP has BatchNorm after the hidden layers (``batch_norm``, the paper's option
for ResNet backbones and solo-learn's default).

State: the centre ``(1, K)`` is a buffer updated after each step with momentum 0.9 from the
teacher logits of that step; ``progress`` (the training progress after the last step, a buffer)
drives the teacher-temperature warm-up, linear from 0.04 to 0.07 over the first
``warmup_teacher_temperature_fraction`` of training (0.05: solo-learn's 50 warm-up epochs of its
1000 CIFAR epochs); ``steps`` counts optimiser steps for ``freeze_last_layer_steps`` (the last
layer receives no gradient during the first steps, 0 by default).

Views: every view goes through the student; the first two (the global crops) through the
teacher, and the loss averages over all (teacher view, other student view) pairs. With the usual
two views this is the symmetric two-crop DINO. Defaults: ``K = 4096`` and EMA tau 0.99 -> 1.0
(solo-learn CIFAR uses ``K = 4096``; the paper 65536 and tau 0.996 -> 1), student temperature 0.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from encshield.models import Encoder
from encshield.ssl.losses import dino_center_update, dino_loss
from encshield.ssl.methods.base import METHODS, MomentumConfig, SSLMethod, momentum_copy


class DINOConfig(MomentumConfig):
    proj_hidden_dim: int = Field(2048, gt=0)
    proj_output_dim: int = Field(256, gt=0, description="bottleneck dimension")
    num_prototypes: int = Field(4096, gt=0)
    num_layers: int = Field(3, ge=1)
    batch_norm: bool = True
    norm_last_layer: bool = True
    student_temperature: float = Field(0.1, gt=0)
    teacher_temperature: float = Field(0.07, gt=0)
    warmup_teacher_temperature: float = Field(0.04, gt=0)
    warmup_teacher_temperature_fraction: float = Field(0.05, ge=0, le=1)
    center_momentum: float = Field(0.9, ge=0, le=1)
    freeze_last_layer_steps: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _temperatures(self) -> DINOConfig:
        if self.warmup_teacher_temperature > self.teacher_temperature:
            raise ValueError(
                f"warmup_teacher_temperature ({self.warmup_teacher_temperature}) must not exceed "
                f"teacher_temperature ({self.teacher_temperature})"
            )
        return self


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation (Salimans & Kingma, NeurIPS 2016):
    row ``k`` of the weight is ``g_k v_k / ||v_k||``. ``train_norm=False`` freezes ``g`` at 1."""

    def __init__(self, in_dim: int, out_dim: int, *, train_norm: bool = False) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight_v, std=0.02)
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=train_norm)

    def forward(self, x: torch.Tensor, *, frozen: bool = False) -> torch.Tensor:
        v: torch.Tensor = self.weight_v
        g: torch.Tensor = self.weight_g
        if frozen:
            v, g = v.detach(), g.detach()
        return F.linear(x, g * F.normalize(v, dim=1))


class DINOHead(nn.Module):
    """MLP (GELU) -> bottleneck -> L2 normalisation -> weight-normalised prototype layer."""

    def __init__(
        self, in_dim: int, hidden_dim: int, bottleneck_dim: int, num_prototypes: int,
        num_layers: int = 3, batch_norm: bool = True, norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = WeightNormLinear(
            bottleneck_dim, num_prototypes, train_norm=not norm_last_layer
        )

    def forward(self, x: torch.Tensor, *, freeze_last_layer: bool = False) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=1)
        logits: torch.Tensor = self.last_layer(z, frozen=freeze_last_layer)
        return logits


@METHODS.register("dino")
class DINO(SSLMethod):
    Config = DINOConfig
    config: DINOConfig
    center: torch.Tensor
    progress: torch.Tensor
    steps: torch.Tensor
    augment_preset = "byol"

    def __init__(self, encoder: Encoder, config: DINOConfig) -> None:
        super().__init__(encoder, config)
        self.head = DINOHead(
            encoder.feature_dim, config.proj_hidden_dim, config.proj_output_dim,
            config.num_prototypes, config.num_layers, config.batch_norm, config.norm_last_layer,
        )
        self.momentum_encoder = momentum_copy(encoder)
        self.momentum_head = momentum_copy(self.head)
        self.register_buffer("center", torch.zeros(1, config.num_prototypes))
        self.register_buffer("progress", torch.zeros(()))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._staged_teacher: torch.Tensor | None = None

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.momentum_encoder), (self.head, self.momentum_head)]

    def teacher_temperature(self, progress: float | None = None) -> float:
        """Teacher temperature at ``progress`` (default: the progress after the last step)."""
        c = self.config
        p = float(self.progress) if progress is None else float(progress)
        warmup = c.warmup_teacher_temperature_fraction
        if warmup <= 0 or p >= warmup:
            return c.teacher_temperature
        start, end = c.warmup_teacher_temperature, c.teacher_temperature
        return start + (end - start) * max(p, 0.0) / warmup

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        n = self.check_views(views, minimum=2, maximum=None)
        freeze = int(self.steps) < self.config.freeze_last_layer_steps
        student = self.head(self.encoder(torch.cat(views)), freeze_last_layer=freeze)
        with torch.no_grad():
            teacher = self.momentum_head(self.momentum_encoder(torch.cat(views[:2])))
        temperature = self.teacher_temperature()
        loss = dino_loss(
            list(student.split(n)), list(teacher.split(n)), self.center,
            student_temp=self.config.student_temperature, teacher_temp=temperature,
        )
        self._staged_teacher = teacher.detach()
        return {"loss": loss, "teacher_temperature": loss.new_tensor(temperature)}

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        super().after_step(progress)
        if self._staged_teacher is not None:
            self.center.copy_(
                dino_center_update(self.center, [self._staged_teacher], self.config.center_momentum)
            )
            self._staged_teacher = None
        self.progress.fill_(float(progress))
        self.steps.add_(1)
