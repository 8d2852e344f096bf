"""Contrastive SSL losses: NT-Xent (SimCLR), InfoNCE with a queue (MoCo v2+), MoCo v3, NNCLR."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

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
    _check_queue(queue, q)
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
    _check_queue(queue, z)
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
