"""Loss functions of the self-supervised learning (SSL) methods used to train victim encoders.

Every function here is pure: it takes already-computed projections / predictions (and, for the
momentum methods, the already-computed targets and memory queue) and returns a scalar loss.
Nothing here keeps state. The stateful parts of the methods (momentum encoders, the MoCo / NNCLR /
ReSSL queues, the DINO centre, the teacher-temperature schedule) are updated by the caller; where
such an update is part of a method's maths it is provided as a small pure helper that returns the
new value (:func:`enqueue`, :func:`dino_center_update`, :func:`sinkhorn_knopp`,
:func:`nearest_neighbour`, :func:`whiten`, :func:`iternorm`).

Conventions
-----------
* Shapes: ``N`` batch size, ``D`` embedding dimension, ``K`` queue length or number of
  prototypes, ``V`` number of views.
* Targets are detached inside the loss wherever the method stops their gradient (BYOL, SimSiam,
  MoCo, MoCo v3, ReSSL, DINO teacher, SwAV codes), so a caller cannot leak gradient into a target
  network by mistake.
* "Caller symmetrises": the asymmetric losses (BYOL, SimSiam, MoCo v2+, MoCo v3, NNCLR, ReSSL)
  compute one direction; the training step adds the view-swapped term itself, exactly as the
  papers' pseudo-code does (e.g. ``mocov3_loss(q1, k2) + mocov3_loss(q2, k1)``, or the mean of
  the two for BYOL/SimSiam/NNCLR/MoCo v2+ as in solo-learn).
* Defaults are the solo-learn CIFAR settings (``scripts/pretrain/cifar/*.yaml`` and the method
  defaults of solo-learn), which are also the papers' settings unless stated otherwise.
* Bad hyper-parameters raise :class:`~encshield.errors.ConfigError`; tensors of the wrong shape
  raise :class:`ValueError`. Both messages name the argument and the observed value.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from encshield.errors import ConfigError

__all__ = [
    "barlow_twins_loss",
    "byol_loss",
    "dino_center_update",
    "dino_loss",
    "enqueue",
    "infonce_loss",
    "iternorm",
    "mocov3_loss",
    "nearest_neighbour",
    "nnclr_loss",
    "nt_xent_loss",
    "nt_xent_multiview_loss",
    "ressl_loss",
    "simsiam_loss",
    "sinkhorn_knopp",
    "swav_loss",
    "vibcreg_loss",
    "vibcreg_terms",
    "vicreg_loss",
    "vicreg_terms",
    "whiten",
    "wmse_loss",
]

Views = Sequence[Tensor] | Tensor
_F = TypeVar("_F", bound=Callable[..., Any])


def _float32(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_float32(v) for v in value)
    return value


def full_precision(fn: _F) -> _F:
    """Run a loss in float32 even inside an autocast region (bf16/fp16 mixed precision).

    Under autocast the encoder and heads run in half precision, but similarity matrices at
    temperature 0.1-0.2, exponentials and the Cholesky/eigen factorisations of the whitening
    losses need float32: floating-point tensor arguments are cast to float32 and autocast is
    disabled for the loss. Without autocast this adds nothing (float32 inputs pass unchanged).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
        device = tensors[0].device.type if tensors else "cpu"
        if not torch.is_autocast_enabled(device):
            return fn(*args, **kwargs)
        with torch.autocast(device, enabled=False):
            return fn(*_float32(args), **{k: _float32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_2d(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got shape {tuple(x.shape)}")


def _check_same(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    _check_2d(name_a, a)
    _check_2d(name_b, b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def _check_nonnegative(name: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")


def _check_batch(name: str, x: Tensor, minimum: int = 2) -> None:
    if x.shape[0] < minimum:
        raise ValueError(
            f"{name} needs at least {minimum} samples (batch statistics), got N={x.shape[0]}"
        )


def _as_views(name: str, views: Views) -> list[Tensor]:
    """A ``(V, N, D)`` tensor or a sequence of ``(N, D)`` tensors -> list of ``(N, D)``."""
    if isinstance(views, Tensor):
        if views.dim() != 3:
            raise ValueError(
                f"{name} must be a (V, N, D) tensor or a sequence of (N, D) tensors, got shape "
                f"{tuple(views.shape)}"
            )
        out = list(views.unbind(0))
    else:
        out = list(views)
    if not out:
        raise ValueError(f"{name} is empty: at least one view is needed")
    for i, v in enumerate(out):
        _check_2d(f"{name}[{i}]", v)
        if v.shape != out[0].shape:
            raise ValueError(
                f"all views of {name} must have the same shape, got {tuple(out[0].shape)} and "
                f"{tuple(v.shape)} (view {i})"
            )
    return out


def _off_diagonal(m: Tensor) -> Tensor:
    """The square matrix ``m`` with its diagonal set to zero (differentiable, out of place)."""
    return m - torch.diag_embed(torch.diagonal(m, dim1=-2, dim2=-1))


def _linalg_dtype(x: Tensor) -> torch.dtype:
    """Precision for the small D x D factorisations: float64 except where the device lacks it."""
    return torch.float32 if x.device.type == "mps" else torch.float64


# --------------------------------------------------------------------------------------------
# contrastive losses
# --------------------------------------------------------------------------------------------


@full_precision
def nt_xent_multiview_loss(views: Views, temperature: float = 0.2) -> Tensor:
    """NT-Xent over ``V >= 2`` views of the same ``N`` samples (SimCLR's loss, multi-positive).

    Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020 (SimCLR), eq. (1); the multi-positive form is the label-free
    case of Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, eq. (2)
    (``L_out``: the mean over positives of their log-probabilities).

    All ``V * N`` projections are L2-normalised and act as anchors. For anchor ``a`` of sample
    ``n`` the positives are the ``V - 1`` other views of sample ``n``; every other projection
    except ``a`` itself is in the denominator::

        l(a, p) = -log( exp(s_ap / T) / sum_{b != a} exp(s_ab / T) ),   s = cosine similarity
        loss    = mean_a  mean_{p in pos(a)}  l(a, p)

    For ``V = 2`` this is exactly SimCLR's NT-Xent (2N anchors, 2N - 2 negatives each).

    Args:
        views: ``(V, N, D)`` tensor or a sequence of ``V`` tensors ``(N, D)``.
        temperature: ``T``; solo-learn CIFAR uses 0.2 (the paper's ImageNet value is 0.1).

    Returns:
        Scalar loss.
    """
    zs = _as_views("views", views)
    _check_positive("temperature", temperature)
    n_views = len(zs)
    if n_views < 2:
        raise ValueError(f"NT-Xent needs at least 2 views, got {n_views}")
    n = zs[0].shape[0]
    z = F.normalize(torch.cat(zs, dim=0), dim=1)  # (V*N, D), row v*N + i is view v of sample i
    logits = z @ z.T / temperature
    eye = torch.eye(n_views * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    sample = torch.arange(n_views * n, device=z.device) % n
    positive = (sample[:, None] == sample[None, :]) & ~eye
    per_anchor = log_prob.masked_fill(~positive, 0.0).sum(dim=1) / (n_views - 1)
    return -per_anchor.mean()


@full_precision
def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.2) -> Tensor:
    """SimCLR's NT-Xent loss of two views (Chen et al., ICML 2020, eq. (1)).

    ``2N`` anchors (both views); the positive of ``z1[i]`` is ``z2[i]`` and vice versa; the other
    ``2N - 2`` projections of the batch are the negatives; cosine similarities divided by
    ``temperature``; mean over the ``2N`` anchors. The loss is symmetric: no caller
    symmetrisation.

    Args:
        z1, z2: projections ``(N, D)`` of the two views (normalised here).
        temperature: 0.2 (solo-learn CIFAR).

    Returns:
        Scalar loss.
    """
    _check_same("z1", z1, "z2", z2)
    return nt_xent_multiview_loss([z1, z2], temperature)


@full_precision
def infonce_loss(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.2) -> Tensor:
    """MoCo's InfoNCE loss with a queue of negatives (MoCo v2+ in solo-learn).

    He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation
    Learning", CVPR 2020, eq. (1); Chen, Fan, Girshick, He, "Improved Baselines with Momentum
    Contrastive Learning", arXiv:2003.04297, 2020 (MoCo v2: MLP head, stronger augmentation;
    "v2+" adds the symmetric loss).

    ``logits = [q . k, q . queue^T] / T`` and the loss is the cross-entropy with target 0 (the
    positive key). ``q`` and ``k`` are L2-normalised here; ``k`` and ``queue`` are detached.
    Symmetric MoCo v2+: ``(infonce_loss(q1, k2, queue2) + infonce_loss(q2, k1, queue1)) / 2``.

    Args:
        q: queries ``(N, D)`` from the online network.
        k: keys ``(N, D)`` from the momentum network, same samples as ``q``, other view.
        queue: ``(K, D)`` earlier keys, already L2-normalised (see :func:`enqueue`).
        temperature: 0.2 (solo-learn CIFAR and MoCo v2).

    Returns:
        Scalar loss.
    """
    _check_same("q", q, "k", k)
    _check_2d("queue", queue)
    if queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must have shape (K, {q.shape[1]}), got {tuple(queue.shape)}")
    _check_positive("temperature", temperature)
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue.detach().to(q.dtype).T
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target)


def enqueue(queue: Tensor, keys: Tensor, ptr: int) -> tuple[Tensor, int]:
    """MoCo's queue update (He et al., CVPR 2020, Alg. 1): write ``keys`` at ``ptr``, wrap around.

    Pure: returns a new queue and the new pointer; ``keys`` are detached (the queue holds no
    gradient). Used by MoCo v2+ (normalised keys), NNCLR (support set) and ReSSL.

    Args:
        queue: ``(K, D)``.
        keys: ``(B, D)`` with ``B <= K``.
        ptr: index of the oldest entry, ``0 <= ptr < K``.

    Returns:
        ``(new_queue, (ptr + B) % K)``.
    """
    _check_2d("queue", queue)
    _check_2d("keys", keys)
    size, dim = queue.shape
    b = keys.shape[0]
    if keys.shape[1] != dim:
        raise ValueError(f"keys must have shape (B, {dim}), got {tuple(keys.shape)}")
    if b > size:
        raise ValueError(f"cannot enqueue {b} keys into a queue of length {size}")
    if not 0 <= ptr < size:
        raise ValueError(f"ptr must be in [0, {size}), got {ptr}")
    idx = (torch.arange(b, device=queue.device) + ptr) % size
    new = queue.clone()
    new[idx] = keys.detach().to(queue.dtype)
    return new, (ptr + b) % size


@full_precision
def mocov3_loss(q: Tensor, k: Tensor, temperature: float = 0.2) -> Tensor:
    """MoCo v3's in-batch InfoNCE (Chen, Xie, He, "An Empirical Study of Training
    Self-Supervised Vision Transformers", ICCV 2021, Alg. 1).

    ``q`` and ``k`` are L2-normalised (``k`` detached: it comes from the momentum encoder);
    ``logits = q k^T / T``; the positive of ``q[i]`` is ``k[i]``; the cross-entropy is multiplied
    by ``2 T`` as in the paper's pseudo-code. The caller symmetrises by summing
    ``mocov3_loss(q1, k2) + mocov3_loss(q2, k1)`` (the paper sums; it does not average).

    Args:
        q: predictions ``(N, D)`` of the online branch.
        k: projections ``(N, D)`` of the momentum branch (other view).
        temperature: 0.2 (solo-learn CIFAR; the paper uses 0.2 for ViT, 1.0 for ResNet-50).

    Returns:
        Scalar loss.
    """
    _check_same("q", q, "k", k)
    _check_positive("temperature", temperature)
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    logits = q @ k.T / temperature
    labels = torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, labels) * (2.0 * temperature)


@full_precision
def nearest_neighbour(z: Tensor, queue: Tensor) -> tuple[Tensor, Tensor]:
    """NNCLR's support-set lookup: the entry of ``queue`` with the highest cosine similarity.

    Dwibedi, Aytar, Tompson, Sermanet, Zisserman, "With a Little Help from My Friends:
    Nearest-Neighbor Contrastive Learning of Visual Representations", ICCV 2021, eq. (2).
    The lookup is not differentiable; the neighbours are returned detached.

    Args:
        z: projections ``(N, D)``.
        queue: support set ``(K, D)``.

    Returns:
        ``(neighbours (N, D), indices (N,))``: ``neighbours[i] = queue[indices[i]]``.
    """
    _check_2d("z", z)
    _check_2d("queue", queue)
    if queue.shape[1] != z.shape[1]:
        raise ValueError(f"queue must have shape (K, {z.shape[1]}), got {tuple(queue.shape)}")
    with torch.no_grad():
        sim = F.normalize(z.detach(), dim=1) @ F.normalize(queue.detach().to(z.dtype), dim=1).T
        idx = sim.argmax(dim=1)
    return queue.detach()[idx], idx


@full_precision
def nnclr_loss(nn: Tensor, p: Tensor, temperature: float = 0.2) -> Tensor:
    """NNCLR's loss (Dwibedi et al., ICCV 2021, eq. (2)).

    InfoNCE whose positive for the prediction ``p[i]`` of one view is the nearest neighbour
    ``nn[i]`` (see :func:`nearest_neighbour`) of the *other* view's projection; the negatives are
    the neighbours of the other samples: ``CE(normalize(nn) @ normalize(p)^T / T, arange)``
    (rows indexed by neighbours, as in the paper's eq. (2)). The caller symmetrises:
    ``(nnclr_loss(nn1, p2) + nnclr_loss(nn2, p1)) / 2``.

    Args:
        nn: neighbours ``(N, D)`` from the support set (no gradient).
        p: predictions ``(N, D)`` of the other view.
        temperature: 0.2 (solo-learn CIFAR; the paper uses 0.1 on ImageNet).

    Returns:
        Scalar loss.
    """
    _check_same("nn", nn, "p", p)
    _check_positive("temperature", temperature)
    nn = F.normalize(nn, dim=1)
    p = F.normalize(p, dim=1)
    logits = nn @ p.T / temperature
    labels = torch.arange(p.shape[0], device=p.device)
    return F.cross_entropy(logits, labels)


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
    _check_2d("queue", queue)
    if queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must have shape (K, {q.shape[1]}), got {tuple(queue.shape)}")
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


# --------------------------------------------------------------------------------------------
# redundancy reduction / variance-covariance / whitening
# --------------------------------------------------------------------------------------------


def _standardise(z: Tensor, eps: float) -> Tensor:
    """Per-feature standardisation over the batch with the biased variance (BatchNorm1d, train)."""
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


@full_precision
def barlow_twins_loss(
    z1: Tensor,
    z2: Tensor,
    lambd: float = 0.0051,
    scale_loss: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Barlow Twins' redundancy-reduction loss (Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins:
    Self-Supervised Learning via Redundancy Reduction", ICML 2021, eqs. (1)-(2)).

    Each feature is standardised over the batch (mean 0, biased variance 1, ``eps`` added to the
    variance: the paper's affine-free BatchNorm); ``C = z1n^T z2n / N`` is the ``(D, D)``
    cross-correlation and::

        loss = scale_loss * ( sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2 )

    Args:
        z1, z2: projections ``(N, D)``, ``N >= 2``.
        lambd: 0.0051 (paper and solo-learn).
        scale_loss: 0.1 (solo-learn CIFAR; the paper's code scales by 1/32 for ImageNet,
            later versions by 1; the weighting is equivalent to a learning-rate change).
        eps: 1e-5, BatchNorm's default.

    Returns:
        Scalar loss.
    """
    _check_same("z1", z1, "z2", z2)
    _check_batch("z1", z1)
    _check_nonnegative("lambd", lambd)
    _check_positive("scale_loss", scale_loss)
    _check_nonnegative("eps", eps)
    n = z1.shape[0]
    c = _standardise(z1, eps).T @ _standardise(z2, eps) / n
    on_diag = (1.0 - torch.diagonal(c)).pow(2).sum()
    off_diag = _off_diagonal(c).pow(2).sum()
    return scale_loss * (on_diag + lambd * off_diag)


def _variance_hinge(z: Tensor, eps: float) -> Tensor:
    """``mean_j relu(1 - sqrt(Var_j + eps))`` with the unbiased variance (VICReg eq. (1))."""
    std = torch.sqrt(z.var(dim=0, unbiased=True) + eps)
    return F.relu(1.0 - std).mean()



def _invariance_variance_covariance(
    z1: Tensor, z2: Tensor, eps: float, cov_term: Callable[[Tensor], Tensor]
) -> dict[str, Tensor]:
    """The three terms shared by VICReg and VIbCReg; only the covariance term differs."""
    return {
        "invariance": F.mse_loss(z1, z2),
        "variance": _variance_hinge(z1, eps) + _variance_hinge(z2, eps),
        "covariance": cov_term(z1) + cov_term(z2),
    }

@full_precision
def vicreg_terms(z1: Tensor, z2: Tensor, eps: float = 1e-4) -> dict[str, Tensor]:
    """The three unweighted terms of VICReg (Bardes, Ponce, LeCun, "VICReg:
    Variance-Invariance-Covariance Regularization for Self-Supervised Learning", ICLR 2022).

    * ``invariance``: ``mean_{i,d} (z1 - z2)^2`` (the mean over all ``N * D`` entries, as in the
      authors' code with which the weight 25 was tuned; the paper's eq. (5) writes the sum over
      ``d`` instead of the mean, which would be ``D`` times larger).
    * ``variance``: ``v(z1) + v(z2)`` with ``v(z) = mean_j relu(1 - sqrt(Var(z_j) + eps))``,
      unbiased variance over the batch (eq. (1), gamma = 1).
    * ``covariance``: ``c(z1) + c(z2)`` with ``c(z) = sum_{i != j} Cov(z)_ij^2 / D`` and
      ``Cov(z) = (z - mean)^T (z - mean) / (N - 1)`` (eqs. (3)-(4)).

    Args:
        z1, z2: expander outputs ``(N, D)``, ``N >= 2``.
        eps: 1e-4 (paper).

    Returns:
        ``{"invariance": ..., "variance": ..., "covariance": ...}`` scalars.
    """
    _check_same("z1", z1, "z2", z2)
    _check_batch("z1", z1)
    _check_positive("eps", eps)

    def cov_term(z: Tensor) -> Tensor:
        n, d = z.shape
        zc = z - z.mean(dim=0, keepdim=True)
        cov = zc.T @ zc / (n - 1)
        return _off_diagonal(cov).pow(2).sum() / d

    return _invariance_variance_covariance(z1, z2, eps, cov_term)


@full_precision
def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    """VICReg's loss (Bardes et al., ICLR 2022, eq. (6)).

    ``sim_weight * invariance + var_weight * variance + cov_weight * covariance`` with the terms
    of :func:`vicreg_terms` (variance and covariance summed over the two branches, as in the
    paper's eq. (6) and solo-learn). Defaults ``lambda = mu = 25, nu = 1`` (paper and solo-learn).

    Args:
        z1, z2: expander outputs ``(N, D)``.

    Returns:
        Scalar loss.
    """
    t = vicreg_terms(z1, z2, eps=eps)
    return sim_weight * t["invariance"] + var_weight * t["variance"] + cov_weight * t["covariance"]


@full_precision
def vibcreg_terms(z1: Tensor, z2: Tensor, eps: float = 1e-4) -> dict[str, Tensor]:
    """The three unweighted terms of VIbCReg (Lee & Aune, "VIbCReg:
    Variance-Invariance-better-Covariance Regularization for Self-Supervised Learning on Time
    Series", arXiv:2109.00783, 2021, Sec. 3).

    * ``invariance`` and ``variance``: as in :func:`vicreg_terms`.
    * ``covariance``: ``c(z1) + c(z2)`` with the *normalised* covariance: each feature is centred
      and L2-normalised over the batch, ``C = zn^T zn`` is the ``(D, D)`` correlation matrix and
      ``c(z) = sum_{i != j} C_ij^2 / D^2`` (the mean over all ``D^2`` entries with the diagonal
      set to zero). A constant feature has zero correlation with everything.

    Returns:
        ``{"invariance": ..., "variance": ..., "covariance": ...}`` scalars.
    """
    _check_same("z1", z1, "z2", z2)
    _check_batch("z1", z1)
    _check_positive("eps", eps)

    def cov_term(z: Tensor) -> Tensor:
        d = z.shape[1]
        zn = F.normalize(z - z.mean(dim=0, keepdim=True), dim=0)
        corr = zn.T @ zn
        return _off_diagonal(corr).pow(2).sum() / (d * d)

    return _invariance_variance_covariance(z1, z2, eps, cov_term)


@full_precision
def vibcreg_loss(
    z1: Tensor,
    z2: Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 200.0,
    eps: float = 1e-4,
) -> Tensor:
    """VIbCReg's loss (Lee & Aune 2021): ``lambda s + mu [v + v'] + nu [c + c']``.

    Terms of :func:`vibcreg_terms`; defaults ``lambda = mu = 25, nu = 200`` (paper and
    solo-learn CIFAR). VIbCReg's IterNorm whitening belongs at the end of the projector: apply
    :func:`iternorm` (or a module wrapping it) to the projector's output before this loss.

    Args:
        z1, z2: projector outputs ``(N, D)`` (after IterNorm).

    Returns:
        Scalar loss.
    """
    t = vibcreg_terms(z1, z2, eps=eps)
    return sim_weight * t["invariance"] + var_weight * t["variance"] + cov_weight * t["covariance"]


@full_precision
def iternorm(x: Tensor, num_groups: int = 64, iterations: int = 5, eps: float = 1e-5) -> Tensor:
    """Iterative (Newton-Schulz) group whitening of a batch, training mode (Huang, Zhou, Zhu, Liu,
    Shao, "Iterative Normalization: Beyond Standardization towards Efficient Whitening",
    CVPR 2019, Alg. 1), as used at the end of VIbCReg's projector.

    The ``D`` features are split into ``num_groups`` consecutive groups of ``G = D / num_groups``.
    For each group (``X`` centred, ``G x N``): ``S = X X^T / N + eps I``, ``S_N = S / tr(S)``,
    ``P_0 = I``, ``P_k = (3 P_{k-1} - P_{k-1}^3 S_N) / 2``, and the output is
    ``P_T X / sqrt(tr(S))``. With few iterations the whitening is deliberately approximate
    (``T = 5`` in the paper and in VIbCReg). Keep ``T`` small: this simplified Newton iteration
    converges quadratically but is not numerically stable far past convergence (round-off grows
    for ill-conditioned groups; Higham, "Functions of Matrices", 2008, Sec. 6.3), so large ``T``
    can diverge. Running statistics for evaluation mode, if wanted, are the caller's (the
    projector module's) business.

    Args:
        x: ``(N, D)`` with ``D`` divisible by ``num_groups``.
        num_groups: 64 (VIbCReg / solo-learn with a 2048-d projector: groups of 32).
        iterations: ``T`` = 5.
        eps: 1e-5.

    Returns:
        ``(N, D)`` whitened batch.
    """
    _check_2d("x", x)
    _check_batch("x", x)
    n, d = x.shape
    if num_groups < 1 or d % num_groups != 0:
        raise ConfigError(
            f"num_groups must be a positive divisor of the feature dimension {d}, "
            f"got {num_groups!r}"
        )
    if iterations < 0:
        raise ConfigError(f"iterations must be >= 0, got {iterations!r}")
    _check_nonnegative("eps", eps)
    g = d // num_groups
    xg = x.T.reshape(num_groups, g, n)
    xc = xg - xg.mean(dim=2, keepdim=True)
    eye = torch.eye(g, dtype=x.dtype, device=x.device)
    sigma = xc @ xc.transpose(1, 2) / n + eps * eye
    trace = torch.diagonal(sigma, dim1=1, dim2=2).sum(dim=1).reshape(num_groups, 1, 1)
    sigma_n = sigma / trace
    p = eye.expand(num_groups, g, g)
    for _ in range(iterations):
        p = 1.5 * p - 0.5 * (p @ p @ p @ sigma_n)
    w = p / torch.sqrt(trace)
    return (w @ xc).reshape(d, n).T


@full_precision
def whiten(x: Tensor, eps: float = 0.0) -> Tensor:
    """W-MSE's Cholesky whitening of a batch (Ermolov, Siarohin, Sangineto, Sebe, "Whitening for
    Self-Supervised Representation Learning", ICML 2021, eqs. (4)-(5)).

    ``xc = x - mean``; ``S = (1 - eps) xc^T xc / (N - 1) + eps I`` (shrinkage ``eps``, 0 in
    W-MSE); ``S = L L^T`` (Cholesky); the output rows are ``L^{-1} xc_i``, so the unbiased
    covariance of the output is the identity (for ``eps = 0``). The factorisation runs in
    float64 (float32 on MPS) and the result is cast back, so AMP and float32 inputs stay stable.

    Args:
        x: ``(N, D)`` with ``N > D`` when ``eps = 0`` (else the covariance is singular).
        eps: shrinkage in ``[0, 1]``.

    Returns:
        ``(N, D)`` whitened batch, differentiable with respect to ``x``.

    Raises:
        ValueError: the (shrunk) covariance is not positive definite.
    """
    _check_2d("x", x)
    _check_batch("x", x)
    if not 0.0 <= eps <= 1.0:
        raise ConfigError(f"eps (covariance shrinkage) must be in [0, 1], got {eps!r}")
    n, d = x.shape
    work = x.to(_linalg_dtype(x))
    xc = work - work.mean(dim=0, keepdim=True)
    cov = xc.T @ xc / (n - 1)
    if eps > 0:
        cov = (1.0 - eps) * cov + eps * torch.eye(d, dtype=cov.dtype, device=cov.device)
    chol, info = torch.linalg.cholesky_ex(cov)
    if bool(info.any()):
        raise ValueError(
            f"the covariance of the batch ({n} samples, {d} features) is not positive definite, "
            f"so it cannot be whitened; use more samples per whitening batch (W-MSE uses at least "
            f"2 * D) or a shrinkage eps > 0"
        )
    out = torch.linalg.solve_triangular(chol, xc.T, upper=False).T
    return out.to(x.dtype)


@full_precision
def wmse_loss(
    z1: Tensor,
    z2: Tensor,
    w_size: int = 128,
    w_iter: int = 1,
    eps: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """W-MSE loss with two views (Ermolov et al., ICML 2021, eq. (6) and "batch slicing").

    The batch is split into random sub-batches of ``w_size`` samples (the same samples for both
    views, so that positives stay aligned); each sub-batch of each view is whitened separately
    with :func:`whiten`; the whitened vectors are L2-normalised and the loss is the mean over
    the ``N`` positive pairs of ``||u - v||^2 = 2 - 2 cos(u, v)``. With ``w_iter > 1`` this is
    repeated with fresh partitions and averaged.

    Partition ``t`` is ``torch.randperm(N, generator=generator)`` (drawn on the CPU) reshaped to
    ``(N / w_size, w_size)``. If ``w_size >= N`` the whole batch is whitened at once and the loss
    is deterministic (whitening is permutation-equivariant, so no partition is drawn).

    Defaults: ``w_size = 128``, ``w_iter = 1``, ``eps = 0`` (solo-learn CIFAR: batch 256,
    64-d projections, whitening size 128; the paper uses ``w_size = 128`` for CIFAR, i.e. at
    least twice the embedding dimension, and 1 iteration). ``N`` must be a multiple of
    ``w_size`` when it is larger, and ``w_size`` must exceed ``D`` when ``eps = 0``.

    Args:
        z1, z2: projections ``(N, D)`` of the two views.
        w_size: whitening sub-batch size.
        w_iter: number of random partitions averaged.
        eps: covariance shrinkage of :func:`whiten`.
        generator: CPU random generator for the partitions (default: the global one).

    Returns:
        Scalar loss in ``[0, 4]``.
    """
    _check_same("z1", z1, "z2", z2)
    if w_size < 2:
        raise ConfigError(f"w_size must be >= 2, got {w_size!r}")
    if w_iter < 1:
        raise ConfigError(f"w_iter must be >= 1, got {w_iter!r}")
    n, d = z1.shape
    size = min(w_size, n)
    if n % size != 0:
        raise ValueError(f"the batch size {n} must be a multiple of w_size={w_size}")
    if size <= d and eps == 0:
        raise ValueError(
            f"W-MSE whitens sub-batches of {size} samples, which must be more than the embedding "
            f"dimension {d} (use w_size >= 2 * {d} as the paper does, or a shrinkage eps > 0)"
        )

    def one_partition(parts: Tensor) -> Tensor:
        total = z1.new_zeros(())
        for idx in parts:
            a = F.normalize(whiten(z1[idx], eps), dim=1)
            b = F.normalize(whiten(z2[idx], eps), dim=1)
            total = total + (2.0 - 2.0 * (a * b).sum(dim=1)).sum()
        return total / n

    if size == n:
        return one_partition(torch.arange(n, device=z1.device).reshape(1, n))
    loss = z1.new_zeros(())
    for _ in range(w_iter):
        perm = torch.randperm(n, generator=generator).to(z1.device)
        loss = loss + one_partition(perm.reshape(-1, size))
    return loss / w_iter
