"""Training losses of the adversarial fine-tuning defenses (pure functions on logits).

* :func:`pgd_at_loss`: ``mean_i CE(z_adv_i, y_i)`` (PGD adversarial training);
* :func:`trades_loss`: ``CE(z_clean, y) + beta * KL(p_clean || p_adv)`` (batch means);
* :func:`trades_inner_objective`: per-sample ``KL(p_clean || p_adv)``, TRADES' inner maximisation;
* :func:`mart_loss`: ``mean_i [BCE(p_adv_i, y_i) + beta * KL(p_clean_i || p_adv_i) *
  (1 - p_clean_i[y_i])]``;
* :func:`genetic_regularization`: Gen-AF's genetic regularisation ``L_GR`` (fuzzy-graph binary KL).

References:

* Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to Adversarial
  Attacks", ICLR 2018 (PGD-AT: minimise the CE of the PGD adversarial example).
* Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, "Theoretically Principled Trade-off between Robustness
  and Accuracy", ICML 2019 (TRADES).
* Wang, Zou, Yi, Bailey, Ma, Gu, "Improving Adversarial Robustness Requires Revisiting
  Misclassified Examples", ICLR 2020 (MART).
* Zhou, Hu, Zhang, Li, Li, Jin, "Securely Fine-tuning Pre-trained Encoders Against Adversarial
  Examples", IEEE S&P 2024 (Gen-AF; genetic regularisation as specified in docs/methods.md,
  "Defenses").

All functions are implemented from the papers and docs/methods.md (no code copied from the official
repositories). Gradients flow through every tensor argument unless a docstring says otherwise.

Conventions (as in :mod:`encshield.ssl.losses`): hyper-parameters out of range raise
:class:`~encshield.errors.ConfigError`; tensors of the wrong shape or type raise
:class:`ValueError` / :class:`TypeError`; messages name the argument and the observed value.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from encshield.errors import ConfigError
from encshield.precision import full_precision

__all__ = [
    "genetic_regularization",
    "mart_loss",
    "pgd_at_loss",
    "trades_inner_objective",
    "trades_loss",
]

Reduction = Literal["sum", "mean", "none"]


# ------------------------------------------------------------------------------ validation
def _matrix(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating tensor of shape (N, C), got dtype {x.dtype} and shape "
            f"{tuple(x.shape)}"
        )
    return x


def _label_vector(labels: object, n: int, name: str = "labels") -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.is_floating_point() or labels.shape[0] != n:
        raise ValueError(
            f"{name} must be an integer tensor of shape ({n},), got dtype {labels.dtype} and "
            f"shape {tuple(labels.shape)}"
        )
    return labels


def _logits_and_labels(
    logits: object, labels: object, name: str, *, min_classes: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    z = _matrix(logits, name)
    y = _label_vector(labels, z.shape[0])
    if z.shape[1] < min_classes:
        raise ValueError(f"{name} needs at least {min_classes} classes, got shape {tuple(z.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= z.shape[1]):
        raise ValueError(
            f"labels must lie in [0, {z.shape[1]}), got range [{int(y.min())}, {int(y.max())}]"
        )
    return z, y


def _same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )


def _beta(beta: float) -> float:
    beta = float(beta)
    if not beta >= 0.0 or beta == float("inf"):
        raise ConfigError(f"beta must be a finite number >= 0, got {beta!r}")
    return beta


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` per row from log-probabilities ``(N, C)`` -> ``(N,)`` (0 log 0 = 0)."""
    # log-softmax is finite for finite logits, so an underflowed p == 0 contributes exactly 0
    # (and no 0 * inf NaN appears in the backward pass).
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


