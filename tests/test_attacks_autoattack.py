"""APGD, Square and the AutoAttack ensemble against the authors' reference implementation.

The reference is ``pyautoattack`` 0.2.0 (Croce & Hein's AutoAttack, packaged; test-only, installed
without dependencies: it imports only numpy and torch). Only its behaviour is compared; none of
its code is used by encshield. The victim is the 8-class CNN of ``test_attacks_whitebox`` at
width 8 (trained here in a few seconds), 128 synthetic 16x16 test images, about 91 % clean
accuracy; 8 classes, so APGD-T has 7 target classes on both sides.

Deterministic comparisons (no random start: our ``random_start=False`` against the reference's
``attack_single_run(x, y, x_init=x)``) check iterate-level agreement: with the reference's
first-interval comparison (``first_comparison="zero"``) the highest-loss points are bitwise
equal, and with our default (the paper's) the per-sample outcomes are equal. With random starts
(different generators on the two sides) robust accuracies must agree within one sample.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from encshield.attacks.whitebox import (
    WHITEBOX_ATTACKS,
    apgd,
    apgd_targeted,
    autoattack,
    pgd,
    square,
    square_fraction,
)
from encshield.errors import ConfigError
from tests.test_attacks_whitebox import _cnn, _images

reference = pytest.importorskip("pyautoattack")
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted  # noqa: E402

EPS = 8 / 255


@pytest.fixture(scope="module", autouse=True)
def _one_thread():  # noqa: ANN202
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def victim() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(trained width-8 CNN in eval mode, 128 test images, labels)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _cnn(width=8)
        x_train, y_train = _images(2048, seed=1)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(10):
            order = torch.randperm(len(x_train))
            for start in range(0, len(x_train), 128):
                idx = order[start:start + 128]
                loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
        parameter.grad = None
    x, y = _images(128, seed=2)
    return model, x, y


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def _from_clean_start(attack):  # noqa: ANN001, ANN202
    """The reference attack, started at the clean input instead of a random point."""
    attack.attack_single_run = lambda x, y: type(attack).attack_single_run(attack, x, y, x_init=x)
    return attack


# ------------------------------------------------------------------ APGD, deterministic


@pytest.mark.parametrize(("loss", "steps"), [("ce", 20), ("dlr", 20), ("ce", 100)])
def test_apgd_iterates_equal_the_reference(victim, loss: str, steps: int) -> None:  # noqa: ANN001
    """Same step-size schedule, conditions, momentum and resets: identical highest-loss points."""
    model, x, y = victim
    ref = _from_clean_start(APGDAttack(model, n_iter=steps, eps=EPS, loss=loss, seed=0))
    theirs_best = ref.perturb(x, y, best_loss=True)
    ours_best = apgd(model, x, y, eps=EPS, steps=steps, objective=loss, random_start=False,
                     keep_best="loss", first_comparison="zero")
    assert torch.equal(ours_best, theirs_best)
    # the default (the paper's first comparison) may move some iterates, not the outcomes
    theirs = _correct(model, ref.perturb(x, y), y)
    ours = _correct(model, apgd(model, x, y, eps=EPS, steps=steps, objective=loss,
                                random_start=False), y)
    assert torch.equal(ours, theirs)
    assert 0 < int(ours.sum()) < int(_correct(model, x, y).sum())


def test_apgd_t_iterates_equal_the_reference(victim) -> None:  # noqa: ANN001
    model, x, y = victim
    steps = 20
    with torch.no_grad():
        targets = model(x).sort(dim=1).indices[:, -3]  # the second most likely wrong class
    ref = APGDAttack_targeted(model, n_iter=steps, eps=EPS, n_target_classes=7, seed=0)
    ref.init_hyperparam(x)
    ref.y_target = targets
    theirs_best = ref.attack_single_run(x, y, x_init=x)[0]
    ours_best = apgd_targeted(model, x, y, eps=EPS, steps=steps, targets=targets,
                              random_start=False, keep_best="loss", first_comparison="zero")
    assert torch.equal(ours_best, theirs_best)
    # the top-k loop over 7 target classes: same robust samples
    theirs = _correct(model, _from_clean_start(ref).perturb(x, y), y)
    ours = _correct(model, apgd_targeted(model, x, y, eps=EPS, steps=steps,
                                         random_start=False), y)
    assert torch.equal(ours, theirs)


# ------------------------------------------------------------- random starts, the ensemble


def test_apgd_and_apgd_t_robust_accuracy_match_the_reference(victim) -> None:  # noqa: ANN001
    model, x, y = victim
    n = len(y)
    ours_ce = _correct(model, apgd(model, x, y, eps=EPS, steps=100, seed=0), y)
    theirs_ce = _correct(model, APGDAttack(model, n_iter=100, eps=EPS, seed=0).perturb(x, y), y)
    ours_t = _correct(model, apgd_targeted(model, x, y, eps=EPS, steps=100, seed=0), y)
    theirs_t = _correct(model, APGDAttack_targeted(
        model, n_iter=100, eps=EPS, n_target_classes=7, seed=0).perturb(x, y), y)
    print(f"robust samples of {n}: APGD-CE ours {int(ours_ce.sum())} reference "
          f"{int(theirs_ce.sum())}; APGD-T ours {int(ours_t.sum())} reference "
          f"{int(theirs_t.sum())}")
    assert abs(int(ours_ce.sum()) - int(theirs_ce.sum())) <= 1
    assert abs(int(ours_t.sum()) - int(theirs_t.sum())) <= 1


def test_autoattack_matches_the_reference_standard_ensemble(victim) -> None:  # noqa: ANN001
    """Ours (APGD-CE, APGD-T, Square) against the reference's standard version (with FAB-T)."""
    model, x, y = victim
    x, y = x[:32], y[:32]
    aa = reference.AutoAttack(model, norm="Linf", eps=EPS, seed=0, version="standard")
    aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = 7  # 8 classes
    theirs = _correct(model, aa.run_standard_evaluation(x, y, batch_size=len(y))[0], y)
    x_adv = WHITEBOX_ATTACKS.get("autoattack")(model, x, y, eps=EPS, seed=0)
    ours = _correct(model, x_adv, y)
    print(f"AutoAttack robust samples: ours {int(ours.sum())}, reference {int(theirs.sum())}")
    assert abs(int(ours.sum()) - int(theirs.sum())) <= 1
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    single = _correct(model, apgd(model, x, y, eps=EPS, steps=100, seed=0), y)
    assert int(ours.sum()) <= int(single.sum())


