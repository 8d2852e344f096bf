"""Linear probe: a linear classifier trained on frozen, pre-computed features.

Features are extracted once without augmentation (the common "linear evaluation on frozen
features" protocol); the classifier is trained with Adam and a cosine schedule on standardised
features, which takes seconds on a CPU. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from encshield.models.features import extract_features


@dataclass(frozen=True)
class LinearProbeResult:
    train_accuracy: float
    test_accuracy: float
    epochs: int


def linear_probe(
    encoder: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    batch_size: int = 512,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> LinearProbeResult:
    """Train ``Linear(D, C)`` on frozen features and report train/test top-1 accuracy."""
    from encshield.downstream import fit_head

    train_x = extract_features(encoder, train_images, device=device)
    test_x = extract_features(encoder, test_images, device=device)
    train_y = train_labels.to(train_x.device)
    test_y = test_labels.to(test_x.device)
    mean, std = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = nn.Linear(train_x.shape[1], num_classes).to(train_x.device)
    fit_head(head, train_x, train_y, epochs=epochs, lr=lr, weight_decay=weight_decay,
             batch_size=batch_size, seed=seed, schedule="cosine")
    with torch.inference_mode():
        train_acc = float((head(train_x).argmax(1) == train_y).float().mean())
        test_acc = float((head(test_x).argmax(1) == test_y).float().mean())
    return LinearProbeResult(train_acc, test_acc, epochs)
