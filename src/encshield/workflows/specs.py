"""The inputs every workflow shares: an encoder spec and a dataset spec.

* An **encoder spec** is ``zoo:NAME`` (a verified encoder of the model zoo) or a checkpoint path
  (any supported format); :func:`resolve_encoder` loads it, :func:`encoder_identity` names it
  cheaply (spec + sha256, nothing loaded). ``ensemble:SPEC+SPEC+...`` (``ensemble-mean:`` to
  average instead of concatenating the features) is an
  :class:`~encshield.models.EnsembleEncoder` of those encoders: the transfer attacker of ZePAD's
  threat model fits a universal attack on an ensemble of public encoders (docs/methods.md,
  "ZePAD"); its sha256 is the sha256 of the members' sha256 values.
* A **dataset spec** (:class:`DataSpec`) is a dataset name, a split (optionally sliced,
  ``train[:45000]``, or joined, ``train+val``), a limit and a seed. :meth:`DataSpec.select`
  applies the project's one subset rule: a seeded, class-stratified subset of ``limit`` images
  (:func:`encshield.evaluation.subsets.select_subset`), so the CLI, the bench and the Python API
  select the same images for the same spec.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encshield.data import ImageDataset
from encshield.errors import ConfigError
from encshield.evaluation.describe import describe_encoder
from encshield.evaluation.subsets import select_subset, subset_info
from encshield.models import Encoder

__all__ = [
    "DataSpec",
    "EncoderSpec",
    "ResolvedEncoder",
    "SelectedData",
    "encoder_identity",
    "parse_device",
    "resolve_encoder",
]

#: ``zoo:NAME``, a checkpoint path, or an already loaded encoder / checkpoint.
EncoderSpec = Any


@dataclass
class ResolvedEncoder:
    """A loaded encoder and where it came from.

    Attributes:
        encoder: images float ``(N, 3, H, W)`` in [0, 1] -> features ``(N, D)``, eval mode.
        surrogate_head: a linear head shipped with the checkpoint (e.g. solo-learn's online
            classifier), else ``None``.
        spec: ``zoo:NAME`` or the resolved checkpoint path (``""`` for an in-memory encoder).
        sha256: the checkpoint file's sha256 (``""`` for an in-memory encoder).
        format: checkpoint format name.
    """

    encoder: Encoder
    surrogate_head: nn.Module | None = None
    spec: str = ""
    sha256: str = ""
    format: str = ""
    path: str = ""

    @property
    def input_size(self) -> int:
        """The encoder's nominal image size (square side, pixels)."""
        size = getattr(self.encoder, "input_size", None)
        if size is None:
            raise ConfigError("the encoder does not record its input size: give image_size")
        return int(size[-1])

    def identity(self) -> dict[str, str]:
        """``{"spec", "sha256"}``: what names the encoder in cell ids and records."""
        return {"spec": self.spec, "sha256": self.sha256}

    def describe(self) -> dict[str, Any]:
        """Spec, file, sha256, format, provenance, feature dim, input size, normalisation."""
        out: dict[str, Any] = {"spec": self.spec, "path": self.path, "sha256": self.sha256,
                               "format": self.format}
        if self.spec.startswith("zoo:"):
            out["zoo"] = self.spec[4:]
        return {**out, **describe_encoder(self.encoder)}


#: Prefixes of ensemble specs and how their members' features are combined.
ENSEMBLE_PREFIXES = {"ensemble:": "concat", "ensemble-mean:": "mean"}


def _ensemble_members(text: str) -> tuple[list[str], str] | None:
    """``(member specs, combine)`` of an ``ensemble:`` / ``ensemble-mean:`` spec, else ``None``.

    Raises:
        ConfigError: an ensemble spec without members.
    """
    for prefix, combine in ENSEMBLE_PREFIXES.items():
        if text.startswith(prefix):
            members = [m.strip() for m in text[len(prefix):].split("+") if m.strip()]
            if not members:
                raise ConfigError(f"encoder {text!r}: an ensemble needs members, e.g. "
                                  "ensemble:zoo:simclr-cifar10-r18w16+zoo:byol-tinyimagenet-r18w16")
            return members, combine
    return None


