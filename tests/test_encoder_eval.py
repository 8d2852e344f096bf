"""Encoder quality: weighted kNN against a brute-force reference, linear probe on real signal."""

from __future__ import annotations

import math

import torch

from encshield.evaluation import knn_accuracy, knn_predict, linear_probe
from encshield.models import build_encoder


def _brute_force_knn(train, labels, test, k, temperature, num_classes):
    predictions = []
    for t in test.tolist():
        sims = []
        for f, label in zip(train.tolist(), labels.tolist()):
            dot = sum(a * b for a, b in zip(t, f))
            norm = math.sqrt(sum(a * a for a in t)) * math.sqrt(sum(b * b for b in f))
            sims.append((dot / norm, label))
        sims.sort(key=lambda item: -item[0])
        votes = [0.0] * num_classes
        for sim, label in sims[:k]:
            votes[label] += math.exp(sim / temperature)
        predictions.append(max(range(num_classes), key=lambda c: votes[c]))
    return predictions


def test_knn_matches_brute_force_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (40,), generator=generator)
    test = torch.randn(15, 5, generator=generator, dtype=torch.float64)
    for k, temperature in ((1, 0.07), (5, 0.5), (40, 0.1)):
        expected = _brute_force_knn(train, labels, test, k, temperature, 4)
        got = knn_predict(train, labels, test, k, temperature, num_classes=4, chunk_size=4)
        assert got.tolist() == expected


def test_knn_hand_computed_vote() -> None:
    # Two neighbours of class 1 at similarity 0.6 outweigh one of class 0 at 0.8 when T = 1
    # (2 e^0.6 = 3.64 > e^0.8 = 2.23), but not when T = 0.05 (e^16 > 2 e^12).
    train = torch.tensor([[0.8, 0.6], [0.6, 0.8], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.0]])
    assert knn_predict(train, labels, test, k=3, temperature=1.0).tolist() == [1]
    assert knn_predict(train, labels, test, k=3, temperature=0.05).tolist() == [0]


def test_knn_accuracy_and_linear_probe_on_separable_images() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(120) % 3
    images = torch.rand(120, 3, 16, 16, generator=generator) * 0.3
    images[torch.arange(120), labels] += 0.6
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", width=4, input_size=16)
    knn = knn_accuracy(encoder, images[:90], labels[:90], images[90:], labels[90:], ks=(5, 20))
    assert set(knn) == {5, 20} and min(knn.values()) > 0.5  # chance is 1/3
    probe = linear_probe(
        encoder, images[:90], labels[:90], images[90:], labels[90:], epochs=100, lr=1e-2
    )
    assert probe.train_accuracy > 0.9 and probe.test_accuracy > 0.8
    again = linear_probe(
        encoder, images[:90], labels[:90], images[90:], labels[90:], epochs=100, lr=1e-2
    )
    assert again == probe
