"""Checkpoint formats: reading a file's weights into torchvision-named ResNet state dicts.

Registry :data:`FORMATS` (auto-detected by file signature and key layout, in this order):

* ``encshield``: our safetensors files (``backbone.*`` + optional ``surrogate_head.*``, JSON
  metadata).
* ``solo-learn`` (aliases ``lightning``, ``sololearn``): a Lightning ``.ckpt`` whose
  ``state_dict`` holds ``backbone.*`` (kept, prefix stripped), ``classifier.weight/bias`` (the
  online linear probe, kept as the surrogate head) and everything else (``projector.*``,
  ``momentum_*``, ``predictor.*``, ``queue``...), reported as skipped keys.
* ``badencoder``: BadEncoder's SimCLR ``{'epoch', 'state_dict', 'optimizer'}`` with
  ``f.f.<i>.*`` = ``Sequential(conv1, bn1, relu, layer1..layer4, avgpool)`` (``g.*``, the projector,
  is skipped). Default normalisation ``badencoder_cifar10``.
* ``torchvision``: a plain ResNet state dict (optionally under ``state_dict`` or ``model``, optional
  ``module.`` prefix); ``fc.*`` is kept as the surrogate head.

Every importer only *re-keys* tensors; fitting them to a model (strict key and shape checks) is
done by :mod:`encshield.checkpoints.api`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeGuard

import torch

from encshield.checkpoints.safe_pickle import to_plain
from encshield.checkpoints.validation import validate_metadata
from encshield.errors import CheckpointError
from encshield.provenance import to_jsonable
from encshield.registry import Registry

__all__ = [
    "FORMATS",
    "BadEncoderFormat",
    "CheckpointFormat",
    "EncshieldFormat",
    "ImportedWeights",
    "SoloLearnFormat",
    "Source",
    "TorchvisionFormat",
    "detect_format",
]


@dataclass
class Source:
    """A checkpoint file as read from disk (before interpretation)."""

    path: Path
    container: str  # "safetensors", "torch-zip" or "pickle"
    obj: Any  # the unpickled object, or the dict of tensors of a safetensors file
    native_metadata: dict[str, Any] | None = None  # encshield JSON metadata, if any


@dataclass
class ImportedWeights:
    """What an importer extracted: torchvision-named backbone tensors plus hints."""

    format: str
    backbone: dict[str, torch.Tensor]
    surrogate_head: dict[str, torch.Tensor] | None = None
    skipped_keys: list[str] = field(default_factory=list)
    arch: str | None = None
    width: int | None = None
    stem: str | None = None
    normalization: str | dict[str, Any] | None = None
    input_size: tuple[int, ...] | None = None
    ssl_method: str | None = None
    pretrain_data: str | None = None
    config_hash: str | None = None
    provenance: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class CheckpointFormat:
    """Base class of importers: subclasses set ``name``/``description``, implement both methods."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: default normalisation preset per stem kernel size (3 = CIFAR-like, 7 = ImageNet-like)
    default_normalization: ClassVar[dict[int, str]] = {3: "cifar10", 7: "imagenet"}

    def matches(self, source: Source) -> bool:
        raise NotImplementedError

    def extract(self, source: Source) -> ImportedWeights:
        raise NotImplementedError


