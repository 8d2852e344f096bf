"""Fusion of the logits of several classifier branches: ZePAD's RFDM and its two ablations.

ZePAD (Lei, Yang, Zhang, "ZePAD", ICLR 2026; docs/methods.md, "ZePAD") classifies with several
branches ``i`` (encoder + head), each giving logits ``z_i`` ``(N, C)``, and fuses them **per
sample** into one logit vector ``z = sum_i w_i z_i`` (a fusion of logits, not of probabilities).
The weights come from a registered rule of :data:`FUSIONS`:

``rfdm`` (the paper's "robustness-first decision making", METHODS.md 3.3)
    ``p_i = softmax(z_i)``, ``m_i = max_c p_ic``, ``c_i = m_i exp(k (m_i - 0.5))`` with
    ``k = 3`` by default, ``w_i = c_i / sum_j c_j``.
``equal`` (ablation; also the reviewers' plain ensemble average)
    ``w_i = 1 / B``: the mean of the logit vectors.
``entropy`` (ablation, as in the official code)
    ``w_i = H_i / sum_j H_j`` with ``H_i = -sum_c p_ic log p_ic``: weights *proportional* to the
    entropy, so the least confident branch weighs most (the official ablation, not a sensible
    rule; kept to reproduce it). All-zero entropies fall back to equal weights.

Every function is a pure, differentiable function of the logits (``max`` has a subgradient), so
white-box attacks on a fused model get gradients through the weights.

:func:`confidence_gap` is the detection statistic of ZePAD's DAE detection (METHODS.md 3.4): the
confidence of the MPAE branches (mean or max over them; raw ``m_i`` or amplified ``c_i``) minus
the mean confidence of the BMP branches; an input is flagged when it exceeds a threshold (0.1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

from encshield.errors import ConfigError
from encshield.registry import Registry

__all__ = [
    "FUSIONS",
    "ConfidenceKind",
    "FusionFn",
    "Statistic",
    "amplified_confidence",
    "confidence_gap",
    "entropy_weights",
    "equal_weights",
    "fuse_logits",
    "fusion_weights",
    "max_confidence",
    "rfdm_weights",
    "stack_logits",
]

#: ``weights(logits (B, N, C), k) -> (N, B)``, rows summing to 1.
FusionFn = Callable[[torch.Tensor, float], torch.Tensor]
#: Registered fusion rules (``rfdm``, ``equal``, ``entropy``).
FUSIONS: Registry[FusionFn] = Registry("fusion")
#: How the MPAE branches' confidences are combined by :func:`confidence_gap`.
Statistic = Literal["mean", "max"]
#: Which confidence :func:`confidence_gap` compares: ``m_i`` (raw) or ``c_i`` (amplified).
ConfidenceKind = Literal["raw", "amplified"]

_TINY = 1e-12


def stack_logits(logits: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Branch logits as one tensor ``(B, N, C)`` (a list of ``(N, C)`` or a stacked tensor).

    Raises:
        ConfigError: no branch, or branches whose logits differ in shape.
    """
    if isinstance(logits, torch.Tensor):
        if logits.dim() != 3:
            raise ConfigError(f"branch logits must be (B, N, C), got {tuple(logits.shape)}")
        return logits
    items = list(logits)
    if not items:
        raise ConfigError("fusion needs at least one branch")
    shapes = {tuple(z.shape) for z in items}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ConfigError(f"branch logits must all be (N, C) of one shape, got {sorted(shapes)}")
    return torch.stack(items)


def max_confidence(logits: torch.Tensor) -> torch.Tensor:
    """``m_i = max_c softmax(z_i)_c`` for logits ``(..., C)`` -> ``(...)`` (RFDM's confidence)."""
    values: torch.Tensor = torch.softmax(logits.float(), dim=-1).amax(dim=-1)
    return values


def amplified_confidence(logits: torch.Tensor, k: float = 3.0) -> torch.Tensor:
    """``c_i = m_i exp(k (m_i - 0.5))`` (ZePAD's amplified confidence, METHODS.md 3.3)."""
    m = max_confidence(logits)
    return m * torch.exp(float(k) * (m - 0.5))


