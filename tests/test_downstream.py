"""The no-defense downstream model: a head trained on a frozen encoder's features."""

from __future__ import annotations

import torch

from encshield.downstream import train_head
from encshield.models import build_encoder


def _data(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class (0, 1, 2) is the dominant colour channel."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    images = torch.rand(n, 3, 16, 16, generator=generator) * 0.3
    images[torch.arange(n), labels] += 0.6
    return (images * 255).round().to(torch.uint8), labels


def test_head_learns_encoder_stays_frozen_and_training_is_seeded() -> None:
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", width=4, input_size=16)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    images, labels = _data()
    classifier, record = train_head(encoder, images, labels, 3, head="mlp", epochs=15, seed=1)
    assert record.train_accuracy > 0.9 and record.losses[-1] < record.losses[0]
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in encoder.parameters())
    assert all(p.grad is None for p in classifier.head.parameters())
    with torch.inference_mode():
        logits = classifier(images.float() / 255)
    assert logits.shape == (96, 3) and not classifier.training
    again, _ = train_head(encoder, images, labels, 3, head="mlp", epochs=15, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(classifier.head.state_dict().values(),
                                                  again.head.state_dict().values()))
