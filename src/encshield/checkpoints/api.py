"""Loading, inspecting, converting and saving encoder checkpoints.

* :func:`load_encoder` reads any supported file (see :data:`encshield.checkpoints.FORMATS`),
  infers the ResNet architecture from the tensor shapes (overridable), fits the weights strictly
  (unknown/missing keys and shape mismatches are errors that list them) and returns a
  :class:`LoadedCheckpoint` whose encoder is in eval mode.
* :func:`save_encoder` writes encshield's safetensors format; :func:`convert_checkpoint` does
  load + save; :func:`inspect_checkpoint` summarises a file.

Pickled files are only ever read with ``torch.load(weights_only=True)``
(:func:`encshield.checkpoints.safe_pickle.safe_torch_load`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import encshield
from encshield.checkpoints.formats import (
    FORMATS,
    CheckpointFormat,
    ImportedWeights,
    Source,
    detect_format,
)
from encshield.checkpoints.native import (
    check_output_path,
    read_native,
    sha256_file,
    write_native,
)
from encshield.checkpoints.safe_pickle import safe_torch_load, sniff_container
from encshield.checkpoints.validation import (
    check_finite,
    check_state_shapes,
    meta_state_shapes,
)
from encshield.errors import (
    CheckpointError,
    CheckpointKeyError,
    ChecksumMismatchError,
    ConfigError,
)
from encshield.models.encoder import (
    Encoder,
    Provenance,
    build_encoder,
    normalize_input_size,
)
from encshield.models.normalization import Normalization, build_normalization
from encshield.models.resnet import (
    ARCHITECTURES,
    STEMS,
    ResNet,
    build_backbone,
    check_width,
)

__all__ = [
    "LoadedCheckpoint",
    "convert_checkpoint",
    "infer_architecture",
    "inspect_checkpoint",
    "load_encoder",
    "save_encoder",
]

#: default stem per conv1 kernel size
DEFAULT_STEM_FOR_KERNEL = {3: "cifar", 7: "imagenet"}
#: default nominal input size per stem
DEFAULT_INPUT_SIZE_FOR_STEM = {
    "cifar": 32, "cifar_sololearn": 32, "imagenet": 224, "zepad_imagenet": 64
}


@dataclass
class LoadedCheckpoint:
    """Result of :func:`load_encoder`.

    Attributes:
        encoder: the encoder (eval mode, CPU), provenance recording source file, format, sha256.
        surrogate_head: a linear head shipped with the weights (solo-learn's online classifier,
            torchvision's ``fc``, or one stored in an encshield file), else ``None``.
        format: the checkpoint format name.
        sha256: sha256 of the file.
        metadata: format-specific metadata (encshield JSON, Lightning epoch/hyper-parameters...).
        skipped_keys: state-dict keys deliberately not loaded (projector, momentum encoder...).
        path: the file.
    """

    encoder: Encoder
    surrogate_head: nn.Linear | None
    format: str
    sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)
    skipped_keys: list[str] = field(default_factory=list)
    path: str = ""


# ------------------------------------------------------------------------------------------
# architecture inference
# ------------------------------------------------------------------------------------------


def infer_architecture(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Infer ``{"arch", "width", "kernel_size", "in_channels"}`` from torchvision-named tensors.

    Depth and block type come from the ``layer<i>.<j>.*`` keys (``conv3`` present = Bottleneck),
    width from ``conv1.weight``'s output channels, the stem kernel from its spatial size.

    Raises:
        CheckpointError: the keys do not describe a registered ResNet.
    """
    conv1 = state_dict.get("conv1.weight")
    if not isinstance(conv1, torch.Tensor) or conv1.dim() != 4:
        raise CheckpointError(
            "cannot infer the architecture: no 4-D 'conv1.weight' among the encoder keys "
            f"(first keys: {sorted(state_dict)[:8]}); pass arch/width/stem explicitly"
        )
    counts = []
    for stage in range(1, 5):
        prefix = f"layer{stage}."
        indices = {
            int(k[len(prefix):].split(".", 1)[0])
            for k in state_dict
            if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit()
        }
        counts.append(max(indices) + 1 if indices else 0)
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in state_dict)
    block_name = "Bottleneck" if bottleneck else "BasicBlock"
    for name, spec in ARCHITECTURES.items():
        if spec.block.__name__ == block_name and list(spec.layers) == counts:
            return {
                "arch": name,
                "width": int(conv1.shape[0]),
                "kernel_size": int(conv1.shape[-1]),
                "in_channels": int(conv1.shape[1]),
            }
    raise CheckpointError(
        f"cannot infer the architecture: {block_name} blocks per stage {counts} match none of "
        f"{', '.join(ARCHITECTURES.names())}; pass arch explicitly"
    )


