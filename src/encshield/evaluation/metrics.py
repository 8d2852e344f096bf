"""Attack, defense and detection metrics: pure functions over per-sample predictions.

Every metric is computed **per sample** over the whole evaluated set (a sum of per-sample
indicators divided by the number of samples), never as a mean of per-batch means: the CGCL code
(AdvEncoder, Gen-AF, ZePAD) averages per-batch accuracies, which over-weights the samples of a
smaller last batch (see :func:`mean_of_batch_accuracies`, kept only to reproduce and explain that
bias). Inputs are 1-D tensors (or anything :func:`torch.as_tensor` accepts) on any device; the
results are Python floats.

Three incompatible "ASR"s exist in the literature (docs/methods.md, "Metrics"); each has its own
name here:

==========================  =====================================================  ==============
name                        definition                                             used as "ASR"
==========================  =====================================================  ==============
:func:`fooling_rate`        ``mean(adv_pred != clean_pred)`` over all samples       AdvEncoder,
                            (label-agnostic)                                       ZePAD code
:func:`error_rate`          ``mean(adv_pred != label)`` = ``1 - RA``               PAP / L4A
:func:`attack_success_rate` ``mean(adv_pred != label | clean_pred == label)``      adversarial-
                            (flipped among the initially correct)                  robustness lit.
:func:`target_hit_rate`     ``mean(adv_pred == target)`` over *all* triggered      BadEncoder
                            inputs (option: excluding the target class)
==========================  =====================================================  ==============

Detection metrics take a score per sample where **higher means "more likely adversarial"** and a
boolean ground truth; a sample is flagged adversarial iff ``score > threshold`` (strict), see
:func:`detection_accuracy` and :func:`tpr_at_fpr`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "SUMMARY_KEYS",
    "attack_success_rate",
    "auroc",
    "benign_accuracy",
    "decline_rate",
    "detection_accuracy",
    "error_rate",
    "fooling_rate",
    "mean_of_batch_accuracies",
    "robust_accuracy",
    "summarize",
    "target_hit_rate",
    "threshold_at_fpr",
    "tpr_at_fpr",
]

#: Keys of :func:`summarize`, in table order.
SUMMARY_KEYS = (
    "benign_accuracy",
    "robust_accuracy",
    "fooling_rate",
    "error_rate",
    "attack_success_rate",
)

TensorLike = torch.Tensor | Sequence[Any]


# ------------------------------------------------------------------------------------------
# validation helpers
# ------------------------------------------------------------------------------------------


def _as_1d(name: str, values: TensorLike | Any, *, integer: bool) -> torch.Tensor:
    """``values`` as a 1-D CPU tensor (int64 if ``integer`` else float64); ValueError otherwise."""
    try:
        tensor = values.detach() if isinstance(values, torch.Tensor) else torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"{name} must be a 1-D tensor, got {type(values).__name__}: {error}"
        ) from None
    if tensor.dim() != 1:
        raise ValueError(
            f"{name} must be 1-D (one entry per sample), got shape {tuple(tensor.shape)}"
        )
    tensor = tensor.cpu()
    if integer:
        if tensor.is_floating_point() or tensor.is_complex():
            if tensor.numel() and not bool(torch.all(tensor == tensor.round())):
                raise ValueError(
                    f"{name} must hold integer class indices, got non-integer values "
                    f"(dtype {tensor.dtype}); pass predictions (argmax), not logits or scores"
                )
        return tensor.to(torch.int64)
    if tensor.dtype == torch.bool:
        return tensor.to(torch.float64)
    if tensor.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {tensor.dtype}")
    return tensor.to(torch.float64)


def _as_bool(name: str, values: TensorLike | Any) -> torch.Tensor:
    """``values`` as a 1-D bool tensor; 0/1 ints are accepted, anything else is a ValueError."""
    tensor = values.detach().cpu() if isinstance(values, torch.Tensor) else torch.as_tensor(values)
    if tensor.dim() != 1:
        raise ValueError(
            f"{name} must be 1-D (one entry per sample), got shape {tuple(tensor.shape)}"
        )
    if tensor.dtype != torch.bool:
        if tensor.numel() and not bool(torch.all((tensor == 0) | (tensor == 1))):
            raise ValueError(f"{name} must be boolean (or 0/1), got other values")
        tensor = tensor != 0
    return tensor


def _same_length(**tensors: torch.Tensor) -> int:
    """The common length of the tensors; ValueError naming them when they differ or are empty."""
    lengths = {name: int(t.shape[0]) for name, t in tensors.items()}
    if len(set(lengths.values())) != 1:
        shown = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"per-sample inputs must have the same length: {shown}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(
            f"{', '.join(lengths)}: no samples (empty inputs); a rate over 0 samples is undefined"
        )
    return n


def _class_indices(**named: TensorLike) -> list[torch.Tensor]:
    """Each named per-sample input as a 1-D int64 CPU tensor (:func:`_as_1d`), in order, checked
    to share one non-zero length (:func:`_same_length`); ValueError naming the bad input."""
    tensors = {name: _as_1d(name, values, integer=True) for name, values in named.items()}
    _same_length(**tensors)
    return list(tensors.values())


def _rate(indicator: torch.Tensor) -> float:
    """Fraction of True in a non-empty bool tensor, as a Python float (exact integer count)."""
    return int(indicator.sum()) / int(indicator.numel())


def _check_unit(name: str, value: float) -> float:
    value = float(value)
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return value


# ------------------------------------------------------------------------------------------
# classification metrics
# ------------------------------------------------------------------------------------------


def benign_accuracy(clean_pred: TensorLike, labels: TensorLike) -> float:
    """BA: fraction of clean inputs classified correctly, ``mean(clean_pred == labels)``.

    Args:
        clean_pred: predicted classes on the clean inputs, int ``(N,)``.
        labels: true classes, int ``(N,)``.
    Returns:
        a float in [0, 1].
    Raises:
        ValueError: different lengths, non-1-D or empty inputs, or non-integer predictions.
    """
    pred, y = _class_indices(clean_pred=clean_pred, labels=labels)
    return _rate(pred == y)


def robust_accuracy(adv_pred: TensorLike, labels: TensorLike) -> float:
    """RA: fraction of adversarial inputs still classified correctly, ``mean(adv_pred == labels)``.

    Args:
        adv_pred: predicted classes on the adversarial inputs, int ``(N,)``.
        labels: true classes of the underlying clean inputs, int ``(N,)``.
    Returns:
        a float in [0, 1].
    """
    pred, y = _class_indices(adv_pred=adv_pred, labels=labels)
    return _rate(pred == y)


def fooling_rate(clean_pred: TensorLike, adv_pred: TensorLike) -> float:
    """Fraction of **all** samples whose predicted label changes, ``mean(adv_pred != clean_pred)``.

    Label-agnostic: a sample misclassified on both inputs counts as fooled when the two wrong
    labels differ, and a correction (wrong -> right) counts too. This is the "ASR" of the
    AdvEncoder and ZePAD code (there averaged per batch; here per sample).

    Args:
        clean_pred: predictions on the clean inputs, int ``(N,)``.
        adv_pred: predictions on the adversarial inputs, int ``(N,)``.
    Returns:
        a float in [0, 1].
    """
    clean, adv = _class_indices(clean_pred=clean_pred, adv_pred=adv_pred)
    return _rate(clean != adv)


def error_rate(adv_pred: TensorLike, labels: TensorLike) -> float:
    """Fraction of adversarial inputs misclassified, ``mean(adv_pred != labels)`` = ``1 - RA``.

    PAP / L4A call this the "attack success rate"; it also counts samples that were already
    misclassified without any attack.

    Returns:
        a float in [0, 1].
    """
    pred, y = _class_indices(adv_pred=adv_pred, labels=labels)
    return _rate(pred != y)


def attack_success_rate(clean_pred: TensorLike, adv_pred: TensorLike, labels: TensorLike) -> float:
    """Fraction of the initially correct samples that the attack makes wrong.

    ``sum(clean_pred == y and adv_pred != y) / sum(clean_pred == y)``.

    Returns:
        a float in [0, 1], or ``nan`` when no sample is classified correctly on clean inputs (the
        rate is then undefined: there is nothing to flip). Records store that as ``null``.
    """
    clean, adv, y = _class_indices(clean_pred=clean_pred, adv_pred=adv_pred, labels=labels)
    correct = clean == y
    n_correct = int(correct.sum())
    if n_correct == 0:
        return math.nan
    return int((correct & (adv != y)).sum()) / n_correct


def target_hit_rate(
    adv_pred: TensorLike,
    target: int | TensorLike,
    labels: TensorLike | None = None,
    exclude_target_class: bool = False,
) -> float:
    """Fraction of triggered/attacked inputs classified as the attacker's ``target`` class.

    By default over **all** inputs, including those whose true class is the target (BadEncoder's
    ASR, docs/methods.md, "Metrics"). With ``exclude_target_class=True`` the inputs whose label
    equals the target are left out (the stricter convention of most backdoor papers); ``labels`` is
    then required.

    Args:
        adv_pred: predictions on the triggered inputs, int ``(N,)``.
        target: the target class (int) or a per-sample target, int ``(N,)``.
        labels: true classes, int ``(N,)``; only needed with ``exclude_target_class``.
        exclude_target_class: drop the samples whose label equals their target.
    Returns:
        a float in [0, 1]; ``nan`` when ``exclude_target_class`` leaves no sample.
    """
    pred = _as_1d("adv_pred", adv_pred, integer=True)
    if isinstance(target, int) or (isinstance(target, torch.Tensor) and target.dim() == 0):
        tgt = torch.full_like(pred, int(target))
    else:
        tgt = _as_1d("target", target, integer=True)
    if labels is None:
        if exclude_target_class:
            raise ValueError("target_hit_rate(exclude_target_class=True) needs labels")
        _same_length(adv_pred=pred, target=tgt)
        return _rate(pred == tgt)
    y = _as_1d("labels", labels, integer=True)
    _same_length(adv_pred=pred, target=tgt, labels=y)
    keep = y != tgt if exclude_target_class else torch.ones_like(y, dtype=torch.bool)
    if not bool(keep.any()):
        return math.nan
    return _rate((pred == tgt)[keep])


def decline_rate(ba: float, ra: float) -> float:
    """AdvEncoder's relative accuracy drop ``(BA - RA) / BA`` (its logs print it x 100).

    Args:
        ba: benign accuracy in [0, 1].
        ra: robust accuracy in [0, 1].
    Returns:
        a float <= 1; in [0, 1] whenever ``RA <= BA`` (negative when the attack *raises* the
        accuracy, which is reported, not clipped); ``nan`` when ``BA == 0``.
    """
    ba = _check_unit("ba", ba)
    ra = _check_unit("ra", ra)
    if ba == 0.0:
        return math.nan
    return (ba - ra) / ba


def summarize(clean_pred: TensorLike, adv_pred: TensorLike, labels: TensorLike) -> dict[str, float]:
    """All label-based metrics of one attack, computed per sample over the same ``N`` samples.

    Returns:
        ``{"benign_accuracy", "robust_accuracy", "fooling_rate", "error_rate",
        "attack_success_rate"}`` (see :data:`SUMMARY_KEYS`), floats in [0, 1]
        (``attack_success_rate`` may be ``nan``, see :func:`attack_success_rate`).
    """
    clean, adv, y = _class_indices(clean_pred=clean_pred, adv_pred=adv_pred, labels=labels)
    return {
        "benign_accuracy": benign_accuracy(clean, y),
        "robust_accuracy": robust_accuracy(adv, y),
        "fooling_rate": fooling_rate(clean, adv),
        "error_rate": error_rate(adv, y),
        "attack_success_rate": attack_success_rate(clean, adv, y),
    }


def mean_of_batch_accuracies(pred: TensorLike, labels: TensorLike, batch_size: int) -> float:
    """The CGCL code's accuracy: the **mean of per-batch accuracies** over consecutive batches.

    Kept only to reproduce their numbers and to show the bias: when ``N`` is not a multiple of
    ``batch_size`` the samples of the smaller last batch weigh more than the others, so this
    differs from :func:`benign_accuracy` (e.g. 10,000 CIFAR-10 test images in batches of 256 leave
    a last batch of 16 images weighted 16x each of the others'). Do not use for reporting.

    Returns:
        a float in [0, 1].
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    p, y = _class_indices(pred=pred, labels=labels)
    n = len(p)
    means = [_rate(p[s : s + batch_size] == y[s : s + batch_size]) for s in range(0, n, batch_size)]
    return sum(means) / len(means)


# ------------------------------------------------------------------------------------------
# detection metrics
# ------------------------------------------------------------------------------------------


def _detection_inputs(
    scores: TensorLike, is_adversarial: TensorLike
) -> tuple[torch.Tensor, torch.Tensor]:
    s = _as_1d("scores", scores, integer=False)
    truth = _as_bool("is_adversarial", is_adversarial)
    _same_length(scores=s, is_adversarial=truth)
    if bool(torch.isnan(s).any()):
        raise ValueError("scores contain NaN; a detector score must be a number for every sample")
    return s, truth


def _both_classes(truth: torch.Tensor, what: str) -> tuple[int, int]:
    n_pos = int(truth.sum())
    n_neg = int(truth.numel()) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"{what} needs both adversarial and clean samples; got {n_pos} adversarial and "
            f"{n_neg} clean"
        )
    return n_pos, n_neg


