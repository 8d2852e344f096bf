"""BadEncoder's losses as pure functions (Jia, Liu, Gong, "BadEncoder: Backdoor Attacks to
Pre-trained Encoders in Self-Supervised Learning", IEEE S&P 2022; docs/methods.md,
"BadEncoder").

``s`` is the cosine similarity of L2-normalised features; ``f'`` the encoder being backdoored,
``f`` the frozen clean encoder. For one target with trigger ``e`` and reference images
``{x_j}``:

* effectiveness ``L0 = -mean_{i, j} s(f'(x_i + e), f'(x_j))`` (nothing detached: the reference
  side is the backdoored encoder's, as in the paper);
* reference utility ``L1 = -mean_j s(f'(aug(x_j)), f(x_j))``;
* utility ``L2 = -mean_i s(f'(x_i), f(x_i))`` on clean shadow images;
* ``L = mean_t L0_t + lambda1 * mean_t L1_t + lambda2 * L2`` over the targets ``t``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["badencoder_loss", "effectiveness_loss", "reference_utility_loss", "utility_loss"]


def _features(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be float features (N, D), got {shape}")
    return F.normalize(x.float(), dim=1)


def effectiveness_loss(triggered: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """``L0 = -mean_{i, j} cos(triggered_i, references_j)``.

    Args:
        triggered: backdoored-encoder features of triggered shadow images, float ``(N, D)``.
        references: backdoored-encoder features of the target's reference images ``(R, D)``.

    Returns:
        Scalar in [-1, 1].
    """
    a, b = _features(triggered, "triggered"), _features(references, "references")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    return -(a @ b.T).mean()


def _paired(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> torch.Tensor:
    a, b = _features(a, names[0]), _features(b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    return -(a * b).sum(dim=1).mean()


def reference_utility_loss(augmented: torch.Tensor, clean_references: torch.Tensor
                           ) -> torch.Tensor:
    """``L1 = -mean_j cos(augmented_j, clean_references_j)``.

    Args:
        augmented: backdoored-encoder features of augmented reference images ``(R, D)``.
        clean_references: clean-encoder features of the same references (not augmented).
    """
    return _paired(augmented, clean_references, ("augmented", "clean_references"))


def utility_loss(backdoored: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """``L2 = -mean_i cos(backdoored_i, clean_i)`` on the same clean shadow images ``(N, D)``."""
    return _paired(backdoored, clean, ("backdoored", "clean"))


def badencoder_loss(effectiveness: Sequence[torch.Tensor],
                    reference_utility: Sequence[torch.Tensor], utility: torch.Tensor, *,
                    lambda1: float = 1.0, lambda2: float = 1.0) -> torch.Tensor:
    """``mean(L0_t) + lambda1 * mean(L1_t) + lambda2 * L2`` (one ``L0_t``, ``L1_t`` a target)."""
    if len(effectiveness) == 0 or len(effectiveness) != len(reference_utility):
        raise ValueError("one effectiveness and one reference-utility loss per target needed, "
                         f"got {len(effectiveness)} and {len(reference_utility)}")
    l0 = torch.stack(list(effectiveness)).mean()
    l1 = torch.stack(list(reference_utility)).mean()
    return l0 + float(lambda1) * l1 + float(lambda2) * utility