# ------------------------------------------------------------------------------------------
# strict fitting
# ------------------------------------------------------------------------------------------


def _fit(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    what: str,
    hint: str,
    filled: list[str] | None = None,
) -> list[str]:
    """Load ``state`` into ``module`` strictly; returns keys that were filled with defaults.

    Only ``*.num_batches_tracked`` may be absent (old torchvision files lack it): it is set to 0.
    ``filled`` (from an earlier :func:`check_state_shapes` of the same state) skips the check.
    """
    expected = module.state_dict()
    if filled is None:
        shapes = {k: tuple(v.shape) for k, v in expected.items()}
        filled = check_state_shapes(shapes, state, what, hint)
    full = dict(state)
    for key in filled:
        full[key] = torch.zeros_like(expected[key])
    module.load_state_dict(full, strict=True)
    return filled


def _build_surrogate_head(
    head: Mapping[str, torch.Tensor], feature_dim: int, path: Path
) -> nn.Linear:
    unknown = sorted(set(head) - {"weight", "bias"})
    weight = head.get("weight")
    if unknown or weight is None or weight.dim() != 2:
        raise CheckpointKeyError(
            f"{path}: the surrogate head must be a linear layer with 'weight' (C, D) and optional "
            f"'bias'; found keys {sorted(head)}"
        )
    if weight.shape[1] != feature_dim:
        raise CheckpointKeyError(
            f"{path}: surrogate head weight has shape {tuple(weight.shape)}, but the encoder's "
            f"feature_dim is {feature_dim} (expected ({weight.shape[0]}, {feature_dim}))"
        )
    linear = nn.Linear(int(weight.shape[1]), int(weight.shape[0]), bias="bias" in head)
    _fit(linear, head, f"surrogate head of {path}", "re-export the checkpoint")
    return linear.eval()


# ------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------


def _read_source(path: Path) -> Source:
    container = sniff_container(path)
    if container == "safetensors":
        tensors, meta = read_native(path)
        return Source(path, container, tensors, meta)
    return Source(path, container, safe_torch_load(path))


def _check_expected_sha(path: Path, actual: str, expected: str | None) -> None:
    if expected is None:
        return
    want = expected.strip().lower()
    if want.startswith("sha256:"):
        want = want[len("sha256:"):]
    if want != actual:
        raise ChecksumMismatchError(
            f"sha256 of {path} is {actual}, expected {want}: the file is not the one you meant "
            "(corrupted, truncated or replaced)"
        )


