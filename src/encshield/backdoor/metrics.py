"""Backdoor metrics with a trained downstream classifier (BadEncoder's protocol; docs/methods.md,
"BadEncoder"; the authors stress that final numbers come from the trained head, not the kNN
monitor).

For a downstream dataset, a target class ``t`` and a trigger ``e``:

* **CA**: clean encoder + its head, clean test images (accuracy);
* **BA**: backdoored encoder + its head, clean test images;
* **ASR**: backdoored model, triggered test images predicted as ``t``, over **all** test images
  (those of class ``t`` included, as the paper);
* **ASR (non-target)**: the same over the test images whose class is not ``t``;
* **ASR-B**: the clean model on the triggered images predicted as ``t`` (the trigger alone).

Both heads are trained the same way on features of the same downstream training images
(the paper: the 3-layer ``badencoder_mlp``, Adam lr 1e-4, 500 epochs, batch 64).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from encshield.backdoor.triggers import Trigger
from encshield.evaluation.metrics import benign_accuracy, target_hit_rate
from encshield.evaluation.predict import predict

__all__ = ["BackdoorMetrics", "backdoor_metrics", "backdoor_predictions"]


@dataclass
class BackdoorMetrics:
    """CA, BA, ASR, ASR over non-target images, ASR-B (fractions) for ``target``."""

    target: int
    ca: float | None
    ba: float
    asr: float
    asr_nontarget: float
    asr_b: float | None
    num_test: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def backdoor_predictions(model: nn.Module, images: torch.Tensor, trigger: Trigger, *,
                         batch_size: int = 256, device: torch.device | str = "cpu"
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample predictions ``(clean, triggered)``, int64 ``(N,)``, of ``model`` on ``images``
    (uint8 or float in [0, 1]) and on the same images with ``trigger`` stamped on."""
    clean, _ = predict(model, images, batch_size=batch_size, device=device)
    triggered, _ = predict(model, images, batch_size=batch_size, device=device,
                           transform=trigger.apply)
    return clean, triggered


def backdoor_metrics(labels: torch.Tensor, target: int,
                     backdoored: tuple[torch.Tensor, torch.Tensor],
                     clean: tuple[torch.Tensor, torch.Tensor] | None = None) -> BackdoorMetrics:
    """The metrics from per-sample predictions.

    Args:
        labels: true classes of the test images, int ``(N,)``.
        target: the target class.
        backdoored: ``(clean-image, triggered-image)`` predictions of the backdoored model.
        clean: the same of the clean-encoder model (``None``: CA and ASR-B are ``None``).
    """
    ba_pred, asr_pred = backdoored
    return BackdoorMetrics(
        target=int(target),
        ca=None if clean is None else benign_accuracy(clean[0], labels),
        ba=benign_accuracy(ba_pred, labels),
        asr=target_hit_rate(asr_pred, target),
        asr_nontarget=target_hit_rate(asr_pred, target, labels, exclude_target_class=True),
        asr_b=None if clean is None else target_hit_rate(clean[1], target),
        num_test=int(labels.shape[0]),
    )
