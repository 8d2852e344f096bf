"""The encoder contract: images in [0, 1] -> features ``(N, D)``, with provenance.

An :class:`Encoder` wraps a backbone (any module mapping normalised images to ``(N, D)`` and
exposing ``feature_dim``), applies its own normalisation inside ``forward`` and records where its
weights came from (:class:`Provenance`). It exposes named intermediate activations through
:meth:`Encoder.features` (forward hooks, removed afterwards) without changing ``forward``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from encshield.errors import ConfigError, ImageRangeError
from encshield.images import check_images
from encshield.models.normalization import Normalization, build_normalization
from encshield.models.resnet import build_backbone

__all__ = ["OUTPUT_LAYER", "Encoder", "Provenance", "build_encoder", "normalize_input_size"]

#: Name under which :meth:`Encoder.features` returns the final features ``(N, D)``.
OUTPUT_LAYER = "output"


@dataclass
class Provenance:
    """Where an encoder's weights come from (JSON-serialisable via :meth:`to_dict`).

    Attributes:
        arch: architecture name (``resnet18`` ...).
        width: channels of the first stage.
        stem: stem preset name.
        ssl_method: pre-training method (``simclr``, ``byol`` ...), ``None`` when unknown.
        pretrain_data: pre-training dataset, ``None`` when unknown.
        source_file: the file the weights were loaded from, if any.
        source_format: that file's format (``encshield``, ``solo-learn``, ``torchvision``,
            ``badencoder``).
        sha256: sha256 of ``source_file``.
        config_hash: hash of the training configuration that produced the weights, if known.
        extra: free-form JSON-serialisable details.
    """

    arch: str = "resnet18"
    width: int = 64
    stem: str = "cifar"
    ssl_method: str | None = None
    pretrain_data: str | None = None
    source_file: str | None = None
    source_format: str | None = None
    sha256: str | None = None
    config_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict; raises ConfigError when ``extra`` is not JSON-serialisable."""
        data = asdict(self)
        try:
            json.dumps(data)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"provenance extra is not JSON-serialisable: {error}") from None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        """Inverse of :meth:`to_dict`; unknown keys are kept under ``extra``."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = dict(kwargs.pop("extra", None) or {})
        extra.update({k: v for k, v in data.items() if k not in known})
        return cls(**kwargs, extra=extra)


def normalize_input_size(
    input_size: int | Sequence[int], channels: int = 3
) -> tuple[int, int, int]:
    """``32`` -> ``(3, 32, 32)``; ``(H, W)`` -> ``(3, H, W)``; ``(C, H, W)`` unchanged."""
    if isinstance(input_size, int):
        dims: tuple[int, ...] = (channels, input_size, input_size)
    else:
        dims = tuple(int(v) for v in input_size)
        if len(dims) == 2:
            dims = (channels, *dims)
    if len(dims) != 3 or any(d < 1 for d in dims):
        raise ConfigError(
            f"input_size must be an int, (H, W) or (C, H, W) of positive sizes, got {input_size!r}"
        )
    return dims


class Encoder(nn.Module):
    """Images ``(N, C, H, W)`` float in [0, 1] -> features ``(N, feature_dim)``.

    Args:
        backbone: module mapping *normalised* images to ``(N, D)``; must expose ``feature_dim``.
        normalization: preset name, :class:`Normalization` or ``None`` (identity); applied inside
            :meth:`forward` (its mean/std are buffers that follow ``.to()``).
        input_size: nominal input ``(C, H, W)`` (or an int for square RGB) the weights were
            trained at. Other spatial sizes still run (the backbone is fully convolutional).
        provenance: where the weights come from.
        check_inputs: check every input with :func:`encshield.images.check_images` (one
            min/max reduction). Switch off (``encoder.check_inputs = False``) in hot loops that
            already guarantee the range.

    ``state_dict()`` holds only ``backbone.*`` (the normalisation buffers are not persistent;
    checkpoints record the normalisation in their metadata).
    """

    def __init__(
        self,
        backbone: nn.Module,
        normalization: str | Normalization | None = "identity",
        input_size: int | Sequence[int] = 32,
        provenance: Provenance | None = None,
        *,
        check_inputs: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(getattr(backbone, "feature_dim", None), int):
            raise ConfigError("the encoder backbone must expose an int attribute 'feature_dim'")
        self.normalization = build_normalization(normalization)
        self.backbone = backbone
        self.input_size = normalize_input_size(input_size)
        self.provenance = provenance if provenance is not None else Provenance()
        self.check_inputs = check_inputs

    @property
    def feature_dim(self) -> int:
        """Dimension D of the features."""
        return int(self.backbone.feature_dim)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` in [0, 1] -> features ``(N, feature_dim)``."""
        if self.check_inputs:
            check_images(x, "encoder input")
            if x.shape[1] != self.input_size[0]:
                raise ImageRangeError(
                    f"encoder input has {x.shape[1]} channels; this encoder expects "
                    f"{self.input_size[0]} (input_size {self.input_size})"
                )
        features: torch.Tensor = self.backbone(self.normalization(x))
        return features

    # ---------------------------------------------------------------- intermediate activations

    def layer_names(self) -> list[str]:
        """Names accepted by :meth:`features`: backbone module names plus ``"output"``.

        For a ResNet: ``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1``, ``layer1.0``,
        ``layer1.0.conv1`` ..., ``avgpool`` and ``output``.
        """
        names = [name for name, _ in self.backbone.named_modules() if name]
        return [*names, OUTPUT_LAYER]

    def features(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Named intermediate activations for images ``x`` in [0, 1].

        Runs the ordinary :meth:`forward` once with temporary forward hooks on the requested
        backbone modules; the hooks are removed before returning (also on errors). Gradients flow
        through the returned tensors (PAP/SSP maximise them). Each activation is a copy taken
        when the module ran, so later in-place operations (``ReLU(inplace=True)``) do not alter
        it. A module that runs several times per forward (e.g. a block's shared ``relu``) reports
        its last call.

        Args:
            x: images ``(N, C, H, W)`` in [0, 1].
            layers: names from :meth:`layer_names`; ``"output"`` is the final ``(N, D)``.

        Returns:
            ``{name: activation}`` in the order of ``layers``, e.g. ``layer1`` ->
            ``(N, width, H', W')`` for a ResNet.
        """
        if isinstance(layers, str):
            layers = [layers]
        wanted = list(dict.fromkeys(layers))
        modules = dict(self.backbone.named_modules())
        unknown = [n for n in wanted if n != OUTPUT_LAYER and (not n or n not in modules)]
        if unknown:
            valid = self.layer_names()
            shown = ", ".join(valid[:30]) + (" ..." if len(valid) > 30 else "")
            raise ConfigError(f"unknown encoder layer(s) {unknown}; valid names: {shown}")
        captured: dict[str, torch.Tensor] = {}
        handles: list[torch.utils.hooks.RemovableHandle] = []

        def make_hook(layer: str) -> Callable[[nn.Module, Any, Any], None]:
            def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
                if isinstance(output, torch.Tensor):
                    captured[layer] = output.clone()
                else:  # pragma: no cover - ResNet modules return tensors
                    captured[layer] = output

            return hook

        try:
            for name in wanted:
                if name != OUTPUT_LAYER:
                    handles.append(modules[name].register_forward_hook(make_hook(name)))
            out = self(x)
        finally:
            for handle in handles:
                handle.remove()
        if OUTPUT_LAYER in wanted:
            captured[OUTPUT_LAYER] = out
        missing = [name for name in wanted if name not in captured]
        if missing:
            raise ConfigError(f"encoder layer(s) {missing} did not run during forward")
        return {name: captured[name] for name in wanted}

    def extra_repr(self) -> str:
        p = self.provenance
        return (
            f"arch={p.arch!r}, width={p.width}, stem={p.stem!r}, feature_dim={self.feature_dim}, "
            f"input_size={self.input_size}"
        )


def build_encoder(
    arch: str = "resnet18",
    width: int = 64,
    stem: str = "cifar",
    normalization: str | Normalization | None = "cifar10",
    input_size: int | Sequence[int] = 32,
    *,
    zero_init_residual: bool = False,
    check_inputs: bool = True,
    **provenance_fields: Any,
) -> Encoder:
    """A randomly initialised ResNet :class:`Encoder`.

    Args:
        arch, width, stem: see :func:`encshield.models.build_backbone`.
        normalization: preset name from :data:`encshield.models.NORMALIZATIONS`, a
            :class:`Normalization`, or ``None`` (identity).
        input_size: nominal input size (int for square RGB, or ``(C, H, W)``).
        zero_init_residual: zero-init the last BN of each residual block.
        check_inputs: check the [0, 1] range in ``forward``.
        **provenance_fields: further :class:`Provenance` fields (``ssl_method``,
            ``pretrain_data``, ``extra`` ...).
    """
    size = normalize_input_size(input_size)
    backbone = build_backbone(
        arch, width, stem, in_channels=size[0], zero_init_residual=zero_init_residual
    )
    known = {f.name for f in fields(Provenance)} - {"arch", "width", "stem"}
    unknown = sorted(set(provenance_fields) - known)
    if unknown:
        raise ConfigError(
            f"unknown provenance field(s) {unknown}; allowed: {', '.join(sorted(known))}"
        )
    provenance = Provenance(
        arch=backbone.arch, width=backbone.width, stem=backbone.stem_name, **provenance_fields
    )
    return Encoder(backbone, normalization, size, provenance, check_inputs=check_inputs)
