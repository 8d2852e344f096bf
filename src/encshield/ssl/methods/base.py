"""The SSL method interface: a method is thin, it owns its heads and its loss.

The shared loop (:mod:`encshield.ssl.trainer`) owns data, augmentation, optimiser, schedule,
logging, checkpointing and resuming. A method only says how a batch of views becomes a loss,
which of its modules are momentum (EMA) copies, and what to update after an optimiser step
(queues, centres). Each method is one file registered in :data:`METHODS`.

Shared state helpers
--------------------
* Momentum (EMA) targets: :func:`momentum_copy` plus :meth:`SSLMethod.momentum_pairs`; the
  targets get no gradient and are left out of :meth:`SSLMethod.trainable_parameters`.
* Memory queues (MoCo, NNCLR, ReSSL, SwAV): :meth:`SSLMethod.register_queue` registers the
  queue, its write pointer and its fill count as buffers (saved in ``state_dict`` and restored on
  resume). ``training_loss`` *stages* the keys of the step with :meth:`SSLMethod.stage_queue`
  and :meth:`SSLMethod.after_step` writes them with :func:`encshield.ssl.losses.enqueue` after
  the optimiser step, so calling ``training_loss`` alone never changes a queue.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from encshield.encoder_trainer import EncoderObjective
from encshield.errors import ConfigError
from encshield.models import Encoder
from encshield.registry import Registry
from encshield.ssl.losses import enqueue

METHODS: Registry[type[SSLMethod]] = Registry("SSL method")


class MethodConfig(BaseModel):
    """Hyper-parameters of a method; subclasses add their own fields with defaults."""

    model_config = ConfigDict(extra="forbid")


class MomentumConfig(MethodConfig):
    """Fields of the methods with momentum (EMA) targets: the EMA coefficient ``tau`` rises from
    ``base_tau`` to ``final_tau`` along a cosine over training (:meth:`SSLMethod.momentum_tau`)."""

    base_tau: float = Field(0.99, ge=0, le=1)
    final_tau: float = Field(1.0, ge=0, le=1)


class SSLMethod(EncoderObjective):
    """Base class: ``training_loss(views) -> {"loss": scalar, ...}``.

    Attributes:
        encoder: the backbone being trained (images in [0, 1] -> features ``(N, D)``).
        config: the validated :class:`MethodConfig`.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    #: Name of the default view recipe in :func:`encshield.ssl.augment.preset`.
    augment_preset: ClassVar[str] = "simclr"
    #: The projection head, in the methods that have one (built by their ``__init__``).
    projector: nn.Module

    def __init__(self, encoder: Encoder, config: MethodConfig) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = config
        self._queue_names: list[str] = []
        self._staged_keys: dict[str, torch.Tensor] = {}

    @classmethod
    def from_args(cls, encoder: Encoder, args: dict[str, Any] | None = None) -> SSLMethod:
        """Build the method, validating ``args`` (errors name the field and allowed values)."""
        try:
            config = cls.Config(**(args or {}))
        except ValidationError as error:
            problems = "; ".join(
                f"method_args.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in error.errors()
            )
            allowed = ", ".join(cls.Config.model_fields)
            raise ConfigError(
                f"{problems} (method {cls.name}; allowed fields: {allowed})"
            ) from None
        return cls(encoder, config)

    def training_loss(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss of one batch. ``views``: list of ``(N, 3, S, S)`` floats in [0, 1]."""
        raise NotImplementedError

    def check_views(
        self, views: list[torch.Tensor], minimum: int = 2, maximum: int | None = 2
    ) -> int:
        """Check the number and shapes of ``views``; returns the batch size ``N``."""
        count = len(views)
        if count < minimum or (maximum is not None and count > maximum):
            wanted = f"{minimum}" if maximum == minimum else f"{minimum}..{maximum or 'any'}"
            raise ValueError(f"method {self.name} needs {wanted} views, got {count}")
        first = tuple(views[0].shape)
        for i, view in enumerate(views):
            if tuple(view.shape) != first:
                raise ValueError(
                    f"all views must have the same shape (they run as one batch), got {first} "
                    f"and {tuple(view.shape)} (view {i})"
                )
        return int(first[0])

    def project_views(self, views: list[torch.Tensor]) -> tuple[int, torch.Tensor]:
        """Check the two ``views`` (:meth:`check_views`) and run them as one batch through the
        encoder and ``self.projector``: returns ``N`` and the projections ``(2 N, D)`` (the first
        view's ``N`` rows first)."""
        n = self.check_views(views)
        z: torch.Tensor = self.projector(self.encoder(torch.cat(views)))
        return n, z

    # -- memory queues ----------------------------------------------------------------------
    def register_queue(self, name: str, size: int, dim: int, *, random_init: bool = True) -> None:
        """Register a FIFO memory ``(size, dim)``: buffers ``name``, ``name_ptr``, ``name_filled``.

        ``random_init``: start full of random unit vectors (MoCo's and ReSSL's initial negatives);
        otherwise start empty and let :meth:`queue_rows` return only the filled rows (NNCLR, SwAV).
        """
        if size < 1 or dim < 1:
            raise ConfigError(f"queue {name!r} needs size >= 1 and dim >= 1, got {size} x {dim}")
        if random_init:
            init, filled = F.normalize(torch.randn(size, dim), dim=1), size
        else:
            init, filled = torch.zeros(size, dim), 0
        self.register_buffer(name, init)
        self.register_buffer(f"{name}_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer(f"{name}_filled", torch.tensor(filled, dtype=torch.long))
        self._queue_names.append(name)

    def queue_names(self) -> list[str]:
        """Names of the registered queue buffers."""
        return list(self._queue_names)

    def queue_rows(self, name: str) -> torch.Tensor:
        """The filled rows of queue ``name`` (all of them once it has wrapped), detached.

        Writing starts at row 0 and wraps only when the queue is full, so the filled rows are
        always the first ``name_filled`` ones.
        """
        filled = int(getattr(self, f"{name}_filled"))
        queue: torch.Tensor = getattr(self, name)
        return queue[:filled].detach()

    def stage_queue(self, name: str, keys: torch.Tensor) -> None:
        """Remember this step's ``keys`` for queue ``name``; :meth:`after_step` writes them."""
        if name not in self._queue_names:
            raise KeyError(f"unknown queue {name!r}; registered: {self._queue_names}")
        self._staged_keys[name] = keys.detach()

    @torch.no_grad()
    def update_queues(self) -> None:
        """Write the staged keys of each queue (:func:`~encshield.ssl.losses.enqueue`), in
        registration order, and forget them."""
        for name in self._queue_names:
            keys = self._staged_keys.pop(name, None)
            if keys is None:
                continue
            buffer = getattr(self, name)
            ptr = getattr(self, f"{name}_ptr")
            filled = getattr(self, f"{name}_filled")
            new, new_ptr = enqueue(buffer, keys, int(ptr))
            buffer.copy_(new)
            ptr.fill_(new_ptr)
            filled.fill_(min(int(filled) + keys.shape[0], buffer.shape[0]))
        self._staged_keys.clear()

    # -- momentum (EMA) targets -------------------------------------------------------------
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) module pairs updated by EMA after each step; empty if none."""
        return []

    def momentum_tau(self, progress: float) -> float:
        """EMA coefficient at training progress in [0, 1] (cosine from base to final tau)."""
        base = float(getattr(self.config, "base_tau", 0.99))
        final = float(getattr(self.config, "final_tau", 1.0))
        return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        """Called after each optimiser step: EMA updates, then the staged queue writes
        (subclasses add their own updates, e.g. centres, after calling this)."""
        tau = self.momentum_tau(progress)
        for online, target in self.momentum_pairs():
            for p_online, p_target in zip(online.parameters(), target.parameters(), strict=True):
                p_target.mul_(tau).add_(p_online.detach(), alpha=1 - tau)
            for b_online, b_target in zip(online.buffers(), target.buffers(), strict=True):
                b_target.copy_(b_online)
        self.update_queues()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (momentum copies excluded)."""
        frozen = {id(p) for _, target in self.momentum_pairs() for p in target.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in frozen]


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` for EMA targets."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


class MomentumProjectorMethod(SSLMethod):
    """Base of the methods whose targets are EMA copies of the encoder and of the projector
    (BYOL, MoCo v2+, MoCo v3, ReSSL).

    A subclass builds ``self.projector`` and then calls :meth:`init_momentum_targets`, which
    adds ``momentum_encoder`` and ``momentum_projector`` (their parameter names in checkpoints).
    """

    momentum_encoder: nn.Module
    momentum_projector: nn.Module

    def init_momentum_targets(self) -> None:
        """Frozen copies of the encoder and the projector as they are now (the EMA targets)."""
        self.momentum_encoder = momentum_copy(self.encoder)
        self.momentum_projector = momentum_copy(self.projector)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.momentum_encoder), (self.projector, self.momentum_projector)]

    def target_projection(self, x: torch.Tensor) -> torch.Tensor:
        """The EMA targets' projection of images ``x`` ``(N, 3, S, S)`` in [0, 1]: ``(N, D)``,
        computed without gradient."""
        with torch.no_grad():
            z: torch.Tensor = self.momentum_projector(self.momentum_encoder(x))
        return z
