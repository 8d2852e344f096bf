"""Batched predictions of a classifier: clean, under a transform, or under a per-sample attack."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from encshield.errors import ConfigError
from encshield.images import to_float

__all__ = ["batches", "inputs_unchecked", "predict", "predict_under_attack"]


def batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int,
            device: torch.device | str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x float in [0, 1], y)`` batches of ``images`` (uint8 or float) on ``device``."""
    for start in range(0, images.shape[0], batch_size):
        yield (to_float(images[start : start + batch_size], device),
               labels[start : start + batch_size].to(device))


@contextlib.contextmanager
def inputs_unchecked(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Switch off the [0, 1] input check of every sub-module exposing ``check_inputs``.

    Used only for ``clamp=False`` (the CGCL code's unclamped ``x + delta``, whose values leave
    [0, 1] on purpose); restored afterwards.
    """
    if not enabled:
        yield
        return
    saved = [
        (m, m.check_inputs)
        for m in model.modules()
        if isinstance(getattr(m, "check_inputs", None), bool)
    ]
    try:
        for module, _ in saved:
            module.check_inputs = False  # type: ignore[assignment]
        yield
    finally:
        for module, value in saved:
            module.check_inputs = value


def predict(
    classifier: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, float]:
    """Per-sample predictions of ``classifier`` under ``torch.inference_mode``, batched.

    Args:
        classifier: images in [0, 1] -> logits ``(n, C)``; evaluated as it is (call ``.eval()``).
        images: uint8 ``(N, 3, H, W)`` (0..255) or float in [0, 1], on any device.
        transform: applied to each float batch before the classifier (e.g. a perturbation).
    Returns:
        ``(pred, max_linf)``: int64 ``(N,)`` on the CPU, and the largest ``|transform(x) - x|``
        (0 without ``transform``).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    preds: list[torch.Tensor] = []
    max_linf = 0.0
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            x = to_float(images[start : start + batch_size], device)
            if transform is not None:
                x_t = transform(x)
                if x_t.shape != x.shape:
                    raise ConfigError(
                        f"the perturbation changed the batch shape from {tuple(x.shape)} to "
                        f"{tuple(x_t.shape)}; its size must match the test images"
                    )
                max_linf = max(max_linf, float((x_t - x).abs().max()))
                x = x_t
            preds.append(classifier(x).argmax(1).cpu())
    pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)
    return pred.to(torch.int64), max_linf


def predict_under_attack(
    attack: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device | str,
) -> tuple[torch.Tensor, float]:
    """Adversarial predictions of ``classifier``: ``attack(x, y, batch_index) -> x_adv`` per batch.

    The attack runs with autograd enabled (outside inference mode); predictions on ``x_adv`` are
    made under ``torch.inference_mode``. Returns ``(pred (N,) int64 CPU, max |x_adv - x|)``.
    """
    preds: list[torch.Tensor] = []
    max_linf = 0.0
    for b, (x, y) in enumerate(batches(images, labels, batch_size, device)):
        with torch.enable_grad():
            x_adv = attack(x, y, b)
        if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
            raise ConfigError(
                f"the attack returned {getattr(x_adv, 'shape', type(x_adv))}, expected a tensor "
                f"of shape {tuple(x.shape)}"
            )
        x_adv = x_adv.detach()
        with torch.inference_mode():
            max_linf = max(max_linf, float((x_adv - x).abs().max()))
            preds.append(classifier(x_adv).argmax(1).cpu())
    return torch.cat(preds).to(torch.int64), max_linf