# ------------------------------------------------------------------------ pass counting


class _Counted(nn.Module):
    """Counts forward calls (with / without autograd), their images, and backward passes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.grad_calls = self.plain_calls = self.backward = 0
        self.images: list[int] = []
        counter = self

        class _Tap(torch.autograd.Function):
            @staticmethod
            def forward(ctx, z):  # noqa: ANN001, ANN205
                return z.view_as(z)

            @staticmethod
            def backward(ctx, g):  # noqa: ANN001, ANN205
                counter.backward += 1
                return g

        self._tap = _Tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images.append(int(x.shape[0]))
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad_calls += 1
            return self._tap.apply(self.model(x))
        self.plain_calls += 1
        return self.model(x)


@pytest.mark.parametrize("steps", [10, 20])
def test_apgd_spends_one_forward_backward_per_step(victim, steps: int) -> None:  # noqa: ANN001
    """One clean forward, then per step one forward+backward on the still-robust samples only
    (x(0) ... x(N-1)) and one forward for x(N): nothing on clean-misclassified samples."""
    model, x, y = victim
    correct = int(_correct(model, x, y).sum())
    counted = _Counted(model)
    apgd(counted, x, y, eps=EPS, steps=steps, seed=0)
    assert counted.backward == counted.grad_calls == steps
    assert counted.plain_calls == 2
    assert counted.images == [len(y)] + [correct] * (steps + 1)
    # APGD-T: per target class the same, on the samples no earlier target broke
    counted = _Counted(model)
    apgd_targeted(counted, x, y, eps=EPS, steps=steps, n_target_classes=2, seed=0)
    assert counted.backward == counted.grad_calls == 2 * steps
    assert counted.plain_calls == 1 + 2
    assert counted.images[0] == len(y) and counted.images[1] == correct


# ------------------------------------------------------------------------------- Square


def test_square_schedule_follows_the_paper() -> None:
    values = {i: square_fraction(i, 5000, 0.8) for i in (0, 10, 11, 50, 51, 201, 8001)}
    assert values == {0: 0.8, 10: 0.8, 11: 0.4, 50: 0.4, 51: 0.2, 201: 0.1, 8001: 0.8 / 512}
    assert square_fraction(1000, 1000, 0.8, rescale=True) == 0.8 / 512  # 10000 after rescaling


def test_square_needs_no_gradient_and_never_gets_worse_with_queries(victim) -> None:  # noqa: ANN001
    """On a model whose gradient is zero (8-bit quantised input) PGD is stuck; Square is not.
    More queries never hurt: the first iterations are the same random draws."""
    model, x, y = victim
    masked = nn.Sequential(_Quantise(), model).eval()
    stuck = _correct(masked, pgd(masked, x, y, steps=10), y)
    few = _correct(masked, square(masked, x, y, queries=100, seed=0), y)
    many = _correct(masked, square(masked, x, y, queries=300, seed=0), y)
    assert float(few.float().mean()) < float(stuck.float().mean()) - 0.2
    assert not bool((many & ~few).any())
    # every attacked pixel sits on a vertex of the ball: x +- eps (unless clipped to [0, 1])
    attacked = _correct(model, x, y)
    x_adv = square(model, x, y, queries=50, seed=1)[attacked]
    delta, inside = (x_adv - x[attacked]).abs(), (x[attacked] > EPS) & (x[attacked] < 1 - EPS)
    assert torch.allclose(delta[inside], torch.full_like(delta[inside], EPS), atol=1e-6)


class _Quantise(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 255) / 255


# ---------------------------------------------------------------------------- ensemble


def test_autoattack_returns_the_first_success_per_sample(victim) -> None:  # noqa: ANN001
    model, x, y = victim
    clean = _correct(model, x, y)
    x_adv = autoattack(model, x, y, steps=10, queries=50, n_target_classes=3, seed=0)
    assert torch.equal(x_adv[~clean], x[~clean])
    robust = clean.nonzero().squeeze(1)
    first = apgd(model, x[robust], y[robust], steps=10, seed=0)  # the first component's input
    broken_first = ~_correct(model, first, y[robust])
    assert torch.equal(x_adv[robust][broken_first], first[broken_first])
    ensemble = _correct(model, x_adv, y)
    assert int(ensemble.sum()) <= int((~broken_first).sum())


def test_autoattack_config_is_checked() -> None:
    attack = WHITEBOX_ATTACKS.get("autoattack")
    assert attack.config().attacks == ("apgd_ce", "apgd_t", "square")
    for bad, field in ((dict(attacks=("apgd_ce", "fab_t")), "attacks"),
                       (dict(norm="l2"), "square"), (dict(objective="dlr"), "objective"),
                       (dict(attacks=()), "attacks")):
        with pytest.raises(ConfigError, match=field):
            attack.config(**bad)
    assert attack.config(norm="l2", attacks=("apgd_ce", "apgd_t")).norm == "l2"
