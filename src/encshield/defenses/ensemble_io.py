"""Files of multi-branch models: a fused classifier (ZePAD) and a set of fine-tuned encoders.

Both keep encshield's one safetensors format (:mod:`encshield.checkpoints.native`: JSON
metadata under the ``encshield`` key, payload sha256 verified on load, nothing unpickled) and
the per-model layout of :mod:`encshield.defenses.io`, with one prefix per branch:

``kind = "fused_classifier"`` (:func:`save_fused_classifier`, read by
:func:`encshield.defenses.load_classifier`)
    tensors ``branches.<i>.backbone.*`` and ``branches.<i>.head.*``; metadata ``branches``
    (per branch: ``name``, ``role`` and the fields of a single classifier file: architecture,
    width, stem, feature dimension, normalisation, input size, provenance, head), ``fusion``
    (``rule``, ``k``), ``detector`` (settings or ``null``), ``head`` (the fused output:
    ``out_dim``), ``record`` (the defense record) and ``code_version``.
``kind = "encoder_set"`` (:func:`save_encoder_set` / :func:`load_encoder_set`)
    tensors ``encoders.<i>.backbone.*``; metadata ``encoders`` (per encoder: ``name``, ``role``,
    ``source`` = the spec and sha256 it was fine-tuned from, and the encoder fields), ``key``
    (what determined the fine-tuning) and ``record``. The artefact of ZePAD's fine-tune-once
    stage (docs/methods.md, "ZePAD": persistent robustness), reused by every downstream model.

Each branch's metadata is validated like a single file's before anything is allocated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

import encshield
from encshield.checkpoints.native import read_native, write_native
from encshield.checkpoints.validation import validate_metadata
from encshield.defenses.io import build_from_parts, classifier_parts, encoder_parts
from encshield.errors import CheckpointError, ConfigError
from encshield.models import Classifier, Encoder, FusedClassifier
from encshield.provenance import to_jsonable
from encshield.records import DefenseRecord

__all__ = ["EncoderSet", "fused_from_file", "load_encoder_set", "save_encoder_set",
           "save_fused_classifier"]


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{k}": v for k, v in tensors.items()}


def _unprefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _entries(meta: dict[str, Any], key: str, path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    entries = meta.get(key)
    if not isinstance(entries, list) or not entries or \
            not all(isinstance(e, dict) for e in entries):
        raise CheckpointError(f"invalid metadata in {path}: field {key!r} must be a non-empty "
                              "list of objects; re-create the file with encshield")
    return entries


def _check_keys(tensors: dict[str, torch.Tensor], prefixes: list[str],
                path: str | os.PathLike[str]) -> None:
    stray = sorted(k for k in tensors if not any(k.startswith(p) for p in prefixes))
    if stray:
        raise CheckpointError(f"{path}: tensors {stray[:3]} belong to no branch of the "
                              "metadata; the file does not match its own metadata: re-create it")


def save_fused_classifier(classifier: FusedClassifier, path: str | os.PathLike[str],
                          record: DefenseRecord | dict[str, Any] | None = None) -> str:
    """Write a :class:`~encshield.models.FusedClassifier` and its defense ``record`` as one file
    (atomically); returns the file's sha256."""
    tensors: dict[str, torch.Tensor] = {}
    branches = []
    for i, (name, role) in enumerate(zip(classifier.names, classifier.roles)):
        parts, meta = classifier_parts(classifier.branch(i))
        tensors.update(_prefixed(parts, f"branches.{i}."))
        branches.append({"name": name, "role": role, **meta})
    head = classifier.fusion_head
    metadata = {
        "kind": "fused_classifier",
        "branches": branches,
        "fusion": {"rule": head.fusion, "k": head.k},
        "detector": classifier.detector_settings,
        "head": {"type": "fusion", "out_dim": head.out_dim, "branches": len(branches)},
        "record": to_jsonable(record or {}),
        "code_version": encshield.__version__,
    }
    return write_native(path, tensors, metadata)


