"""Backdoor triggers: ``x' = (1 - m) * x + m * p`` in [0, 1] pixel space.

A trigger is a mask ``m`` ``(1, H, W)`` in [0, 1] and a pattern ``p`` ``(C, H, W)`` in [0, 1],
built for the size of the images it is applied to, so one trigger serves 32 px and 64 px inputs.
The registry :data:`TRIGGERS` holds

* ``patch``: BadEncoder's white square (Jia, Liu, Gong, "BadEncoder: Backdoor Attacks to
  Pre-trained Encoders in Self-Supervised Learning", IEEE S&P 2022; docs/methods.md,
  "BadEncoder"): ``size`` x ``size`` pixels of value ``value`` (1 = white) at ``position`` with
  ``margin`` pixels to the border. At 32 px the defaults give the paper's 10 x 10 white square at
  rows and columns 21-30.
* ``random_patch``: the same square filled with a seeded uniform random colour pattern.
* ``blend``: a full-image seeded random pattern blended with weight ``alpha`` (Chen et al.,
  "Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning", 2017).

A trigger saves itself as ``{"name", "config"}`` (:meth:`Trigger.to_dict`; random patterns are
regenerated from their seed) and is parsed from ``NAME:key=value,...`` (:func:`parse_trigger`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from encshield.config import parse_value, split_spec
from encshield.errors import ConfigError
from encshield.images import check_images
from encshield.registry import Registry

__all__ = ["TRIGGERS", "Trigger", "build_trigger", "parse_trigger"]

Position = Literal["bottom-right", "bottom-left", "top-right", "top-left", "center"]

#: the reference image size of the size defaults (BadEncoder's CIFAR-10 setting)
_REFERENCE_SIZE = 32


class TriggerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PatchConfig(TriggerConfig):
    """A square patch. ``size`` and ``margin`` are pixels at ``image size``; ``None`` scales the
    32 px defaults (10 and 1) to the image (20 and 2 at 64 px)."""

    size: int | None = Field(None, ge=1)
    position: Position = "bottom-right"
    margin: int | None = Field(None, ge=0)
    value: float = Field(1.0, ge=0.0, le=1.0, description="grey level of the patch (1 = white)")


class RandomPatchConfig(PatchConfig):
    seed: int = Field(0, ge=0, lt=2**63)


class BlendConfig(TriggerConfig):
    alpha: float = Field(0.2, gt=0.0, le=1.0)
    seed: int = Field(0, ge=0, lt=2**63)


class Trigger:
    """Base class: :meth:`mask_and_pattern` for an image size, :meth:`apply` to a batch."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[TriggerConfig]] = TriggerConfig

    def __init__(self, config: TriggerConfig | dict[str, Any] | None = None) -> None:
        if isinstance(config, TriggerConfig):
            config = config.model_dump()
        try:
            self.config = self.Config(**(config or {}))
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                 for e in error.errors())
            raise ConfigError(f"trigger {self.name}: {problems} (allowed fields: "
                              f"{', '.join(self.Config.model_fields)})") from None

    def mask_and_pattern(self, channels: int, height: int, width: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask ``(1, H, W)`` and the pattern ``(C, H, W)``, float32 in [0, 1]."""
        raise NotImplementedError

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """Stamp the trigger on ``images`` (float ``(N, C, H, W)`` in [0, 1]); same shape, in
        [0, 1], differentiable in the images."""
        check_images(images, "images")
        mask, pattern = self.mask_and_pattern(*images.shape[1:])
        mask = mask.to(images.device, images.dtype)
        pattern = pattern.to(images.device, images.dtype)
        return images * (1.0 - mask) + mask * pattern

    def to_dict(self) -> dict[str, Any]:
        """``{"name", "config"}`` (JSON), the inverse of :func:`build_trigger`."""
        return {"name": self.name, "config": self.config.model_dump(mode="json")}

    @property
    def spec(self) -> str:
        """``NAME:key=value,...`` with the fields that differ from the defaults."""
        defaults = self.Config().model_dump()
        changed = {k: v for k, v in self.config.model_dump().items() if v != defaults[k]}
        return self.name + (":" + ",".join(f"{k}={v}" for k, v in changed.items())
                            if changed else "")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec})"


TRIGGERS: Registry[type[Trigger]] = Registry("trigger")


def _scaled(value: int | None, default: int, height: int) -> int:
    return int(value) if value is not None else max(1, round(default * height / _REFERENCE_SIZE))


def _square_mask(config: PatchConfig, height: int, width: int) -> torch.Tensor:
    """The mask ``(1, H, W)`` of the patch square; refuses a square that does not fit."""
    size = _scaled(config.size, 10, min(height, width))
    margin = _scaled(config.margin, 1, min(height, width))
    if size + 2 * margin > min(height, width) and config.position != "center":
        raise ConfigError(f"trigger patch of {size} px with a margin of {margin} px does not fit "
                          f"{height}x{width} images; lower size or margin")
    if size > min(height, width):
        raise ConfigError(f"trigger patch of {size} px does not fit {height}x{width} images")
    vertical, _, horizontal = config.position.partition("-")
    if config.position == "center":
        top, left = (height - size) // 2, (width - size) // 2
    else:
        top = margin if vertical == "top" else height - margin - size
        left = margin if horizontal == "left" else width - margin - size
    mask = torch.zeros(1, height, width)
    mask[:, top:top + size, left:left + size] = 1.0
    return mask


@TRIGGERS.register("patch", aliases=("white_patch", "square"))
class PatchTrigger(Trigger):
    """BadEncoder's white square (value 1) at the bottom-right corner by default."""

    Config = PatchConfig
    config: PatchConfig

    def mask_and_pattern(self, channels: int, height: int, width: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        pattern = torch.full((channels, height, width), float(self.config.value))
        return _square_mask(self.config, height, width), pattern


@TRIGGERS.register("random_patch")
class RandomPatchTrigger(Trigger):
    """The patch square filled with a uniform random pattern drawn from ``seed``."""

    Config = RandomPatchConfig
    config: RandomPatchConfig

    def mask_and_pattern(self, channels: int, height: int, width: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(int(self.config.seed))
        pattern = torch.rand(channels, height, width, generator=generator)
        return _square_mask(self.config, height, width), pattern


@TRIGGERS.register("blend", aliases=("blended",))
class BlendTrigger(Trigger):
    """A full-image uniform random pattern (from ``seed``) blended with weight ``alpha``."""

    Config = BlendConfig
    config: BlendConfig

    def mask_and_pattern(self, channels: int, height: int, width: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(int(self.config.seed))
        pattern = torch.rand(channels, height, width, generator=generator)
        return torch.full((1, height, width), float(self.config.alpha)), pattern


def build_trigger(spec: str | dict[str, Any] | Trigger) -> Trigger:
    """A trigger from ``NAME:key=value,...``, ``{"name", "config"}`` or a trigger (returned)."""
    if isinstance(spec, Trigger):
        return spec
    if isinstance(spec, str):
        return parse_trigger(spec)
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"trigger {spec!r}: expected NAME:key=value,... or "
                          "{'name': ..., 'config': {...}}")
    return TRIGGERS.get(str(spec["name"]))(dict(spec.get("config") or {}))


def parse_trigger(text: str) -> Trigger:
    """Parse ``NAME[:key=value,...]``, e.g. ``patch``, ``patch:size=6,position=top-left`` or
    ``blend:alpha=0.1,seed=3`` (values are read as YAML scalars)."""
    name, items = split_spec(text, "trigger", "NAME[:key=value,...], e.g. patch:size=10")
    config = {key: parse_value(value, f"trigger {text!r}: {key}") for key, value in items.items()}
    return TRIGGERS.get(name)(config)
