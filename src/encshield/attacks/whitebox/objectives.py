"""Per-sample attack objectives: model outputs -> a loss ``(N,)`` that the attack MAXIMISES.

An objective is any callable ``objective(outputs, reference) -> Tensor (N,)``:

* ``outputs`` is what the model returned for the adversarial batch: logits ``(N, C)`` for a
  classifier, features ``(N, D)`` for an encoder, or anything else (e.g. a dict of branch logits of
  an ensemble) for a custom objective;
* ``reference`` is what the attack was given as ``y``: labels ``(N,)`` int64, reference features
  ``(N, D)``, or (for targeted DLR) the pair ``(labels, targets)``. Attacks index it along the
  first dimension (a tensor, or a tuple/list of tensors) when they attack a subset of the batch.

Registered objectives (:data:`OBJECTIVES`):

===================  ==========================================================  ============
name                 loss to maximise                                            reference
===================  ==========================================================  ============
``ce``               cross-entropy ``-log softmax(z)_y``                         labels
``cw``               Carlini-Wagner margin ``max_{j != y} z_j - z_y``            labels
``dlr``              Croce & Hein's DLR ``-(z_y - max_{j != y} z_j) /            labels
                     (z_pi1 - z_pi3)``
``dlr_targeted``     targeted DLR ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2)``  (labels, targets)
``feature_distance`` ``1 - cos(f(x_adv), f(x))`` (alias ``feature_cosine``)      features
``feature_l2``       ``||f(x_adv) - f(x)||_2``                                   features
===================  ==========================================================  ============

``z_pi1 >= z_pi2 >= ...`` are the sorted logits. References: Carlini & Wagner, "Towards
evaluating the robustness of neural networks", IEEE S&P 2017 (margin loss); Croce & Hein,
"Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks", ICML 2020, Sec. 4 (DLR and targeted DLR; scale- and shift-invariant in the logits).

A custom callable is accepted wherever an objective name is. It is the hook for joint attacks: a
model may return a dict of branch logits and the objective combines them, e.g.
``lambda out, y: sum(F.cross_entropy(z, y, reduction="none") for z in out.values())``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F

from encshield.errors import ConfigError
from encshield.registry import Registry

__all__ = [
    "OBJECTIVES",
    "Objective",
    "ReferenceKind",
    "cross_entropy",
    "cw_margin",
    "dlr",
    "dlr_targeted",
    "feature_cosine_distance",
    "feature_l2_distance",
    "reference_kind",
    "resolve_objective",
]

#: ``objective(outputs, reference) -> per-sample loss (N,)`` to maximise.
Objective = Callable[[Any, Any], torch.Tensor]
#: What an objective expects as its reference: class labels, (labels, targets) or features.
ReferenceKind = Literal["labels", "labels_and_targets", "features", "any"]

#: Registry of named objectives.
OBJECTIVES: Registry[Objective] = Registry("objective")

_EPS = 1e-12


def _logits(outputs: Any, name: str) -> torch.Tensor:
    if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2:
        shape = (tuple(outputs.shape) if isinstance(outputs, torch.Tensor)
                 else type(outputs).__name__)
        raise ConfigError(
            f"objective {name!r} needs logits (N, C) from the model, got {shape}; for models that "
            "return several outputs pass a custom objective callable(outputs, y) -> (N,)"
        )
    return outputs


def _labels(reference: Any, logits: torch.Tensor, name: str) -> torch.Tensor:
    if (not isinstance(reference, torch.Tensor) or reference.dim() != 1
            or reference.is_floating_point()):
        raise ConfigError(f"objective {name!r} needs int64 labels (N,) as reference (y)")
    if reference.shape[0] != logits.shape[0]:
        raise ConfigError(
            f"objective {name!r}: {reference.shape[0]} labels for {logits.shape[0]} outputs"
        )
    return reference


def _with_kind(kind: ReferenceKind) -> Callable[[Objective], Objective]:
    def decorate(fn: Objective) -> Objective:
        fn.reference_kind = kind  # type: ignore[attr-defined]
        return fn

    return decorate


@OBJECTIVES.register("ce", aliases=("cross_entropy",))
@_with_kind("labels")
def cross_entropy(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per sample: logits ``(N, C)``, labels ``(N,)`` -> ``(N,)`` >= 0."""
    logits = _logits(outputs, "ce")
    return F.cross_entropy(logits, _labels(y, logits, "ce"), reduction="none")


