"""Saving and loading defended classifiers (encoder + head) in encshield's safetensors format.

(Multi-branch classifiers -- ZePAD -- keep this format with per-branch prefixes:
:mod:`encshield.defenses.ensemble_io`; :func:`save_classifier` and :func:`load_classifier`
dispatch to it.)

Layout: tensors ``backbone.<name>`` (the encoder's ResNet, as in encoder checkpoints) and
``head.<name>``; metadata (JSON under the ``encshield`` key, see
:mod:`encshield.checkpoints.native`) with ``kind = "classifier"``, the encoder's architecture,
width, stem, feature dimension, normalisation, input size and provenance, the head's type and
dimensions, and the defense record. The payload sha256 is verified on load. Nothing is ever
unpickled.
"""

from __future__ import annotations

import os
from typing import Any

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
from encshield.models import (
    Classifier,
    Encoder,
    FusedClassifier,
    MLPClassifier,
    Provenance,
    build_encoder,
)
from encshield.models.encoder import normalize_input_size
from encshield.models.resnet import ARCHITECTURES, ResNet, build_backbone
from encshield.provenance import to_jsonable
from encshield.records import DefenseRecord

__all__ = ["build_from_parts", "classifier_parts", "describe_head", "encoder_parts",
           "load_classifier", "save_classifier"]


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


def encoder_parts(encoder: Encoder | nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors ``backbone.<name>`` and the metadata (architecture, width, stem, feature
    dimension, normalisation, input size, provenance) of a ResNet
    :class:`~encshield.models.Encoder` (shared by every file holding encoders)."""
    backbone = getattr(encoder, "backbone", None)
    if not isinstance(encoder, Encoder) or not isinstance(backbone, ResNet):
        raise ConfigError(
            f"saving supports ResNet encoders; got {type(backbone or encoder).__name__}"
        )
    tensors = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    metadata = {
        "architecture": backbone.arch,
        "width": backbone.width,
        "stem": backbone.stem_name,
        "feature_dim": encoder.feature_dim,
        "normalization": encoder.normalization.to_dict(),
        "input_size": list(encoder.input_size),
        "provenance": encoder.provenance.to_dict(),
    }
    return tensors, metadata


def classifier_parts(classifier: Classifier) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """:func:`encoder_parts` of the classifier's encoder plus ``head.<name>`` tensors and the
    ``head`` description (:func:`describe_head`)."""
    head_meta = describe_head(classifier.head)
    tensors, metadata = encoder_parts(classifier.encoder)
    tensors.update({f"head.{k}": v for k, v in classifier.head.state_dict().items()})
    metadata["head"] = head_meta
    return tensors, metadata


def save_classifier(
    classifier: Classifier, path: str | os.PathLike[str],
    record: DefenseRecord | dict[str, Any] | None = None,
) -> str:
    """Write ``classifier`` (ResNet :class:`~encshield.models.Encoder` + supported head, or a
    :class:`~encshield.models.FusedClassifier`, see :mod:`encshield.defenses.ensemble_io`) and
    the defense ``record`` atomically; returns the file's sha256."""
    if isinstance(classifier, FusedClassifier):
        from encshield.defenses.ensemble_io import save_fused_classifier

        return save_fused_classifier(classifier, path, record)
    tensors, metadata = classifier_parts(classifier)
    metadata.update({"kind": "classifier", "record": to_jsonable(record or {}),
                     "code_version": encshield.__version__})
    return write_native(path, tensors, metadata)


def build_from_parts(meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                     path: str | os.PathLike[str], *, head: bool = True
                     ) -> Classifier | Encoder:
    """The model of one :func:`classifier_parts` (``head=True``) or :func:`encoder_parts`
    metadata and its tensors (un-prefixed), validated before anything is allocated.

    Raises:
        CheckpointError: invalid metadata, NaN/inf weights, or tensors that do not fit.
    """
    arch, width, stem = meta["architecture"], int(meta["width"]), meta["stem"]
    size = normalize_input_size(meta["input_size"])
    feature_dim = ARCHITECTURES.get(arch).feature_dim(width)
    if head and int(meta["head"]["in_dim"]) != feature_dim:
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
    if head:
        expected.update({f"head.{k}": v
                         for k, v in meta_state_shapes(lambda: _build_head(meta["head"])).items()})
    filled = check_state_shapes(expected, tensors, f"classifier checkpoint {path}",
                                "the file does not match its own metadata: re-create it")
    encoder = build_encoder(arch, width, stem, meta["normalization"], size)
    encoder.provenance = Provenance.from_dict(meta.get("provenance") or {})
    model: Classifier | Encoder = (Classifier(encoder, _build_head(meta["head"])) if head
                                   else encoder)
    prefix = "encoder." if head else ""
    state = {(prefix + k if k.startswith("backbone.") else k): v for k, v in tensors.items()}
    model_state = model.state_dict()
    for key in filled:
        state[prefix + key] = torch.zeros_like(model_state[prefix + key])
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_classifier(
    path: str | os.PathLike[str], *, device: torch.device | str = "cpu"
) -> tuple[Classifier, dict[str, Any]]:
    """Read a file written by :func:`save_classifier`: ``(classifier in eval mode, metadata)``.

    ``metadata["record"]`` is the defense record. The metadata's types and ranges are checked,
    the weights must be finite, and keys and shapes are compared with the recorded model on the
    ``meta`` device before the model is allocated. A multi-branch file (``kind =
    "fused_classifier"``) gives a :class:`~encshield.models.FusedClassifier`.

    Raises:
        CheckpointError: not a classifier checkpoint, invalid metadata, NaN/inf weights, or
            tensors that do not fit the recorded model (one line each).
        ChecksumMismatchError: the tensors do not match the recorded payload sha256.
    """
    tensors, meta = read_native(path)
    if meta and meta.get("kind") == "fused_classifier":
        from encshield.defenses.ensemble_io import fused_from_file

        return fused_from_file(tensors, meta, path, device)
    if not meta or meta.get("kind") != "classifier":
        raise CheckpointError(
            f"{path} is not an encshield classifier checkpoint (kind "
            f"{None if not meta else meta.get('kind')!r}; expected 'classifier')"
        )
    validate_metadata(meta, path, kind="classifier")
    classifier = build_from_parts(meta, tensors, path, head=True)
    assert isinstance(classifier, Classifier)
    return classifier.to(device).eval(), meta
