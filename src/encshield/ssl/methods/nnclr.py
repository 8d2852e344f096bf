"""NNCLR (Dwibedi, Aytar, Tompson, Sermanet, Zisserman, "With a Little Help from My Friends:
Nearest-Neighbor Contrastive Learning of Visual Representations", ICCV 2021): the positive of a
view is the nearest neighbour of the *other* view's projection in a support set (a FIFO queue of
earlier projections), contrasted with the neighbours of the other samples of the batch
(:func:`~encshield.ssl.losses.nearest_neighbour`, :func:`~encshield.ssl.losses.nnclr_loss`).

Symmetric loss: ``(nnclr(NN(z1), p2) + nnclr(NN(z2), p1)) / 2``. The support set receives the
L2-normalised projections ``z1`` of the first view after each step. It starts empty and only its
filled rows are searched; while it is still empty (the very first step) the neighbour of a
projection is the projection itself (detached), which makes that step SimCLR-like.

Architecture (paper, Sec. 4.1 / solo-learn CIFAR): projector of 3 layers ``[2048, 2048, 256]``
with BN (on the output too), predictor of 2 layers ``[4096, 256]``; temperature 0.2
(solo-learn CIFAR; the paper uses 0.1 on ImageNet), support set 65536 (scaled to 98304 in the
paper for ImageNet).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from encshield.models import Encoder, ProjectionMLP
from encshield.ssl.losses import nearest_neighbour, nnclr_loss
from encshield.ssl.methods.base import METHODS, MethodConfig, SSLMethod


class NNCLRConfig(MethodConfig):
    proj_hidden_dim: int = Field(2048, gt=0)
    proj_output_dim: int = Field(256, gt=0)
    pred_hidden_dim: int = Field(4096, gt=0)
    temperature: float = Field(0.2, gt=0)
    queue_size: int = Field(65536, gt=0)


@METHODS.register("nnclr")
class NNCLR(SSLMethod):
    Config = NNCLRConfig
    config: NNCLRConfig
    augment_preset = "byol"

    def __init__(self, encoder: Encoder, config: NNCLRConfig) -> None:
        super().__init__(encoder, config)
        self.projector = ProjectionMLP(
            encoder.feature_dim, config.proj_hidden_dim, config.proj_output_dim, num_layers=3,
            last_batch_norm=True,
        )
        self.predictor = ProjectionMLP(
            config.proj_output_dim, config.pred_hidden_dim, config.proj_output_dim
        )
        self.register_queue("queue", config.queue_size, config.proj_output_dim, random_init=False)

    def _neighbours(self, z: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        if support.shape[0] == 0:
            return z.detach()
        return nearest_neighbour(z, support)[0]

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        n, z = self.project_views(views)
        p = self.predictor(z)
        z1, z2 = z[:n], z[n:]
        support = self.queue_rows("queue")
        nn1 = self._neighbours(z1, support)
        nn2 = self._neighbours(z2, support)
        t = self.config.temperature
        loss = (nnclr_loss(nn1, p[n:], t) + nnclr_loss(nn2, p[:n], t)) / 2
        self.stage_queue("queue", F.normalize(z1.detach(), dim=1))
        return {"loss": loss}