def _combined_sha(shas: list[str]) -> str:
    import hashlib

    return hashlib.sha256("+".join(shas).encode()).hexdigest()


def encoder_identity(spec: str) -> dict[str, str]:
    """``{"spec", "sha256"}`` of an encoder spec without loading it (zoo manifest or file hash).

    Raises:
        ConfigError: neither ``zoo:NAME`` of the manifest nor an existing file.
    """
    from encshield.checkpoints import sha256_file

    text = str(spec)
    ensemble = _ensemble_members(text)
    if ensemble is not None:
        shas = [encoder_identity(m)["sha256"] for m in ensemble[0]]
        return {"spec": text, "sha256": _combined_sha(shas)}
    if text.startswith("zoo:"):
        from encshield import zoo

        return {"spec": text, "sha256": zoo.entry(text[4:]).sha256}
    path = Path(text).expanduser()
    if not path.is_file():
        raise ConfigError(f"encoder {text!r} is neither 'zoo:NAME' nor an existing checkpoint "
                          "file; see `encshield zoo list`")
    return {"spec": str(path.resolve()), "sha256": sha256_file(path)}


def resolve_encoder(spec: EncoderSpec, *, expected_sha256: str | None = None) -> ResolvedEncoder:
    """Load an encoder from ``zoo:NAME``, a checkpoint path, a
    :class:`~encshield.checkpoints.LoadedCheckpoint`, a :class:`ResolvedEncoder` or an
    :class:`~encshield.models.Encoder` (eval mode).

    Raises:
        ConfigError, CheckpointError, ChecksumMismatchError: unknown zoo name, missing or unsafe
            file, or a file whose sha256 differs from ``expected_sha256``.
    """
    from encshield.checkpoints import LoadedCheckpoint, load_encoder

    if isinstance(spec, ResolvedEncoder):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        text = str(spec)
        ensemble = _ensemble_members(text)
        if ensemble is not None:
            return _resolve_ensemble(text, *ensemble, expected_sha256)
        if text.startswith("zoo:"):
            from encshield import zoo

            loaded = zoo.load(text[4:])
        else:
            path = Path(text).expanduser()
            if not path.is_file():
                raise ConfigError(f"encoder {text!r} is neither 'zoo:NAME' nor an existing "
                                  "checkpoint file; see `encshield zoo list`")
            loaded = load_encoder(path, expected_sha256=expected_sha256)
            text = str(path.resolve())
        return ResolvedEncoder(loaded.encoder.eval(), loaded.surrogate_head, text,
                               loaded.sha256, loaded.format, str(loaded.path))
    if isinstance(spec, LoadedCheckpoint):
        return ResolvedEncoder(spec.encoder.eval(), spec.surrogate_head, str(spec.path),
                               spec.sha256, spec.format, str(spec.path))
    if isinstance(spec, nn.Module):
        return ResolvedEncoder(spec.eval())  # type: ignore[arg-type]
    raise ConfigError(
        f"encoder must be 'zoo:NAME', a checkpoint path, a LoadedCheckpoint or an Encoder; got "
        f"{type(spec).__name__}"
    )


def _resolve_ensemble(text: str, members: list[str], combine: str,
                      expected_sha256: str | None) -> ResolvedEncoder:
    """An :class:`~encshield.models.EnsembleEncoder` of the member specs (each verified)."""
    from encshield.models import EnsembleEncoder

    resolved = [resolve_encoder(m) for m in members]
    sha = _combined_sha([r.sha256 for r in resolved])
    if expected_sha256 is not None and sha != expected_sha256:
        raise ConfigError(f"encoder {text!r}: the members' sha256 values changed since the "
                          "matrix was expanded; run it again")
    ensemble = EnsembleEncoder([r.encoder for r in resolved], combine,  # type: ignore[arg-type]
                               names=[r.spec for r in resolved])
    return ResolvedEncoder(ensemble.eval(), None, text, sha, "ensemble",  # type: ignore[arg-type]
                           "+".join(r.path for r in resolved))


