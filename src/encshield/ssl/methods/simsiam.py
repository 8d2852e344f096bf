"""SimSiam (Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021): a shared
encoder and projector, a bottleneck predictor on one branch and a stop-gradient on the other;
no negatives and no momentum encoder.

Loss (the paper's eq. (4)): ``D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2`` with ``D`` the negative
cosine similarity (:func:`encshield.ssl.losses.simsiam_loss`, which detaches the target).

Architecture (paper, Sec. 4 and 5.1 / solo-learn CIFAR): projector of 3 layers
``Linear(D, 2048) - BN - ReLU - Linear(2048, 2048) - BN - ReLU - Linear(2048, 2048) - BN``, with BN
on the output and no ReLU there (the output BN has no affine parameters, and the hidden Linear
layers no bias, since a BN follows each); predictor ``Linear(2048, 512) - BN - ReLU -
Linear(512, 2048)``, a bottleneck of a quarter of the width.
"""

from __future__ import annotations

import torch
from pydantic import Field

from encshield.models import Encoder, ProjectionMLP
from encshield.ssl.losses import simsiam_loss
from encshield.ssl.methods.base import METHODS, MethodConfig, SSLMethod


class SimSiamConfig(MethodConfig):
    proj_hidden_dim: int = Field(2048, gt=0)
    proj_output_dim: int = Field(2048, gt=0)
    pred_hidden_dim: int = Field(512, gt=0)


@METHODS.register("simsiam")
class SimSiam(SSLMethod):
    Config = SimSiamConfig
    config: SimSiamConfig
    augment_preset = "simclr"

    def __init__(self, encoder: Encoder, config: SimSiamConfig) -> None:
        super().__init__(encoder, config)
        self.projector = ProjectionMLP(
            encoder.feature_dim, config.proj_hidden_dim, config.proj_output_dim, num_layers=3,
            last_batch_norm=True, bias=False, last_batch_norm_affine=False,
        )
        self.predictor = ProjectionMLP(
            config.proj_output_dim, config.pred_hidden_dim, config.proj_output_dim, bias=False
        )

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        n, z = self.project_views(views)
        p = self.predictor(z)
        loss = (simsiam_loss(p[:n], z[n:]) + simsiam_loss(p[n:], z[:n])) / 2
        return {"loss": loss}
