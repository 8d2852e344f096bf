"""VIbCReg (Lee & Aune, "VIbCReg: Variance-Invariance-better-Covariance Regularization for
Self-Supervised Learning on Time Series", arXiv:2109.00783, 2021): VICReg with a normalised
covariance term and a projector that ends in IterNorm whitening (Huang et al., "Iterative
Normalization: Beyond Standardization towards Efficient Whitening", CVPR 2019;
:func:`encshield.ssl.losses.iternorm`, :func:`encshield.ssl.losses.vibcreg_terms`).

Architecture (paper, Sec. 3 / solo-learn CIFAR): projector ``Linear(D, 2048) - BN - GELU -
Linear(2048, 2048) - BN - GELU - Linear(2048, 2048) - IterNorm`` (64 groups of 32 features, 5
Newton iterations; ``self.whitening``, applied to each view's batch separately). Weights
``lambda = mu = 25``, ``nu = 200`` (paper and solo-learn CIFAR); the three weighted terms are
also returned for logging.

IterNorm here always whitens with the statistics of the current batch (training-mode IterNorm)
and keeps no running statistics: the projector serves only the pre-training loss and is never
used in evaluation mode by this library.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import nn

from encshield.models import Encoder
from encshield.ssl.losses import combine_vic_terms, iternorm, vibcreg_terms
from encshield.ssl.methods.base import METHODS, SSLMethod
from encshield.ssl.methods.vicreg import VICRegConfig


class VIbCRegConfig(VICRegConfig):
    """VICReg's fields (covariance weight 200) plus the IterNorm whitening of the projector."""

    cov_loss_weight: float = Field(200.0, ge=0)
    iternorm: bool = True
    iternorm_groups: int = Field(64, ge=1)
    iternorm_iterations: int = Field(5, ge=0)

    @model_validator(mode="after")
    def _groups(self) -> VIbCRegConfig:
        if self.iternorm and self.proj_output_dim % self.iternorm_groups != 0:
            raise ValueError(
                f"iternorm_groups ({self.iternorm_groups}) must divide proj_output_dim "
                f"({self.proj_output_dim})"
            )
        return self


class IterNorm(nn.Module):
    """Batch whitening by :func:`encshield.ssl.losses.iternorm` (no parameters, no state)."""

    def __init__(self, num_groups: int = 64, iterations: int = 5) -> None:
        super().__init__()
        self.num_groups, self.iterations = num_groups, iterations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return iternorm(x, self.num_groups, self.iterations)

    def extra_repr(self) -> str:
        return f"num_groups={self.num_groups}, iterations={self.iterations}"


@METHODS.register("vibcreg")
class VIbCReg(SSLMethod):
    Config = VIbCRegConfig
    config: VIbCRegConfig
    augment_preset = "simclr"

    def __init__(self, encoder: Encoder, config: VIbCRegConfig) -> None:
        super().__init__(encoder, config)
        h = config.proj_hidden_dim
        layers: list[nn.Module] = [
            nn.Linear(encoder.feature_dim, h), nn.BatchNorm1d(h), nn.GELU(),
            nn.Linear(h, h), nn.BatchNorm1d(h), nn.GELU(),
            nn.Linear(h, config.proj_output_dim),
        ]
        self.projector = nn.Sequential(*layers)
        self.whitening = (
            IterNorm(config.iternorm_groups, config.iternorm_iterations)
            if config.iternorm else nn.Identity()
        )

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        n, z = self.project_views(views)
        # The Linear/BN layers run once on both views; IterNorm whitens each view's batch on its
        # own, as when the projector is applied to each branch (whitening the concatenation
        # would only whiten the two views jointly).
        terms = vibcreg_terms(self.whitening(z[:n]), self.whitening(z[n:]))
        c = self.config
        return combine_vic_terms(terms, c.sim_loss_weight, c.var_loss_weight, c.cov_loss_weight)
