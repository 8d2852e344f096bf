"""Downstream heads on a frozen encoder: the "no defense" model of the DAE protocol.

The protocol of the CGCL family (AdvEncoder, Gen-AF, ZePAD; docs/methods.md, "Downstream head"): the
encoder is frozen in eval mode, no augmentation is used, and a head (the 3-layer MLP by default) is
trained with Adam (lr 5e-3, weight decay 8e-4), ExponentialLR(0.96) per epoch, batch 256, 20 epochs,
cross-entropy; the last epoch's head is kept. Because the encoder is frozen and the inputs are not
augmented, the features are computed once and the head is trained on them, which gives the same head
as training through the encoder at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from encshield.models import Classifier, Encoder, build_head
from encshield.models.features import extract_features


@dataclass
class HeadTrainingRecord:
    """What :func:`train_head` did."""

    head: str
    epochs: int
    lr: float
    weight_decay: float
    gamma: float
    batch_size: int
    seed: int
    num_train: int
    train_accuracy: float
    losses: list[float] = field(default_factory=list)


def fit_head(
    head: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 20,
    lr: float = 5e-3,
    weight_decay: float = 8e-4,
    gamma: float = 0.96,
    batch_size: int = 256,
    seed: int = 0,
    schedule: Literal["exponential", "cosine"] = "exponential",
) -> list[float]:
    """Train ``head`` in place on fixed features ``(N, D)`` with labels ``(N,)``.

    Adam with ExponentialLR(``gamma``) per epoch (the CGCL protocol) or a per-epoch cosine decay
    to 0 (the linear probe); shuffled mini-batches drawn from a generator seeded with ``seed``.
    Returns the mean training loss of each epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler: torch.optim.lr_scheduler.LRScheduler = (
        torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
        if schedule == "exponential"
        else torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    )
    labels = labels.to(features.device)
    head.train()
    history = []
    for _ in range(epochs):
        order = torch.randperm(features.shape[0], generator=generator).to(features.device)
        total, count = 0.0, 0
        for start in range(0, features.shape[0], batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(head(features[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * idx.numel()
            count += idx.numel()
        scheduler.step()
        history.append(total / max(count, 1))
    optimizer.zero_grad(set_to_none=True)  # hand back a head without stale gradients
    head.eval()
    return history


def train_head(
    encoder: Encoder,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    head: str = "mlp",
    epochs: int = 20,
    lr: float = 5e-3,
    weight_decay: float = 8e-4,
    gamma: float = 0.96,
    batch_size: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[Classifier, HeadTrainingRecord]:
    """A :class:`Classifier` = frozen ``encoder`` + a head trained on its features.

    Args:
        encoder: images float in [0, 1] -> features ``(N, D)``; kept frozen in eval mode.
        images: downstream training images, uint8 ``(N, 3, H, W)`` or float in [0, 1].
        labels: int64 ``(N,)`` in ``[0, num_classes)``.
        head: a name of :data:`encshield.models.HEADS` (``mlp`` = Gen-AF/ZePAD 3-layer MLP,
            ``linear``, ``badencoder_mlp``).
    Returns:
        The classifier (eval mode; images in [0, 1] -> logits ``(N, num_classes)``) and a record.
    """
    encoder.eval()
    for parameter in encoder.parameters():
        parameter.requires_grad_(False)
    features = extract_features(encoder, images, device=device)
    with torch.random.fork_rng():  # head init and dropout masks depend on the seed only
        torch.manual_seed(seed)
        module = build_head(head, encoder.feature_dim, num_classes).to(features.device)
        history = fit_head(module, features, labels, epochs=epochs, lr=lr,
                           weight_decay=weight_decay, gamma=gamma, batch_size=batch_size, seed=seed)
    with torch.inference_mode():
        accuracy = float((module(features).argmax(1) == labels.to(features.device)).float().mean())
    classifier = Classifier(encoder, module).eval()
    record = HeadTrainingRecord(head=head, epochs=epochs, lr=lr, weight_decay=weight_decay,
                                gamma=gamma, batch_size=batch_size, seed=seed,
                                num_train=int(features.shape[0]), train_accuracy=accuracy,
                                losses=history)
    return classifier, record
