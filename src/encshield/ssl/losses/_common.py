"""Shared pieces of the SSL losses: input checks and the view type (float32 under autocast comes
from :func:`encshield.precision.full_precision`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from encshield.errors import ConfigError

Views = Sequence[Tensor] | Tensor




# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_2d(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got shape {tuple(x.shape)}")


def _check_same(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    _check_2d(name_a, a)
    _check_2d(name_b, b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )


def _check_queue(queue: Tensor, z: Tensor) -> None:
    """``queue`` must be ``(K, D)`` with the feature dimension ``D`` of ``z`` ``(N, D)``."""
    _check_2d("queue", queue)
    if queue.shape[1] != z.shape[1]:
        raise ValueError(f"queue must have shape (K, {z.shape[1]}), got {tuple(queue.shape)}")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def _check_nonnegative(name: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")


def _check_batch(name: str, x: Tensor, minimum: int = 2) -> None:
    if x.shape[0] < minimum:
        raise ValueError(
            f"{name} needs at least {minimum} samples (batch statistics), got N={x.shape[0]}"
        )


def _as_views(name: str, views: Views) -> list[Tensor]:
    """A ``(V, N, D)`` tensor or a sequence of ``(N, D)`` tensors -> list of ``(N, D)``."""
    if isinstance(views, Tensor):
        if views.dim() != 3:
            raise ValueError(
                f"{name} must be a (V, N, D) tensor or a sequence of (N, D) tensors, got shape "
                f"{tuple(views.shape)}"
            )
        out = list(views.unbind(0))
    else:
        out = list(views)
    if not out:
        raise ValueError(f"{name} is empty: at least one view is needed")
    for i, v in enumerate(out):
        _check_2d(f"{name}[{i}]", v)
        if v.shape != out[0].shape:
            raise ValueError(
                f"all views of {name} must have the same shape, got {tuple(out[0].shape)} and "
                f"{tuple(v.shape)} (view {i})"
            )
    return out


def _off_diagonal(m: Tensor) -> Tensor:
    """The square matrix ``m`` with its diagonal set to zero (differentiable, out of place)."""
    return m - torch.diag_embed(torch.diagonal(m, dim1=-2, dim2=-1))


def _linalg_dtype(x: Tensor) -> torch.dtype:
    """Precision for the small D x D factorisations: float64 except where the device lacks it."""
    return torch.float32 if x.device.type == "mps" else torch.float64
