"""``none``: the no-defense downstream model (frozen encoder + a trained head).

The "no defense" row of every table in the CGCL family (Gen-AF, Zhou et al., IEEE S&P 2024; ZePAD):
the downstream user keeps the public encoder frozen and trains only a head on its features
(:func:`encshield.downstream.train_head`: Adam lr 5e-3, weight decay 8e-4, ExponentialLR 0.96,
docs/methods.md, "Downstream head"). Registered as a defense so that tables, the CLI and
``encshield bench`` treat it like every other row.
"""

from __future__ import annotations

import copy
import time

import torch
from pydantic import Field

from encshield.data import ImageDataset
from encshield.defenses.base import DEFENSES, Defense, DefenseConfig, DefenseResult
from encshield.downstream import train_head
from encshield.errors import ConfigError
from encshield.models import Encoder

__all__ = ["NoDefense", "NoDefenseConfig"]


class NoDefenseConfig(DefenseConfig):
    """Head training settings (defaults: the CGCL protocol, 20 epochs)."""

    head: str = "mlp"
    epochs: int = Field(20, ge=0)
    lr: float = Field(5e-3, ge=0.0)
    weight_decay: float = Field(8e-4, ge=0.0)
    gamma: float = Field(0.96, gt=0.0, le=1.0)
    batch_size: int = Field(256, ge=1)


@DEFENSES.register("none", aliases=("no_defense", "frozen"))
class NoDefense(Defense):
    """No defense: the encoder stays frozen; only the head is trained on clean features."""

    Config = NoDefenseConfig
    config: NoDefenseConfig

    def fit(
        self,
        encoder: Encoder,
        train: ImageDataset,
        num_classes: int,
        *,
        seed: int = 0,
        device: torch.device | str = "cpu",
        progress: bool = False,
    ) -> DefenseResult:
        """Train the head on a frozen copy of ``encoder`` (which is not modified)."""
        cfg = self.config
        if len(train) == 0:
            raise ConfigError("the defense's training set is empty")
        start = time.perf_counter()
        work = copy.deepcopy(encoder).to(device)
        classifier, head_record = train_head(
            work, train.images, train.labels, num_classes, head=cfg.head, epochs=cfg.epochs,
            lr=cfg.lr, weight_decay=cfg.weight_decay, gamma=cfg.gamma,
            batch_size=cfg.batch_size, seed=seed, device=device)
        record = self._record(
            num_classes=num_classes, seed=seed, device=device,
            time_s=round(time.perf_counter() - start, 3), epochs=cfg.epochs,
            losses=list(head_record.losses), train_accuracy=[head_record.train_accuracy],
            num_train=len(train), summary=f"head trained {cfg.epochs} epochs on frozen features")
        return DefenseResult(classifier=classifier.eval(), record=record)