# ------------------------------------------------------------------------------ PGD-AT
@full_precision
def pgd_at_loss(logits_adv: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PGD adversarial training loss (Madry et al., ICLR 2018): ``mean_i CE(z_adv_i, y_i)``.

    The inner attack (L-inf PGD on the same CE) is run by the caller; this is the outer
    minimisation. Kept, although trivial, so every defense exposes a loss of the same form.

    Args:
        logits_adv: logits of the adversarial examples, float ``(N, C)``.
        labels: true classes, int64 ``(N,)``.

    Returns:
        Scalar tensor, the batch mean of the cross-entropy.
    """
    z, y = _logits_and_labels(logits_adv, labels, "logits_adv")
    return F.cross_entropy(z, y)


# ------------------------------------------------------------------------------ TRADES
@full_precision
def trades_inner_objective(outputs_adv: torch.Tensor, clean_probs: torch.Tensor) -> torch.Tensor:
    """Per-sample TRADES inner objective ``KL(p_clean_i || softmax(z_adv_i))`` ``(N,)``.

    TRADES (Zhang et al., ICML 2019, Eq. 5 / Alg. 1) crafts ``x_adv`` by *maximising* the KL
    divergence between the clean and the adversarial output distributions (no labels involved).
    This function has the signature of an encshield white-box attack objective
    ``objective(outputs, reference) -> (N,)`` (see :mod:`encshield.attacks.whitebox.objectives`),
    so it can be passed as ``objective=trades_inner_objective`` with ``y = clean_probs``.

    Args:
        outputs_adv: logits of the current adversarial batch, float ``(N, C)``.
        clean_probs: ``softmax(z_clean)`` of the clean batch, float ``(N, C)``, rows summing to 1.
            The caller passes it **detached** (it is a constant of the inner problem); it is used
            as given (the function itself does not detach it).

    Returns:
        ``(N,)`` tensor ``sum_k q_k (log q_k - log_softmax(z_adv)_k)`` >= 0 with ``q = clean_probs``
        (``0 log 0 = 0``).
    """
    z = _matrix(outputs_adv, "outputs_adv")
    q = _matrix(clean_probs, "clean_probs")
    _same_shape(z, q, "outputs_adv", "clean_probs")
    # q == 0 entries: log is evaluated at the smallest normal float, so q * log q == 0 exactly.
    log_q = torch.log(q.clamp_min(torch.finfo(q.dtype).tiny))
    return (q * (log_q - F.log_softmax(z, dim=1))).sum(dim=1)


# The reference is a float (N, C) tensor: white-box attacks treat it like a feature reference
# (no success test; the highest-objective point is kept).
trades_inner_objective.reference_kind = "features"  # type: ignore[attr-defined]


@full_precision
def trades_loss(
    logits_clean: torch.Tensor,
    logits_adv: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 6.0,
) -> torch.Tensor:
    """TRADES outer loss (Zhang et al., ICML 2019, Eq. 5).

    ``L = mean_i CE(z_clean_i, y_i) + beta * mean_i sum_k p_clean_ik log(p_clean_ik / p_adv_ik)``

    i.e. the KL term is summed over classes and averaged over the batch ("batchmean"). The
    adversarial example is produced by an inner attack that **maximises** the KL term
    (:func:`trades_inner_objective`, clean probabilities detached there); in this outer loss
    gradients flow through both ``logits_clean`` and ``logits_adv``. ``beta`` = 1/lambda trades
    accuracy for robustness (6.0 is the paper's CIFAR-10 value).

    Args:
        logits_clean: logits of the clean batch, float ``(N, C)``.
        logits_adv: logits of the adversarial batch, float ``(N, C)``.
        labels: true classes, int64 ``(N,)``.
        beta: weight of the KL term, >= 0.

    Returns:
        Scalar tensor.
    """
    zc, y = _logits_and_labels(logits_clean, labels, "logits_clean")
    za = _matrix(logits_adv, "logits_adv")
    _same_shape(zc, za, "logits_clean", "logits_adv")
    beta = _beta(beta)
    ce = F.cross_entropy(zc, y)
    kl = _kl_rows(F.log_softmax(zc, dim=1), F.log_softmax(za, dim=1)).mean()
    return ce + beta * kl


# ------------------------------------------------------------------------------ MART
@full_precision
def mart_loss(
    logits_clean: torch.Tensor,
    logits_adv: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 6.0,
) -> torch.Tensor:
    """MART loss (Wang et al., ICLR 2020, Eq. 7/8), batch mean.

    ``L = mean_i [ BCE(p_adv_i, y_i) + beta * KL(p_clean_i || p_adv_i) * (1 - p_clean_i[y_i]) ]``

    with the boosted cross-entropy ``BCE(p, y) = -log p_y - log(1 - max_{k != y} p_k)``. The second
    log is evaluated exactly and stably as ``logsumexp(z) - logsumexp(z_{k != m})`` with
    ``m = argmax_{k != y} p_k`` (no additive fudge constant), so it stays finite for extreme
    logits. Nothing is detached: the misclassification weight ``1 - p_clean[y]`` also receives
    gradients, as in the paper's objective. The inner attack (PGD on CE of ``x_adv``) is run by
    the caller.

    Args:
        logits_clean: logits of the clean batch, float ``(N, C)``, ``C >= 2``.
        logits_adv: logits of the adversarial batch, float ``(N, C)``.
        labels: true classes, int64 ``(N,)``.
        beta: weight of the misclassification-aware KL term, >= 0.

    Returns:
        Scalar tensor.
    """
    zc, y = _logits_and_labels(logits_clean, labels, "logits_clean", min_classes=2)
    za = _matrix(logits_adv, "logits_adv")
    _same_shape(zc, za, "logits_clean", "logits_adv")
    beta = _beta(beta)
    true_mask = F.one_hot(y, za.shape[1]).bool()
    # -log(1 - max_{k != y} p_k) = logsumexp(z) - logsumexp(z without the runner-up class m).
    runner_up = za.masked_fill(true_mask, float("-inf")).argmax(dim=1)
    without_m = za.masked_fill(F.one_hot(runner_up, za.shape[1]).bool(), float("-inf"))
    boost = torch.logsumexp(za, dim=1) - torch.logsumexp(without_m, dim=1)
    bce = F.cross_entropy(za, y, reduction="none") + boost
    log_pc = F.log_softmax(zc, dim=1)
    p_clean_true = log_pc.exp().gather(1, y[:, None]).squeeze(1)
    kl = _kl_rows(log_pc, F.log_softmax(za, dim=1))
    return (bce + beta * kl * (1.0 - p_clean_true)).mean()


# ------------------------------------------------------------------------------ Gen-AF
def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows; a row whose normalisation is undefined (zero or NaN) becomes 0."""
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    return torch.nan_to_num(x / safe, nan=0.0)


def _offset_distances(x: torch.Tensor) -> torch.Tensor:
    """Steps 2-3 of L_GR: ``d_ij - rho_i`` with the diagonal set to 0, ``(N, N)``."""
    u = _unit_rows(x)
    d = 1.0 - u @ u.T
    n = d.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=d.device)
    if n > 1:
        rho = d.masked_fill(eye, float("inf")).amin(dim=1, keepdim=True)
    else:  # a single sample has no neighbour: no offset
        rho = torch.zeros_like(d[:, :1])
    return (d - rho).masked_fill(eye, 0.0)


def _row_probabilities(dist: torch.Tensor) -> torch.Tensor:
    """Step 5 of L_GR: ``S = 1 - D``, ``(S + 1) / 2``, rows normalised to sum 1."""
    s = (2.0 - dist) / 2.0  # == ((1 - D) + 1) / 2
    return s / s.sum(dim=1, keepdim=True)


@full_precision
def genetic_regularization(
    a: torch.Tensor,
    b: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    *,
    tanh_scale: float = 32.0,
    shift: float = 2.0,
    eps: float = 1e-7,
    reduction: Reduction = "sum",
) -> torch.Tensor:
    """Gen-AF genetic regularisation ``L_GR(A, B, y, w)`` (Zhou et al., IEEE S&P 2024).

    The variant of Gen-AF's code, as written in docs/methods.md, "Defenses" (steps 1-6); Gen-AF
    calls it with ``A = z_clean`` (the "model side"), ``B = z_adv`` (the "target side") and
    ``w_i = CE(z_clean_i, y_i)``, and trains on ``CE(z_adv, y) + 20 * L_GR``. A UMAP-like
    fuzzy-graph cross-entropy that asks the neighbourhood graph of ``A`` to match a label-adjusted
    graph of ``B``:

    1. ``W_ij = tanh((w_i + w_j) / tanh_scale)``; ``M_ij = +1`` if ``y_i != y_j`` else ``-1``
       (so ``M_ii = -1``); ``Delta_ij = shift * M_ij * W_ij``.
    2. L2-normalise the rows of A and B (undefined rows, e.g. all-zero ones, become 0);
       cosine distances ``d_ij = 1 - cos(x_i, x_j)``.
    3. nearest-neighbour offset: ``rho_i = min_{j != i} d_ij`` (the diagonal is excluded, not
       "the second-smallest entry"); ``d_ij - rho_i``, then the diagonal is set to 0.
    4. ``D^A = clamp(d^A - rho^A, eps, 2 - eps)``;
       ``D^B = clamp((1 - W) * (d^B - rho^B) + Delta, eps, 2 - eps)``, applied to the whole
       matrix including the zeroed diagonal: ``D^A_ii = eps`` and, for weights >= 0,
       ``D^B_ii = clamp(Delta_ii, ...) = clamp(-shift * tanh(2 w_i / tanh_scale), ...) = eps``.
    5. ``S = 1 - D``, mapped to [0, 1] by ``(S + 1) / 2``, each row (diagonal included) normalised
       to sum 1 -> ``P^A``, ``P^B``.
    6. both ``P`` clamped to ``[eps, 1 - eps]``, then the element-wise binary KL
       ``P^B log(P^B / P^A) + (1 - P^B) log((1 - P^B) / (1 - P^A))`` over all ``N x N`` entries
       (diagonal included), reduced by ``reduction``.

    Every term is a Bernoulli KL between valid probabilities, so the loss is >= 0 and is 0 when
    ``P^A == P^B``. ``rho`` is not detached (the minimum passes its gradient to the nearest
    neighbour's distance). Gradients flow through ``a``, ``b`` **and** ``weights``: the weights are
    not detached, as in Gen-AF's code (pass ``weights.detach()`` to treat them as constants).
    With ``N = 1`` there is no pair and the loss is 0.

    Args:
        a: model side ("A", clean logits or features), float ``(N, K_a)``.
        b: target side ("B", adversarial logits or features), float ``(N, K_b)``.
        labels: classes, integer ``(N,)``.
        weights: per-sample hardness ``w_i`` (Gen-AF: the per-sample clean CE), float ``(N,)``.
        tanh_scale: the constant dividing ``w_i + w_j`` inside the tanh (32), > 0.
        shift: target shift magnitude (2.0), >= 0.
        eps: clamp of the distances and of the probabilities (1e-7), in (0, 0.5).
        reduction: ``"sum"`` (Gen-AF's code) over the ``N x N`` terms, ``"mean"`` over the
            ``N x N`` terms, or ``"none"`` for the ``(N, N)`` matrix of terms.

    Returns:
        Scalar tensor (``(N, N)`` for ``reduction="none"``).
    """
    a = _matrix(a, "a")
    b = _matrix(b, "b")
    n = a.shape[0]
    if b.shape[0] != n:
        raise ValueError(f"a and b must have the same number of rows, got {n} and {b.shape[0]}")
    y = _label_vector(labels, n)
    if not isinstance(weights, torch.Tensor):
        raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    if weights.shape != (n,) or not weights.is_floating_point():
        raise ValueError(
            f"weights must be a floating tensor of shape ({n},), got dtype {weights.dtype} and "
            f"shape {tuple(weights.shape)}"
        )
    if not float(tanh_scale) > 0.0:
        raise ConfigError(f"tanh_scale must be > 0, got {tanh_scale!r}")
    if not float(shift) >= 0.0:
        raise ConfigError(f"shift must be >= 0, got {shift!r}")
    if not 0.0 < float(eps) < 0.5:
        raise ConfigError(f"eps must lie in (0, 0.5), got {eps!r}")
    if reduction not in ("sum", "mean", "none"):
        raise ConfigError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")

    # step 1: pair weights and label-dependent shift
    w = weights.to(a.dtype)
    pair_w = torch.tanh((w[:, None] + w[None, :]) / float(tanh_scale))
    sign = torch.where(y[:, None] != y[None, :], 1.0, -1.0).to(a.dtype)
    delta = float(shift) * sign * pair_w
    # steps 2-3: unit rows, cosine distances, nearest-neighbour offset, zero diagonal
    off_a = _offset_distances(a)
    off_b = _offset_distances(b)
    # step 4: model side and label-adjusted target side
    dist_a = off_a.clamp(eps, 2.0 - eps)
    dist_b = ((1.0 - pair_w) * off_b + delta).clamp(eps, 2.0 - eps)
    # step 5: similarities -> row-stochastic membership matrices
    p_a = _row_probabilities(dist_a).clamp(eps, 1.0 - eps)
    p_b = _row_probabilities(dist_b).clamp(eps, 1.0 - eps)
    # step 6: element-wise binary KL(P^B || P^A)
    terms = p_b * torch.log(p_b / p_a) + (1.0 - p_b) * torch.log((1.0 - p_b) / (1.0 - p_a))
    if reduction == "none":
        return terms
    return terms.sum() if reduction == "sum" else terms.mean()
