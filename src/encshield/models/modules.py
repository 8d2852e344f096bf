"""Small helpers on modules shared by attacks, defenses and training loops."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)

__all__ = ["channels_last_safe", "frozen", "module_device", "restored_modes", "seeded",
           "set_channels_last"]


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module without any)."""
    for tensor in module.parameters():
        return tensor.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


@contextlib.contextmanager
def restored_modes(*modules: nn.Module | None) -> Iterator[None]:
    """Restore every submodule's ``training`` flag and every parameter's ``requires_grad`` on
    exit (whatever the body changed)."""
    modes: list[tuple[nn.Module, bool]] = []
    flags: list[tuple[nn.Parameter, bool]] = []
    seen: set[int] = set()
    for module in modules:
        if not isinstance(module, nn.Module):
            continue
        for sub in module.modules():
            if id(sub) not in seen:
                seen.add(id(sub))
                modes.append((sub, sub.training))
        flags.extend((p, p.requires_grad) for p in module.parameters())
    try:
        yield
    finally:
        for sub, mode in modes:
            sub.training = mode
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


@contextlib.contextmanager
def frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` for every module; both restored on exit."""
    with restored_modes(*modules):
        for module in modules:
            if isinstance(module, nn.Module):
                module.eval()
                for parameter in module.parameters():
                    parameter.requires_grad_(False)
        yield


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Fork the global RNG (CPU and a CUDA ``device``), seed it, restore it afterwards."""
    device = torch.device(device)
    devices: list[int] = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def channels_last_safe(module: nn.Module) -> bool:
    """Whether ``module`` may run in channels-last memory.

    torch 2.13's CPU kernels corrupt the heap ("double free or corruption") in the backward pass
    of a strided 1x1 convolution with fewer than 8 input channels in channels-last memory on one
    thread (the downsampling shortcut of a width-4 ResNet); such a module stays contiguous.
    """
    return not any(
        isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1)
        and m.in_channels < 8
        for m in module.modules()
    )


def set_channels_last(module: M, enabled: bool = True) -> M:
    """Move the 4-d parameters of ``module`` to channels-last memory (``enabled``) or back to
    the contiguous format (safetensors needs contiguous tensors); returns the module.

    A module that is not :func:`channels_last_safe` stays contiguous (with a warning); callers
    convert their inputs only where ``channels_last_safe(module)``.
    """
    if enabled and not channels_last_safe(module):
        warnings.warn("channels_last skipped: a strided 1x1 convolution with fewer than 8 input "
                      "channels is unsafe in channels-last memory on the CPU", RuntimeWarning,
                      stacklevel=2)
        enabled = False
    memory_format = torch.channels_last if enabled else torch.contiguous_format
    # torch's stubs omit Module.to(memory_format=...), which it accepts
    return module.to(memory_format=memory_format)  # type: ignore[call-overload,no-any-return]
