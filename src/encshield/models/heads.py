"""Heads on top of encoder features: downstream classifiers and SSL projectors/predictors.

Registry :data:`HEADS` (``build_head(name, in_dim, out_dim, **kwargs)``):

* ``linear``: ``Linear(d, C)``.
* ``mlp``: the Gen-AF/ZePAD ``NonLinearClassifier``: Linear(d, 512) -> ReLU -> Dropout(0.2) ->
  Linear(512, 512) -> ReLU -> Linear(512, C). Parameters are named ``fc1``, ``fc2``, ``fc3``.
* ``badencoder_mlp``: BadEncoder's downstream ``NeuralNet``: Linear(d, 512) -> ReLU ->
  Dropout(0.5) -> Linear(512, 256) -> ReLU -> Linear(256, C) (``fc1``, ``fc2``, ``fc3``).
* ``projector`` / ``predictor``: :class:`ProjectionMLP`, a ``Sequential`` of
  ``[Linear, (BatchNorm1d), ReLU] * (num_layers - 1) + [Linear, (BatchNorm1d)]`` whose index-based
  parameter names match solo-learn's ``projector.*`` and BadEncoder's ``g.*``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from encshield.errors import ConfigError
from encshield.registry import Registry

__all__ = [
    "HEADS",
    "MLPClassifier",
    "ProjectionMLP",
    "build_head",
]


class MLPClassifier(nn.Module):
    """Three-layer MLP head: features ``(N, in_dim)`` -> logits ``(N, out_dim)``.

    ``fc1 -> ReLU -> Dropout -> fc2 -> ReLU -> fc3`` (dropout sits between the first ReLU and
    ``fc2``, as in the Gen-AF/ZePAD ``NonLinearClassifier`` and BadEncoder's ``NeuralNet``).

    Args:
        in_dim: feature dimension.
        out_dim: number of classes.
        hidden_dims: sizes of the two hidden layers (a single int means both).
        dropout: dropout probability.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dims: int | Sequence[int] = (512, 512),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if isinstance(hidden_dims, int):
            hidden_dims = (hidden_dims, hidden_dims)
        hidden = tuple(int(h) for h in hidden_dims)
        if len(hidden) != 2:
            raise ConfigError(f"hidden_dims must hold two sizes, got {hidden_dims!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.fc1 = nn.Linear(self.in_dim, hidden[0])
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(N, in_dim)`` -> logits ``(N, out_dim)``."""
        x = self.dropout(self.relu(self.fc1(x)))
        x = self.relu(self.fc2(x))
        logits: torch.Tensor = self.fc3(x)
        return logits


class ProjectionMLP(nn.Sequential):
    """SSL projector / predictor MLP: ``(N, in_dim)`` -> ``(N, out_dim)``.

    Layers (indices are the parameter-name prefixes): for each of the ``num_layers - 1`` hidden
    layers ``Linear(·, hidden_dim, bias=bias)``, ``BatchNorm1d`` (if ``batch_norm``), ``ReLU``;
    then ``Linear(·, out_dim)`` and ``BatchNorm1d(out_dim, affine=last_batch_norm_affine)`` if
    ``last_batch_norm``. Defaults give solo-learn's SimCLR projector
    (``Linear-BN-ReLU-Linear``); BadEncoder's ``g`` is ``ProjectionMLP(512, 512, 128, bias=False)``.

    Args:
        in_dim: input feature dimension.
        hidden_dim: width of the hidden layers.
        out_dim: output dimension.
        num_layers: number of Linear layers (>= 1).
        batch_norm: BatchNorm1d after each hidden Linear.
        last_batch_norm: BatchNorm1d after the last Linear (SimSiam / BYOL-style variants).
        bias: bias of the hidden Linear layers (the last Linear always has one).
        last_batch_norm_affine: affine parameters of the last BatchNorm1d.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        out_dim: int = 256,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_batch_norm: bool = False,
        *,
        bias: bool = True,
        last_batch_norm_affine: bool = True,
    ) -> None:
        if num_layers < 1:
            raise ConfigError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dim = int(in_dim)
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=bias))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(out_dim, affine=last_batch_norm_affine))
        super().__init__(*layers)
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)


HeadFactory = Callable[..., nn.Module]
HEADS: Registry[HeadFactory] = Registry("head")


@HEADS.register("linear")
def _linear(in_dim: int, out_dim: int, *, bias: bool = True) -> nn.Module:
    return nn.Linear(in_dim, out_dim, bias=bias)


@HEADS.register("mlp", aliases=("nonlinear",))
def _mlp(in_dim: int, out_dim: int, *, hidden_dim: int = 512, dropout: float = 0.2) -> nn.Module:
    return MLPClassifier(in_dim, out_dim, (hidden_dim, hidden_dim), dropout)


@HEADS.register("badencoder_mlp", aliases=("badencoder-mlp",))
def _badencoder_mlp(
    in_dim: int, out_dim: int, *, hidden_dims: Sequence[int] = (512, 256), dropout: float = 0.5
) -> nn.Module:
    return MLPClassifier(in_dim, out_dim, hidden_dims, dropout)


@HEADS.register("projector")
def _projector(in_dim: int, out_dim: int = 256, **options: Any) -> nn.Module:
    """An SSL projector ``(N, in_dim) -> (N, out_dim)``: :class:`ProjectionMLP` with its keyword
    ``options`` (``hidden_dim`` 2048, ``num_layers`` 2, ``batch_norm``, ...)."""
    return ProjectionMLP(in_dim, out_dim=out_dim, **options)


@HEADS.register("predictor")
def _predictor(
    in_dim: int, out_dim: int | None = None, *, hidden_dim: int = 4096, **options: Any
) -> nn.Module:
    """An SSL predictor ``(N, in_dim) -> (N, out_dim)`` (``out_dim`` defaults to ``in_dim``):
    :class:`ProjectionMLP` with a 4096-wide hidden layer and its keyword ``options``."""
    out = in_dim if out_dim is None else out_dim
    return ProjectionMLP(in_dim, hidden_dim=hidden_dim, out_dim=out, **options)


def build_head(name: str, in_dim: int, out_dim: int, **kwargs: Any) -> nn.Module:
    """Build the head ``name`` from :data:`HEADS`: ``(N, in_dim)`` -> ``(N, out_dim)``.

    Raises:
        ConfigError: unknown name (lists the allowed ones) or bad keyword arguments.
    """
    factory = HEADS.get(name)
    try:
        return factory(int(in_dim), int(out_dim), **kwargs)
    except TypeError as error:
        raise ConfigError(f"bad arguments for head {name!r}: {error}") from None
