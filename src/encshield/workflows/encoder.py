"""``evaluate_encoder``: how good an encoder's features are (weighted kNN, linear probe).

The solo-learn protocol: features of the frozen encoder on a memory bank / probe training set
(``train``) and an evaluation set (``test``); weighted kNN top-1 for each ``k`` (temperature
0.07) and a linear probe (Adam, cosine schedule, on standardised features). Used by
``encshield evaluate-encoder`` and the zoo's measurements.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from encshield.evaluation import knn_accuracy, linear_probe
from encshield.provenance import machine_info
from encshield.records import EncoderEvalRecord
from encshield.workflows.specs import (
    DataSpec,
    EncoderSpec,
    parse_device,
    resolve_encoder,
)

__all__ = ["evaluate_encoder"]


def evaluate_encoder(
    encoder: EncoderSpec,
    train: DataSpec,
    test: DataSpec,
    *,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.07,
    linear_epochs: int = 100,
    image_size: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> EncoderEvalRecord:
    """kNN top-1 accuracy for each ``k`` and a linear probe of ``linear_epochs`` (0 skips it).

    Args:
        encoder: ``zoo:NAME``, a checkpoint path or a loaded encoder.
        train: the memory bank / probe training data (``limit`` -> class-stratified subset).
        test: the evaluation data.
        image_size: resize both (default: the encoder's input size).
        seed: the linear probe's seed.
    """
    dev = parse_device(device)
    resolved = resolve_encoder(encoder)
    model = resolved.encoder.to(dev).eval()
    size = image_size or resolved.input_size
    train_data, test_data = train.select(size), test.select(size)
    started = time.perf_counter()
    knn = knn_accuracy(model, train_data.dataset.images, train_data.dataset.labels,
                       test_data.dataset.images, test_data.dataset.labels, ks=list(ks),
                       temperature=temperature, device=dev)
    linear: dict[str, float | int] = {}
    if linear_epochs > 0:
        probe = linear_probe(model, train_data.dataset.images, train_data.dataset.labels,
                             test_data.dataset.images, test_data.dataset.labels,
                             epochs=linear_epochs, seed=seed)
        linear = {"train_top1": probe.train_accuracy, "test_top1": probe.test_accuracy,
                  "epochs": probe.epochs}
    return EncoderEvalRecord(
        encoder=resolved.describe(), train=train_data.info, test=test_data.info,
        knn={f"k{k}": float(v) for k, v in knn.items()}, knn_temperature=temperature,
        linear=linear, seconds=round(time.perf_counter() - started, 1), machine=machine_info(dev))
