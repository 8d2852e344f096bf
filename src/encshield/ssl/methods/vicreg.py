"""VICReg (Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022): invariance (MSE between the views' embeddings), a variance
hinge and a covariance penalty on each branch (:func:`encshield.ssl.losses.vicreg_terms`).

Architecture: expander of 3 layers ``Linear - BN - ReLU - Linear - BN - ReLU - Linear``; the paper
uses 8192 units on ImageNet, solo-learn CIFAR 2048 (the default here). Weights ``lambda = mu = 25,
nu = 1`` (paper and solo-learn). The three weighted terms are also returned for logging.
"""

from __future__ import annotations

import torch
from pydantic import Field

from encshield.models import Encoder, ProjectionMLP
from encshield.ssl.losses import combine_vic_terms, vicreg_terms
from encshield.ssl.methods.base import METHODS, MethodConfig, SSLMethod


class VICRegConfig(MethodConfig):
    """VICReg's expander and loss weights (VIbCReg's config extends it)."""

    proj_hidden_dim: int = Field(2048, gt=0)
    proj_output_dim: int = Field(2048, gt=0)
    sim_loss_weight: float = Field(25.0, ge=0)
    var_loss_weight: float = Field(25.0, ge=0)
    cov_loss_weight: float = Field(1.0, ge=0)


@METHODS.register("vicreg")
class VICReg(SSLMethod):
    Config = VICRegConfig
    config: VICRegConfig
    augment_preset = "byol"

    def __init__(self, encoder: Encoder, config: VICRegConfig) -> None:
        super().__init__(encoder, config)
        self.projector = ProjectionMLP(
            encoder.feature_dim, config.proj_hidden_dim, config.proj_output_dim, num_layers=3
        )

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        n, z = self.project_views(views)
        c = self.config
        terms = vicreg_terms(z[:n], z[n:])
        return combine_vic_terms(terms, c.sim_loss_weight, c.var_loss_weight, c.cov_loss_weight)
