"""The one supervised training loop of the defenses: epochs of batches, one step each.

:func:`train_epochs` owns the bookkeeping every fine-tuning defense shares (step counter,
per-sample weighted mean loss and loss parts, running accuracy, an end-of-epoch hook); the
caller owns what a step does (:class:`~encshield.defenses.finetuning.FinetuningDefense`'s
adversarial step, Gen-AF stage 2's clean step on chosen layers) and where the batches come from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

__all__ = ["EpochStats", "StepFn", "shuffled_batches", "train_epochs"]

#: ``step(x, y, step_index, epoch) -> (loss, parts, logits or None)``: one optimiser step on a
#: batch; ``loss`` detached scalar, ``parts`` named loss terms (floats), ``logits`` of the
#: training forward when the running accuracy should be tracked.
StepFn = Callable[[torch.Tensor, torch.Tensor, int, int],
                  tuple[torch.Tensor, dict[str, float], torch.Tensor | None]]


@dataclass(frozen=True)
class EpochStats:
    """One epoch: mean training loss (weighted per sample), mean loss parts and the running
    accuracy of the training forwards (``None`` when the step returned no logits)."""

    epoch: int
    loss: float
    parts: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None


def shuffled_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                     generator: torch.Generator, device: torch.device | str
                     ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``(images, labels)`` in a fresh ``torch.randperm(N, generator)`` order, moved
    to ``device`` (images as given: float tensors stay float)."""
    order = torch.randperm(images.shape[0], generator=generator)
    for start in range(0, images.shape[0], batch_size):
        idx = order[start:start + batch_size]
        yield (images[idx.to(images.device)].to(device),
               labels[idx.to(labels.device)].to(device))


def train_epochs(
    epochs: int,
    batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    step: StepFn,
    *,
    on_epoch_end: Callable[[EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Run ``epochs`` passes of ``step`` over ``batches()`` (called once per epoch).

    Returns:
        One :class:`EpochStats` per epoch (``epoch`` counts from 0).
    """
    history: list[EpochStats] = []
    step_index = 0
    for epoch in range(epochs):
        total, count, correct, tracked = 0.0, 0, 0, False
        sums: dict[str, float] = {}
        for x, y in batches():
            loss, parts, logits = step(x, y, step_index, epoch)
            n = int(y.shape[0])
            total += float(loss) * n
            count += n
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value) * n
            if logits is not None:
                tracked = True
                correct += int((logits.detach().argmax(1) == y).sum())
            step_index += 1
        stats = EpochStats(epoch, total / max(count, 1),
                           {k: v / max(count, 1) for k, v in sums.items()},
                           correct / max(count, 1) if tracked else None)
        history.append(stats)
        if on_epoch_end is not None:
            on_epoch_end(stats)
    return history
