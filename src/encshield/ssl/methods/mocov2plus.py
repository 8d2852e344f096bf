"""MoCo v2+ (He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020; Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive
Learning", arXiv:2003.04297, 2020): a query encoder and an EMA key encoder with MLP heads, an
InfoNCE loss whose negatives are a queue of earlier L2-normalised keys.

"v2+" (solo-learn's name) is MoCo v2 with the symmetric loss: one queue per view, and
``(infonce(q1, k2, queue_2) + infonce(q2, k1, queue_1)) / 2`` where ``queue_v`` holds the keys of
view ``v`` from earlier steps. The keys of this step are enqueued after the optimiser step
(:meth:`SSLMethod.after_step`), so the current keys are never their own negatives.

Defaults (solo-learn CIFAR): projector ``Linear(D, 2048) - ReLU - Linear(2048, 256)`` (MoCo v2's
MLP head has no BatchNorm), temperature 0.2, queue 32768, EMA tau 0.99 -> 1.0 (cosine).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from encshield.models import Encoder, ProjectionMLP
from encshield.ssl.losses import infonce_loss
from encshield.ssl.methods.base import METHODS, MomentumConfig, MomentumProjectorMethod


class MoCoV2PlusConfig(MomentumConfig):
    proj_hidden_dim: int = Field(2048, gt=0)
    proj_output_dim: int = Field(256, gt=0)
    temperature: float = Field(0.2, gt=0)
    queue_size: int = Field(32768, gt=0)


@METHODS.register("mocov2plus", aliases=("mocov2+",))
class MoCoV2Plus(MomentumProjectorMethod):
    Config = MoCoV2PlusConfig
    config: MoCoV2PlusConfig
    augment_preset = "simclr"

    def __init__(self, encoder: Encoder, config: MoCoV2PlusConfig) -> None:
        super().__init__(encoder, config)
        self.projector = ProjectionMLP(
            encoder.feature_dim, config.proj_hidden_dim, config.proj_output_dim, batch_norm=False
        )
        self.init_momentum_targets()
        self.register_queue("queue1", config.queue_size, config.proj_output_dim)
        self.register_queue("queue2", config.queue_size, config.proj_output_dim)

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        n = self.check_views(views)
        x = torch.cat(views)
        q = self.projector(self.encoder(x))
        k = F.normalize(self.target_projection(x), dim=1)
        t = self.config.temperature
        loss = (
            infonce_loss(q[:n], k[n:], self.queue_rows("queue2"), t)
            + infonce_loss(q[n:], k[:n], self.queue_rows("queue1"), t)
        ) / 2
        self.stage_queue("queue1", k[:n])
        self.stage_queue("queue2", k[n:])
        return {"loss": loss}
