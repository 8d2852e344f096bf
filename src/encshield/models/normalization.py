"""Per-channel mean/std normalisation that lives inside the model (never in data loaders)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from encshield.errors import ConfigError
from encshield.registry import Registry

__all__ = ["NORMALIZATIONS", "Normalization", "NormalizationStats", "build_normalization"]


@dataclass(frozen=True)
class NormalizationStats:
    """Per-channel statistics of a normalisation preset (``None`` = identity)."""

    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    description: str = ""


NORMALIZATIONS: Registry[NormalizationStats] = Registry("normalization")

_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
#: ``(name, statistics, aliases)`` of every preset.
_PRESETS: tuple[tuple[str, NormalizationStats, tuple[str, ...]], ...] = (
    ("cifar10", NormalizationStats(_CIFAR10_MEAN, (0.2470, 0.2435, 0.2616),
                                   "CIFAR-10 statistics (solo-learn)"), ()),
    ("badencoder_cifar10", NormalizationStats(
        _CIFAR10_MEAN, (0.2023, 0.1994, 0.2010),
        "CIFAR-10 mean with the widespread (0.2023, 0.1994, 0.2010) std (BadEncoder)"),
     ("badencoder-cifar10", "badencoder")),
    ("imagenet", NormalizationStats((0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                                    "ImageNet statistics"), ()),
    ("stl10", NormalizationStats((0.44087798, 0.42790666, 0.38678814),
                                 (0.25507198, 0.24801506, 0.25641308),
                                 "STL-10 statistics (CGCL family)"), ()),
    ("identity", NormalizationStats(None, None, "no normalisation"), ("none",)),
)
for _name, _stats, _aliases in _PRESETS:
    NORMALIZATIONS.add(_name, _stats, aliases=_aliases)


class Normalization(nn.Module):
    """``(x - mean) / std`` per channel; ``mean``/``std`` are buffers (they follow ``.to()``).

    Input and output ``(N, C, H, W)``; the input is expected in [0, 1]. With ``mean=None`` and
    ``std=None`` it is the identity (the output is the input tensor itself).

    Args:
        mean: per-channel means, or ``None`` for identity.
        std: per-channel standard deviations (all > 0), or ``None`` for identity.
        name: the preset name, recorded in checkpoints (``"custom"`` when not a preset).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        *,
        name: str = "custom",
    ) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise ConfigError("normalization needs both mean and std, or neither (identity)")
        self.name = name
        self.is_identity = mean is None
        self._mean_values: list[float] | None = None
        self._std_values: list[float] | None = None
        if mean is None or std is None:
            self.register_buffer("mean", torch.zeros(0), persistent=False)
            self.register_buffer("std", torch.ones(0), persistent=False)
            return
        mean_t = torch.as_tensor([float(v) for v in mean], dtype=torch.float32)
        std_t = torch.as_tensor([float(v) for v in std], dtype=torch.float32)
        if mean_t.numel() != std_t.numel() or mean_t.numel() == 0:
            raise ConfigError(
                f"normalization mean and std need the same non-zero length, got "
                f"{mean_t.numel()} and {std_t.numel()}"
            )
        if bool((std_t <= 0).any()):
            raise ConfigError(f"normalization std must be > 0, got {std_t.tolist()}")
        # exact values as given (the float32 buffers would print 0.4914 as 0.49140000343...)
        self._mean_values = [float(v) for v in mean]
        self._std_values = [float(v) for v in std]
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    @classmethod
    def from_preset(cls, name: str) -> Normalization:
        """The preset ``name`` from :data:`NORMALIZATIONS` (raises ConfigError when unknown)."""
        stats = NORMALIZATIONS.get(name)
        return cls(stats.mean, stats.std, name=NORMALIZATIONS.canonical(name))

    @property
    def mean_values(self) -> list[float] | None:
        """Per-channel means as given (``None`` for identity)."""
        return None if self._mean_values is None else list(self._mean_values)

    @property
    def std_values(self) -> list[float] | None:
        """Per-channel standard deviations as given (``None`` for identity)."""
        return None if self._std_values is None else list(self._std_values)

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable description: ``{"name", "mean", "std"}``."""
        return {"name": self.name, "mean": self.mean_values, "std": self.std_values}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_identity:
            return x
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        if self.is_identity:
            return f"name={self.name!r}, identity"
        return f"name={self.name!r}, mean={self.mean_values}, std={self.std_values}"


def build_normalization(
    spec: str | Normalization | NormalizationStats | dict[str, object] | None,
) -> Normalization:
    """A :class:`Normalization` from a preset name, stats, a ``to_dict()`` dict or ``None``.

    ``None`` means identity. A dict with ``mean``/``std`` values builds those exact values (its
    ``name`` is kept as a label).
    """
    if spec is None:
        return Normalization.from_preset("identity")
    if isinstance(spec, Normalization):
        return Normalization(spec.mean_values, spec.std_values, name=spec.name)
    if isinstance(spec, str):
        return Normalization.from_preset(spec)
    if isinstance(spec, NormalizationStats):
        return Normalization(spec.mean, spec.std)
    if isinstance(spec, dict):
        mean, std = spec.get("mean"), spec.get("std")
        name = str(spec.get("name") or "custom")
        if mean is None and std is None and name != "custom" and name in NORMALIZATIONS:
            return Normalization.from_preset(name)
        return Normalization(mean, std, name=name)  # type: ignore[arg-type]
    raise ConfigError(
        f"normalization must be a preset name ({', '.join(NORMALIZATIONS.names())}), "
        f"a Normalization or a dict with mean/std; got {type(spec).__name__}"
    )