def detection_accuracy(scores: TensorLike, is_adversarial: TensorLike, threshold: float) -> float:
    """Fraction of samples a threshold detector labels correctly.

    A sample is flagged adversarial iff ``score > threshold`` (strict; higher score = more
    suspicious). Accuracy = ``mean(flagged == is_adversarial)`` over clean and adversarial samples
    together (so it depends on their proportion).

    Args:
        scores: detector score per sample, float ``(N,)``.
        is_adversarial: ground truth per sample, bool (or 0/1) ``(N,)``.
        threshold: the decision threshold.
    Returns:
        a float in [0, 1].
    """
    s, truth = _detection_inputs(scores, is_adversarial)
    return _rate((s > float(threshold)) == truth)


def auroc(scores: TensorLike, is_adversarial: TensorLike) -> float:
    """Exact area under the ROC curve (adversarial = positive, higher score = more adversarial).

    Equals the normalised Mann-Whitney U statistic: the probability that a random adversarial
    sample scores higher than a random clean one, ties counting one half::

        AUROC = (#{(p, n): s_p > s_n} + 0.5 * #{(p, n): s_p == s_n}) / (n_pos * n_neg)

    Computed exactly in integer arithmetic with a sort and binary searches, O(N log N).

    Returns:
        a float in [0, 1] (1.0 perfect separation, 0.0 reversed, 0.5 all scores tied).
    Raises:
        ValueError: NaN scores, or only one class present (AUROC undefined).
    """
    s, truth = _detection_inputs(scores, is_adversarial)
    n_pos, n_neg = _both_classes(truth, "auroc")
    negatives = torch.sort(s[~truth]).values
    positives = s[truth]
    below = torch.searchsorted(negatives, positives, right=False)  # negatives strictly below
    below_or_equal = torch.searchsorted(negatives, positives, right=True)
    twice_u = int((below + below_or_equal).sum())  # 2 * (#greater + 0.5 * #ties)
    return twice_u / (2 * n_pos * n_neg)


