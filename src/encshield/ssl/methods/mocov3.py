"""MoCo v3 (Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers",
ICCV 2021): an online encoder + projector + predictor and an EMA encoder + projector; an in-batch
InfoNCE between the online predictions and the momentum projections of the other view, summed
over the two directions (the paper's Alg. 1: ``ctr(q1, k2) + ctr(q2, k1)``, each scaled by
``2 T``; :func:`encshield.ssl.losses.mocov3_loss`). No queue.

Architecture (paper, Sec. 4 and Appendix): projector of 3 layers and predictor of 2 layers, hidden
layers 4096-d with BN and ReLU, 256-d outputs with BN ("all layers in both MLPs have BN"; the
output BN has no affine parameters). Defaults (solo-learn CIFAR): temperature 0.2, EMA tau
0.99 -> 1.0 (cosine).
"""

from __future__ import annotations

import torch
from pydantic import Field

from encshield.models import Encoder, ProjectionMLP
from encshield.ssl.losses import mocov3_loss
from encshield.ssl.methods.base import METHODS, MomentumConfig, MomentumProjectorMethod


class MoCoV3Config(MomentumConfig):
    proj_hidden_dim: int = Field(4096, gt=0)
    proj_output_dim: int = Field(256, gt=0)
    pred_hidden_dim: int = Field(4096, gt=0)
    temperature: float = Field(0.2, gt=0)


@METHODS.register("mocov3")
class MoCoV3(MomentumProjectorMethod):
    Config = MoCoV3Config
    config: MoCoV3Config
    augment_preset = "byol"

    def __init__(self, encoder: Encoder, config: MoCoV3Config) -> None:
        super().__init__(encoder, config)
        self.projector = ProjectionMLP(
            encoder.feature_dim, config.proj_hidden_dim, config.proj_output_dim, num_layers=3,
            last_batch_norm=True, last_batch_norm_affine=False,
        )
        self.predictor = ProjectionMLP(
            config.proj_output_dim, config.pred_hidden_dim, config.proj_output_dim, num_layers=2,
            last_batch_norm=True, last_batch_norm_affine=False,
        )
        self.init_momentum_targets()

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        n = self.check_views(views)
        x = torch.cat(views)
        q = self.predictor(self.projector(self.encoder(x)))
        k = self.target_projection(x)
        t = self.config.temperature
        loss = mocov3_loss(q[:n], k[n:], t) + mocov3_loss(q[n:], k[:n], t)
        return {"loss": loss}
