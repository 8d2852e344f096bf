"""ReSSL (Zheng, You, Wang, Qian, Zhang, Wang, Xu, "ReSSL: Relational Self-Supervised Learning
with Weak Augmentation", NeurIPS 2021): the student's relation of a strongly augmented view to a
queue of earlier teacher embeddings is trained to match the teacher's (sharper) relation of a
weakly augmented view (:func:`encshield.ssl.losses.ressl_loss`).

Views: ``views[0]`` is the student's strong view and ``views[1]`` the teacher's weak view. The
method's default recipe is the ``ressl`` preset of :func:`encshield.ssl.augment.preset` (the weak
view is only a random resized crop of scale 0.2-1 and a horizontal flip, as in the paper). The
loss is one-directional, as in the paper: student(strong) vs teacher(weak).

The teacher is an EMA copy of the encoder and projector; the queue holds the teacher's
L2-normalised embeddings of the weak view (enqueued after each step; it starts with random unit
vectors, as MoCo's does). Defaults: student temperature 0.1, teacher 0.04 (paper and solo-learn
CIFAR), projector ``Linear(D, 4096) - BN - ReLU - Linear(4096, 256)``, queue 65536 and EMA tau
0.99 -> 1.0 (solo-learn CIFAR).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from encshield.models import Encoder, ProjectionMLP
from encshield.ssl.losses import ressl_loss
from encshield.ssl.methods.base import METHODS, MomentumConfig, MomentumProjectorMethod


class ReSSLConfig(MomentumConfig):
    proj_hidden_dim: int = Field(4096, gt=0)
    proj_output_dim: int = Field(256, gt=0)
    temperature_q: float = Field(0.1, gt=0)
    temperature_k: float = Field(0.04, gt=0)
    queue_size: int = Field(65536, gt=0)


@METHODS.register("ressl")
class ReSSL(MomentumProjectorMethod):
    Config = ReSSLConfig
    config: ReSSLConfig
    augment_preset = "ressl"

    def __init__(self, encoder: Encoder, config: ReSSLConfig) -> None:
        super().__init__(encoder, config)
        self.projector = ProjectionMLP(
            encoder.feature_dim, config.proj_hidden_dim, config.proj_output_dim
        )
        self.init_momentum_targets()
        self.register_queue("queue", config.queue_size, config.proj_output_dim)

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """``views[0]``: strong (student) view, ``views[1]``: weak (teacher) view."""
        self.check_views(views)
        strong, weak = views
        q = self.projector(self.encoder(strong))
        k = F.normalize(self.target_projection(weak), dim=1)
        c = self.config
        loss = ressl_loss(q, k, self.queue_rows("queue"), c.temperature_q, c.temperature_k)
        self.stage_queue("queue", k)
        return {"loss": loss}
