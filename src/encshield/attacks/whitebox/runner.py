"""The common start of the ``run_<attack>`` functions of the white-box attacks.

:func:`attack_setup` checks the images, enters
:func:`~encshield.attacks.whitebox.base.attack_context` and builds the problem, the threat-model
ball and the seeded generator from a validated config;
:func:`check_labels` checks the labels of the attacks that need class labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from encshield.attacks.whitebox.base import (
    Ball,
    Problem,
    WhiteboxAttackConfig,
    attack_context,
    local_generator,
    make_problem,
    prepare_inputs,
)
from encshield.errors import ConfigError

__all__ = ["AttackSetup", "attack_setup", "check_labels"]


def check_labels(x: torch.Tensor, y: Any, attack: str) -> torch.Tensor:
    """``y`` checked to be int64 labels ``(N,)``, one per image of ``x`` ``(N, C, H, W)``.

    Raises:
        ConfigError: naming ``attack``, when ``y`` is not a 1-D integer tensor of length ``N``.
    """
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point():
        raise ConfigError(f"{attack} needs int64 labels y of shape (N,)")
    if y.shape[0] != x.shape[0]:
        raise ConfigError(f"y has {y.shape[0]} labels for {x.shape[0]} images")
    return y


@dataclass
class AttackSetup:
    """What a ``run_<attack>`` works on (see :func:`attack_setup`).

    Attributes:
        x: the clean images, checked and detached, ``(N, C, H, W)`` in [0, 1].
        problem: the objective to maximise and the success test.
        ball: the threat model around ``x``.
        generator: the attack's own random generator, seeded with the attack's seed.
    """

    x: torch.Tensor
    problem: Problem
    ball: Ball
    generator: torch.Generator


@contextmanager
def attack_setup(
    model: nn.Module,
    x: torch.Tensor,
    y: Any,
    config: WhiteboxAttackConfig,
    seed: int,
    *,
    targeted: bool = False,
) -> Iterator[AttackSetup]:
    """The usual start of a ``(model, x, y)`` attack with a validated ``config``.

    Checks ``x`` (:func:`prepare_inputs`), enters :func:`attack_context` (eval mode, seeded and
    restored RNG, gradients on) and yields the problem of ``config.objective`` (``targeted``: see
    :func:`make_problem`), the ``config.eps`` ball in ``config.norm`` and a generator seeded with
    ``seed``.
    """
    x = prepare_inputs(x)
    with attack_context(model, seed, x.device):
        problem = make_problem(model, x, y, config.objective, targeted=targeted,
                               predict=config.predict, eot_samples=config.eot_samples)
        yield AttackSetup(x, problem, Ball(x, config.eps, config.norm),
                          local_generator(seed, x.device))