def parse_device(text: str | torch.device) -> torch.device:
    """``"cpu"`` / ``"cuda:0"`` -> a device that exists here.

    Raises:
        ConfigError: not a device name, or a CUDA device on a machine without one.
    """
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {text!r} is not a torch device; use cpu or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {text!r}: this machine has no CUDA device; use cpu")
    return device


@dataclass
class SelectedData:
    """The images a workflow uses and how they were chosen.

    Attributes:
        dataset: the selected images (uint8 ``(n, 3, H, W)``) and labels ``(n,)``.
        num_classes: classes of the whole dataset (not only of the selection).
        indices: positions of the selection in the split (``None``: the whole split).
        info: ``{"dataset", "split", "root", "image_size", "available", "used", "limit",
            "seed", "num_classes", "subset"}`` for records.
    """

    dataset: ImageDataset
    num_classes: int
    indices: torch.Tensor | None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    """A dataset split and the subset of it a workflow uses.

    Attributes:
        name: a registered dataset name (``cifar10``, ``tiny_imagenet`` ...).
        split: a split, optionally sliced (``train[:45000]``) or joined (``train+val``).
        limit: use a seeded, class-stratified subset of this many images (``None``: all).
        seed: seed of the subset.
        root: data root (default: ``$ENCSHIELD_DATA``, then the user data folder).
    """

    name: str
    split: str = "train"
    limit: int | None = None
    seed: int = 0
    root: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        from encshield.data.api import parse_split
        from encshield.data.base import DATASETS

        if not self.name:
            raise ConfigError("dataset name is empty; e.g. cifar10")
        if self.root is not None:
            object.__setattr__(self, "root", str(self.root))
        DATASETS.canonical(self.name)
        for part in str(self.split).split("+"):
            parse_split(part)
        if self.limit is not None and int(self.limit) < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")

    @classmethod
    def parse(cls, text: str, *, default_split: str = "train", **fields: Any) -> DataSpec:
        """``"cifar10:train[:45000]"`` (the split defaults to ``default_split``)."""
        name, _, split = str(text).partition(":")
        if not name.strip():
            raise ConfigError(f"{text!r}: expected DATASET[:SPLIT], e.g. cifar10:train")
        return cls(name=name.strip(), split=split.strip() or default_split, **fields)

    @property
    def text(self) -> str:
        """``name:split``."""
        return f"{self.name}:{self.split}"

    def select(self, image_size: int | None = None, *, labelled: bool = True) -> SelectedData:
        """Load the split at ``image_size`` and apply the subset rule.

        Args:
            image_size: resize to this many pixels (``None``: as stored).
            labelled: refuse splits with unlabelled images (label < 0).
        """
        from encshield import data

        full = data.load(self.name, self.split, root=self.root, image_size=image_size)
        if labelled and len(full) and bool((full.labels < 0).any()):
            raise ConfigError(f"{self.text} has unlabelled images; this job needs labels")
        idx = select_subset(full.labels, self.limit, seed=self.seed, mode="stratified")
        selected = full if idx is None else full.subset(idx)
        info: dict[str, Any] = {
            "dataset": full.name, "split": self.split, "root": self.root,
            "image_size": list(selected.image_size[1:]), "available": len(full),
            "used": len(selected), "limit": self.limit, "seed": self.seed,
            "num_classes": full.num_classes,
        }
        if idx is not None:
            info["subset"] = subset_info(full.labels, idx, int(self.limit or 0), self.seed,
                                         "stratified")
        return SelectedData(selected, full.num_classes, idx, info)
