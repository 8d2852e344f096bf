"""Tests of encshield.ssl.losses.

Every loss is compared with a brute-force reference written differently: explicit Python loops
over samples, pairs and features with math on Python floats (or tiny numpy arrays), on tiny random
float64 inputs with fixed seeds. Plus hand-computed values and the properties the methods rely on
(stop-gradients, Sinkhorn marginals, whitening, DINO's optimum, permutation consistency).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from encshield.errors import ConfigError
from encshield.ssl import (
    barlow_twins_loss,
    byol_loss,
    dino_center_update,
    dino_loss,
    enqueue,
    infonce_loss,
    iternorm,
    mocov3_loss,
    nearest_neighbour,
    nnclr_loss,
    nt_xent_loss,
    nt_xent_multiview_loss,
    ressl_loss,
    simsiam_loss,
    sinkhorn_knopp,
    swav_loss,
    vibcreg_loss,
    vibcreg_terms,
    vicreg_loss,
    vicreg_terms,
    whiten,
    wmse_loss,
)

F64 = torch.float64

# --------------------------------------------------------------------------------------------
# scalar helpers for the brute-force references
# --------------------------------------------------------------------------------------------

Vec = list[float]
Mat = list[list[float]]


def rand(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64)


def rows(x: torch.Tensor) -> Mat:
    return x.detach().tolist()


def scalar(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


def dot(a: Vec, b: Vec) -> float:
    return sum(x * y for x, y in zip(a, b))


def norm(a: Vec) -> float:
    return math.sqrt(dot(a, a))


def unit(a: Vec) -> Vec:
    n = norm(a)
    return [x / n for x in a]


def cos(a: Vec, b: Vec) -> float:
    return dot(a, b) / (norm(a) * norm(b))


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def log_sum_exp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def softmax(xs: list[float]) -> Vec:
    lse = log_sum_exp(xs)
    return [math.exp(x - lse) for x in xs]


def log_softmax(xs: list[float]) -> Vec:
    lse = log_sum_exp(xs)
    return [x - lse for x in xs]


def column(m: Mat, j: int) -> Vec:
    return [r[j] for r in m]


def variance(xs: Vec, unbiased: bool) -> float:
    mu = mean(xs)
    return sum((x - mu) ** 2 for x in xs) / (len(xs) - (1 if unbiased else 0))


# --------------------------------------------------------------------------------------------
# brute-force references
# --------------------------------------------------------------------------------------------


def ref_nt_xent(views: list[Mat], t: float) -> float:
    anchors = [(v, i, vec) for v, m in enumerate(views) for i, vec in enumerate(m)]
    losses = []
    for a, (_, ia, xa) in enumerate(anchors):
        denominator = [cos(xa, xb) / t for b, (_, _, xb) in enumerate(anchors) if b != a]
        lse = log_sum_exp(denominator)
        pos = [
            -(cos(xa, xb) / t - lse)
            for b, (vb, ib, xb) in enumerate(anchors)
            if b != a and ib == ia
        ]
        losses.append(mean(pos))
    return mean(losses)


def ref_byol(p: Mat, z: Mat) -> float:
    return mean([2 - 2 * cos(a, b) for a, b in zip(p, z)])


def ref_simsiam(p: Mat, z: Mat) -> float:
    return -mean([cos(a, b) for a, b in zip(p, z)])


def ref_infonce(q: Mat, k: Mat, queue: Mat, t: float) -> float:
    out = []
    for qi, ki in zip(q, k):
        uq = unit(qi)
        logits = [cos(qi, ki) / t] + [dot(uq, m) / t for m in queue]
        out.append(log_sum_exp(logits) - logits[0])
    return mean(out)


def ref_mocov3(q: Mat, k: Mat, t: float) -> float:
    out = []
    for i, qi in enumerate(q):
        logits = [cos(qi, kj) / t for kj in k]
        out.append(log_sum_exp(logits) - logits[i])
    return mean(out) * 2 * t


def ref_nnclr(nn: Mat, p: Mat, t: float) -> float:
    out = []
    for i, ni in enumerate(nn):
        logits = [cos(ni, pj) / t for pj in p]
        out.append(log_sum_exp(logits) - logits[i])
    return mean(out)


def ref_nearest(z: Mat, queue: Mat) -> list[int]:
    idx = []
    for zi in z:
        best, best_j = -2.0, -1
        for j, m in enumerate(queue):
            c = cos(zi, m)
            if c > best:
                best, best_j = c, j
        idx.append(best_j)
    return idx


def ref_ressl(q: Mat, k: Mat, queue: Mat, tq: float, tk: float) -> float:
    out = []
    for qi, ki in zip(q, k):
        lq = log_softmax([dot(unit(qi), m) / tq for m in queue])
        pk = softmax([dot(unit(ki), m) / tk for m in queue])
        out.append(-sum(a * b for a, b in zip(pk, lq)))
    return mean(out)


def ref_barlow(z1: Mat, z2: Mat, lambd: float, scale: float, eps: float) -> float:
    n, d = len(z1), len(z1[0])

    def standardise(z: Mat) -> Mat:
        cols = []
        for j in range(d):
            c = column(z, j)
            mu, var = mean(c), variance(c, unbiased=False)
            cols.append([(x - mu) / math.sqrt(var + eps) for x in c])
        return [[cols[j][i] for j in range(d)] for i in range(n)]

    a, b = standardise(z1), standardise(z2)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[s][i] * b[s][j] for s in range(n)) / n
            loss += (1 - c_ij) ** 2 if i == j else lambd * c_ij**2
    return scale * loss


def ref_var_hinge(z: Mat, eps: float) -> float:
    d = len(z[0])
    return mean([max(0.0, 1 - math.sqrt(variance(column(z, j), True) + eps)) for j in range(d)])


def ref_vicreg_terms(z1: Mat, z2: Mat, eps: float) -> dict[str, float]:
    n, d = len(z1), len(z1[0])
    inv = mean([(z1[i][j] - z2[i][j]) ** 2 for i in range(n) for j in range(d)])

    def cov_term(z: Mat) -> float:
        mus = [mean(column(z, j)) for j in range(d)]
        total = 0.0
        for a in range(d):
            for b in range(d):
                if a != b:
                    c = sum((z[s][a] - mus[a]) * (z[s][b] - mus[b]) for s in range(n)) / (n - 1)
                    total += c * c
        return total / d

    return {
        "invariance": inv,
        "variance": ref_var_hinge(z1, eps) + ref_var_hinge(z2, eps),
        "covariance": cov_term(z1) + cov_term(z2),
    }


def ref_vibcreg_terms(z1: Mat, z2: Mat, eps: float) -> dict[str, float]:
    d = len(z1[0])

    def corr_term(z: Mat) -> float:
        total = 0.0
        for a in range(d):
            for b in range(d):
                if a == b:
                    continue
                ca, cb = column(z, a), column(z, b)
                ma, mb = mean(ca), mean(cb)
                num = sum((x - ma) * (y - mb) for x, y in zip(ca, cb))
                den = math.sqrt(sum((x - ma) ** 2 for x in ca) * sum((y - mb) ** 2 for y in cb))
                total += (num / den) ** 2
        return total / (d * d)

    t = ref_vicreg_terms(z1, z2, eps)
    t["covariance"] = corr_term(z1) + corr_term(z2)
    return t


def ref_cholesky(a: Mat) -> Mat:
    """Cholesky-Banachiewicz on Python floats: a = L L^T."""
    d = len(a)
    low = [[0.0] * d for _ in range(d)]
    for i in range(d):
        for j in range(i + 1):
            s = sum(low[i][k] * low[j][k] for k in range(j))
            if i == j:
                low[i][j] = math.sqrt(a[i][i] - s)
            else:
                low[i][j] = (a[i][j] - s) / low[j][j]
    return low


def ref_whiten(x: Mat, eps: float) -> Mat:
    n, d = len(x), len(x[0])
    mus = [mean(column(x, j)) for j in range(d)]
    xc = [[x[i][j] - mus[j] for j in range(d)] for i in range(n)]
    cov = [
        [
            (1 - eps) * sum(xc[s][a] * xc[s][b] for s in range(n)) / (n - 1)
            + (eps if a == b else 0.0)
            for b in range(d)
        ]
        for a in range(d)
    ]
    low = ref_cholesky(cov)
    out = []
    for r in xc:  # forward substitution L y = r
        y = [0.0] * d
        for i in range(d):
            y[i] = (r[i] - sum(low[i][k] * y[k] for k in range(i))) / low[i][i]
        out.append(y)
    return out


def ref_wmse(z1: Mat, z2: Mat, partitions: list[list[list[int]]], eps: float) -> float:
    n = len(z1)
    per_partition = []
    for parts in partitions:
        total = 0.0
        for idx in parts:
            a = ref_whiten([z1[i] for i in idx], eps)
            b = ref_whiten([z2[i] for i in idx], eps)
            total += sum(2 - 2 * dot(unit(u), unit(v)) for u, v in zip(a, b))
        per_partition.append(total / n)
    return mean(per_partition)


def ref_dino(student: list[Mat], teacher: list[Mat], center: Vec, ts: float, tt: float) -> float:
    terms = []
    for i, t_view in enumerate(teacher):
        for j, s_view in enumerate(student):
            if i == j:
                continue
            ce = []
            for t_row, s_row in zip(t_view, s_view):
                p_t = softmax([(x - c) / tt for x, c in zip(t_row, center)])
                lp_s = log_softmax([x / ts for x in s_row])
                ce.append(-sum(a * b for a, b in zip(p_t, lp_s)))
            terms.append(mean(ce))
    return mean(terms)


def ref_sinkhorn(scores: Mat, epsilon: float, iterations: int) -> Mat:
    n, k = len(scores), len(scores[0])
    q = [[math.exp(s / epsilon) for s in r] for r in scores]
    total = sum(sum(r) for r in q)
    q = [[x / total for x in r] for r in q]
    for _ in range(iterations):
        col_sums = [sum(q[i][j] for i in range(n)) for j in range(k)]
        q = [[q[i][j] / col_sums[j] / k for j in range(k)] for i in range(n)]
        row_sums = [sum(r) for r in q]
        q = [[x / row_sums[i] / n for x in q[i]] for i in range(n)]
    return [[x * n for x in r] for r in q]


def ref_swav(s1: Mat, s2: Mat, q1: Mat, q2: Mat, t: float) -> float:
    def term(q: Mat, s: Mat) -> float:
        return mean(
            [
                sum(a * b for a, b in zip(qr, log_softmax([x / t for x in sr])))
                for qr, sr in zip(q, s)
            ]
        )

    return -0.5 * (term(q1, s2) + term(q2, s1))


def ref_iternorm(x: np.ndarray, groups: int, iterations: int, eps: float) -> np.ndarray:
    """Eigen-decomposition form: P_T is the scalar Newton iteration applied to each eigenvalue."""
    n, d = x.shape
    g = d // groups
    out = np.zeros_like(x)
    for gi in range(groups):
        xs = x[:, gi * g : (gi + 1) * g]
        xc = xs - xs.mean(axis=0)
        sigma = xc.T @ xc / n + eps * np.eye(g)
        tr = np.trace(sigma)
        lam, u = np.linalg.eigh(sigma / tr)
        p = []
        for lv in lam:
            pv = 1.0
            for _ in range(iterations):
                pv = 1.5 * pv - 0.5 * pv**3 * lv
            p.append(pv)
        w = u @ np.diag(p) @ u.T / math.sqrt(tr)
        out[:, gi * g : (gi + 1) * g] = xc @ w.T
    return out


# --------------------------------------------------------------------------------------------
# reference-value tests
# --------------------------------------------------------------------------------------------

SHAPES = [(3, 4, 0), (5, 3, 1), (6, 8, 2)]


@pytest.mark.parametrize("n,d,seed", SHAPES)
@pytest.mark.parametrize("t", [0.2, 0.5])
def test_nt_xent_reference(n: int, d: int, seed: int, t: float) -> None:
    z1, z2 = rand(n, d, seed), rand(n, d, seed + 100)
    assert_close(nt_xent_loss(z1, z2, temperature=t), scalar(ref_nt_xent([rows(z1), rows(z2)], t)))


@pytest.mark.parametrize("n_views", [2, 3, 4])
def test_nt_xent_multiview_reference(n_views: int) -> None:
    views = [rand(4, 5, 10 + v) for v in range(n_views)]
    expected = scalar(ref_nt_xent([rows(v) for v in views], 0.3))
    assert_close(nt_xent_multiview_loss(views, temperature=0.3), expected)
    assert_close(nt_xent_multiview_loss(torch.stack(views), temperature=0.3), expected)


@pytest.mark.parametrize("n,d,seed", SHAPES)
def test_byol_simsiam_reference(n: int, d: int, seed: int) -> None:
    p, z = rand(n, d, seed), rand(n, d, seed + 1)
    assert_close(byol_loss(p, z), scalar(ref_byol(rows(p), rows(z))))
    assert_close(simsiam_loss(p, z), scalar(ref_simsiam(rows(p), rows(z))))


@pytest.mark.parametrize("n,d,seed", SHAPES)
def test_infonce_reference(n: int, d: int, seed: int) -> None:
    q, k = rand(n, d, seed), rand(n, d, seed + 1)
    queue = torch.nn.functional.normalize(rand(7, d, seed + 2), dim=1)
    expected = ref_infonce(rows(q), rows(k), rows(queue), 0.2)
    assert_close(infonce_loss(q, k, queue), scalar(expected))


@pytest.mark.parametrize("n,d,seed", SHAPES)
def test_mocov3_reference(n: int, d: int, seed: int) -> None:
    q, k = rand(n, d, seed), rand(n, d, seed + 1)
    assert_close(mocov3_loss(q, k), scalar(ref_mocov3(rows(q), rows(k), 0.2)))
    assert_close(mocov3_loss(q, k, 1.0), scalar(ref_mocov3(rows(q), rows(k), 1.0)))


@pytest.mark.parametrize("n,d,seed", SHAPES)
def test_nearest_neighbour_and_nnclr_reference(n: int, d: int, seed: int) -> None:
    z, p = rand(n, d, seed), rand(n, d, seed + 1)
    queue = rand(9, d, seed + 2)
    nn, idx = nearest_neighbour(z, queue)
    expected_idx = ref_nearest(rows(z), rows(queue))
    assert idx.tolist() == expected_idx
    assert_close(nn, queue[expected_idx])
    assert not nn.requires_grad
    assert_close(nnclr_loss(nn, p), scalar(ref_nnclr(rows(nn), rows(p), 0.2)))


@pytest.mark.parametrize("n,d,seed", SHAPES)
def test_ressl_reference(n: int, d: int, seed: int) -> None:
    q, k = rand(n, d, seed), rand(n, d, seed + 1)
    queue = torch.nn.functional.normalize(rand(6, d, seed + 2), dim=1)
    expected = ref_ressl(rows(q), rows(k), rows(queue), 0.1, 0.04)
    assert_close(ressl_loss(q, k, queue), scalar(expected))


@pytest.mark.parametrize("n,d,seed", SHAPES)
@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_barlow_twins_reference(n: int, d: int, seed: int, eps: float) -> None:
    z1, z2 = rand(n, d, seed), rand(n, d, seed + 1)
    expected = ref_barlow(rows(z1), rows(z2), 0.0051, 0.1, eps)
    assert_close(barlow_twins_loss(z1, z2, eps=eps), scalar(expected))
    expected = ref_barlow(rows(z1), rows(z2), 0.3, 1.0, eps)
    assert_close(barlow_twins_loss(z1, z2, lambd=0.3, scale_loss=1.0, eps=eps), scalar(expected))


@pytest.mark.parametrize("n,d,seed", SHAPES)
def test_vicreg_reference(n: int, d: int, seed: int) -> None:
    # scale 0.5 so that some features fall under the variance hinge and some not
    z1, z2 = 0.5 * rand(n, d, seed), 0.8 * rand(n, d, seed + 1)
    ref = ref_vicreg_terms(rows(z1), rows(z2), 1e-4)
    terms = vicreg_terms(z1, z2)
    for key in ("invariance", "variance", "covariance"):
        assert_close(terms[key], scalar(ref[key]))
    expected = 25 * ref["invariance"] + 25 * ref["variance"] + 1 * ref["covariance"]
    assert_close(vicreg_loss(z1, z2), scalar(expected))
    expected = 2 * ref["invariance"] + 3 * ref["variance"] + 4 * ref["covariance"]
    assert_close(vicreg_loss(z1, z2, 2.0, 3.0, 4.0), scalar(expected))


@pytest.mark.parametrize("n,d,seed", SHAPES)
def test_vibcreg_reference(n: int, d: int, seed: int) -> None:
    z1, z2 = 0.5 * rand(n, d, seed), 0.8 * rand(n, d, seed + 1)
    ref = ref_vibcreg_terms(rows(z1), rows(z2), 1e-4)
    terms = vibcreg_terms(z1, z2)
    for key in ("invariance", "variance", "covariance"):
        assert_close(terms[key], scalar(ref[key]))
    expected = 25 * ref["invariance"] + 25 * ref["variance"] + 200 * ref["covariance"]
    assert_close(vibcreg_loss(z1, z2), scalar(expected))


@pytest.mark.parametrize("n,d,seed", [(5, 3, 0), (6, 4, 1), (9, 8, 2)])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_whiten_reference(n: int, d: int, seed: int, eps: float) -> None:
    x = rand(n, d, seed)
    assert_close(whiten(x, eps), torch.tensor(ref_whiten(rows(x), eps), dtype=F64))


@pytest.mark.parametrize("n,d,seed", [(5, 3, 0), (6, 4, 1)])
def test_wmse_reference_whole_batch(n: int, d: int, seed: int) -> None:
    z1, z2 = rand(n, d, seed), rand(n, d, seed + 1)
    expected = ref_wmse(rows(z1), rows(z2), [[list(range(n))]], 0.0)
    assert_close(wmse_loss(z1, z2, w_size=n), scalar(expected))
    assert_close(wmse_loss(z1, z2, w_size=128), scalar(expected))  # w_size >= N: whole batch


def test_wmse_reference_sub_batches() -> None:
    n, d, w_size, w_iter = 12, 3, 6, 2
    z1, z2 = rand(n, d, 3), rand(n, d, 4)
    g = torch.Generator().manual_seed(7)
    partitions = [
        torch.randperm(n, generator=g).reshape(-1, w_size).tolist() for _ in range(w_iter)
    ]
    expected = ref_wmse(rows(z1), rows(z2), partitions, 0.05)
    got = wmse_loss(
        z1, z2, w_size=w_size, w_iter=w_iter, eps=0.05, generator=torch.Generator().manual_seed(7)
    )
    assert_close(got, scalar(expected))


@pytest.mark.parametrize("n_student,n_teacher", [(2, 2), (4, 2), (3, 1)])
def test_dino_reference(n_student: int, n_teacher: int) -> None:
    n, k = 5, 6
    student = [rand(n, k, 20 + v) for v in range(n_student)]
    teacher = [rand(n, k, 40 + v) for v in range(n_teacher)]
    center = 0.3 * rand(1, k, 60)
    expected = ref_dino(
        [rows(s) for s in student], [rows(t) for t in teacher], rows(center)[0], 0.1, 0.04
    )
    assert_close(dino_loss(student, teacher, center), scalar(expected))
    # (V, N, K) tensors and a (K,) centre give the same value
    assert_close(dino_loss(torch.stack(student), torch.stack(teacher), center[0]), scalar(expected))
    expected = ref_dino(
        [rows(s) for s in student], [rows(t) for t in teacher], rows(center)[0], 0.2, 0.07
    )
    assert_close(dino_loss(student, teacher, center, 0.2, 0.07), scalar(expected))


def test_dino_center_update_reference() -> None:
    teacher = [rand(4, 3, 1), rand(4, 3, 2)]
    center = rand(1, 3, 3)
    all_rows = rows(teacher[0]) + rows(teacher[1])
    expected = [
        0.9 * rows(center)[0][j] + 0.1 * mean(column(all_rows, j)) for j in range(3)
    ]
    new = dino_center_update(center, teacher)
    assert new.shape == (1, 3)
    assert_close(new, torch.tensor([expected], dtype=F64))
    assert_close(dino_center_update(center[0], torch.stack(teacher), 0.5)[0],
                 scalar(0.5 * rows(center)[0][0] + 0.5 * mean(column(all_rows, 0))))


@pytest.mark.parametrize("n,k,seed", [(3, 4, 0), (5, 3, 1), (6, 8, 2)])
@pytest.mark.parametrize("iterations", [1, 3])
def test_sinkhorn_reference(n: int, k: int, seed: int, iterations: int) -> None:
    scores = torch.nn.functional.normalize(rand(n, k, seed), dim=1)  # cosine-like scores
    expected = torch.tensor(ref_sinkhorn(rows(scores), 0.05, iterations), dtype=F64)
    assert_close(sinkhorn_knopp(scores, iterations=iterations), expected)
    expected = torch.tensor(ref_sinkhorn(rows(scores), 0.5, iterations), dtype=F64)
    assert_close(sinkhorn_knopp(scores, epsilon=0.5, iterations=iterations), expected)


@pytest.mark.parametrize("n,k,seed", [(3, 4, 0), (5, 3, 1), (6, 8, 2)])
def test_swav_reference(n: int, k: int, seed: int) -> None:
    s1, s2 = rand(n, k, seed), rand(n, k, seed + 1)
    q1, q2 = sinkhorn_knopp(s1), sinkhorn_knopp(s2)
    expected = ref_swav(rows(s1), rows(s2), rows(q1), rows(q2), 0.1)
    assert_close(swav_loss(s1, s2, q1, q2), scalar(expected))


@pytest.mark.parametrize("n,d,groups,iterations", [(6, 4, 1, 5), (8, 6, 2, 5), (7, 8, 4, 3)])
def test_iternorm_reference(n: int, d: int, groups: int, iterations: int) -> None:
    x = rand(n, d, n + d)
    expected = ref_iternorm(x.numpy(), groups, iterations, 1e-5)
    assert_close(iternorm(x, groups, iterations), torch.from_numpy(expected))


# --------------------------------------------------------------------------------------------
# hand-computed values
# --------------------------------------------------------------------------------------------


def test_nt_xent_hand_computed() -> None:
    e = torch.eye(4, dtype=F64)
    # identical views, orthogonal samples: positive cos 1, two negatives with cos 0
    same = e[:2]
    assert_close(nt_xent_loss(same, same, 0.5), scalar(math.log(1 + 2 * math.exp(-2))))
    # all four vectors orthogonal: every logit is 0, so each anchor's loss is log(3)
    assert_close(nt_xent_loss(e[:2], e[2:], 0.2), scalar(math.log(3)))
    # the loss is symmetric in the views and does not depend on the vectors' norms
    z1, z2 = rand(4, 3, 0), rand(4, 3, 1)
    assert_close(nt_xent_loss(z1, z2), nt_xent_loss(z2, z1))
    assert_close(nt_xent_loss(3 * z1, 0.1 * z2), nt_xent_loss(z1, z2))


def test_byol_simsiam_hand_computed() -> None:
    z = rand(4, 5, 0)
    assert_close(byol_loss(z, z), scalar(0.0))
    assert_close(byol_loss(-z, z), scalar(4.0))
    assert_close(byol_loss(2 * z, z), scalar(0.0))
    assert_close(simsiam_loss(z, z), scalar(-1.0))
    assert_close(simsiam_loss(-z, z), scalar(1.0))
    e = torch.eye(2, dtype=F64)
    assert_close(byol_loss(e, e.flip(0)), scalar(2.0))  # orthogonal -> 2 - 2 * 0


def test_moco_hand_computed() -> None:
    e = torch.eye(3, dtype=F64)
    q = e[:1]
    # positive cos 1, two negatives with cos 0, T = 0.2
    assert_close(infonce_loss(q, q, e[1:]), scalar(math.log(1 + 2 * math.exp(-5))))
    # MoCo v3: q = k = identity rows; each row's CE = log(1 + e^{-1/T}); times 2T
    e2 = torch.eye(2, dtype=F64)
    assert_close(mocov3_loss(e2, e2), scalar(math.log(1 + math.exp(-5)) * 0.4))
    # NNCLR with perfect neighbours: the same CE without the 2T factor
    assert_close(nnclr_loss(e2, e2), scalar(math.log(1 + math.exp(-5))))


def test_nearest_neighbour_hand_computed() -> None:
    queue = torch.tensor([[1.0, 0.0], [0.0, 5.0], [-1.0, -1.0]], dtype=F64)
    z = torch.tensor([[0.9, 0.1], [0.2, 0.7], [-3.0, -2.0]], dtype=F64)
    nn, idx = nearest_neighbour(z, queue)
    assert idx.tolist() == [0, 1, 2]
    assert_close(nn, queue)  # the raw queue entries, not normalised copies


def test_ressl_hand_computed() -> None:
    e = torch.eye(2, dtype=F64)
    q = e[:1]
    p = math.e / (math.e + 1)
    entropy = -(p * math.log(p) + (1 - p) * math.log(1 - p))
    assert_close(ressl_loss(q, q, e, 1.0, 1.0), scalar(entropy))


def test_barlow_twins_hand_computed() -> None:
    # two perfectly anti-correlated features, identical views, eps = 0:
    # C = [[1, -1], [-1, 1]] -> on-diagonal term 0, off-diagonal 2 -> 0.1 * 0.0051 * 2
    z = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [2.0, -2.0], [-2.0, 2.0]], dtype=F64)
    assert_close(barlow_twins_loss(z, z, eps=0.0), scalar(0.1 * 0.0051 * 2))
    # identical views: only the off-diagonal term remains (on-diagonal C_ii = 1)
    z = rand(6, 4, 0)
    off = barlow_twins_loss(z, z, eps=0.0)
    zn = (z - z.mean(0)) / z.std(0, unbiased=False)
    corr = zn.T @ zn / 6
    assert_close(off, 0.1 * 0.0051 * (corr.pow(2).sum() - 4))
    # decorrelated, standardised, identical views -> C = I -> 0
    h = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=F64)
    assert_close(barlow_twins_loss(h, h, eps=0.0), scalar(0.0))


def test_vicreg_hand_computed() -> None:
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64)
    terms = vicreg_terms(z, z)
    assert_close(terms["invariance"], scalar(0.0))
    # feature 0: Var = 2 (unbiased) -> std > 1 -> 0; feature 1: std = sqrt(1e-4) -> 0.99
    assert_close(terms["variance"], scalar(2 * 0.99 / 2))
    assert_close(terms["covariance"], scalar(0.0))
    assert_close(vicreg_loss(z, z), scalar(25 * 0.99))
    # covariance: features x and 2x with Var(x) = 1 -> Cov = 2 off-diagonal twice / D = 4
    x = torch.tensor([[1.0, 2.0], [-1.0, -2.0], [0.0, 0.0]], dtype=F64)
    assert_close(vicreg_terms(x, x)["covariance"], scalar(2 * (2 * 2.0**2) / 2))


def test_vibcreg_hand_computed() -> None:
    # perfectly correlated features: correlation 1 off the diagonal -> 2 / D^2 per branch
    x = torch.tensor([[1.0, 2.0], [-1.0, -2.0], [0.0, 0.0]], dtype=F64)
    assert_close(vibcreg_terms(x, x)["covariance"], scalar(2 * 2 / 4))
    # the correlation does not depend on the features' scale (unlike VICReg's covariance)
    assert_close(vibcreg_terms(7 * x, 7 * x)["covariance"], scalar(1.0))
    # a constant feature has zero correlation with everything
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64)
    assert_close(vibcreg_terms(z, z)["covariance"], scalar(0.0))


def test_wmse_hand_computed() -> None:
    z = rand(8, 3, 0)
    assert_close(wmse_loss(z, z), scalar(0.0))
    # Cholesky whitening of each view absorbs a shift and a lower-triangular map with a positive
    # diagonal (L_{A S A^T} = A L_S), so applying one to both views leaves the loss unchanged
    a = torch.tril(rand(3, 3, 1)) + 3 * torch.eye(3, dtype=F64)
    z2 = rand(8, 3, 2)
    assert_close(wmse_loss(z @ a.T + 1.0, z2 @ a.T + 1.0), wmse_loss(z, z2))


def test_sinkhorn_and_swav_hand_computed() -> None:
    scores = torch.zeros(4, 5, dtype=F64)
    assert_close(sinkhorn_knopp(scores), torch.full((4, 5), 0.2, dtype=F64))
    q = sinkhorn_knopp(scores)
    assert_close(swav_loss(scores, scores, q, q), scalar(math.log(5)))


def test_enqueue_wraps_around() -> None:
    queue = torch.zeros(5, 2)
    keys = torch.arange(6.0).reshape(3, 2).requires_grad_()
    new, ptr = enqueue(queue, keys, 3)
    assert ptr == 1
    assert_close(new[[3, 4, 0]], keys.detach())
    assert_close(new[[1, 2]], torch.zeros(2, 2))
    assert_close(queue, torch.zeros(5, 2))  # pure: the input queue is untouched
    assert not new.requires_grad


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------


def test_sinkhorn_marginals() -> None:
    n, k = 64, 10
    g = torch.Generator().manual_seed(0)
    scores = torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=1)
    protos = torch.nn.functional.normalize(torch.randn(k, 16, generator=g), dim=1)
    s = (scores @ protos.T).requires_grad_()
    q = sinkhorn_knopp(s)
    assert not q.requires_grad
    assert q.dtype == torch.float32
    assert_close(q.sum(dim=1), torch.ones(n))
    assert (q >= 0).all()
    # the prototypes' mass tends to the uniform 1/K: within 35 % after SwAV's 3 iterations,
    # closer with every iteration, exactly so after many
    deviations = [
        float((sinkhorn_knopp(s, iterations=it).sum(dim=0) / n - 1 / k).abs().max())
        for it in (3, 10, 30)
    ]
    assert deviations[0] < 0.35 / k
    assert deviations[0] > deviations[1] > deviations[2]
    col_mass = sinkhorn_knopp(s, iterations=200).sum(dim=0) / n
    assert_close(col_mass, torch.full((k,), 1 / k), atol=1e-4, rtol=0)
    # stable for small epsilon and large scores (log-domain iterations)
    big = sinkhorn_knopp(50 * s.detach(), epsilon=0.01)
    assert torch.isfinite(big).all()
    assert_close(big.sum(dim=1), torch.ones(n))
    # half precision in, same dtype out
    assert sinkhorn_knopp(s.detach().half()).dtype == torch.float16


def test_whiten_gives_identity_covariance() -> None:
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 6, generator=g)
    x = torch.randn(40, 6, generator=g) @ mixing + 5.0  # correlated, shifted, float32
    w = whiten(x)
    assert w.dtype == torch.float32
    assert_close(w.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    wc = w - w.mean(0)
    assert_close(wc.T @ wc / 39, torch.eye(6), atol=1e-4, rtol=0)
    # Cholesky whitening is lower-triangular: the first feature is only standardised
    assert_close(w[:, 0], (x[:, 0] - x[:, 0].mean()) / x[:, 0].std(), atol=1e-4, rtol=0)


def test_iternorm_converges_to_whitening() -> None:
    # moderately correlated groups (condition numbers about 7 and 3). The simplified Newton
    # iteration converges quadratically but is not stable far past convergence (round-off grows,
    # Higham 2008), which is why IterNorm uses few iterations; 10 suffice here.
    g = torch.Generator().manual_seed(0)
    mixing = torch.eye(8, dtype=F64) + 0.3 * torch.randn(8, 8, generator=g, dtype=F64)
    x = torch.randn(100, 8, generator=g, dtype=F64) @ mixing
    out = iternorm(x, num_groups=2, iterations=10, eps=0.0)
    for gi in range(2):
        block = out[:, gi * 4 : (gi + 1) * 4]
        block = block - block.mean(0)
        assert_close(block.T @ block / 100, torch.eye(4, dtype=F64), atol=1e-8, rtol=0)
    # 5 iterations: already close to decorrelated, with unit-order variances
    out5 = iternorm(x, num_groups=2, iterations=5)
    cov = (out5 - out5.mean(0)).T @ (out5 - out5.mean(0)) / 100
    assert (torch.diagonal(cov) > 0.2).all() and (torch.diagonal(cov) <= 1.0 + 1e-6).all()


def test_dino_minimised_when_student_matches_sharpened_teacher() -> None:
    n, k, ts, tt = 4, 6, 0.1, 0.04
    teacher = [rand(n, k, 1), rand(n, k, 2)]
    center = 0.2 * rand(1, k, 3)
    # with two views, student view 1 is paired with teacher view 0 and vice versa
    best = [
        ((teacher[1] - center) * ts / tt).requires_grad_(),
        ((teacher[0] - center) * ts / tt).requires_grad_(),
    ]
    loss = dino_loss(best, teacher, center, ts, tt)
    # at the optimum the loss is the teacher's entropy and the gradient vanishes
    entropies = []
    for t in teacher:
        p = torch.softmax((t - center) / tt, dim=1)
        entropies.append(-(p * p.log()).sum(1).mean())
    assert_close(loss, (entropies[0] + entropies[1]) / 2)
    loss.backward()
    for s in best:
        assert s.grad is not None
        assert_close(s.grad, torch.zeros_like(s), atol=1e-12, rtol=0)
    g = torch.Generator().manual_seed(5)
    for _ in range(5):
        moved = [s.detach() + 0.05 * torch.randn(n, k, generator=g, dtype=F64) for s in best]
        assert dino_loss(moved, teacher, center, ts, tt) > loss
    # the un-sharpened student (temperature mismatch) is worse
    plain = [(teacher[1] - center), (teacher[0] - center)]
    assert dino_loss(plain, teacher, center, ts, tt) > loss


def _grad_of(
    loss_fn: Callable[..., torch.Tensor], *inputs: torch.Tensor
) -> list[torch.Tensor | None]:
    leaves = [x.clone().requires_grad_() for x in inputs]
    loss_fn(*leaves).backward()
    return [x.grad for x in leaves]


def _unit_queue() -> torch.Tensor:
    return torch.nn.functional.normalize(rand(7, 5, 9), dim=1)


def _nonzero(g: torch.Tensor | None) -> bool:
    return g is not None and bool(torch.isfinite(g).all()) and float(g.abs().max()) > 0


@pytest.mark.parametrize(
    "name,fn,online,target",
    [
        ("byol", byol_loss, 0, 1),
        ("simsiam", simsiam_loss, 0, 1),
        ("mocov3", mocov3_loss, 0, 1),
        ("infonce", lambda q, k: infonce_loss(q, k, _unit_queue()), 0, 1),
        ("ressl", lambda q, k: ressl_loss(q, k, _unit_queue()), 0, 1),
    ],
)
def test_targets_get_no_gradient(
    name: str, fn: Callable[..., torch.Tensor], online: int, target: int
) -> None:
    grads = _grad_of(fn, rand(4, 5, 0), rand(4, 5, 1))
    assert _nonzero(grads[online]), name
    assert grads[target] is None, name


def test_queue_and_codes_and_teacher_get_no_gradient() -> None:
    q, k = rand(4, 5, 0).requires_grad_(), rand(4, 5, 1)
    queue = torch.nn.functional.normalize(rand(7, 5, 2), dim=1).requires_grad_()
    infonce_loss(q, k, queue).backward()
    assert queue.grad is None
    ressl_loss(q, k, queue).backward()
    assert queue.grad is None
    s1, s2 = rand(4, 6, 3).requires_grad_(), rand(4, 6, 4).requires_grad_()
    c1, c2 = s1.detach().clone().requires_grad_(), s2.detach().clone().requires_grad_()
    swav_loss(s1, s2, c1, c2).backward()
    assert c1.grad is None and c2.grad is None
    assert _nonzero(s1.grad) and _nonzero(s2.grad)
    student = [rand(4, 6, 5).requires_grad_(), rand(4, 6, 6).requires_grad_()]
    teacher = [rand(4, 6, 7).requires_grad_(), rand(4, 6, 8).requires_grad_()]
    center = torch.zeros(1, 6, dtype=F64, requires_grad=True)
    dino_loss(student, teacher, center).backward()
    assert all(_nonzero(s.grad) for s in student)
    assert all(t.grad is None for t in teacher) and center.grad is None
    new_center = dino_center_update(center, teacher)
    assert not new_center.requires_grad


@pytest.mark.parametrize(
    "name,fn",
    [
        ("nt_xent", nt_xent_loss),
        ("barlow", barlow_twins_loss),
        ("vicreg", vicreg_loss),
        ("vibcreg", vibcreg_loss),
        ("wmse", lambda a, b: wmse_loss(a, b, w_size=6)),
        ("nnclr", nnclr_loss),
    ],
)
def test_both_branches_get_gradient(name: str, fn: Callable[..., torch.Tensor]) -> None:
    grads = _grad_of(fn, 0.5 * rand(6, 4, 0), 0.5 * rand(6, 4, 1))
    assert _nonzero(grads[0]) and _nonzero(grads[1]), name


def test_iternorm_and_whiten_are_differentiable() -> None:
    x = rand(12, 4, 0).requires_grad_()
    (iternorm(x, 2) ** 3).sum().backward()
    assert _nonzero(x.grad)
    y = rand(12, 4, 1).requires_grad_()
    (whiten(y) ** 3).sum().backward()
    assert _nonzero(y.grad)


_QUEUE = torch.nn.functional.normalize(rand(7, 5, 99), dim=1)

PAIR_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "nt_xent": nt_xent_loss,
    "byol": byol_loss,
    "simsiam": simsiam_loss,
    "infonce": lambda a, b: infonce_loss(a, b, _QUEUE),
    "mocov3": mocov3_loss,
    "nnclr": nnclr_loss,
    "ressl": lambda a, b: ressl_loss(a, b, _QUEUE),
    "barlow": barlow_twins_loss,
    "vicreg": vicreg_loss,
    "vibcreg": vibcreg_loss,
    "wmse": lambda a, b: wmse_loss(a, b, w_size=6),
    "swav": lambda a, b: swav_loss(a, b, sinkhorn_knopp(a), sinkhorn_knopp(b)),
    "dino": lambda a, b: dino_loss([a, b], [b, a], torch.zeros(5, dtype=F64)),
}


@pytest.mark.parametrize("name", sorted(PAIR_LOSSES))
def test_permutation_consistency(name: str) -> None:
    fn = PAIR_LOSSES[name]
    a, b = rand(6, 5, 0), rand(6, 5, 1)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    assert_close(fn(a[perm], b[perm]), fn(a, b))


def test_equivariant_helpers() -> None:
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(3))
    s = rand(6, 4, 0)
    assert_close(sinkhorn_knopp(s[perm]), sinkhorn_knopp(s)[perm])
    x = rand(6, 3, 1)
    assert_close(whiten(x[perm]), whiten(x)[perm])
    assert_close(iternorm(x[perm], 1), iternorm(x, 1)[perm])
    queue = rand(5, 3, 2)
    idx = nearest_neighbour(x, queue)[1]
    assert nearest_neighbour(x[perm], queue)[1].tolist() == idx[perm].tolist()


def test_float32_inputs_give_float32_losses() -> None:
    a, b = rand(6, 5, 0).float(), rand(6, 5, 1).float()
    for name, fn in PAIR_LOSSES.items():
        if name == "dino":  # its centre is a float64 constant of the table
            continue
        out = fn(a, b)
        assert out.dtype == torch.float32 and out.shape == () and torch.isfinite(out), name


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_errors_name_the_problem() -> None:
    a, b = rand(4, 3, 0), rand(5, 3, 1)
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(a, b)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        byol_loss(a[0], a[0])
    with pytest.raises(ConfigError, match="temperature"):
        mocov3_loss(a, a, temperature=0.0)
    with pytest.raises(ValueError, match="queue"):
        infonce_loss(a, a, rand(7, 4, 2))
    with pytest.raises(ValueError, match="embedding dimension"):
        wmse_loss(rand(8, 4, 0), rand(8, 4, 1), w_size=4)
    with pytest.raises(ValueError, match="multiple of w_size"):
        wmse_loss(rand(10, 2, 0), rand(10, 2, 1), w_size=4)
    with pytest.raises(ValueError, match="positive definite"):
        whiten(torch.ones(5, 2, dtype=F64))
    with pytest.raises(ConfigError, match="num_groups"):
        iternorm(rand(4, 6, 0), num_groups=4)
    with pytest.raises(ValueError, match="at least 2 samples"):
        vicreg_loss(a[:1], a[:1])
    with pytest.raises(ValueError, match="pair"):
        dino_loss([a], [a], torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="center"):
        dino_loss([a, a], [a, a], torch.zeros(4, dtype=F64))


@pytest.mark.parametrize(
    "loss,shapes",
    [
        (nt_xent_loss, [(64, 16), (64, 16)]),
        (byol_loss, [(64, 16), (64, 16)]),
        (barlow_twins_loss, [(64, 16), (64, 16)]),
        (wmse_loss, [(64, 16), (64, 16)]),
    ],
)
def test_losses_run_in_float32_under_autocast(loss: Any, shapes: list[tuple[int, int]]) -> None:
    """Inside a bf16 autocast region (mixed-precision pre-training) a loss casts its inputs to
    float32 and runs without autocast: same value as a float32 call on the same (bf16) inputs."""
    torch.manual_seed(0)
    inputs = [torch.randn(*s).bfloat16() for s in shapes]
    reference = loss(*[x.float() for x in inputs])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(*inputs)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, rtol=1e-6, atol=1e-6)
