"""BadEncoder's training objective for the shared encoder training loop (Jia, Liu, Gong,
IEEE S&P 2022; docs/methods.md, "BadEncoder").

:class:`BadEncoderObjective` holds the encoder being backdoored ``f'`` (initialised from the
clean one), a frozen clean copy ``f`` in eval mode, and one :class:`BackdoorTarget` (trigger +
reference images) per downstream target. As in the paper's code, the BatchNorm layers of ``f'``
stay in eval mode with frozen affine parameters, so the running statistics of the clean encoder
are kept and a batch's composition does not change any feature: the clean, triggered, reference
and augmented-reference images of a step run through ``f'`` as one batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from encshield.backdoor.losses import (
    badencoder_loss,
    effectiveness_loss,
    reference_utility_loss,
    utility_loss,
)
from encshield.backdoor.triggers import Trigger
from encshield.encoder_trainer import EncoderObjective
from encshield.models import Encoder
from encshield.ssl.augment import ColorAugmentConfig

__all__ = ["BackdoorTarget", "BadEncoderObjective", "ReferenceAugment"]


class ReferenceAugment(ColorAugmentConfig):
    """The augmentation of the reference images in ``L1`` (BadEncoder's code: horizontal flip,
    colour jitter 0.4/0.4/0.4/0.1 with probability 0.8, grayscale with probability 0.2: the
    defaults)."""


@dataclass
class BackdoorTarget:
    """One downstream target of an injection.

    Attributes:
        trigger: stamped on the shadow images (and, at test time, on the downstream inputs).
        references: images of the target class, uint8 ``(R, C, H, W)`` at the encoder's size.
        label: the target class in the downstream dataset (``None`` when unknown).
        dataset: the downstream dataset the target class belongs to (``None`` when unknown).
        source: where the references come from (for records).
    """

    trigger: Trigger
    references: torch.Tensor
    label: int | None = None
    dataset: str | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON description: trigger, label, dataset, number and source of the references."""
        return {"trigger": self.trigger.to_dict(), "label": self.label, "dataset": self.dataset,
                "references": int(self.references.shape[0]), "source": self.source}


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


class BadEncoderObjective(EncoderObjective):
    """``training_loss([x]) -> {"loss", "effectiveness", "reference_utility", "utility"}`` for
    a clean shadow batch ``x`` (float ``(N, C, H, W)`` in [0, 1]).

    Args:
        encoder: the clean encoder; a copy of it is trained, the original is not modified.
        targets: one or more :class:`BackdoorTarget`.
        lambda1, lambda2: weights of the reference-utility and utility losses (paper: 1 and 1).
        reference_augment: the references' augmentation in ``L1``.
    """

    def __init__(self, encoder: Encoder, targets: list[BackdoorTarget], *, lambda1: float = 1.0,
                 lambda2: float = 1.0, reference_augment: ReferenceAugment | None = None) -> None:
        super().__init__()
        if not targets:
            raise ValueError("BadEncoder needs at least one target")
        self.encoder = copy.deepcopy(encoder)
        self.clean = copy.deepcopy(encoder).eval()
        for p in self.clean.parameters():
            p.requires_grad_(False)
        for module in self.encoder.modules():
            if _is_norm(module):
                for p in module.parameters(recurse=False):
                    p.requires_grad_(False)
        self.targets = targets
        for i, target in enumerate(targets):
            self.register_buffer(f"reference_{i}", target.references, persistent=False)
        self.lambda1, self.lambda2 = float(lambda1), float(lambda2)
        self.reference_augment = reference_augment or ReferenceAugment()
        self.train()

    def train(self, mode: bool = True) -> BadEncoderObjective:
        """Train mode for the backdoored encoder except its BatchNorm layers; the clean copy
        always in eval mode."""
        super().train(mode)
        self.clean.eval()
        for module in self.encoder.modules():
            if _is_norm(module):
                module.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The backdoored encoder's parameters without the BatchNorm affine ones."""
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def references(self, index: int) -> torch.Tensor:
        """Target ``index``'s reference images as floats in [0, 1]."""
        refs: torch.Tensor = getattr(self, f"reference_{index}")
        return refs.float().div(255) if refs.dtype == torch.uint8 else refs.float()

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        (x,) = views
        n = x.shape[0]
        parts, sizes = [x], [n]
        clean_inputs = [x]
        for index, target in enumerate(self.targets):
            refs = self.references(index).to(x.device, x.dtype)
            parts += [target.trigger.apply(x), refs, self.reference_augment.apply(refs)]
            sizes += [n, refs.shape[0], refs.shape[0]]
            clean_inputs.append(refs)
        with torch.no_grad():
            clean = self.clean(torch.cat(clean_inputs)).float()
        features = self.encoder(torch.cat(parts)).split(sizes)
        clean_split = clean.split([n] + [t.references.shape[0] for t in self.targets])
        l0 = [effectiveness_loss(features[1 + 3 * i], features[2 + 3 * i])
              for i in range(len(self.targets))]
        l1 = [reference_utility_loss(features[3 + 3 * i], clean_split[1 + i])
              for i in range(len(self.targets))]
        l2 = utility_loss(features[0], clean_split[0])
        loss = badencoder_loss(l0, l1, l2, lambda1=self.lambda1, lambda2=self.lambda2)
        return {"loss": loss, "effectiveness": torch.stack(l0).mean().detach(),
                "reference_utility": torch.stack(l1).mean().detach(), "utility": l2.detach()}

