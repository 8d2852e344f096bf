"""SwAV (Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual
Features by Contrasting Cluster Assignments", NeurIPS 2020): the L2-normalised projections are
scored against ``K`` L2-normalised prototypes; equal-partition codes are computed per view with
Sinkhorn-Knopp (:func:`~encshield.ssl.losses.sinkhorn_knopp`) and each view's code is predicted
from the other view's scores (swapped prediction, :func:`~encshield.ssl.losses.swav_loss`).

Defaults (paper and solo-learn CIFAR): projector ``Linear(D, 2048) - BN - ReLU - Linear(2048,
128)``, 3000 prototypes, Sinkhorn epsilon 0.05 and 3 iterations, temperature 0.1. The
prototypes (a bias-free linear layer) are L2-normalised at construction and after every
optimiser step, as in the paper. ``freeze_prototypes_steps``: the prototypes get no gradient for
that many first steps (the paper freezes them during the first epoch, solo-learn CIFAR for 2
epochs; the default 0 leaves them free because the step count of an epoch depends on the data).

Optional queue (``queue_size > 0``; off by default, as the brief of this library asks; solo-learn
CIFAR uses 3840 from epoch 50): one queue per view of earlier normalised projections, whose
prototype scores are stacked above the batch's before Sinkhorn so that small batches still get
balanced codes; only the batch's rows of the codes are used. The queue starts empty and only its
filled rows are used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from encshield.models import Encoder, ProjectionMLP
from encshield.ssl.losses import sinkhorn_knopp, swav_loss
from encshield.ssl.methods.base import METHODS, MethodConfig, SSLMethod


class SwAVConfig(MethodConfig):
    proj_hidden_dim: int = Field(2048, gt=0)
    proj_output_dim: int = Field(128, gt=0)
    num_prototypes: int = Field(3000, gt=0)
    temperature: float = Field(0.1, gt=0)
    sk_epsilon: float = Field(0.05, gt=0)
    sk_iters: int = Field(3, ge=1)
    queue_size: int = Field(0, ge=0, description="0 disables the queue")
    freeze_prototypes_steps: int = Field(0, ge=0)


@METHODS.register("swav")
class SwAV(SSLMethod):
    Config = SwAVConfig
    config: SwAVConfig
    steps: torch.Tensor
    augment_preset = "simclr"

    def __init__(self, encoder: Encoder, config: SwAVConfig) -> None:
        super().__init__(encoder, config)
        self.projector = ProjectionMLP(
            encoder.feature_dim, config.proj_hidden_dim, config.proj_output_dim
        )
        self.prototypes = torch.nn.Linear(config.proj_output_dim, config.num_prototypes, bias=False)
        self.normalize_prototypes()
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        if config.queue_size > 0:
            for v in (1, 2):
                self.register_queue(
                    f"queue{v}", config.queue_size, config.proj_output_dim, random_init=False
                )

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        weight = self.prototypes.weight
        weight.copy_(F.normalize(weight, dim=1))

    def _codes(self, scores: torch.Tensor, queue_name: str) -> torch.Tensor:
        c = self.config
        if c.queue_size > 0:
            queued = self.queue_rows(queue_name)
            if queued.shape[0] > 0:
                with torch.no_grad():
                    queued_scores = queued.to(scores.dtype) @ self.prototypes.weight.detach().T
                    stacked = torch.cat([queued_scores, scores.detach()])
                    q = sinkhorn_knopp(stacked, c.sk_epsilon, c.sk_iters)
                return q[-scores.shape[0]:]
        return sinkhorn_knopp(scores, c.sk_epsilon, c.sk_iters)

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        n, z = self.project_views(views)
        z = F.normalize(z, dim=1)
        weight = self.prototypes.weight
        if int(self.steps) < self.config.freeze_prototypes_steps:
            weight = weight.detach()
        scores = z @ weight.T
        s1, s2 = scores[:n], scores[n:]
        q1, q2 = self._codes(s1, "queue1"), self._codes(s2, "queue2")
        loss = swav_loss(s1, s2, q1, q2, self.config.temperature)
        if self.config.queue_size > 0:
            self.stage_queue("queue1", z[:n])
            self.stage_queue("queue2", z[n:])
        return {"loss": loss}

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        super().after_step(progress)
        self.normalize_prototypes()
        self.steps.add_(1)
