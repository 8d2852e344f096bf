"""``fit_defense``: build a downstream model with a registered defense on a downstream train split;
``finetune_encoders``: the shared fine-tuning stage of a defense that has one (ZePAD).

The defender's view of the DAE protocol: a public encoder and labelled downstream data. Used by
``encshield defend`` and by the bench's model (and ``finetune``) cells; the model file holds the
record. ZePAD's persistent robustness (Lei, Yang, Zhang, ICLR 2026; docs/methods.md, "ZePAD"):
:func:`finetune_encoders` fine-tunes the MPAE encoders once (on ``finetune_on``) and writes them;
``fit_defense(..., finetuned=FILE)`` then only trains the heads for a downstream dataset.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from encshield.defenses import (
    EncoderSet,
    SharedFinetuning,
    build_defense,
    load_encoder_set,
    save_classifier,
    save_encoder_set,
)
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

__all__ = ["finetune_encoders", "fit_defense"]


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
    finetuned: str | os.PathLike[str] | EncoderSet | None = None,
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
        finetuned: the file (or object) of :func:`finetune_encoders` to reuse (defenses with a
            shared fine-tuning stage only, e.g. ``zepad``); checked against the config.

    Returns:
        The defended classifier (eval mode) and its :class:`~encshield.records.DefenseRecord`
        (with ``encoder`` and ``data`` filled in).
    """
    defense = build_defense(name, dict(overrides or {}))  # validated before anything is loaded
    if output is not None and str(output).lower().endswith(".json"):
        raise ConfigError(f"output {output}: the model file must not end in .json (the record "
                          "is written next to it as MODEL.json)")
    dev = parse_device(device)
    if isinstance(defense, SharedFinetuning):
        defense.data_root = None if data.root is None else str(data.root)
    if finetuned is not None:
        if not isinstance(defense, SharedFinetuning):
            raise ConfigError(f"defense {name!r} has no shared fine-tuning stage to reuse; drop "
                              "finetuned / --finetuned")
        defense.use_finetuned(finetuned if isinstance(finetuned, EncoderSet)
                              else load_encoder_set(finetuned, device=dev))
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


def finetune_encoders(
    name: str,
    encoder: EncoderSpec,
    *,
    train: DataSpec | None = None,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    output: str | os.PathLike[str] | None = None,
) -> EncoderSet:
    """Run the shared fine-tuning stage of defense ``name`` (ZePAD's MPAE encoders, Gen-AF
    stage 1) once, for reuse by :func:`fit_defense` (``finetuned=``) on any downstream data.

    Args:
        name: a defense with a shared fine-tuning stage (``zepad``).
        encoder: the victim (``zoo:NAME``, a checkpoint path or a loaded encoder).
        train: the fine-tuning data when the config has no ``finetune_on`` (the downstream
            training data of the paper's main setting).
        root: the data root of ``finetune_on`` (default: ``$ENCSHIELD_DATA``).
        seed, overrides, image_size, device, progress: as :func:`fit_defense`.
        output: write the encoders (an ``encoder_set`` safetensors file).

    Returns:
        The fine-tuned encoders with their key and record (``record["encoder"]``: the victim).
    """
    defense = build_defense(name, dict(overrides or {}))
    if not isinstance(defense, SharedFinetuning):
        raise ConfigError(f"defense {name!r} has no shared fine-tuning stage; use fit_defense")
    if output is not None and str(output).lower().endswith(".json"):
        raise ConfigError(f"output {output}: the encoders file must not end in .json")
    dev = parse_device(device)
    defense.data_root = None if root is None else str(root)
    resolved = resolve_encoder(encoder)
    size = image_size or resolved.input_size
    selected = None if train is None else train.select(size)
    result = defense.finetune(resolved.encoder, seed=seed, device=dev, progress=progress,
                              train=None if selected is None else selected.dataset,
                              num_classes=None if selected is None else selected.num_classes)
    result.record["encoder"] = resolved.describe()
    result.record["machine"] = machine_info(dev)
    if output is not None:
        save_encoder_set(result, output)
    return result
