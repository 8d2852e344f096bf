"""Tests of encshield.defenses.losses.

Every loss is compared with an independent brute-force reference written with Python loops over
samples / pairs / classes and ``math`` on Python floats, on tiny random float64 inputs with fixed
seeds; plus hand-computed cases and the properties the defenses rely on (non-negativity, gradient
flow, finiteness at extreme logits, the limits of the hyper-parameters).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from encshield.defenses import (
    genetic_regularization,
    mart_loss,
    pgd_at_loss,
    trades_inner_objective,
    trades_loss,
)
from encshield.errors import ConfigError

# ------------------------------------------------------------------------------ brute force


def _softmax(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def _ce(row: list[float], y: int) -> float:
    return -math.log(_softmax(row)[y])


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pk * math.log(pk / qk) for pk, qk in zip(p, q) if pk > 0)


def _ref_gr(a, b, labels, weights, tanh_scale=32.0, shift=2.0, eps=1e-7, reduction="sum"):
    """L_GR following METHODS.md 2.2 step by step, on lists of floats."""
    a, b = a.tolist(), b.tolist()
    y, w = labels.tolist(), weights.tolist()
    n = len(a)

    def unit(v):
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v] if norm > 0 else [0.0] * len(v)

    def offset(rows):
        u = [unit(r) for r in rows]
        d = [[1.0 - sum(p * q for p, q in zip(u[i], u[j])) for j in range(n)] for i in range(n)]
        out = []
        for i in range(n):
            rho = min((d[i][j] for j in range(n) if j != i), default=0.0)
            out.append([0.0 if j == i else d[i][j] - rho for j in range(n)])
        return out

    def clamp(v, lo, hi):
        return min(max(v, lo), hi)

    big_w = [[math.tanh((w[i] + w[j]) / tanh_scale) for j in range(n)] for i in range(n)]
    delta = [[shift * (1.0 if y[i] != y[j] else -1.0) * big_w[i][j] for j in range(n)]
             for i in range(n)]
    oa, ob = offset(a), offset(b)
    da = [[clamp(oa[i][j], eps, 2 - eps) for j in range(n)] for i in range(n)]
    db = [[clamp((1 - big_w[i][j]) * ob[i][j] + delta[i][j], eps, 2 - eps) for j in range(n)]
          for i in range(n)]

    def probs(dist):
        out = []
        for i in range(n):
            s = [((1.0 - dist[i][j]) + 1.0) / 2.0 for j in range(n)]
            tot = sum(s)
            out.append([clamp(v / tot, eps, 1 - eps) for v in s])
        return out

    pa, pb = probs(da), probs(db)
    terms = [[pb[i][j] * math.log(pb[i][j] / pa[i][j])
              + (1 - pb[i][j]) * math.log((1 - pb[i][j]) / (1 - pa[i][j])) for j in range(n)]
             for i in range(n)]
    if reduction == "none":
        return torch.tensor(terms, dtype=torch.float64)
    total = sum(sum(r) for r in terms)
    return torch.tensor(total if reduction == "sum" else total / (n * n), dtype=torch.float64)


def _ref_trades(zc, za, y, beta):
    zc, za, y = zc.tolist(), za.tolist(), y.tolist()
    n = len(y)
    ce = sum(_ce(zc[i], y[i]) for i in range(n)) / n
    kl = sum(_kl(_softmax(zc[i]), _softmax(za[i])) for i in range(n)) / n
    return torch.tensor(ce + beta * kl, dtype=torch.float64)


def _ref_mart(zc, za, y, beta):
    zc, za, y = zc.tolist(), za.tolist(), y.tolist()
    total = 0.0
    for i in range(len(y)):
        pa, pc = _softmax(za[i]), _softmax(zc[i])
        other = max(pa[k] for k in range(len(pa)) if k != y[i])
        bce = -math.log(pa[y[i]]) - math.log(1.0 - other)
        total += bce + beta * _kl(pc, pa) * (1.0 - pc[y[i]])
    return torch.tensor(total / len(y), dtype=torch.float64)


def _data(seed: int, n: int, c: int, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    zc = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    za = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, c, (n,), generator=g)
    return zc, za, y


def _bkl_sum(pb: list[list[float]], pa: list[list[float]]) -> float:
    return sum(
        q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))
        for rb, ra in zip(pb, pa) for q, p in zip(rb, ra)
    )


# ------------------------------------------------------------------------------ L_GR


@pytest.mark.parametrize(("seed", "n", "c"), [(0, 4, 3), (1, 5, 4), (2, 6, 5), (3, 6, 3)])
@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_gr_matches_brute_force(seed, n, c, reduction):
    zc, za, y = _data(seed, n, c)
    w = F.cross_entropy(zc, y, reduction="none")
    got = genetic_regularization(zc, za, y, w, reduction=reduction)
    assert_close(got, _ref_gr(zc, za, y, w, reduction=reduction), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("tanh_scale", "shift", "eps"), [(1.0, 2.0, 1e-7), (8.0, 0.5, 1e-4),
                                                          (32.0, 0.0, 1e-3)])
def test_gr_matches_brute_force_hyper_parameters(tanh_scale, shift, eps):
    zc, za, y = _data(7, 6, 4)
    w = torch.rand(6, generator=torch.Generator().manual_seed(8), dtype=torch.float64) * 5
    got = genetic_regularization(zc, za, y, w, tanh_scale=tanh_scale, shift=shift, eps=eps)
    assert_close(got, _ref_gr(zc, za, y, w, tanh_scale, shift, eps), rtol=1e-9, atol=1e-12)


def test_gr_brute_force_with_a_zero_row():
    # an all-zero row has no direction: normalised to 0 (cos 0 with everything, d = 1)
    zc, za, y = _data(9, 5, 3)
    zc[2] = 0.0
    w = F.cross_entropy(zc, y, reduction="none")
    got = genetic_regularization(zc, za, y, w)
    assert_close(got, _ref_gr(zc, za, y, w), rtol=1e-9, atol=1e-12)
    assert torch.isfinite(got)


def _three_points() -> torch.Tensor:
    s = 1.0 / math.sqrt(2.0)
    return torch.tensor([[1.0, 0.0], [0.0, 1.0], [s, s]], dtype=torch.float64)


def test_gr_hand_identical_sides_equal_labels():
    # A = B = rows e1, e2, (e1+e2)/sqrt2; labels all equal; w = 0.
    # W = tanh(0) = 0 and Delta = 0, so D^B = D^A and P^B = P^A: every binary KL term is 0.
    x = _three_points()
    y = torch.tensor([0, 0, 0])
    w = torch.zeros(3, dtype=torch.float64)
    assert genetic_regularization(x, x.clone(), y, w).item() == 0.0
    # same for 2 samples (where the offset even zeroes every distance: D = eps everywhere)
    assert genetic_regularization(x[:2], x[:2].clone(), y[:2], w[:2]).item() == 0.0


def test_gr_hand_three_samples_with_shift():
    # A = B = rows x1 = e1, x2 = e2, x3 = (e1+e2)/sqrt2; s := 1/sqrt2, r := 1 - s.
    # cos: c12 = 0, c13 = c23 = s  ->  d12 = 1, d13 = d23 = r.
    # rho_i (smallest off-diagonal distance): rho1 = min(1, r) = r, rho2 = r, rho3 = r.
    # d - rho, diagonal set to 0:  [[0, 1-r, 0], [1-r, 0, 0], [0, 0, 0]] = [[0, s, 0], [s, 0, 0], 0]
    # D^A = clamp(., eps, 2-eps) = [[e, s, e], [s, e, e], [e, e, e]]   (e = eps ~ 0)
    # labels y = [0, 1, 0]; weights w_i = 16 atanh(1/2) so W_ij = tanh(32 atanh(1/2) / 32) = 1/2.
    # M = [[-1, 1, -1], [1, -1, 1], [-1, 1, -1]], Delta = 2 * M * 1/2 = M.
    # D^B = clamp(1/2 (d^B - rho^B) + M) = [[e, 1 + s/2, e], [1 + s/2, e, 1], [e, 1, e]].
    # (2 - D)/2 (= ((1 - D) + 1)/2):
    #   A: [[1, 1 - s/2, 1], [1 - s/2, 1, 1], [1, 1, 1]]
    #   B: [[1, 1/2 - s/4, 1], [1/2 - s/4, 1, 1/2], [1, 1/2, 1]]
    # rows normalised to 1 -> P^A, P^B below; L = sum_ij binary KL(P^B_ij || P^A_ij) ~= 0.205113.
    s = 1.0 / math.sqrt(2.0)
    ra = [[1, 1 - s / 2, 1], [1 - s / 2, 1, 1], [1, 1, 1]]
    rb = [[1, 0.5 - s / 4, 1], [0.5 - s / 4, 1, 0.5], [1, 0.5, 1]]
    pa = [[v / sum(r) for v in r] for r in ra]
    pb = [[v / sum(r) for v in r] for r in rb]
    expected = _bkl_sum(pb, pa)
    assert expected == pytest.approx(0.205113, abs=1e-6)
    x = _three_points()
    y = torch.tensor([0, 1, 0])
    w = torch.full((3,), 16 * math.atanh(0.5), dtype=torch.float64)
    got = genetic_regularization(x, x.clone(), y, w)
    # eps = 1e-7 on the diagonal / zero distances moves the value by O(1e-7)
    assert got.item() == pytest.approx(expected, abs=1e-5)
    assert got.item() == pytest.approx(_ref_gr(x, x, y, w).item(), abs=1e-12)


def test_gr_diagonal_terms_are_eps_distances():
    # reduction="none": with A = B and w = 0 all terms vanish, including the diagonal, whose
    # distance is eps on both sides (zeroed before the clamp), not 0 and not rho.
    x = _three_points()
    zeros = torch.zeros(3, dtype=torch.float64)
    terms = genetic_regularization(x, x, torch.tensor([0, 1, 0]), zeros, reduction="none")
    assert terms.shape == (3, 3)
    assert_close(terms, torch.zeros(3, 3, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(6))
def test_gr_is_non_negative(seed):
    zc, za, y = _data(seed + 20, 6, 4, scale=3.0)
    w = torch.rand(6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 10
    terms = genetic_regularization(zc, za, y, w, reduction="none")
    assert (terms >= -1e-12).all()
    assert genetic_regularization(zc, za, y, w) >= 0


def test_gr_symmetries():
    zc, za, y = _data(30, 6, 4)
    w = F.cross_entropy(zc, y, reduction="none")
    base = genetic_regularization(zc, za, y, w)
    # permuting the samples (jointly) leaves the sum unchanged
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    assert_close(genetic_regularization(zc[perm], za[perm], y[perm], w[perm]), base)
    # only label equality matters: renaming the classes changes nothing
    assert_close(genetic_regularization(zc, za, (y + 1) % 4 + 10, w), base)
    # cosine geometry: positive per-row scaling of A or B changes nothing
    scale = torch.tensor([0.5, 2.0, 3.0, 1.0, 7.0, 0.1], dtype=torch.float64)[:, None]
    assert_close(genetic_regularization(zc * scale, za / scale, y, w), base)
    # W and the label sign are symmetric in (i, j): with A = B and no shift/weights the loss is 0
    assert genetic_regularization(za, za, y, torch.zeros_like(w), shift=0.0).item() == 0.0


def test_gr_gradients_reach_a_b_and_weights():
    zc, za, y = _data(31, 5, 4)
    zc.requires_grad_(True)
    za.requires_grad_(True)
    w = F.cross_entropy(zc, y, reduction="none")  # not detached, as in Gen-AF's code
    genetic_regularization(zc, za, y, w).backward()
    assert zc.grad is not None and za.grad is not None
    assert torch.isfinite(zc.grad).all() and torch.isfinite(za.grad).all()
    assert zc.grad.abs().sum() > 0 and za.grad.abs().sum() > 0
    # the weights carry gradient of their own
    w2 = torch.rand(5, dtype=torch.float64, requires_grad=True)
    genetic_regularization(zc.detach(), za.detach(), y, w2).backward()
    assert w2.grad is not None and w2.grad.abs().sum() > 0


def test_gr_tanh_scale():
    zc, za, y = _data(32, 6, 3)
    w = torch.rand(6, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 4
    # W depends on (w_i + w_j) / tanh_scale only
    assert_close(genetic_regularization(zc, za, y, w, tanh_scale=32.0),
                 genetic_regularization(zc, za, y, w / 32.0, tanh_scale=1.0))
    # larger tanh_scale -> smaller W -> closer to the unweighted loss (W = 0, Delta = 0)
    zero = genetic_regularization(zc, za, y, torch.zeros_like(w))
    gaps = [abs(genetic_regularization(zc, za, y, w, tanh_scale=t) - zero).item()
            for t in (1.0, 32.0, 1e3, 1e9)]
    assert gaps[-1] < 1e-6 < gaps[0]
    assert gaps[1] > gaps[2] > gaps[3]
    # tiny tanh_scale -> W = 1: D^B = clamp(shift * M), so with all labels equal every target
    # distance is eps and P^B is uniform (1/N) in every row
    same = torch.zeros(6, dtype=torch.long)
    got = genetic_regularization(zc, za, same, w + 1.0, tanh_scale=1e-6, reduction="none")
    ref = _ref_gr(zc, za, same, torch.full((6,), 1e9, dtype=torch.float64), reduction="none")
    assert_close(got, ref, rtol=1e-9, atol=1e-12)
    # ... i.e. binary KL(1/N || P^A) per entry (P^A from the model side only)
    pa_terms = _ref_gr(zc, zc, same, torch.zeros(6, dtype=torch.float64), reduction="none")
    assert_close(pa_terms, torch.zeros(6, 6, dtype=torch.float64))


def test_gr_edge_cases_and_validation():
    x = torch.randn(1, 3, dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    assert genetic_regularization(x, x + 1, torch.tensor([0]), one) == 0
    zc, za, y = _data(33, 4, 3)
    w = torch.ones(4, dtype=torch.float64)
    assert_close(genetic_regularization(zc, za, y, w, reduction="mean") * 16,
                 genetic_regularization(zc, za, y, w))
    # A and B may live in different feature spaces (only the N x N graphs are compared)
    b_wide = torch.randn(4, 7, dtype=torch.float64)
    assert_close(genetic_regularization(zc, b_wide, y, w), _ref_gr(zc, b_wide, y, w))
    with pytest.raises(ConfigError):
        genetic_regularization(zc, za, y, w, reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        genetic_regularization(zc, za, y, w, tanh_scale=0.0)
    with pytest.raises(ConfigError):
        genetic_regularization(zc, za, y, w, eps=0.0)
    with pytest.raises(ValueError):
        genetic_regularization(zc, za[:3], y, w)
    with pytest.raises(ValueError):
        genetic_regularization(zc, za, y, w[:3])
    with pytest.raises(ValueError):
        genetic_regularization(zc, za, y.float(), w)


# ------------------------------------------------------------------------------ TRADES


@pytest.mark.parametrize(("seed", "n", "c", "beta"),
                         [(0, 4, 3, 6.0), (1, 5, 5, 1.0), (2, 6, 4, 0.0)])
def test_trades_matches_brute_force(seed, n, c, beta):
    zc, za, y = _data(seed, n, c)
    assert_close(trades_loss(zc, za, y, beta=beta), _ref_trades(zc, za, y, beta))


def test_trades_equals_ce_when_adv_is_clean():
    zc, _, y = _data(40, 5, 4)
    assert_close(trades_loss(zc, zc.clone(), y, beta=6.0), F.cross_entropy(zc, y))


def test_trades_inner_objective():
    zc, za, _ = _data(41, 5, 4)
    q = F.softmax(zc, dim=1)
    got = trades_inner_objective(za, q)
    ref = [_kl(_softmax(pc), _softmax(pa)) for pc, pa in zip(zc.tolist(), za.tolist())]
    assert got.shape == (5,)
    assert_close(got, torch.tensor(ref, dtype=torch.float64))
    assert_close(trades_inner_objective(zc, q), torch.zeros(5, dtype=torch.float64))
    # the batch mean of the inner objective is TRADES' KL term
    y = torch.zeros(5, dtype=torch.long)
    assert_close(trades_loss(zc, za, y, beta=2.0) - F.cross_entropy(zc, y), 2.0 * got.mean())
    # exact zeros in the reference contribute 0 (0 log 0 = 0)
    q0 = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    z0 = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    val = trades_inner_objective(z0, q0)
    assert_close(val, torch.tensor([math.log(3.0)], dtype=torch.float64))
    val.sum().backward()
    assert torch.isfinite(z0.grad).all()


def test_trades_inner_objective_drives_pgd():
    from encshield.attacks.whitebox import pgd

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    x = torch.rand(4, 3, 2, 2)
    with torch.no_grad():
        q = F.softmax(model(x), dim=1)
    x_adv = pgd(model, x, q, eps=8 / 255, steps=5, objective=trades_inner_objective)
    assert (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        assert trades_inner_objective(model(x_adv), q).sum() > 0


# ------------------------------------------------------------------------------ MART


@pytest.mark.parametrize(("seed", "n", "c", "beta"),
                         [(0, 4, 3, 6.0), (1, 5, 5, 1.0), (2, 6, 2, 0.0)])
def test_mart_matches_brute_force(seed, n, c, beta):
    zc, za, y = _data(seed, n, c)
    assert_close(mart_loss(zc, za, y, beta=beta), _ref_mart(zc, za, y, beta))


def test_mart_hand_computed():
    # sample 1: y = 0, p_clean = [1/2, 1/4, 1/4], p_adv = [1/4, 1/2, 1/4]
    #   BCE = -log(1/4) - log(1 - 1/2) = log 8
    #   KL = 1/2 log 2 + 1/4 log(1/2) + 1/4 log 1 = 1/4 log 2;  1 - p_clean[y] = 1/2
    # sample 2: y = 1, p_clean = [0.2, 0.6, 0.2], p_adv = [0.1, 0.3, 0.6]
    #   BCE = -log 0.3 - log(1 - 0.6) = -log 0.12
    #   KL = 0.2 log 2 + 0.6 log 2 + 0.2 log(1/3) = 0.8 log 2 - 0.2 log 3;  1 - p_clean[y] = 0.4
    # beta = 6: L = (log 8 + 6 * 1/2 * 1/4 log 2 - log 0.12 + 6 * 0.4 * (0.8 log 2 - 0.2 log 3)) / 2
    pc = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2]], dtype=torch.float64)
    pa = torch.tensor([[0.25, 0.5, 0.25], [0.1, 0.3, 0.6]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    expected = (math.log(8) + 0.75 * math.log(2) - math.log(0.12)
                + 2.4 * (0.8 * math.log(2) - 0.2 * math.log(3))) / 2
    got = mart_loss(pc.log() + 3.0, pa.log() - 1.0, y, beta=6.0)  # logits up to a shift
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_mart_inner_attack_start_option():
    """attack_start='gaussian' is the official MART code's start x + 0.001 N(0, I) followed by
    Madry's sign steps (a reference loop here); the default stays the uniform start."""
    from encshield.attacks.whitebox import pgd
    from encshield.defenses import build_defense

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5)).eval()
    x = torch.rand(6, 3, 4, 4)
    y = torch.arange(6) % 5
    eps, step, steps, seed = 0.031, 0.007, 4, 3
    attack = {"eps": eps, "step_size": step, "steps": steps}
    official = build_defense("mart", attack=attack, attack_start="gaussian")
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    reference = (x + 0.001 * noise).clamp(0, 1)
    for _ in range(steps):
        leaf = reference.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(leaf), y), leaf)
        reference = reference + step * grad.sign()
        reference = torch.min(torch.max(reference, x - eps), x + eps).clamp(0, 1)
    assert_close(official.attack(model, x, y, seed), reference, atol=1e-6, rtol=0)
    default = build_defense("mart", attack=attack)
    assert default.config.attack_start == "uniform"
    assert torch.equal(default.attack(model, x, y, seed),
                       pgd(model, x, y, eps=eps, steps=steps, step_size=step, keep_best="last",
                           seed=seed))
    with pytest.raises(ConfigError, match="random_start"):
        build_defense("mart", attack={"random_start": False}, attack_start="gaussian")


