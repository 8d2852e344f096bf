"""SimCLR (Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of
Visual Representations", ICML 2020): two views, an MLP projector and the NT-Xent loss."""

from __future__ import annotations

import torch
from pydantic import Field

from encshield.models import Encoder, ProjectionMLP
from encshield.ssl.losses import nt_xent_loss
from encshield.ssl.methods.base import METHODS, MethodConfig, SSLMethod


class SimCLRConfig(MethodConfig):
    proj_hidden_dim: int = Field(2048, gt=0)
    proj_output_dim: int = Field(256, gt=0)
    temperature: float = Field(0.2, gt=0)


@METHODS.register("simclr")
class SimCLR(SSLMethod):
    Config = SimCLRConfig
    config: SimCLRConfig
    augment_preset = "simclr"

    def __init__(self, encoder: Encoder, config: SimCLRConfig) -> None:
        super().__init__(encoder, config)
        self.projector = ProjectionMLP(
            encoder.feature_dim, config.proj_hidden_dim, config.proj_output_dim
        )

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        n = views[0].shape[0]
        z = self.projector(self.encoder(torch.cat(views)))
        loss = nt_xent_loss(z[:n], z[n:], temperature=self.config.temperature)
        return {"loss": loss}
