"""Mixed precision: bf16/fp16 autocast for models, float32 for losses.

:func:`autocast` is the one switch the training and attack loops use (``amp`` options of the
pre-training and defense configs); :func:`full_precision` keeps a loss in float32 inside it.
On a CPU with native bf16 (AVX512-BF16 or AMX) bf16 autocast with channels-last memory halves
the cost of a ResNet-18 forward+backward at 32 px; on a CPU without it (AVX2 only) oneDNN emulates
bf16 and the same step is about 10x *slower* than float32 (a SimCLR pre-training step measured 8
images/s against 80 on one AVX2 core). :func:`autocast` therefore runs float32 there, with one
warning, so ``amp: true`` in a shared config never turns a minutes-long job into hours.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor

__all__ = ["autocast", "bf16_native", "effective_amp", "full_precision"]

_F = TypeVar("_F", bound=Callable[..., Any])


@functools.cache
def bf16_native(kind: str) -> bool:
    """Whether bf16 autocast on a device of type ``kind`` ("cpu", "cuda", ...) runs natively.

    CUDA and other accelerators: True. CPU: True only where oneDNN has bf16 kernels (AVX512-BF16
    or AMX); an AVX2-only CPU emulates them at a fraction of the float32 speed.
    """
    if kind != "cpu":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def _warn_emulated(kind: str) -> None:
    warnings.warn(
        "amp (bf16 autocast) was asked for, but this CPU has no native bf16 (AVX512-BF16/AMX): "
        "running float32 instead, which is about 10x faster here than emulated bf16",
        RuntimeWarning, stacklevel=3)


def effective_amp(device: torch.device | str, enabled: bool) -> bool:
    """``enabled`` where bf16 runs natively on ``device``; False (with one warning) elsewhere."""
    kind = torch.device(device).type
    if enabled and not bf16_native(kind):
        _warn_emulated(kind)
        return False
    return enabled


@contextlib.contextmanager
def autocast(device: torch.device | str, enabled: bool) -> Iterator[None]:
    """bfloat16 autocast on ``device`` when ``enabled`` and bf16 is native there (see
    :func:`effective_amp`); a no-op otherwise."""
    kind = torch.device(device).type
    with torch.autocast(kind, dtype=torch.bfloat16, enabled=effective_amp(device, enabled)):
        yield


def _float32(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_float32(v) for v in value)
    return value


def full_precision(fn: _F) -> _F:
    """Run a loss in float32 even inside an autocast region (bf16/fp16 mixed precision).

    Under autocast the encoder and heads run in half precision, but similarity matrices at
    temperature 0.1-0.2, exponentials and the Cholesky/eigen factorisations of the whitening
    losses need float32: floating-point tensor arguments are cast to float32 and autocast is
    disabled for the loss. Without autocast this adds nothing (float32 inputs pass unchanged).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
        device = tensors[0].device.type if tensors else "cpu"
        if not torch.is_autocast_enabled(device):
            return fn(*args, **kwargs)
        with torch.autocast(device, enabled=False):
            return fn(*_float32(args), **{k: _float32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
