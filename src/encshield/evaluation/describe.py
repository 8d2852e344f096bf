"""JSON descriptions of what an evaluation ran: classifiers, encoders, perturbations, callables."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from encshield.provenance import to_jsonable

__all__ = ["describe_callable", "describe_classifier", "describe_encoder", "describe_perturbation"]


def _tensor_sha256(tensor: torch.Tensor) -> str:
    data = tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def describe_perturbation(perturbation: Any) -> dict[str, Any]:
    """What a perturbation is: its ``summary()`` when it has one (kind, shape, eps, L-inf,
    position, metadata) or the attributes ``kind``/``eps``/``position``/``metadata``, plus the
    sha256 of its delta tensor (float32 bytes)."""
    out: dict[str, Any] = {"type": type(perturbation).__name__}
    summary = getattr(perturbation, "summary", None)
    if callable(summary):
        out.update(summary())
    else:
        for key in ("kind", "eps", "position", "metadata"):
            if hasattr(perturbation, key):
                out[key] = getattr(perturbation, key)
    delta = getattr(perturbation, "delta", None)
    if isinstance(delta, torch.Tensor):
        out.setdefault("shape", list(delta.shape))
        out["delta_sha256"] = _tensor_sha256(delta)
    described: dict[str, Any] = to_jsonable(out)
    return described


def describe_classifier(classifier: nn.Module) -> dict[str, Any]:
    """Type, parameter count, head, and the encoder's provenance/normalisation when present."""
    out: dict[str, Any] = {
        "type": type(classifier).__name__,
        "num_parameters": sum(p.numel() for p in classifier.parameters()),
    }
    head = getattr(classifier, "head", None)
    if isinstance(head, nn.Module):
        out["head"] = type(head).__name__
        num_classes = getattr(classifier, "num_classes", None)
        if num_classes is not None:
            out["num_classes"] = num_classes
    encoder = getattr(classifier, "encoder", None)
    if isinstance(encoder, nn.Module):
        out["encoder"] = describe_encoder(encoder)
    described: dict[str, Any] = to_jsonable(out)
    return described


def describe_encoder(encoder: nn.Module) -> dict[str, Any]:
    """Provenance (architecture, method, source file, sha256), feature dim, input size,
    normalisation."""
    out: dict[str, Any] = {"type": type(encoder).__name__}
    provenance = getattr(encoder, "provenance", None)
    if provenance is not None and hasattr(provenance, "to_dict"):
        out["provenance"] = provenance.to_dict()
    for key in ("feature_dim", "input_size"):
        value = getattr(encoder, key, None)
        if value is not None:
            out[key] = value
    normalization = getattr(encoder, "normalization", None)
    if normalization is not None and hasattr(normalization, "to_dict"):
        out["normalization"] = normalization.to_dict()
    described: dict[str, Any] = to_jsonable(out)
    return described


def describe_callable(fn: Callable[..., Any]) -> dict[str, Any]:
    """``{"callable": "module.name"}`` (with the keywords of a ``functools.partial``)."""
    if isinstance(fn, functools.partial):
        inner = describe_callable(fn.func)
        inner["keywords"] = to_jsonable(dict(fn.keywords))
        return inner
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return {"callable": f"{module}.{name}"}
