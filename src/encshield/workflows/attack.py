"""``fit_attack``: fit a universal (downstream-agnostic) attack on an encoder and surrogate data.

The attacker's view of the DAE protocol (DESIGN.md): only the public encoder and its own
surrogate images, never the downstream data. Used by ``encshield attack fit`` and by the bench's
attack cells.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from encshield.attacks import UNIVERSAL_ATTACKS, Perturbation
from encshield.budgets import parse_budget
from encshield.provenance import machine_info
from encshield.records import AttackRecord
from encshield.workflows.specs import (
    DataSpec,
    EncoderSpec,
    parse_device,
    resolve_encoder,
)

__all__ = ["fit_attack"]


def fit_attack(
    name: str,
    encoder: EncoderSpec,
    surrogate: DataSpec,
    *,
    eps: float | str = 10 / 255,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    image_size: int | None = None,
    use_checkpoint_head: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = False,
    output: str | os.PathLike[str] | None = None,
    png: str | os.PathLike[str] | None = None,
    png_scale: int = 8,
) -> tuple[Perturbation, AttackRecord]:
    """Fit universal attack ``name`` on ``encoder`` with the ``surrogate`` images.

    Args:
        name: a registered universal attack (``encshield attack list``).
        encoder: ``zoo:NAME``, a checkpoint path or a loaded encoder (the public victim).
        surrogate: the attacker's data (class-stratified seeded subset of ``surrogate.limit``).
        eps: L-inf budget (``"10/255"`` or a float; ignored by patch attacks).
        seed: seeds the fit (the surrogate subset has its own seed, ``surrogate.seed``).
        overrides: attack config fields (validated; errors name the field).
        image_size: surrogate image size (default: the encoder's input size).
        use_checkpoint_head: classifier-based attacks (``uap``, ``uapgd``) use the checkpoint's
            surrogate head (e.g. solo-learn's online classifier) when it has one.
        device: where to fit.
        progress: show a progress bar.
        output, png: write the perturbation (safetensors) and a picture of it (upscaled
            ``png_scale`` times, with an example surrogate image) there.

    Returns:
        The perturbation (metadata: attack, config, encoder, surrogate, budget, seed) and an
        :class:`~encshield.records.AttackRecord`.
    """
    attack = UNIVERSAL_ATTACKS.get(name)(dict(overrides or {}))
    budget = parse_budget(eps, name="eps", maximum=1.0, positive=True)
    dev = parse_device(device)
    resolved = resolve_encoder(encoder)
    model = resolved.encoder.to(dev).eval()
    size = image_size or resolved.input_size
    data = surrogate.select(size, labelled=False)
    labels: torch.Tensor | None = data.dataset.labels
    if len(data.dataset.labels) and bool((data.dataset.labels < 0).all()):
        labels = None  # an unlabelled split (e.g. STL-10 unlabeled)
    head = resolved.surrogate_head if use_checkpoint_head else None
    perturbation = attack.fit(
        model, data.dataset.images, eps=budget, seed=seed, surrogate_labels=labels,
        surrogate_head=None if head is None else head.to(dev), progress=progress,
        data_description=data.info,
    )
    meta = perturbation.metadata
    meta["encoder"].update({"spec": resolved.spec, "sha256": resolved.sha256,
                            "format": resolved.format})
    record = AttackRecord(
        attack=attack.name, config=attack.config.model_dump(mode="json"),
        eps=perturbation.eps if perturbation.kind == "additive" else None, seed=seed,
        encoder=resolved.describe(), surrogate=data.info,
        fit_seconds=float(meta.get("fit_seconds", 0.0)),
        objective=dict(meta.get("objective") or {}), machine=machine_info(dev))
    if output is not None:
        digest = perturbation.save(output)
        record.output = {"path": str(output), "sha256": digest}
    if png is not None:
        perturbation.to_png(png, scale=png_scale, example=data.dataset.to_float(slice(0, 1)))
    return perturbation, record