FORMATS: Registry[CheckpointFormat] = Registry("checkpoint format")


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def _is_state_dict(obj: Any) -> TypeGuard[Mapping[str, Any]]:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and any(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _strip_common_prefix(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Strip ``prefix`` when every key has it (``module.`` from DataParallel/DDP)."""
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def _unwrapped(sd: Mapping[str, Any], marker: str) -> dict[str, Any] | None:
    """``sd`` without a common ``module.`` prefix, if one of its keys then starts with
    ``marker`` (the layout of a format); ``None`` otherwise."""
    plain = _strip_common_prefix(sd, "module.")
    return plain if any(k.startswith(marker) for k in plain) else None


def _tensor_items(sd: Mapping[str, Any], source: Source) -> dict[str, torch.Tensor]:
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        shown = ", ".join(f"{k} ({type(sd[k]).__name__})" for k in bad[:10])
        raise CheckpointError(f"{source.path}: state dict entries are not tensors: {shown}")
    return dict(sd)


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = [str(k) for k in list(obj)[:12]]
        more = " ..." if len(obj) > 12 else ""
        return f"a dict with keys {keys}{more}"
    return f"a {type(obj).__name__}"


def _lookup(tree: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _first_string(tree: Any, paths: list[tuple[str, ...]]) -> str | None:
    for path in paths:
        value = _lookup(tree, *path)
        if isinstance(value, str) and value:
            return value
    return None


def _split_head(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor] | None:
    head = {k[len(prefix):]: sd.pop(k) for k in list(sd) if k.startswith(prefix)}
    return head or None


class _StateDictFormat(CheckpointFormat):
    """An importer of a (possibly wrapped) state dict of tensors.

    ``matches`` when :meth:`_state_dict` finds the state dict in the file's object; ``extract``
    re-keys its tensors with :meth:`_import`, or raises :class:`CheckpointError` with
    :meth:`_not_this_format` when the file has another layout.
    """

    @staticmethod
    def _state_dict(obj: Any) -> Mapping[str, Any] | None:
        """The state dict of this format inside ``obj``, or ``None``."""
        raise NotImplementedError

    def _not_this_format(self, source: Source) -> str:
        """Why ``source`` is not a file of this format (what was expected, what was found)."""
        raise NotImplementedError

    def _import(self, source: Source, sd: dict[str, torch.Tensor]) -> ImportedWeights:
        """The weights and hints of the state dict ``sd`` (every value checked to be a tensor)."""
        raise NotImplementedError

    def matches(self, source: Source) -> bool:
        return self._state_dict(source.obj) is not None

    def extract(self, source: Source) -> ImportedWeights:
        sd = self._state_dict(source.obj)
        if sd is None:
            raise CheckpointError(self._not_this_format(source))
        return self._import(source, _tensor_items(sd, source))


# ------------------------------------------------------------------------------------------
# encshield
# ------------------------------------------------------------------------------------------


class EncshieldFormat(CheckpointFormat):
    name = "encshield"
    description = "encshield safetensors (backbone.* + JSON metadata)"

    def matches(self, source: Source) -> bool:
        return source.container == "safetensors" and source.native_metadata is not None

    def extract(self, source: Source) -> ImportedWeights:
        meta = source.native_metadata
        if source.container != "safetensors" or meta is None:
            raise CheckpointError(
                f"{source.path} is not an encshield checkpoint (a safetensors file with "
                "'encshield' metadata); try format='auto'"
            )
        kind = meta.get("kind", "encoder")
        if kind != "encoder":
            raise CheckpointError(f"{source.path} holds a {kind!r}, not an encoder")
        version = meta.get("format_version")
        from encshield.checkpoints.native import FORMAT_VERSION

        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(
                f"{source.path} has encshield format version {version!r}; this encshield reads "
                f"versions <= {FORMAT_VERSION}: upgrade encshield"
            )
        validate_metadata(meta, source.path, kind="encoder")
        tensors = dict(source.obj)
        head = _split_head(tensors, "surrogate_head.")
        backbone = {
            (k[len("backbone."):] if k.startswith("backbone.") else k): v
            for k, v in tensors.items()
        }
        size = meta.get("input_size")
        return ImportedWeights(
            format=self.name,
            backbone=backbone,
            surrogate_head=head,
            arch=meta.get("architecture"),
            width=meta.get("width"),
            stem=meta.get("stem"),
            normalization=meta.get("normalization"),
            input_size=tuple(int(v) for v in size) if isinstance(size, list) else None,
            ssl_method=meta.get("ssl_method"),
            pretrain_data=meta.get("pretrain_data"),
            config_hash=meta.get("config_hash"),
            provenance=meta.get("provenance"),
            metadata=meta,
        )


FORMATS.add("encshield", EncshieldFormat(), aliases=("safetensors", "native"))


# ------------------------------------------------------------------------------------------
# solo-learn / Lightning
# ------------------------------------------------------------------------------------------


class SoloLearnFormat(_StateDictFormat):
    name = "solo-learn"
    description = "solo-learn / Lightning .ckpt (state_dict with backbone.*, classifier.*)"

    @staticmethod
    def _state_dict(obj: Any) -> Mapping[str, Any] | None:
        if isinstance(obj, Mapping) and _is_state_dict(obj.get("state_dict")):
            sd = obj["state_dict"]
        elif _is_state_dict(obj):
            sd = obj
        else:
            return None
        return _unwrapped(sd, "backbone.")

    def _not_this_format(self, source: Source) -> str:
        return (
            f"{source.path} is not a solo-learn/Lightning checkpoint: expected a dict with a "
            f"'state_dict' holding 'backbone.*' keys, found {_describe(source.obj)}"
        )

    def _import(self, source: Source, sd: dict[str, torch.Tensor]) -> ImportedWeights:
        backbone = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
        head = {k[len("classifier."):]: v for k, v in sd.items() if k.startswith("classifier.")}
        skipped = sorted(k for k in sd if not k.startswith(("backbone.", "classifier.")))
        metadata: dict[str, Any] = {}
        ssl_method = pretrain_data = None
        if isinstance(source.obj, Mapping):
            for key in ("epoch", "global_step", "pytorch-lightning_version", "hparams_name"):
                value = source.obj.get(key)
                if isinstance(value, (int, float, str)):
                    metadata[key] = value
            hparams = to_plain(source.obj.get("hyper_parameters"))
            if isinstance(hparams, dict):
                metadata["hyper_parameters"] = to_jsonable(hparams)
                ssl_method = _first_string(
                    hparams,
                    [("method",), ("cfg", "method"), ("args", "method"), ("name",)],
                )
                pretrain_data = _first_string(
                    hparams,
                    [("dataset",), ("data", "dataset"), ("cfg", "data", "dataset"),
                     ("args", "dataset")],
                )
        return ImportedWeights(
            format=self.name,
            backbone=backbone,
            surrogate_head=head or None,
            skipped_keys=skipped,
            ssl_method=ssl_method,
            pretrain_data=pretrain_data,
            normalization=("imagenet" if pretrain_data and "imagenet" in pretrain_data.lower()
                           else None),
            metadata=metadata,
        )


FORMATS.add("solo-learn", SoloLearnFormat(), aliases=("sololearn", "solo_learn", "lightning"))


# ------------------------------------------------------------------------------------------
# BadEncoder
# ------------------------------------------------------------------------------------------

#: index in BadEncoder's ``f.f`` Sequential -> torchvision module name (2 = relu, 7 = avgpool
#: have no parameters).
BADENCODER_INDEX: dict[int, str] = {
    0: "conv1", 1: "bn1", 3: "layer1", 4: "layer2", 5: "layer3", 6: "layer4"
}


class BadEncoderFormat(_StateDictFormat):
    name = "badencoder"
    description = "BadEncoder SimCLR {'epoch','state_dict','optimizer'} with f.f.<i>.* and g.*"
    default_normalization: ClassVar[dict[int, str]] = {3: "badencoder_cifar10", 7: "imagenet"}

    @staticmethod
    def _state_dict(obj: Any) -> Mapping[str, Any] | None:
        sd = obj.get("state_dict") if isinstance(obj, Mapping) and "state_dict" in obj else obj
        if not _is_state_dict(sd):
            return None
        return _unwrapped(sd, "f.f.")

    def _not_this_format(self, source: Source) -> str:
        extra = ""
        if isinstance(source.obj, Mapping):
            inner = source.obj.get("state_dict", source.obj)
            if isinstance(inner, Mapping) and any(str(k).startswith("visual.") for k in inner):
                extra = (" (BadEncoder's ImageNet/CLIP 'visual.*' encoders are not supported "
                         "by this importer)")
        return (
            f"{source.path} is not a BadEncoder SimCLR checkpoint: expected 'f.f.<i>.*' keys, "
            f"found {_describe(source.obj)}{extra}"
        )

    def _import(self, source: Source, sd: dict[str, torch.Tensor]) -> ImportedWeights:
        backbone: dict[str, torch.Tensor] = {}
        skipped: list[str] = []
        for key, value in sd.items():
            if key.startswith("g."):
                skipped.append(key)
                continue
            if key.startswith("f.f."):
                index, _, rest = key[len("f.f."):].partition(".")
                if index.isdigit() and int(index) in BADENCODER_INDEX and rest:
                    backbone[f"{BADENCODER_INDEX[int(index)]}.{rest}"] = value
                    continue
            backbone[key] = value  # left unmapped: reported as an unknown key
        metadata: dict[str, Any] = {}
        if isinstance(source.obj, Mapping) and isinstance(source.obj.get("epoch"), int):
            metadata["epoch"] = source.obj["epoch"]
        return ImportedWeights(
            format=self.name,
            backbone=backbone,
            skipped_keys=sorted(skipped),
            stem=None,
            ssl_method="simclr",
            metadata=metadata,
        )


FORMATS.add("badencoder", BadEncoderFormat(), aliases=("bad-encoder",))


# ------------------------------------------------------------------------------------------
# torchvision
# ------------------------------------------------------------------------------------------


class TorchvisionFormat(_StateDictFormat):
    name = "torchvision"
    description = "plain torchvision ResNet state dict (optionally under state_dict/model)"

    @staticmethod
    def _state_dict(obj: Any) -> Mapping[str, Any] | None:
        sd = obj
        if isinstance(obj, Mapping):
            for key in ("state_dict", "model"):
                if _is_state_dict(obj.get(key)):
                    sd = obj[key]
                    break
        if not _is_state_dict(sd):
            return None
        plain = _unwrapped(sd, "layer1.")
        return plain if plain is not None and "conv1.weight" in plain else None

    def _not_this_format(self, source: Source) -> str:
        return (
            f"{source.path} is not a torchvision-style ResNet state dict: expected keys "
            f"'conv1.weight', 'layer1.*' (optionally under 'state_dict'/'model'), found "
            f"{_describe(source.obj)}"
        )

    def _import(self, source: Source, sd: dict[str, torch.Tensor]) -> ImportedWeights:
        backbone = sd
        head = _split_head(backbone, "fc.")
        metadata: dict[str, Any] = {}
        if isinstance(source.obj, Mapping):
            for key in ("epoch", "arch"):
                value = source.obj.get(key)
                if isinstance(value, (int, str)):
                    metadata[key] = value
        return ImportedWeights(
            format=self.name, backbone=backbone, surrogate_head=head, metadata=metadata
        )


FORMATS.add("torchvision", TorchvisionFormat(), aliases=("state_dict", "state-dict"))


#: auto-detection order
DETECTION_ORDER: tuple[str, ...] = ("encshield", "solo-learn", "badencoder", "torchvision")


def detect_format(source: Source) -> CheckpointFormat:
    """The first format in :data:`DETECTION_ORDER` whose layout matches ``source``."""
    for name in DETECTION_ORDER:
        fmt = FORMATS.get(name)
        if fmt.matches(source):
            return fmt
    raise CheckpointError(
        f"cannot recognise the layout of {source.path} ({source.container}): found "
        f"{_describe(source.obj)}. Known formats: "
        + "; ".join(f"{n} = {FORMATS.get(n).description}" for n in DETECTION_ORDER)
        + ". Pass format=... if it is one of them."
    )
