"""Predictive, distillation and clustering SSL losses: BYOL, SimSiam, ReSSL, DINO, SwAV."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from encshield.errors import ConfigError
from encshield.precision import full_precision
from encshield.ssl.losses._common import (
    Views,
    _as_views,
    _check_2d,
    _check_positive,
    _check_queue,
    _check_same,
)

# --------------------------------------------------------------------------------------------
# predictor / distillation losses
# --------------------------------------------------------------------------------------------


@full_precision
def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL's regression loss (Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, eq. (2)).

    ``mean_i (2 - 2 cos(p_i, z_i))``, the squared distance of the L2-normalised vectors; the
    target ``z`` (momentum network projection) is detached. The caller symmetrises (the paper
    sums the two directions; solo-learn sums them too).

    Args:
        p: online predictions ``(N, D)``.
        z: target projections ``(N, D)`` of the other view.

    Returns:
        Scalar loss in ``[0, 4]``.
    """
    _check_same("p", p, "z", z)
    cos = (F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(dim=1)
    return (2.0 - 2.0 * cos).mean()


@full_precision
def simsiam_loss(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's loss (Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021,
    eq. (1) with the stop-gradient of eq. (3)).

    ``-mean_i cos(p_i, stopgrad(z_i))``. The caller symmetrises:
    ``(simsiam_loss(p1, z2) + simsiam_loss(p2, z1)) / 2`` (the paper's ``L = D/2 + D/2``).

    Args:
        p: predictions ``(N, D)``.
        z: projections ``(N, D)`` of the other view (detached here).

    Returns:
        Scalar loss in ``[-1, 1]``.
    """
    _check_same("p", p, "z", z)
    cos = (F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(dim=1)
    return -cos.mean()


@full_precision
def ressl_loss(
    q: Tensor,
    k: Tensor,
    queue: Tensor,
    temperature_q: float = 0.1,
    temperature_k: float = 0.04,
) -> Tensor:
    """ReSSL's relation loss (Zheng, You, Wang, Qian, Zhang, Wang, Xu, "ReSSL: Relational
    Self-Supervised Learning with Weak Augmentation", NeurIPS 2021, eqs. (2)-(4)).

    The relation of a sample to the queue is a softmax over cosine similarities:
    ``p_q = softmax(q . queue^T / T_q)`` (student, strong view) and
    ``p_k = softmax(k . queue^T / T_k)`` (teacher, weak view, detached, sharper since
    ``T_k < T_q``). The loss is the cross-entropy ``mean_i -sum_j p_k[i, j] log p_q[i, j]``,
    which equals the paper's ``KL(p_k || p_q)`` up to the teacher entropy, a constant with zero
    gradient. ``q`` and ``k`` are L2-normalised here; the queue holds earlier normalised teacher
    embeddings (see :func:`enqueue`).

    Args:
        q: student projections ``(N, D)``.
        k: teacher projections ``(N, D)``.
        queue: ``(K, D)``, already normalised.
        temperature_q: 0.1 (paper and solo-learn CIFAR).
        temperature_k: 0.04 (paper and solo-learn CIFAR).

    Returns:
        Scalar loss.
    """
    _check_same("q", q, "k", k)
    _check_queue(queue, q)
    _check_positive("temperature_q", temperature_q)
    _check_positive("temperature_k", temperature_k)
    queue = queue.detach().to(q.dtype)
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    log_p_q = F.log_softmax(q @ queue.T / temperature_q, dim=1)
    p_k = F.softmax(k @ queue.T / temperature_k, dim=1)
    return -(p_k * log_p_q).sum(dim=1).mean()


@full_precision
def dino_loss(
    student_out: Views,
    teacher_out: Views,
    center: Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> Tensor:
    """DINO's self-distillation loss (Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin,
    "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021, eq. (3), Alg. 1).

    Teacher view ``i``: ``P_t^i = softmax((t_i - center) / teacher_temp)`` (detached; centring
    and sharpening). Student view ``j``: ``log P_s^j = log_softmax(s_j / student_temp)``. The loss
    is the cross-entropy ``mean_n -sum_k P_t^i log P_s^j`` averaged over all pairs ``(i, j)`` with
    ``i != j``. Teacher view ``i`` must be the same crop as student view ``i``: pass the global
    crops first in ``student_out`` and the local crops after them (multi-crop).

    The caller schedules ``teacher_temp`` (DINO and solo-learn: linear warm-up from 0.04 to 0.07
    over the first epochs; solo-learn uses 50 epochs on CIFAR) and updates the centre with
    :func:`dino_center_update` after the step.

    Args:
        student_out: ``(V_s, N, K)`` or a sequence of ``V_s`` tensors ``(N, K)`` (logits).
        teacher_out: ``(V_t, N, K)`` or a sequence of ``V_t`` tensors ``(N, K)``, ``V_t <= V_s``
            typically (the 2 global crops).
        center: ``(1, K)`` or ``(K,)``.
        student_temp: 0.1 (paper and solo-learn).
        teacher_temp: 0.04 (the warm-up start; the value solo-learn starts CIFAR runs with).

    Returns:
        Scalar loss.
    """
    s_views = _as_views("student_out", student_out)
    t_views = _as_views("teacher_out", teacher_out)
    _check_positive("student_temp", student_temp)
    _check_positive("teacher_temp", teacher_temp)
    if s_views[0].shape != t_views[0].shape:
        raise ValueError(
            f"student and teacher views must have the same (N, K) shape, got "
            f"{tuple(s_views[0].shape)} and {tuple(t_views[0].shape)}"
        )
    k = s_views[0].shape[1]
    if center.numel() != k:
        raise ValueError(f"center must have shape (1, {k}) or ({k},), got {tuple(center.shape)}")
    center = center.detach().reshape(1, k)
    teacher = [F.softmax((t.detach() - center) / teacher_temp, dim=1) for t in t_views]
    student = [F.log_softmax(s / student_temp, dim=1) for s in s_views]
    total: Tensor | None = None
    pairs = 0
    for i, p_t in enumerate(teacher):
        for j, log_p_s in enumerate(student):
            if i == j:
                continue
            term = -(p_t * log_p_s).sum(dim=1).mean()
            total = term if total is None else total + term
            pairs += 1
    if total is None:
        raise ValueError("DINO needs at least one (teacher view, other student view) pair")
    return total / pairs


@full_precision
def dino_center_update(center: Tensor, teacher_out: Views, momentum: float = 0.9) -> Tensor:
    """DINO's centre update (Caron et al., ICCV 2021, eq. (4)).

    ``center <- momentum * center + (1 - momentum) * mean_{views, samples} teacher_out``.
    Pure and gradient-free: returns the new centre with the shape of ``center``. In distributed
    training the caller all-reduces the batch mean first (DINO averages over all GPUs).

    Args:
        center: ``(1, K)`` or ``(K,)``.
        teacher_out: ``(V, N, K)`` or a sequence of ``(N, K)`` teacher logits.
        momentum: 0.9 (paper and solo-learn).

    Returns:
        New centre, same shape as ``center``.
    """
    views = _as_views("teacher_out", teacher_out)
    if not 0.0 <= momentum <= 1.0:
        raise ConfigError(f"momentum must be in [0, 1], got {momentum!r}")
    k = views[0].shape[1]
    if center.numel() != k:
        raise ValueError(f"center must have shape (1, {k}) or ({k},), got {tuple(center.shape)}")
    with torch.no_grad():
        batch_center = torch.cat([v.detach() for v in views], dim=0).mean(dim=0)
        new = momentum * center.detach().reshape(k) + (1.0 - momentum) * batch_center
    return new.reshape(center.shape).to(center.dtype)


# --------------------------------------------------------------------------------------------
# clustering
# --------------------------------------------------------------------------------------------


@full_precision
def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """SwAV's equal-partition code assignment (Caron, Misra, Mairal, Goyal, Bojanowski, Joulin,
    "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments", NeurIPS 2020,
    eq. (3)-(5); Cuturi, "Sinkhorn Distances", NeurIPS 2013).

    Starts from ``exp(scores / epsilon)`` and alternately rescales the prototypes (columns) to
    total mass ``1/K`` and the samples (rows) to total mass ``1/N``; returns the assignments
    multiplied by ``N``. The iterations run in the log domain (the same fixed point, but no
    overflow/underflow for small ``epsilon``) and without gradient (SwAV's codes are targets).

    Args:
        scores: ``(N, K)`` similarities of the normalised projections to the normalised
            prototypes.
        epsilon: entropic regularisation, 0.05 (paper and solo-learn).
        iterations: 3 (paper and solo-learn).

    Returns:
        ``Q`` ``(N, K)``, detached, same dtype as ``scores``: every row sums to 1 exactly, every
        column sums to about ``N / K`` (exactly in the limit of many iterations).
    """
    _check_2d("scores", scores)
    _check_positive("epsilon", epsilon)
    if iterations < 1:
        raise ConfigError(f"iterations must be >= 1, got {iterations!r}")
    n, k = scores.shape
    with torch.no_grad():
        work = scores.detach()
        if work.dtype in (torch.float16, torch.bfloat16):
            work = work.float()
        log_q = work / epsilon
        for _ in range(iterations):
            log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(k)
            log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(n)
        q = torch.exp(log_q) * n
    return q.to(scores.dtype)


@full_precision
def swav_loss(
    scores1: Tensor, scores2: Tensor, q1: Tensor, q2: Tensor, temperature: float = 0.1
) -> Tensor:
    """SwAV's swapped-prediction loss (Caron et al., NeurIPS 2020, eqs. (1)-(2)).

    ``-1/2 mean_n [ sum_k q1 log softmax(scores2 / T) + sum_k q2 log softmax(scores1 / T) ]``:
    the code of each view (``q = sinkhorn_knopp(scores)``, detached here) is predicted from the
    other view's prototype scores.

    Args:
        scores1, scores2: ``(N, K)`` prototype scores of the two views (gradient flows).
        q1, q2: ``(N, K)`` codes of the two views (rows sum to 1).
        temperature: 0.1 (paper and solo-learn CIFAR).

    Returns:
        Scalar loss.
    """
    _check_same("scores1", scores1, "scores2", scores2)
    _check_same("q1", q1, "scores1", scores1)
    _check_same("q2", q2, "scores2", scores2)
    _check_positive("temperature", temperature)
    log_p1 = F.log_softmax(scores1 / temperature, dim=1)
    log_p2 = F.log_softmax(scores2 / temperature, dim=1)
    term1 = (q1.detach() * log_p2).sum(dim=1).mean()
    term2 = (q2.detach() * log_p1).sum(dim=1).mean()
    return -0.5 * (term1 + term2)