# ------------------------------------------------------------------------------ PGD-AT


def test_pgd_at_loss():
    _, za, y = _data(50, 5, 4)
    ref = sum(_ce(r, t) for r, t in zip(za.tolist(), y.tolist())) / 5
    assert_close(pgd_at_loss(za, y), torch.tensor(ref, dtype=torch.float64))


# ------------------------------------------------------------------------------ all losses


def _extreme(seed: int, n: int = 6, c: int = 4, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    zc = (torch.randint(0, 2, (n, c), generator=g) * 100 - 50).to(dtype).requires_grad_(True)
    za = (torch.randint(0, 2, (n, c), generator=g) * 100 - 50).to(dtype).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=g)
    return zc, za, y


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["gr", "trades", "mart", "pgd_at", "inner"])
def test_losses_finite_for_extreme_logits(name, dtype):
    for seed in range(3):
        zc, za, y = _extreme(seed, dtype=dtype)
        if name == "gr":
            w = F.cross_entropy(zc, y, reduction="none")
            loss = genetic_regularization(zc, za, y, w)
        elif name == "trades":
            loss = trades_loss(zc, za, y)
        elif name == "mart":
            loss = mart_loss(zc, za, y)
        elif name == "pgd_at":
            loss = pgd_at_loss(za, y)
        else:
            loss = trades_inner_objective(za, F.softmax(zc, dim=1).detach()).sum()
        assert torch.isfinite(loss), (name, seed, loss)
        loss.backward()
        for z in (zc, za):
            if z.grad is not None:
                assert torch.isfinite(z.grad).all(), (name, seed)