@FUSIONS.register("rfdm", aliases=("zepad",))
def rfdm_weights(logits: torch.Tensor, k: float = 3.0) -> torch.Tensor:
    """RFDM weights ``w_i = c_i / sum_j c_j`` per sample: logits ``(B, N, C)`` -> ``(N, B)``."""
    c = amplified_confidence(stack_logits(logits), k)  # (B, N)
    weights: torch.Tensor = (c / c.sum(dim=0, keepdim=True).clamp_min(_TINY)).t()
    return weights


@FUSIONS.register("equal", aliases=("mean", "average"))
def equal_weights(logits: torch.Tensor, k: float = 3.0) -> torch.Tensor:
    """Equal weights ``1 / B`` (the mean of the logits): logits ``(B, N, C)`` -> ``(N, B)``."""
    z = stack_logits(logits)
    return torch.full((z.shape[1], z.shape[0]), 1.0 / z.shape[0], device=z.device)


@FUSIONS.register("entropy")
def entropy_weights(logits: torch.Tensor, k: float = 3.0) -> torch.Tensor:
    """Weights proportional to each branch's softmax entropy (the official code's ablation):
    logits ``(B, N, C)`` -> ``(N, B)``; equal weights for a sample whose entropies are all 0."""
    z = stack_logits(logits).float()
    log_p = torch.log_softmax(z, dim=-1)
    entropy = (-(log_p.exp() * log_p).sum(dim=-1)).clamp_min(0.0)  # (B, N)
    total = entropy.sum(dim=0, keepdim=True)
    uniform = torch.full_like(entropy, 1.0 / z.shape[0])
    weights = torch.where(total > _TINY, entropy / total.clamp_min(_TINY), uniform)
    return weights.t()


def fusion_weights(logits: Sequence[torch.Tensor] | torch.Tensor, fusion: str = "rfdm",
                   k: float = 3.0) -> torch.Tensor:
    """The per-sample branch weights ``(N, B)`` of the registered rule ``fusion``."""
    return FUSIONS.get(fusion)(stack_logits(logits), float(k))


def fuse_logits(logits: Sequence[torch.Tensor] | torch.Tensor, fusion: str = "rfdm",
                k: float = 3.0) -> torch.Tensor:
    """Fused logits ``z = sum_i w_i z_i`` ``(N, C)`` of branch logits ``(B, N, C)`` (or a list).

    Example (hand-computed RFDM, ``k = 3``): branch confidences 0.9 and 0.6 give
    ``c = (0.9 e^1.2, 0.6 e^0.3) = (2.988, 0.810)`` and weights ``(0.787, 0.213)``.
    """
    z = stack_logits(logits)
    weights = fusion_weights(z, fusion, k).to(z.dtype)  # (N, B)
    fused: torch.Tensor = torch.einsum("nb,bnc->nc", weights, z)
    return fused


def confidence_gap(
    logits: Sequence[torch.Tensor] | torch.Tensor,
    mpae: Sequence[int],
    bmp: Sequence[int],
    *,
    statistic: Statistic = "mean",
    confidence: ConfidenceKind = "raw",
    k: float = 3.0,
) -> torch.Tensor:
    """ZePAD's detection score per sample ``(N,)``: MPAE confidence minus BMP confidence.

    ``statistic`` combines the MPAE branches (``mean`` or ``max``), the BMP branches are
    averaged; ``confidence`` is ``raw`` (``m_i``) or ``amplified`` (``c_i`` with ``k``).
    Higher = more likely a DAE (the paper flags ``gap > 0.1``, METHODS.md 3.4). Differentiable.

    Raises:
        ConfigError: no MPAE or no BMP branch, or an index out of range.
    """
    z = stack_logits(logits)
    if not mpae or not bmp:
        raise ConfigError("the confidence gap needs at least one MPAE and one BMP branch")
    if any(not 0 <= i < z.shape[0] for i in (*mpae, *bmp)):
        raise ConfigError(f"branch index out of range for {z.shape[0]} branches")
    conf = amplified_confidence(z, k) if confidence == "amplified" else max_confidence(z)
    mp = conf[list(mpae)]
    high = mp.amax(dim=0) if statistic == "max" else mp.mean(dim=0)
    gap: torch.Tensor = high - conf[list(bmp)].mean(dim=0)
    return gap