def _other_max(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``max_{j != y} z_j`` per sample."""
    masked = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return masked.amax(dim=1)


@OBJECTIVES.register("cw", aliases=("margin", "cw_margin"))
@_with_kind("labels")
def cw_margin(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin ``max_{j != y} z_j - z_y`` ``(N,)``; > 0 iff misclassified."""
    logits = _logits(outputs, "cw")
    y = _labels(y, logits, "cw")
    if logits.shape[1] < 2:
        raise ConfigError("objective 'cw' needs at least 2 classes")
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    return _other_max(logits, y) - z_y


@OBJECTIVES.register("dlr")
@_with_kind("labels")
def dlr(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein, ICML 2020, Eq. 6), per sample ``(N,)``.

    ``DLR = -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)``; invariant to shifting and scaling the
    logits; > 0 iff misclassified. Needs at least 3 classes.
    """
    logits = _logits(outputs, "dlr")
    y = _labels(y, logits, "dlr")
    if logits.shape[1] < 3:
        raise ConfigError(
            f"objective 'dlr' needs at least 3 classes, the model has {logits.shape[1]}")
    z_sorted = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    return -(z_y - _other_max(logits, y)) / (z_sorted[:, 0] - z_sorted[:, 2] + _EPS)


@OBJECTIVES.register("dlr_targeted", aliases=("dlr_t",))
@_with_kind("labels_and_targets")
def dlr_targeted(outputs: torch.Tensor,
                 reference: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Targeted DLR (Croce & Hein, ICML 2020, Eq. 7), per sample ``(N,)``.

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` with ``reference = (labels y, targets t)``,
    both int64 ``(N,)``. Maximising it pushes the target logit above the true one. Needs at
    least 4 classes.
    """
    logits = _logits(outputs, "dlr_targeted")
    if not isinstance(reference, (tuple, list)) or len(reference) != 2:
        raise ConfigError(
            "objective 'dlr_targeted' needs the pair (labels, targets) as reference; use the "
            "apgd_t attack, which chooses the targets"
        )
    y = _labels(reference[0], logits, "dlr_targeted")
    t = _labels(reference[1], logits, "dlr_targeted")
    if logits.shape[1] < 4:
        raise ConfigError(
            f"objective 'dlr_targeted' needs at least 4 classes, the model has {logits.shape[1]}"
        )
    z_sorted = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, t[:, None]).squeeze(1)
    scale = z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3]) + _EPS
    return -(z_y - z_t) / scale


def _features(outputs: Any, reference: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(outputs, torch.Tensor) or not isinstance(reference, torch.Tensor):
        raise ConfigError(f"objective {name!r} needs feature tensors (N, ...) for outputs and y")
    if outputs.shape != reference.shape:
        raise ConfigError(
            f"objective {name!r}: features {tuple(outputs.shape)} and reference features "
            f"{tuple(reference.shape)} differ in shape"
        )
    return outputs.flatten(1), reference.flatten(1).to(outputs.dtype)


@OBJECTIVES.register("feature_distance", aliases=("feature_cosine", "cosine"))
@_with_kind("features")
def feature_cosine_distance(outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``1 - cos(f(x_adv), f(x))`` per sample, in [0, 2]; ``reference`` = clean features."""
    f, r = _features(outputs, reference, "feature_distance")
    return 1.0 - F.cosine_similarity(f, r, dim=1, eps=1e-8)


@OBJECTIVES.register("feature_l2", aliases=("l2",))
@_with_kind("features")
def feature_l2_distance(outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``||f(x_adv) - f(x)||_2`` per sample; ``reference`` = clean features."""
    f, r = _features(outputs, reference, "feature_l2")
    distance: torch.Tensor = (f - r).norm(dim=1)
    return distance


def resolve_objective(objective: str | Objective) -> Objective:
    """A registered name (or alias) or a callable -> the callable; raises ConfigError."""
    if isinstance(objective, str):
        return OBJECTIVES.get(objective)
    if not callable(objective):
        raise ConfigError(
            f"objective must be a name ({', '.join(OBJECTIVES.names())}) or a callable "
            f"(outputs, y) -> (N,), got {type(objective).__name__}"
        )
    return objective


def reference_kind(objective: str | Objective) -> ReferenceKind:
    """What the objective expects as reference (``any`` for a custom callable)."""
    return getattr(resolve_objective(objective), "reference_kind", "any")