def test_mart_extreme_matches_reference_in_float64():
    zc, za, y = _extreme(5, dtype=torch.float64)
    # -log(1 - max_{k != y} p_k) stays exact where 1 - p underflows a naive evaluation
    assert_close(mart_loss(zc.detach(), za.detach(), y), _ref_mart_stable(zc, za, y, 6.0))


def _ref_mart_stable(zc, za, y, beta):
    zc, za, y = zc.tolist(), za.tolist(), y.tolist()
    total = 0.0
    for i in range(len(y)):
        pc = _softmax(zc[i])
        m = max((k for k in range(len(za[i])) if k != y[i]), key=lambda k: za[i][k])
        top = max(za[i])
        lse_all = top + math.log(sum(math.exp(v - top) for v in za[i]))
        rest = [v for k, v in enumerate(za[i]) if k != m]
        top_r = max(rest)
        lse_rest = top_r + math.log(sum(math.exp(v - top_r) for v in rest))
        log_pa = [v - lse_all for v in za[i]]
        kl = sum(p * (math.log(p) - lq) for p, lq in zip(pc, log_pa) if p > 0)
        total += -log_pa[y[i]] + (lse_all - lse_rest) + beta * kl * (1.0 - pc[y[i]])
    return torch.tensor(total / len(y), dtype=torch.float64)


def test_validation_of_the_classification_losses():
    zc, za, y = _data(60, 4, 3)
    with pytest.raises(ConfigError):
        trades_loss(zc, za, y, beta=-1.0)
    with pytest.raises(ConfigError):
        mart_loss(zc, za, y, beta=float("nan"))
    with pytest.raises(ValueError):
        trades_loss(zc, za[:, :2], y)
    with pytest.raises(ValueError):
        mart_loss(zc, za, y + 3)
    with pytest.raises(ValueError):
        mart_loss(zc[:, :1], za[:, :1], torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        pgd_at_loss(za[0], y)
    with pytest.raises(ValueError):
        trades_inner_objective(za, F.softmax(zc, dim=1)[:3])