def fused_from_file(tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    path: str | os.PathLike[str], device: torch.device | str = "cpu"
                    ) -> tuple[FusedClassifier, dict[str, Any]]:
    """The :class:`~encshield.models.FusedClassifier` of a ``fused_classifier`` file's tensors
    and metadata (read by :func:`encshield.defenses.load_classifier`).

    Raises:
        CheckpointError: invalid metadata, a branch that does not fit its tensors, NaN/inf.
    """
    branches = _entries(meta, "branches", path)
    fusion = meta.get("fusion")
    if not isinstance(fusion, dict) or not isinstance(fusion.get("rule"), str) \
            or not isinstance(fusion.get("k"), (int, float)):
        raise CheckpointError(f"invalid metadata in {path}: field 'fusion' must be "
                              "{'rule': str, 'k': number}; re-create the file with encshield")
    detector = meta.get("detector")
    if detector is not None and not isinstance(detector, dict):
        raise CheckpointError(f"invalid metadata in {path}: field 'detector' must be an object "
                              "or null")
    _check_keys(tensors, [f"branches.{i}." for i in range(len(branches))], path)
    encoders, heads, roles, names = [], [], [], []
    for i, branch in enumerate(branches):
        validate_metadata(branch, f"{path} (branch {i})", kind="classifier")
        model = build_from_parts(branch, _unprefixed(tensors, f"branches.{i}."),
                                 f"{path} (branch {i})", head=True)
        assert isinstance(model, Classifier)
        encoders.append(model.encoder)
        heads.append(model.head)
        roles.append(str(branch.get("role")))
        names.append(str(branch.get("name", f"branch{i}")))
    try:
        fused = FusedClassifier(encoders, heads, roles, fusion=fusion["rule"],
                                k=float(fusion["k"]), names=names, detector=detector)
    except ConfigError as error:
        raise CheckpointError(f"invalid metadata in {path}: {error}") from None
    return fused.to(device).eval(), meta


@dataclass
class EncoderSet:
    """Fine-tuned encoders read from or written to an ``encoder_set`` file.

    Attributes:
        encoders: the encoders (eval mode).
        names: one name per encoder (e.g. the spec it was fine-tuned from).
        roles: one role per encoder (``mpae`` for ZePAD).
        sources: per encoder ``{"spec", "sha256"}`` of the pre-trained encoder.
        key: what determined the fine-tuning (compared by the consumer).
        record: the record of the fine-tuning.
        sha256: the file's sha256 (``""`` before it is written).
    """

    encoders: list[Encoder]
    names: list[str]
    roles: list[str]
    sources: list[dict[str, Any]]
    key: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""


def save_encoder_set(encoders: EncoderSet, path: str | os.PathLike[str]) -> str:
    """Write an :class:`EncoderSet` (atomically); returns the file's sha256."""
    tensors: dict[str, torch.Tensor] = {}
    entries = []
    for i, encoder in enumerate(encoders.encoders):
        parts, meta = encoder_parts(encoder)
        tensors.update(_prefixed(parts, f"encoders.{i}."))
        entries.append({"name": encoders.names[i], "role": encoders.roles[i],
                        "source": to_jsonable(encoders.sources[i]), **meta})
    metadata = {"kind": "encoder_set", "encoders": entries, "key": to_jsonable(encoders.key),
                "record": to_jsonable(encoders.record), "code_version": encshield.__version__}
    digest = write_native(path, tensors, metadata)
    encoders.sha256 = digest
    return digest


def load_encoder_set(path: str | os.PathLike[str], *, device: torch.device | str = "cpu"
                     ) -> EncoderSet:
    """Read an ``encoder_set`` file (payload sha256 verified, each encoder validated).

    Raises:
        CheckpointError: not an encoder set, invalid metadata, tensors that do not fit.
        ChecksumMismatchError: the tensors do not match the recorded payload sha256.
    """
    from encshield.checkpoints import sha256_file

    tensors, meta = read_native(path)
    if not meta or meta.get("kind") != "encoder_set":
        raise CheckpointError(f"{path} is not an encshield encoder set (kind "
                              f"{None if not meta else meta.get('kind')!r}; expected "
                              "'encoder_set'): give the file of a fine-tuning")
    entries = _entries(meta, "encoders", path)
    _check_keys(tensors, [f"encoders.{i}." for i in range(len(entries))], path)
    encoders = []
    for i, entry in enumerate(entries):
        validate_metadata(entry, f"{path} (encoder {i})", kind="encoder")
        model = build_from_parts(entry, _unprefixed(tensors, f"encoders.{i}."),
                                 f"{path} (encoder {i})", head=False)
        assert isinstance(model, Encoder)
        for p in model.parameters():
            p.requires_grad_(False)
        encoders.append(model.to(device).eval())
    return EncoderSet(
        encoders=encoders, names=[str(e.get("name", "")) for e in entries],
        roles=[str(e.get("role", "mpae")) for e in entries],
        sources=[dict(e.get("source") or {}) for e in entries],
        key=dict(meta.get("key") or {}), record=dict(meta.get("record") or {}),
        sha256=sha256_file(path))
