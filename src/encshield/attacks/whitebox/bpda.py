"""Backward Pass Differentiable Approximation (BPDA).

Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security: Circumventing
Defenses to Adversarial Examples", ICML 2018, Sec. 4.1: a defense that puts a
non-differentiable (or gradient-shattering) transform ``g`` in front of the classifier, e.g. a
quantisation, JPEG or a purifier, is attacked by running ``g`` on the forward pass and a
differentiable approximation ``h ≈ g`` on the backward pass; with ``h(x) = x`` (the identity,
valid when ``g(x) ≈ x``) the gradient passes straight through.

``BPDA(forward_fn, backward_fn)`` wraps both into a module whose forward returns exactly
``forward_fn(x)`` and whose backward is the vector-Jacobian product of ``backward_fn`` at ``x``.
``forward_fn`` runs without building a graph (a purifier's weights get no gradient and no
memory is kept for it). Put it in front of the classifier:
``nn.Sequential(BPDA(quantise), classifier)``; every attack then gets useful gradients, while the
forward function (and so the evaluation) is the defended model's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["BPDA", "bpda", "identity"]

TensorFn = Callable[[torch.Tensor], torch.Tensor]


def identity(x: torch.Tensor) -> torch.Tensor:
    """The straight-through approximation ``h(x) = x``."""
    return x


class _BPDAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, forward_fn: TensorFn,
                backward_fn: TensorFn | None) -> torch.Tensor:
        ctx.backward_fn = backward_fn
        if backward_fn is not None:
            ctx.save_for_backward(x)
        with torch.no_grad():
            out = forward_fn(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"BPDA forward_fn must return a tensor, got {type(out).__name__}")
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if ctx.backward_fn is None:
            return grad_out, None, None
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            approx = ctx.backward_fn(leaf)
            if approx.shape != grad_out.shape:
                raise RuntimeError(
                    f"BPDA backward_fn output {tuple(approx.shape)} does not match forward_fn "
                    f"output {tuple(grad_out.shape)}"
                )
            (grad,) = torch.autograd.grad(approx, leaf, grad_out)
        return grad, None, None


def bpda(x: torch.Tensor, forward_fn: TensorFn,
         backward_fn: TensorFn | None = identity) -> torch.Tensor:
    """``forward_fn(x)`` on the forward pass, ``backward_fn``'s gradient on the backward pass.

    Args:
        x: any tensor (images float ``(N, C, H, W)`` in [0, 1] for preprocessing defenses).
        forward_fn: the real (possibly non-differentiable) transform.
        backward_fn: its differentiable approximation with the same output shape; ``identity``
            (or ``None``) passes the incoming gradient straight through (output shape must then
            equal the input shape).
    """
    if backward_fn is identity:
        backward_fn = None
    if backward_fn is None and not x.requires_grad:
        with torch.no_grad():
            return forward_fn(x)
    out: torch.Tensor = _BPDAFunction.apply(x, forward_fn, backward_fn)  # type: ignore[no-untyped-call]
    return out


class BPDA(nn.Module):
    """Module form of :func:`bpda` (Athalye et al., ICML 2018).

    Args:
        forward_fn: the real transform (a function or a module, e.g. a quantiser or purifier;
            a module is registered as a submodule so ``.to()``/``.eval()`` reach it).
        backward_fn: the differentiable approximation (default: identity = straight-through).

    Shapes: ``(N, ...) -> forward_fn``'s output; for preprocessing, images ``(N, C, H, W)`` in
    [0, 1] to images of the same shape.
    """

    def __init__(self, forward_fn: TensorFn, backward_fn: TensorFn | None = identity) -> None:
        super().__init__()
        self.forward_fn = forward_fn
        self.backward_fn = backward_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bpda(x, self.forward_fn, self.backward_fn)
