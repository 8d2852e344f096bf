"""Weighted k-nearest-neighbour classification on frozen features.

The protocol of Wu et al. ("Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", CVPR 2018), used as the SSL monitor by solo-learn and the CGCL code family:
cosine similarity on L2-normalised features, the k most similar training samples vote for their
class with weight ``exp(sim / T)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from encshield.models.features import extract_features


@torch.inference_mode()
def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    k: int,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Predicted labels ``(M,)`` of ``test_features`` ``(M, D)`` from ``train_features`` ``(N, D)``.

    Features need not be normalised (they are L2-normalised here). ``k`` is capped at ``N``.
    """
    if num_classes is None:
        num_classes = int(train_labels.max()) + 1
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    k = min(k, train.shape[0])
    predictions = []
    for start in range(0, test.shape[0], chunk_size):
        sim = test[start : start + chunk_size] @ train.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)
        votes.scatter_add_(1, train_labels[top_idx], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(
    encoder: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> dict[int, float]:
    """Top-1 kNN accuracy (fraction in [0, 1]) for each k; images uint8 or float in [0, 1]."""
    train_features = extract_features(encoder, train_images, batch_size, device)
    test_features = extract_features(encoder, test_images, batch_size, device)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    train_labels = train_labels.to(train_features.device)
    test_labels = test_labels.to(test_features.device)
    results = {}
    for k in ks:
        pred = knn_predict(train_features, train_labels, test_features, k, temperature, num_classes)
        results[int(k)] = float((pred == test_labels).float().mean())
    return results
