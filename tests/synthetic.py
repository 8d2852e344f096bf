"""A tiny synthetic downstream task and smoke-tier encoder shared by the defense tests."""

from __future__ import annotations

import torch

from encshield.data import ImageDataset
from encshield.models import Encoder, build_encoder

NUM_CLASSES = 4


def synthetic(n: int = 64, seed: int = 0, amp: float = 0.2) -> ImageDataset:
    """``n`` 16 px images of 4 classes separated by a dominant colour shift, plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % NUM_CLASSES
    base = torch.rand(n, 3, 16, 16, generator=g) * 0.3 + 0.35
    signal = torch.zeros(NUM_CLASSES, 3, 16, 16)
    signal[0, 0] += amp
    signal[1, 1] += amp
    signal[2, 2] += amp
    signal[3] -= amp
    images = ((base + signal[y]).clamp(0, 1) * 255).round().to(torch.uint8)
    return ImageDataset("synthetic", "train", images, y.long(), ("r", "g", "b", "dark"))


def encoder() -> Encoder:
    """A width-4 ResNet-18 (CIFAR stem) for 16 px images, seeded."""
    torch.manual_seed(0)
    return build_encoder("resnet18", width=4, stem="cifar", normalization="cifar10",
                         input_size=16)
