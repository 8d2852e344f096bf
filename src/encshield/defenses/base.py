"""The defense interface: a registry of defenses, their typed configs and their result.

A defense takes a (pre-trained) encoder and downstream training data and returns a
:class:`~encshield.models.Classifier` (images in [0, 1] -> logits, eval mode) plus a record of
what it did (DESIGN.md, "Defenses")::

    defense = build_defense("pgd_at", epochs=5)
    result = defense.fit(encoder, train, num_classes=10, seed=0)
    result.classifier(x)        # logits
    result.record.losses        # one mean training loss per epoch (a DefenseRecord)

Every defense class has a pydantic ``Config`` whose fields all have defaults; overrides are
validated and a bad one raises :class:`~encshield.errors.ConfigError` naming the field, the value
and the allowed values. The encoder passed to :meth:`Defense.fit` is never modified in place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from encshield.config import config_hash, resolve
from encshield.data import ImageDataset
from encshield.models import Classifier, Encoder
from encshield.records import DefenseRecord
from encshield.registry import Registry

__all__ = [
    "DEFENSES",
    "Defense",
    "DefenseConfig",
    "DefenseResult",
    "build_defense",
]


class DefenseConfig(BaseModel):
    """Base of every defense config: unknown fields are errors, all fields have defaults."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass
class DefenseResult:
    """What :meth:`Defense.fit` returns.

    Attributes:
        classifier: the defended model, eval mode, images float in [0, 1] -> logits.
        record: a :class:`~encshield.records.DefenseRecord` (name, config and its hash, epochs,
            losses, loss parts and clean training accuracy per epoch, time, seed, and
            defense-specific ``details``).
    """

    classifier: Classifier
    record: DefenseRecord


#: Callback signature: ``callback(event, info)``; see :meth:`Defense.add_callback`.
Callback = Callable[[str, dict[str, Any]], None]


class Defense:
    """Base class of defenses. Subclasses set ``name``, a nested ``Config`` and :meth:`fit`.

    Args:
        config: a ``Config`` instance or a mapping of overrides (validated).
        **overrides: field overrides (validated), applied on top of ``config``.
    """

    name: ClassVar[str] = "defense"
    Config: ClassVar[type[DefenseConfig]] = DefenseConfig

    def __init__(self, config: DefenseConfig | dict[str, Any] | None = None, **overrides: Any):
        self.config = resolve(self.Config, config, **overrides)
        self._callbacks: list[Callback] = []

    def add_callback(self, callback: Callback) -> None:
        """Register ``callback(event, info)``, called by training loops at fixed points.

        Used by tests and progress reporting; it must not change the training. Events of
        :mod:`encshield.defenses.finetuning`: ``"after_attack"`` (``model``, ``step``, ``epoch``,
        ``x``, ``x_adv``) right after the inner attack, before the training forward; and
        ``"epoch_end"`` (``model``, ``epoch``, ``optimizers``, ``schedulers``, ``loss``).
        """
        self._callbacks.append(callback)

    def _emit(self, event: str, **info: Any) -> None:
        for callback in self._callbacks:
            callback(event, info)

    def _record(
        self,
        *,
        num_classes: int,
        seed: int,
        device: torch.device | str,
        time_s: float,
        **fields: Any,
    ) -> DefenseRecord:
        """The record of one :meth:`fit`: this defense's name, config and config hash, the run's
        number of classes, seed, device and wall time (s), plus the defense's own ``fields`` of
        :class:`~encshield.records.DefenseRecord` (``epochs``, ``losses``, ``num_train``...)."""
        cfg = self.config
        return DefenseRecord(
            name=self.name, config=cfg.model_dump(mode="json"), config_hash=config_hash(cfg),
            num_classes=int(num_classes), seed=int(seed), device=str(device), time_s=time_s,
            **fields)

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
        """Build a defended classifier from ``encoder`` (not modified) and ``train``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


DEFENSES: Registry[type[Defense]] = Registry("defense")


def build_defense(name: str, config: DefenseConfig | dict[str, Any] | None = None,
                  **overrides: Any) -> Defense:
    """The defense registered as ``name`` with its config (validated overrides).

    Raises:
        ConfigError: unknown name (lists the registered ones) or an invalid override (names the
            field, the value and the allowed values).
    """
    return DEFENSES.get(name)(config, **overrides)
