"""The pixel contract: float32 NCHW tensors in [0, 1] at every public API."""

from __future__ import annotations

import torch

from encshield.errors import ImageRangeError

#: Slack for values produced by float arithmetic (e.g. x + delta clamped elsewhere).
RANGE_TOLERANCE = 1e-4


def check_images(x: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Check that ``x`` is a float image batch ``(N, C, H, W)`` with values in [0, 1].

    Costs one fused min/max reduction. Returns ``x`` unchanged so it can be used inline.

    Raises:
        ImageRangeError: naming the tensor, what was observed and how to fix it.
    """
    if not isinstance(x, torch.Tensor):
        raise ImageRangeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ImageRangeError(
            f"{name} must be a batch (N, C, H, W), got shape {tuple(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0)"
        )
    if not x.is_floating_point():
        raise ImageRangeError(
            f"{name} has dtype {x.dtype}; expected float in [0, 1]. "
            "Convert uint8 images with x.float() / 255"
        )
    if x.numel() == 0:
        return x
    lo, hi = torch.aminmax(x.detach())
    lo_v, hi_v = float(lo), float(hi)
    if lo_v < -RANGE_TOLERANCE or hi_v > 1 + RANGE_TOLERANCE or lo_v != lo_v or hi_v != hi_v:
        hint = (
            "it looks like 0..255 pixels: divide by 255"
            if hi_v > 1.5 and lo_v >= 0
            else "it looks normalised (mean/std): pass raw [0, 1] pixels, the model normalises"
            if lo_v < 0
            else "clamp it to [0, 1]"
        )
        raise ImageRangeError(
            f"{name} must lie in [0, 1]; observed range [{lo_v:.4g}, {hi_v:.4g}] ({hint})"
        )
    return x


def to_float(batch: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """The one uint8 -> float conversion: moves ``batch`` to ``device`` first (so only bytes
    cross to an accelerator), then uint8 ``0..255`` -> float32 ``/ 255``; floats -> float32."""
    if device is not None:
        batch = batch.to(device, non_blocking=True)
    if batch.dtype == torch.uint8:
        return batch.float().div_(255.0)
    return batch.float()
