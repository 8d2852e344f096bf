"""BadEncoder injection run by the one encoder training loop.

:class:`BadEncoderConfig` holds what defines a run (the loop's fields plus the loss weights and
the references' augmentation; the paper's optimiser as the default: SGD, lr 0.001, momentum 0.9,
weight decay 5e-4, constant, batch 256, 200 epochs, kNN monitor with k = 200 and T = 0.5).
:class:`BadEncoderTrainer` trains a :class:`~encshield.backdoor.objective.BadEncoderObjective`
on uint8 shadow images; checkpoints, ``--resume``, the progress bar and the kNN monitor of the
backdoored encoder are the shared loop's. The exported encoder carries its targets and triggers
in its metadata (``provenance.extra.backdoor``), so evaluation needs nothing else.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from encshield.backdoor.objective import BackdoorTarget, BadEncoderObjective, ReferenceAugment
from encshield.encoder_trainer import EncoderTrainer, KNNConfig, TrainingConfig
from encshield.models import Encoder
from encshield.optim import OptimizerConfig

__all__ = ["BadEncoderConfig", "BadEncoderTrainer", "backdoor_metadata"]


def _paper_optimizer() -> OptimizerConfig:
    return OptimizerConfig(name="sgd", lr=0.001, scale_lr_with_batch=False, weight_decay=5e-4,
                           momentum=0.9, warmup_epochs=0, min_lr_ratio=1.0)


class BadEncoderConfig(TrainingConfig):
    """A BadEncoder run: the shared loop's fields with the paper's defaults, plus the losses'
    weights ``L = L0 + lambda1 * L1 + lambda2 * L2`` and the references' augmentation."""

    optimizer: OptimizerConfig = Field(default_factory=_paper_optimizer)
    epochs: int = Field(200, gt=0)
    output_dir: str = "runs/badencoder"
    knn: KNNConfig = Field(default_factory=lambda: KNNConfig(every_epochs=10, k=[200],
                                                             temperature=0.5))
    lambda1: float = Field(1.0, ge=0)
    lambda2: float = Field(1.0, ge=0)
    reference_augment: ReferenceAugment = Field(default_factory=ReferenceAugment)


def backdoor_metadata(clean: dict[str, Any], targets: list[BackdoorTarget],
                      shadow: dict[str, Any], config: BadEncoderConfig) -> dict[str, Any]:
    """The ``backdoor`` entry of a backdoored encoder's provenance: the clean encoder it came
    from, every target (trigger, label, dataset, references), the shadow data and the losses'
    weights."""
    return {"attack": "badencoder", "clean_encoder": clean,
            "targets": [t.describe() for t in targets], "shadow": shadow,
            "lambda1": config.lambda1, "lambda2": config.lambda2}


class BadEncoderTrainer(EncoderTrainer):
    """Backdoor ``encoder`` (a copy; the original is not modified) on ``shadow`` images.

    Args:
        config: the run.
        encoder: the clean encoder (eval mode, images in [0, 1] -> ``(N, D)``).
        shadow: the attacker's unlabelled shadow images, uint8 ``(N, C, H, W)`` at the
            encoder's input size.
        targets: one :class:`BackdoorTarget` per downstream target (distinct triggers).
        metadata: the ``backdoor`` entry written into the exported encoder
            (:func:`backdoor_metadata`).
        knn_dataset: the kNN monitor's dataset when ``config.knn.dataset`` is unset.
    """

    def __init__(self, config: BadEncoderConfig, encoder: Encoder, shadow: torch.Tensor,
                 targets: list[BackdoorTarget], *, metadata: dict[str, Any],
                 knn_dataset: str = "cifar10", data_root: str | None = None,
                 progress: bool = True) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        objective = BadEncoderObjective(encoder, targets, lambda1=config.lambda1,
                                        lambda2=config.lambda2,
                                        reference_augment=config.reference_augment)
        super().__init__(config, objective, shadow, title="BadEncoder injection",
                         knn_dataset=knn_dataset, data_root=data_root, progress=progress)
        self.metadata = metadata
        self.provenance = encoder.provenance

    def export_fields(self) -> dict[str, Any]:
        return {"ssl_method": self.provenance.ssl_method,
                "pretrain_data": self.provenance.pretrain_data,
                "extra": {"backdoor": self.metadata}}