def load_encoder(
    path: str | os.PathLike[str],
    *,
    format: str = "auto",  # public keyword named as in the CLI
    expected_sha256: str | None = None,
    arch: str | None = None,
    width: int | None = None,
    stem: str | None = None,
    normalization: str | Normalization | dict[str, Any] | None = None,
    input_size: int | Sequence[int] | None = None,
    ssl_method: str | None = None,
    pretrain_data: str | None = None,
) -> LoadedCheckpoint:
    """Load an encoder from an encshield, solo-learn, BadEncoder or torchvision checkpoint.

    The file's sha256 is computed first (and compared with ``expected_sha256`` before anything
    is parsed). Pickles are read with ``torch.load(weights_only=True)`` only.

    Args:
        path: the checkpoint file.
        format: ``"auto"`` (file signature + key layout) or a name in ``FORMATS``.
        expected_sha256: if given, the file's sha256 must equal it.
        arch, width, stem: override what is stored/inferred (architecture from the layer keys,
            width from ``conv1``, stem from its kernel: 3x3 -> ``cifar``, 7x7 -> ``imagenet``).
        normalization: preset name, Normalization or ``{"mean", "std"}``; normalisation cannot be
            inferred from weights: defaults are per format (solo-learn CIFAR -> ``cifar10``,
            torchvision 7x7 -> ``imagenet``, BadEncoder -> ``badencoder_cifar10``; encshield
            files store theirs).
        input_size: nominal input size (default 32 for CIFAR stems, 224 for ``imagenet``, 64
            for ``zepad_imagenet``; encshield files store theirs).
        ssl_method, pretrain_data: override what is stored/read from hyper-parameters.

    Returns:
        a :class:`LoadedCheckpoint` (encoder in eval mode).

    Raises:
        ChecksumMismatchError: file or payload hash mismatch.
        UnsafeCheckpointError: a pickle that would run code (nothing was executed).
        CheckpointKeyError: unknown/missing keys or shape mismatches (listed), checked before
            the model is allocated.
        CheckpointError: unreadable, corrupt or unrecognised file; invalid metadata; NaN or
            infinite weights.
        ConfigError: an override out of range (``width`` outside ``1..MAX_WIDTH``...).
    """
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"{p} is a folder, not a checkpoint file; give the file's path")
    if not p.is_file():
        raise CheckpointError(f"checkpoint file not found: {p}")
    digest = sha256_file(p)
    _check_expected_sha(p, digest, expected_sha256)
    source = _read_source(p)
    fmt: CheckpointFormat = detect_format(source) if format == "auto" else FORMATS.get(format)
    imported = fmt.extract(source)
    loaded_tensors = dict(imported.backbone)
    loaded_tensors.update({f"surrogate_head.{k}": v
                           for k, v in (imported.surrogate_head or {}).items()})
    check_finite(loaded_tensors, f"checkpoint {p}")
    encoder, head = _assemble(
        imported, fmt, p, arch=arch, width=width, stem=stem, normalization=normalization,
        input_size=input_size, ssl_method=ssl_method, pretrain_data=pretrain_data, sha256=digest,
    )
    return LoadedCheckpoint(
        encoder=encoder,
        surrogate_head=head,
        format=fmt.name,
        sha256=digest,
        metadata=imported.metadata,
        skipped_keys=list(imported.skipped_keys),
        path=str(p),
    )


