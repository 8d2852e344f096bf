"""Saving and loading defended classifiers (encoder + head) in encshield's safetensors format.

Layout: tensors ``backbone.<name>`` (the encoder's ResNet, as in encoder checkpoints) and
``head.<name>``; metadata (JSON under the ``encshield`` key, see
:mod:`encshield.checkpoints.native`) with ``kind = "classifier"``, the encoder's architecture,
width, stem, feature dimension, normalisation, input size and provenance, the head's type and
dimensions, and the defense record. The payload sha256 is verified on load. Nothing is ever
unpickled.
"""

from __future__ import annotations

import os
from typing import Any, cast

import torch
from torch import nn

import encshield
from encshield.checkpoints.native import read_native, write_native
from encshield.checkpoints.validation import (
    check_finite,
    check_state_shapes,
    meta_state_shapes,
    validate_metadata,
)
from encshield.errors import CheckpointError, ConfigError
from encshield.models import Classifier, Encoder, MLPClassifier, Provenance, build_encoder
from encshield.models.encoder import normalize_input_size
from encshield.models.resnet import ARCHITECTURES, ResNet, build_backbone
from encshield.provenance import to_jsonable
from encshield.records import DefenseRecord

__all__ = ["describe_head", "load_classifier", "save_classifier"]


def describe_head(head: nn.Module) -> dict[str, Any]:
    """JSON description of a supported head (``nn.Linear`` or :class:`MLPClassifier`)."""
    if isinstance(head, nn.Linear):
        return {"type": "linear", "in_dim": head.in_features, "out_dim": head.out_features,
                "bias": head.bias is not None}
    if isinstance(head, MLPClassifier):
        return {"type": "mlp_classifier", "in_dim": head.in_dim, "out_dim": head.out_dim,
                "hidden_dims": [head.fc1.out_features, head.fc2.out_features],
                "dropout": float(head.dropout.p)}
    raise ConfigError(
        f"cannot save a head of type {type(head).__name__}; supported: nn.Linear, MLPClassifier"
    )


def _build_head(meta: dict[str, Any]) -> nn.Module:
    kind = meta.get("type")
    if kind == "linear":
        return nn.Linear(int(meta["in_dim"]), int(meta["out_dim"]), bias=bool(meta["bias"]))
    if kind == "mlp_classifier":
        return MLPClassifier(int(meta["in_dim"]), int(meta["out_dim"]),
                             tuple(meta["hidden_dims"]), float(meta["dropout"]))
    raise CheckpointError(f"unknown head type {kind!r} in classifier checkpoint")


def save_classifier(
    classifier: Classifier, path: str | os.PathLike[str],
    record: DefenseRecord | dict[str, Any] | None = None,
) -> str:
    """Write ``classifier`` (ResNet :class:`~encshield.models.Encoder` + supported head) and the
    defense ``record`` atomically; returns the file's sha256."""
    encoder = cast(Encoder, classifier.encoder)  # checked below: a ResNet backbone
    backbone = getattr(encoder, "backbone", None)
    if not isinstance(backbone, ResNet):
        raise ConfigError(
            f"save_classifier supports ResNet encoders; got {type(backbone).__name__}"
        )
    head_meta = describe_head(classifier.head)
    tensors = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    tensors.update({f"head.{k}": v for k, v in classifier.head.state_dict().items()})
    metadata = {
        "kind": "classifier",
        "architecture": backbone.arch,
        "width": backbone.width,
        "stem": backbone.stem_name,
        "feature_dim": encoder.feature_dim,
        "normalization": encoder.normalization.to_dict(),
        "input_size": list(encoder.input_size),
        "provenance": encoder.provenance.to_dict(),
        "head": head_meta,
        "record": to_jsonable(record or {}),
        "code_version": encshield.__version__,
    }
    return write_native(path, tensors, metadata)


def load_classifier(
    path: str | os.PathLike[str], *, device: torch.device | str = "cpu"
) -> tuple[Classifier, dict[str, Any]]:
    """Read a file written by :func:`save_classifier`: ``(classifier in eval mode, metadata)``.

    ``metadata["record"]`` is the defense record. The metadata's types and ranges are checked,
    the weights must be finite, and keys and shapes are compared with the recorded model on the
    ``meta`` device before the model is allocated.

    Raises:
        CheckpointError: not a classifier checkpoint, invalid metadata, NaN/inf weights, or
            tensors that do not fit the recorded model (one line each).
        ChecksumMismatchError: the tensors do not match the recorded payload sha256.
    """
    tensors, meta = read_native(path)
    if not meta or meta.get("kind") != "classifier":
        raise CheckpointError(
            f"{path} is not an encshield classifier checkpoint (kind "
            f"{None if not meta else meta.get('kind')!r}; expected 'classifier')"
        )
    validate_metadata(meta, path, kind="classifier")
    arch, width, stem = meta["architecture"], int(meta["width"]), meta["stem"]
    size = normalize_input_size(meta["input_size"])
    feature_dim = ARCHITECTURES.get(arch).feature_dim(width)
    if int(meta["head"]["in_dim"]) != feature_dim:
        raise CheckpointError(
            f"invalid metadata in {path}: field 'head' expects {meta['head']['in_dim']} "
            f"features, but a {arch} of width {width} has {feature_dim}; the metadata was "
            "edited or damaged: re-create the file with encshield"
        )
    check_finite(tensors, f"classifier checkpoint {path}")
    # keys and shapes on the meta device first: nothing is allocated for absurd metadata
    expected = {
        f"backbone.{k}": v for k, v in meta_state_shapes(
            lambda: build_backbone(arch, width, stem, in_channels=size[0])).items()
    }
    expected.update({f"head.{k}": v
                     for k, v in meta_state_shapes(lambda: _build_head(meta["head"])).items()})
    filled = check_state_shapes(expected, tensors, f"classifier checkpoint {path}",
                                "the file does not match its own metadata: re-create it")
    encoder = build_encoder(arch, width, stem, meta["normalization"], size)
    encoder.provenance = Provenance.from_dict(meta.get("provenance") or {})
    classifier = Classifier(encoder, _build_head(meta["head"]))
    state = {("encoder." + k if k.startswith("backbone.") else k): v for k, v in tensors.items()}
    model_state = classifier.state_dict()
    for key in filled:
        state["encoder." + key] = torch.zeros_like(model_state["encoder." + key])
    classifier.load_state_dict(state, strict=True)
    return classifier.to(device).eval(), meta
