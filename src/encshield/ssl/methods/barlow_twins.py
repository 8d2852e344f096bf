"""Barlow Twins (Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction", ICML 2021): the cross-correlation matrix of the two views' batch-normalised
projections is pushed towards the identity (:func:`encshield.ssl.losses.barlow_twins_loss`).

Architecture: projector of 3 layers ``Linear - BN - ReLU - Linear - BN - ReLU - Linear``; the paper
uses 8192 units on ImageNet, solo-learn CIFAR 2048 (the default here). ``lambd = 0.0051`` (paper)
and ``scale_loss = 0.1`` (solo-learn CIFAR; a constant factor, equivalent to a learning-rate
change).
"""

from __future__ import annotations

import torch
from pydantic import Field

from encshield.models import Encoder, ProjectionMLP
from encshield.ssl.losses import barlow_twins_loss
from encshield.ssl.methods.base import METHODS, MethodConfig, SSLMethod


class BarlowTwinsConfig(MethodConfig):
    proj_hidden_dim: int = Field(2048, gt=0)
    proj_output_dim: int = Field(2048, gt=0)
    lambd: float = Field(0.0051, ge=0)
    scale_loss: float = Field(0.1, gt=0)


@METHODS.register("barlow_twins", aliases=("barlow", "barlowtwins", "barlow-twins"))
class BarlowTwins(SSLMethod):
    Config = BarlowTwinsConfig
    config: BarlowTwinsConfig
    augment_preset = "byol"

    def __init__(self, encoder: Encoder, config: BarlowTwinsConfig) -> None:
        super().__init__(encoder, config)
        self.projector = ProjectionMLP(
            encoder.feature_dim, config.proj_hidden_dim, config.proj_output_dim, num_layers=3
        )

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        n, z = self.project_views(views)
        loss = barlow_twins_loss(
            z[:n], z[n:], lambd=self.config.lambd, scale_loss=self.config.scale_loss
        )
        return {"loss": loss}