def _assemble(
    imported: ImportedWeights,
    fmt: CheckpointFormat,
    path: Path,
    *,
    arch: str | None,
    width: int | None,
    stem: str | None,
    normalization: Any,
    input_size: Any,
    ssl_method: str | None,
    pretrain_data: str | None,
    sha256: str,
) -> tuple[Encoder, nn.Linear | None]:
    conv1 = imported.backbone.get("conv1.weight")
    if not (isinstance(conv1, torch.Tensor) and conv1.dim() == 4):
        conv1 = None
    kernel = int(conv1.shape[-1]) if conv1 is not None else None
    arch_hint = arch or imported.arch
    width_hint = width if width is not None else imported.width
    inferred: dict[str, Any] = {}
    if arch_hint is None or width_hint is None:
        inferred = infer_architecture(imported.backbone)
    arch_name = ARCHITECTURES.canonical(arch_hint or inferred["arch"])
    if width is not None:
        width_val, width_source = check_width(width, "width (--width)"), "width=/--width"
    elif imported.width is not None:
        width_val, width_source = int(imported.width), "the file's metadata"
    else:
        width_val, width_source = int(inferred["width"]), "conv1.weight"
    if stem is not None or imported.stem is not None:
        stem_name = STEMS.canonical(stem or imported.stem)  # type: ignore[arg-type]
    elif kernel in DEFAULT_STEM_FOR_KERNEL:
        stem_name = DEFAULT_STEM_FOR_KERNEL[kernel]
    else:
        raise CheckpointError(
            f"{path}: cannot choose a stem: conv1 kernel is {kernel}; pass stem= one of "
            f"{', '.join(STEMS.names())}"
        )
    if kernel is None:
        kernel = STEMS.get(stem_name).kernel_size
    if normalization is not None:
        norm = build_normalization(normalization)
    elif imported.normalization is not None:
        norm = build_normalization(imported.normalization)
    else:
        norm = build_normalization(fmt.default_normalization.get(kernel, "identity"))
    if input_size is not None:
        size = normalize_input_size(input_size)
    elif imported.input_size is not None:
        size = normalize_input_size(imported.input_size)
    else:
        channels = int(conv1.shape[1]) if conv1 is not None else 3
        size = normalize_input_size(DEFAULT_INPUT_SIZE_FOR_STEM.get(stem_name, 32), channels)

    stored = Provenance.from_dict(imported.provenance) if imported.provenance else None
    extra: dict[str, Any] = dict(stored.extra) if stored else {}
    if stored and stored.source_file and "origin" not in extra:
        extra["origin"] = {
            "source_file": stored.source_file,
            "source_format": stored.source_format,
            "sha256": stored.sha256,
        }
    for key in ("epoch", "global_step"):
        if key in imported.metadata and key not in extra:
            extra[key] = imported.metadata[key]
    described = f"checkpoint {path} ({fmt.name})"
    hint = (
        f"model: {arch_name}, width {width_val}, stem {stem_name!r}. Check arch/width/stem "
        f"(--arch/--width/--stem) or the format (--format; detected {fmt.name!r})."
    )
    # shapes first, on the meta device: nothing is allocated for a model the tensors do not fit
    if conv1 is not None and int(conv1.shape[0]) != width_val:
        model_kernel = STEMS.get(stem_name).kernel_size
        model_conv1 = (width_val, size[0], model_kernel, model_kernel)
        raise CheckpointKeyError(
            f"{described} does not fit the model: width {width_val} (from {width_source}) "
            f"disagrees with the tensors: conv1.weight: checkpoint {tuple(conv1.shape)} vs model "
            f"{model_conv1}; {hint}"
        )
    filled = check_state_shapes(
        meta_state_shapes(
            lambda: build_backbone(arch_name, width_val, stem_name, in_channels=size[0])
        ),
        imported.backbone, described, hint,
    )
    encoder = build_encoder(
        arch_name,
        width_val,
        stem_name,
        norm,
        size,
        ssl_method=ssl_method or imported.ssl_method or (stored.ssl_method if stored else None),
        pretrain_data=pretrain_data or imported.pretrain_data
        or (stored.pretrain_data if stored else None),
        source_file=str(path),
        source_format=fmt.name,
        sha256=sha256,
        config_hash=imported.config_hash or (stored.config_hash if stored else None),
        extra=extra,
    )
    _fit(encoder.backbone, imported.backbone, described, hint, filled)
    head = (
        _build_surrogate_head(imported.surrogate_head, encoder.feature_dim, path)
        if imported.surrogate_head
        else None
    )
    return encoder.eval(), head


# ------------------------------------------------------------------------------------------
# saving / converting / inspecting
# ------------------------------------------------------------------------------------------


