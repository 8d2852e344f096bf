"""Redundancy-reduction and whitening SSL losses: Barlow Twins, VICReg, VIbCReg, W-MSE."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from encshield.errors import ConfigError
from encshield.precision import full_precision
from encshield.ssl.losses._common import (
    _check_2d,
    _check_batch,
    _check_nonnegative,
    _check_positive,
    _check_same,
    _linalg_dtype,
    _off_diagonal,
)

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


def _covariance_penalty(z: Tensor) -> Tensor:
    """VICReg's ``sum_{i != j} Cov(z)_ij^2 / D``, ``Cov`` the unbiased covariance of ``(N, D)``."""
    n, d = z.shape
    zc = z - z.mean(dim=0, keepdim=True)
    cov = zc.T @ zc / (n - 1)
    return _off_diagonal(cov).pow(2).sum() / d


def _correlation_penalty(z: Tensor) -> Tensor:
    """VIbCReg's ``sum_{i != j} C_ij^2 / D^2`` with ``C`` the ``(D, D)`` correlation of ``z``."""
    d = z.shape[1]
    zn = F.normalize(z - z.mean(dim=0, keepdim=True), dim=0)
    corr = zn.T @ zn
    return _off_diagonal(corr).pow(2).sum() / (d * d)


def _invariance_variance_covariance(
    z1: Tensor, z2: Tensor, eps: float, cov_term: Callable[[Tensor], Tensor]
) -> dict[str, Tensor]:
    """The three terms shared by VICReg and VIbCReg (inputs checked); only the covariance term
    ``cov_term(z) -> scalar`` differs."""
    _check_same("z1", z1, "z2", z2)
    _check_batch("z1", z1)
    _check_positive("eps", eps)
    return {
        "invariance": F.mse_loss(z1, z2),
        "variance": _variance_hinge(z1, eps) + _variance_hinge(z2, eps),
        "covariance": cov_term(z1) + cov_term(z2),
    }


def combine_vic_terms(
    terms: dict[str, Tensor], sim_weight: float, var_weight: float, cov_weight: float
) -> dict[str, Tensor]:
    """Weight the terms of :func:`vicreg_terms` / :func:`vibcreg_terms` and sum them.

    Returns:
        ``{"loss": invariance + variance + covariance, "invariance": sim_weight * ...,
        "variance": var_weight * ..., "covariance": cov_weight * ...}`` (scalars; the weighted
        terms are kept for logging).
    """
    parts = {
        "invariance": sim_weight * terms["invariance"],
        "variance": var_weight * terms["variance"],
        "covariance": cov_weight * terms["covariance"],
    }
    return {"loss": parts["invariance"] + parts["variance"] + parts["covariance"], **parts}


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
    return _invariance_variance_covariance(z1, z2, eps, _covariance_penalty)


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
    terms = vicreg_terms(z1, z2, eps=eps)
    return combine_vic_terms(terms, sim_weight, var_weight, cov_weight)["loss"]


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
    return _invariance_variance_covariance(z1, z2, eps, _correlation_penalty)


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
    terms = vibcreg_terms(z1, z2, eps=eps)
    return combine_vic_terms(terms, sim_weight, var_weight, cov_weight)["loss"]


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
    out: torch.Tensor = torch.linalg.solve_triangular(chol, xc.T, upper=False).T
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
