"""Feature extraction from a frozen encoder, batched and without autograd."""

from __future__ import annotations

import torch
from torch import nn

from encshield.images import to_float


@torch.inference_mode()
def extract_features(
    encoder: nn.Module,
    images: torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Features of every image, in order.

    Args:
        encoder: images float ``(N, 3, H, W)`` in [0, 1] -> features ``(N, D)``; run in eval mode.
        images: uint8 ``(N, 3, H, W)`` (0..255) or float in [0, 1], on any device.
    Returns:
        float32 ``(N, D)`` on ``device``.
    """
    was_training = encoder.training
    encoder.eval()
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        chunks.append(encoder(to_float(images[start : start + batch_size], device)).float())
    encoder.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0)