def save_encoder(
    encoder: Encoder,
    path: str | os.PathLike[str],
    *,
    surrogate_head: nn.Linear | None = None,
    ssl_method: str | None = None,
    pretrain_data: str | None = None,
    config_hash: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Write ``encoder`` (and an optional linear surrogate head) in encshield's format.

    Metadata defaults come from ``encoder.provenance``; the keyword arguments override them
    (``extra`` is merged into the provenance extras). The file is written atomically.

    Returns:
        the sha256 of the written file.
    """
    backbone = encoder.backbone
    if not isinstance(backbone, ResNet):
        raise ConfigError(
            f"save_encoder supports ResNet backbones; got {type(backbone).__name__}"
        )
    prov = Provenance.from_dict(encoder.provenance.to_dict())
    prov.arch, prov.width, prov.stem = backbone.arch, backbone.width, backbone.stem_name
    if ssl_method is not None:
        prov.ssl_method = ssl_method
    if pretrain_data is not None:
        prov.pretrain_data = pretrain_data
    if config_hash is not None:
        prov.config_hash = config_hash
    if extra:
        prov.extra.update(dict(extra))
    tensors = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    head_meta = None
    if surrogate_head is not None:
        if not isinstance(surrogate_head, nn.Linear):
            raise ConfigError(
                f"surrogate_head must be an nn.Linear, got {type(surrogate_head).__name__}"
            )
        if surrogate_head.in_features != encoder.feature_dim:
            raise ConfigError(
                f"surrogate head expects {surrogate_head.in_features} features; the encoder "
                f"produces {encoder.feature_dim}"
            )
        for k, v in surrogate_head.state_dict().items():
            tensors[f"surrogate_head.{k}"] = v
        head_meta = {
            "in_features": surrogate_head.in_features,
            "out_features": surrogate_head.out_features,
            "bias": surrogate_head.bias is not None,
        }
    norm = encoder.normalization
    metadata = {
        "kind": "encoder",
        "architecture": backbone.arch,
        "width": backbone.width,
        "stem": backbone.stem_name,
        "feature_dim": encoder.feature_dim,
        "normalization": norm.to_dict(),
        "input_size": list(encoder.input_size),
        "ssl_method": prov.ssl_method,
        "pretrain_data": prov.pretrain_data,
        "config_hash": prov.config_hash,
        "code_version": encshield.__version__,
        "provenance": prov.to_dict(),
        "surrogate_head": head_meta,
    }
    return write_native(path, tensors, metadata)


def convert_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    include_surrogate_head: bool = True,
    config_hash: str | None = None,
    **overrides: Any,
) -> str:
    """Load ``src`` (any supported format) and write it to ``dst`` in encshield's format.

    Args:
        src, dst: input and output files.
        include_surrogate_head: also store the surrogate head when the source has one.
        config_hash: recorded training-config hash.
        **overrides: :func:`load_encoder` keywords (``format``, ``expected_sha256``, ``arch``,
            ``width``, ``stem``, ``normalization``, ``input_size``, ``ssl_method``,
            ``pretrain_data``).

    Returns:
        the sha256 of ``dst``.
    """
    check_output_path(dst)  # before the (possibly long) load: refuse a folder or read-only path
    loaded = load_encoder(src, **overrides)
    return save_encoder(
        loaded.encoder,
        dst,
        surrogate_head=loaded.surrogate_head if include_surrogate_head else None,
        config_hash=config_hash,
        extra={"skipped_keys": len(loaded.skipped_keys)} if loaded.skipped_keys else None,
    )


def inspect_checkpoint(path: str | os.PathLike[str], **overrides: Any) -> dict[str, Any]:
    """Summary of a checkpoint (loads it with :func:`load_encoder` and the same overrides).

    Returns a JSON-serialisable dict: ``path``, ``format``, ``sha256``, ``architecture``,
    ``width``, ``stem``, ``feature_dim``, ``num_parameters``, ``normalization``, ``input_size``,
    ``ssl_method``, ``pretrain_data``, ``skipped_keys`` (count), ``skipped_key_groups``,
    ``has_surrogate_head``, ``surrogate_head_classes``, ``provenance``.
    """
    loaded = load_encoder(path, **overrides)
    enc = loaded.encoder
    prov = enc.provenance
    groups = Counter(k.split(".", 1)[0] for k in loaded.skipped_keys)
    head = loaded.surrogate_head
    return {
        "path": loaded.path,
        "format": loaded.format,
        "sha256": loaded.sha256,
        "architecture": prov.arch,
        "width": prov.width,
        "stem": prov.stem,
        "feature_dim": enc.feature_dim,
        "num_parameters": sum(p.numel() for p in enc.parameters()),
        "normalization": enc.normalization.to_dict(),
        "input_size": list(enc.input_size),
        "ssl_method": prov.ssl_method,
        "pretrain_data": prov.pretrain_data,
        "skipped_keys": len(loaded.skipped_keys),
        "skipped_key_groups": dict(sorted(groups.items())),
        "has_surrogate_head": head is not None,
        "surrogate_head_classes": head.out_features if head is not None else None,
        "provenance": prov.to_dict(),
    }

