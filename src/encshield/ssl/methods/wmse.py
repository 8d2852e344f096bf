"""W-MSE (Ermolov, Siarohin, Sangineto, Sebe, "Whitening for Self-Supervised Representation
Learning", ICML 2021): the projections of each view are whitened (Cholesky) within sub-batches of
``w_size`` samples and the MSE between the L2-normalised whitened positives is minimised
(:func:`encshield.ssl.losses.wmse_loss`).

Defaults (paper CIFAR setting and solo-learn CIFAR): projector
``Linear(D, 1024) - BN - ReLU - Linear(1024, 64)``, whitening sub-batches of ``w_size = 128``
samples within the batch (at least twice the 64-d embedding), ``w_iter = 1`` partition per step,
no covariance shrinkage. A batch larger than ``w_size`` must be a multiple of it; a batch of at
most ``w_size`` samples is whitened as a whole. The random partitions come from the global torch
RNG, which the trainer seeds per step, so runs and resumed runs are reproducible.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from encshield.models import Encoder, ProjectionMLP
from encshield.ssl.losses import wmse_loss
from encshield.ssl.methods.base import METHODS, MethodConfig, SSLMethod


class WMSEConfig(MethodConfig):
    proj_hidden_dim: int = Field(1024, gt=0)
    proj_output_dim: int = Field(64, gt=0)
    w_size: int = Field(128, ge=2)
    w_iter: int = Field(1, ge=1)
    w_eps: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _whitening_size(self) -> WMSEConfig:
        if self.w_eps == 0 and self.w_size <= self.proj_output_dim:
            raise ValueError(
                f"w_size ({self.w_size}) must exceed proj_output_dim ({self.proj_output_dim}) to "
                "whiten without shrinkage (the paper uses w_size >= 2 * proj_output_dim)"
            )
        return self


@METHODS.register("wmse", aliases=("w-mse", "w_mse"))
class WMSE(SSLMethod):
    Config = WMSEConfig
    config: WMSEConfig
    augment_preset = "simclr"

    def __init__(self, encoder: Encoder, config: WMSEConfig) -> None:
        super().__init__(encoder, config)
        self.projector = ProjectionMLP(
            encoder.feature_dim, config.proj_hidden_dim, config.proj_output_dim
        )

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        n, z = self.project_views(views)
        c = self.config
        loss = wmse_loss(z[:n], z[n:], w_size=c.w_size, w_iter=c.w_iter, eps=c.w_eps)
        return {"loss": loss}
