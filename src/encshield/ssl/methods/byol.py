"""BYOL (Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020): an online encoder,
projector and predictor regress the EMA target's projection of the other view."""

from __future__ import annotations

import torch
from pydantic import Field

from encshield.models import Encoder, ProjectionMLP
from encshield.ssl.losses import byol_loss
from encshield.ssl.methods.base import METHODS, MomentumConfig, MomentumProjectorMethod


class BYOLConfig(MomentumConfig):
    proj_hidden_dim: int = Field(4096, gt=0)
    proj_output_dim: int = Field(256, gt=0)
    pred_hidden_dim: int = Field(4096, gt=0)


@METHODS.register("byol")
class BYOL(MomentumProjectorMethod):
    Config = BYOLConfig
    config: BYOLConfig
    augment_preset = "byol"

    def __init__(self, encoder: Encoder, config: BYOLConfig) -> None:
        super().__init__(encoder, config)
        self.projector = ProjectionMLP(
            encoder.feature_dim, config.proj_hidden_dim, config.proj_output_dim
        )
        self.predictor = ProjectionMLP(
            config.proj_output_dim, config.pred_hidden_dim, config.proj_output_dim
        )
        self.init_momentum_targets()

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        n = views[0].shape[0]
        x = torch.cat(views)
        p = self.predictor(self.projector(self.encoder(x)))
        z_target = self.target_projection(x)
        loss = byol_loss(p[:n], z_target[n:]) + byol_loss(p[n:], z_target[:n])
        return {"loss": loss}
