"""``fit_defense``: build a downstream model with a registered defense on a downstream train split.

The defender's view of the DAE protocol: a public encoder and labelled downstream data. Used by
``encshield defend`` and by the bench's model cells; the model file holds the record.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from encshield.defenses import build_defense, save_classifier
from encshield.errors import ConfigError
from encshield.models import Classifier
from encshield.provenance import machine_info
from encshield.records import DefenseRecord
from encshield.workflows.specs import (
    DataSpec,
    EncoderSpec,
    parse_device,
    resolve_encoder,
)

__all__ = ["fit_defense"]


def fit_defense(
    name: str,
    encoder: EncoderSpec,
    data: DataSpec,
    *,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    output: str | os.PathLike[str] | None = None,
) -> tuple[Classifier, DefenseRecord]:
    """Fit defense ``name`` on ``encoder`` (never modified) and the ``data`` train selection.

    Args:
        name: a registered defense (``encshield defend list``).
        encoder: ``zoo:NAME``, a checkpoint path or a loaded encoder.
        data: the downstream training data (class-stratified seeded subset of ``data.limit``).
        seed: seeds the defense (head init, batch order, attacks' random starts).
        overrides: defense config fields, nested (``{"attack": {"eps": 8/255}}``), validated.
        image_size: training image size (default: the encoder's input size).
        device: where to train.
        progress: show a progress bar.
        output: write the defended model (safetensors with the record in its metadata) and the
            record as JSON next to it (``MODEL.json``).

    Returns:
        The defended classifier (eval mode) and its :class:`~encshield.records.DefenseRecord`
        (with ``encoder`` and ``data`` filled in).
    """
    defense = build_defense(name, dict(overrides or {}))  # validated before anything is loaded
    if output is not None and str(output).lower().endswith(".json"):
        raise ConfigError(f"output {output}: the model file must not end in .json (the record "
                          "is written next to it as MODEL.json)")
    dev = parse_device(device)
    resolved = resolve_encoder(encoder)
    size = image_size or resolved.input_size
    train = data.select(size)
    result = defense.fit(resolved.encoder, train.dataset, train.num_classes, seed=seed,
                         device=dev, progress=progress)
    record = result.record
    record.encoder = resolved.describe()
    record.data = train.info
    record.machine = machine_info(dev)
    if output is not None:
        digest = save_classifier(result.classifier.to("cpu"), output, record)
        record.output = {"path": str(output), "sha256": digest}
        record.save(os.path.splitext(str(output))[0] + ".json")
    return result.classifier, record
