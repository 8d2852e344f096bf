"""Classifier = encoder + head: images in [0, 1] -> logits."""

from __future__ import annotations

import torch
from torch import nn

from encshield.models.encoder import Encoder

__all__ = ["Classifier"]


class Classifier(nn.Module):
    """Images ``(N, C, H, W)`` float in [0, 1] -> logits ``(N, num_classes)``.

    The encoder normalises (and range-checks) its input; the head maps features ``(N, D)`` to
    logits. Every attack and metric works on this interface.

    Args:
        encoder: an :class:`Encoder` (or any module mapping [0, 1] images to ``(N, D)``).
        head: a module mapping ``(N, D)`` to ``(N, num_classes)``.
    """

    def __init__(self, encoder: Encoder | nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    @property
    def num_classes(self) -> int | None:
        """Output dimension of the head when it can be read from its last Linear layer."""
        out = getattr(self.head, "out_dim", None) or getattr(self.head, "out_features", None)
        if out is None:
            linears = [m for m in self.head.modules() if isinstance(m, nn.Linear)]
            out = linears[-1].out_features if linears else None
        return None if out is None else int(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` in [0, 1] -> logits ``(N, num_classes)``."""
        logits: torch.Tensor = self.head(self.encoder(x))
        return logits