def threshold_at_fpr(scores: TensorLike, is_adversarial: TensorLike, fpr: float = 0.05) -> float:
    """The smallest threshold ``t`` whose rule ``score > t`` has an empirical FPR <= ``fpr``.

    With the clean scores sorted in decreasing order ``c_1 >= c_2 >= ... >= c_n`` and
    ``m = floor(fpr * n)`` false positives allowed, ``t = c_{m+1}``: at most ``m`` clean samples
    score strictly above it (fewer when scores tie at ``t``), and any smaller threshold would flag
    at least ``m + 1`` of them. ``t = -inf`` when ``m >= n`` (``fpr == 1``). No interpolation and no
    randomised tie-breaking: the achieved FPR never exceeds the requested one.

    Returns:
        the threshold (a float, possibly ``-inf``).
    """
    fpr = _check_unit("fpr", fpr)
    s, truth = _detection_inputs(scores, is_adversarial)
    _both_classes(truth, "threshold_at_fpr")
    negatives = torch.sort(s[~truth], descending=True).values
    allowed = int(math.floor(fpr * negatives.numel() + 1e-9))
    if allowed >= negatives.numel():
        return -math.inf
    return float(negatives[allowed])


def tpr_at_fpr(scores: TensorLike, is_adversarial: TensorLike, fpr: float = 0.05) -> float:
    """True-positive rate of the detector at a false-positive rate of at most ``fpr``.

    Threshold convention: the rule ``score > t`` with ``t = threshold_at_fpr(scores,
    is_adversarial, fpr)``, i.e. the most permissive threshold whose empirical FPR on the clean
    samples does not exceed ``fpr`` (conservative; samples tied at ``t`` are not flagged). The
    result is ``mean(score_adv > t)``; :func:`detection_accuracy` with the same ``t`` uses the same
    rule.

    Args:
        scores: detector score per sample (higher = more adversarial), float ``(N,)``.
        is_adversarial: ground truth, bool ``(N,)``; both classes must be present.
        fpr: the allowed false-positive rate in [0, 1] (default 5 %).
    Returns:
        a float in [0, 1].
    """
    threshold = threshold_at_fpr(scores, is_adversarial, fpr)
    s, truth = _detection_inputs(scores, is_adversarial)
    return _rate(s[truth] > threshold)
