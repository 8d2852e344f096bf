"""White-box attacks: generic contract tests over WHITEBOX_ATTACKS plus per-feature tests.

The victim is a small real classifier trained in the test (smoke tier): a 4-conv CNN with
BatchNorm and an MLP head on 16x16 synthetic images of 8 classes. A class is a corner of the
colour cube (each channel's mean is 0.45 or 0.55), each image gets a per-sample colour jitter
(uniform +-0.04 per channel) and per-pixel Gaussian noise (std 0.1). The jitter spreads the
distances to the decision boundaries, so robust accuracy falls gradually with the budget: about
97 % clean, about 30 % under FGSM and about 23 % under APGD at 8/255, over 95 % under uniform
noise of that budget.
"""

from __future__ import annotations

import inspect
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from encshield.attacks.whitebox import (
    BPDA,
    OBJECTIVES,
    WHITEBOX_ATTACKS,
    apgd,
    apgd_targeted,
    autoattack,
    cw_margin,
    dlr,
    dlr_targeted,
    feature_cosine_distance,
    feature_pgd,
    fgsm,
    pgd,
    sanity_check,
    square,
    step_size_checkpoints,
)
from encshield.attacks.whitebox.apgd import APGDConfig, APGDTargetedConfig
from encshield.attacks.whitebox.autoattack import AutoAttackConfig
from encshield.attacks.whitebox.base import Problem
from encshield.attacks.whitebox.fgsm import FGSMConfig
from encshield.attacks.whitebox.pgd import PGDConfig
from encshield.attacks.whitebox.square import SquareConfig
from encshield.errors import ConfigError, ImageRangeError
from encshield.models import build_encoder

NAMES = WHITEBOX_ATTACKS.names()
EPS = {"linf": 8 / 255, "l2": 0.5}
#: Fast settings per attack for the generic tests (defaults otherwise).
FAST = {"pgd": {"steps": 10}, "pgd_l2": {"steps": 10}, "apgd_ce": {"steps": 10},
        "apgd_dlr": {"steps": 10}, "apgd_t": {"steps": 5, "n_target_classes": 3}, "fgsm": {},
        "square": {"queries": 100},
        "autoattack": {"steps": 5, "n_target_classes": 3, "queries": 20},
        "joint_pgd": {"steps": 10}, "detection_aware_pgd": {"steps": 10}}


def _images(n: int, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    corners = torch.tensor(list(itertools.product([0, 1], repeat=3)), dtype=torch.float32)
    prototypes = 0.5 + 0.05 * (2 * corners - 1)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(prototypes)
    colour = prototypes[labels] + 0.04 * (2 * torch.rand(n, 3, generator=generator) - 1)
    images = colour[:, :, None, None] + 0.1 * torch.randn(n, 3, size, size, generator=generator)
    return images.clamp(0, 1), labels


def _cnn(num_classes: int = 8, width: int = 16) -> nn.Sequential:
    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2 * w, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )


@pytest.fixture(scope="module", autouse=True)
def _one_thread():  # noqa: ANN202
    """The models here are tiny: one intra-op thread is as fast and immune to busy machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def victim() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(trained classifier in eval mode, 256 test images, their labels)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _cnn()
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
        parameter.grad = None
    x, y = _images(256, seed=2)
    return model, x, y


@pytest.fixture(scope="module")
def batch(victim):  # noqa: ANN001, ANN201
    model, x, y = victim
    return model, x[:64], y[:64]


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


def _norm(name: str) -> str:
    return WHITEBOX_ATTACKS.get(name).norm


def _attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **overrides):  # noqa: ANN003, ANN202
    config = {**FAST[name], **overrides}
    eps = config.pop("eps", EPS[_norm(name)])
    return WHITEBOX_ATTACKS.get(name)(model, x, y, eps=eps, **config)


def _uniform_noise(x: torch.Tensor, eps: float, norm: str, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if norm == "linf":
        noise = (2 * torch.rand(x.shape, generator=generator) - 1) * eps
    else:
        noise = torch.randn(x.shape, generator=generator)
        noise = noise * (eps / noise.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
    return (x + noise).clamp(0, 1)


# ----------------------------------------------------------------------------- the contract


def test_registry_names_and_configs() -> None:
    assert NAMES == ["apgd_ce", "apgd_dlr", "apgd_t", "autoattack", "detection_aware_pgd",
                     "fgsm", "joint_pgd", "pgd", "pgd_l2", "square"]
    for name in NAMES:
        attack = WHITEBOX_ATTACKS.get(name)
        config = attack.config()
        assert config.eps > 0 and attack.norm in ("linf", "l2")
    assert WHITEBOX_ATTACKS.get("pgd_l2").norm == "l2"
    assert WHITEBOX_ATTACKS.get("apgd_dlr").config().objective == "dlr"
    with pytest.raises(ConfigError, match="steps"):
        WHITEBOX_ATTACKS.get("pgd").config(steps=0)
    with pytest.raises(ConfigError, match="unknown field"):
        WHITEBOX_ATTACKS.get("pgd").config(stepz=3)
    with pytest.raises(ConfigError, match="objective"):
        WHITEBOX_ATTACKS.get("apgd_ce").config(objective="nope")
    with pytest.raises(ConfigError, match="norm"):
        WHITEBOX_ATTACKS.get("pgd").config(norm="l1")


@pytest.mark.parametrize(("function", "config_class"), [
    (pgd, PGDConfig), (apgd, APGDConfig), (fgsm, FGSMConfig), (apgd_targeted, APGDTargetedConfig),
    (square, SquareConfig), (autoattack, AutoAttackConfig),
])
def test_function_defaults_match_configs(function, config_class) -> None:  # noqa: ANN001
    """The keyword defaults of each function are its config's defaults (one source of truth)."""
    fields = config_class.model_fields
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY or name == "seed":
            continue
        assert name in fields, name
        assert fields[name].default == parameter.default, name


@pytest.mark.parametrize("name", NAMES)
def test_budget_range_shape_and_detached(name: str, batch) -> None:  # noqa: ANN001
    model, x, y = batch
    x_adv = _attack(name, model, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    eps = EPS[_norm(name)]
    if _norm(name) == "linf":
        assert float((x_adv - x).abs().max()) <= eps + 1e-6
    else:
        assert float((x_adv - x).flatten(1).norm(dim=1).max()) <= eps + 1e-5
    assert not torch.equal(x_adv, x)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed_and_global_rng_untouched(name: str, batch) -> None:  # noqa: ANN001
    model, x, y = batch
    state = torch.get_rng_state()
    first = _attack(name, model, x, y, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    again = _attack(name, model, x, y, seed=3)
    assert torch.equal(first, again)
    if name != "fgsm":  # FGSM has no random start by default
        other = _attack(name, model, x, y, seed=4)
        assert not torch.equal(first, other)


@pytest.mark.parametrize("name", NAMES)
def test_stronger_than_random_noise_and_not_above_clean(name: str, batch) -> None:  # noqa: ANN001
    model, x, y = batch
    eps = EPS[_norm(name)]
    clean = _accuracy(model, x, y)
    robust = _accuracy(model, _attack(name, model, x, y), y)
    noise = _accuracy(model, _uniform_noise(x, eps, _norm(name)), y)
    assert clean > 0.9
    assert robust <= clean
    assert robust < noise - 0.2


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("fgsm", "square", "autoattack")])
def test_more_steps_and_restarts_never_hurt(name: str, batch) -> None:  # noqa: ANN001
    model, x, y = batch
    steps = FAST[name]["steps"]
    one = _correct(model, _attack(name, model, x, y, steps=steps), y)
    two = _correct(model, _attack(name, model, x, y, steps=2 * steps), y)
    assert two.float().mean() <= one.float().mean()
    # restarts keep the best per sample and restart r is the same in both runs: exact.
    once = _correct(model, _attack(name, model, x, y, restarts=1), y)
    thrice = _correct(model, _attack(name, model, x, y, restarts=3), y)
    assert not bool((thrice & ~once).any())


def test_pgd_fixed_step_size_is_exactly_monotone_in_steps(batch) -> None:  # noqa: ANN001
    model, x, y = batch
    runs = [_correct(model, pgd(model, x, y, steps=s, step_size=1 / 255), y) for s in (3, 6, 12)]
    for fewer, more in zip(runs, runs[1:]):
        assert not bool((more & ~fewer).any())


@pytest.mark.parametrize("name", NAMES)
def test_no_parameter_gradients_and_modes_restored(name: str, batch) -> None:  # noqa: ANN001
    model, x, y = batch
    model.train()
    model[0].eval()  # a mixed-mode model: the first conv stays in eval mode
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    try:
        _attack(name, model, x, y)
        assert all(p.grad is None for p in model.parameters())
        assert model.training and not model[0].training and model[1].training
        assert all(torch.equal(stats[k], v) for k, v in model.state_dict().items() if k in stats)
    finally:
        model.eval()


def test_attack_works_under_no_grad_and_inference_mode(batch) -> None:  # noqa: ANN001
    model, x, y = batch
    reference = pgd(model, x, y, steps=3)
    with torch.no_grad():
        assert torch.equal(pgd(model, x, y, steps=3), reference)
    with torch.inference_mode():
        x_inf, y_inf = x.clone(), y.clone()
    assert torch.equal(pgd(model, x_inf, y_inf, steps=3), reference)


def test_inputs_are_checked(batch) -> None:  # noqa: ANN001
    model, x, y = batch
    with pytest.raises(ImageRangeError, match="attack input"):
        pgd(model, x * 255, y)
    with pytest.raises(ConfigError, match="first dimension"):
        pgd(model, x, y[:10])


# ------------------------------------------------------------------------------------- EOT


class _Dropout(nn.Module):
    """A classifier with dropout that stays active in eval mode; counts forward passes."""

    def __init__(self, model: nn.Module, p: float = 0.3) -> None:
        super().__init__()
        self.model, self.p, self.calls = model, p, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(F.dropout(x, self.p, training=True))


@pytest.mark.parametrize("name", NAMES)
def test_eot_on_a_stochastic_model(name: str, batch) -> None:  # noqa: ANN001
    model, x, y = batch
    stochastic = _Dropout(model)
    x_adv = _attack(name, stochastic, x, y, eot_samples=3, seed=1)
    calls = stochastic.calls
    assert calls >= 3 and calls % 3 == 0  # every forward is one of 3 EOT passes
    assert torch.equal(_attack(name, stochastic, x, y, eot_samples=3, seed=1), x_adv)
    assert float((x_adv - x).abs().max()) <= EPS["linf"] + 1e-6 or _norm(name) == "l2"


class _RandomMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.rand_like(x)
        return self.linear((x * mask).flatten(1))


def test_eot_averages_gradients_and_losses() -> None:
    torch.manual_seed(0)
    model = _RandomMask()
    x = torch.rand(6, 3, 4, 4)
    y = torch.arange(6) % 5
    problem = Problem(model, OBJECTIVES.get("ce"), y, y, eot_samples=4)
    torch.manual_seed(11)
    loss, success, grad = problem.evaluate(x, grad=True)
    torch.manual_seed(11)
    grads, losses = [], []
    for _ in range(4):
        leaf = x.clone().requires_grad_(True)
        single = F.cross_entropy(model(leaf), y, reduction="none")
        grads.append(torch.autograd.grad(single.sum(), leaf)[0])
        losses.append(single.detach())
    assert torch.allclose(grad, torch.stack(grads).mean(0), atol=1e-6)
    assert torch.allclose(loss, torch.stack(losses).mean(0), atol=1e-6)
    assert success is not None and success.shape == (6,)
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------ BPDA


class _Quantise(nn.Module):
    """8-bit quantisation: the forward of a gradient-masking preprocessing (zero gradient)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 255) / 255


def test_bpda_gives_gradients_where_the_plain_attack_gets_none(batch) -> None:  # noqa: ANN001
    model, x, y = batch
    masked = nn.Sequential(_Quantise(), model).eval()
    through = nn.Sequential(BPDA(_Quantise()), model).eval()
    with torch.no_grad():
        assert torch.equal(masked(x), through(x))  # same function forward
    for net, expect_zero in ((masked, True), (through, False)):
        leaf = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(net(leaf), y), leaf)
        assert bool((grad == 0).all()) == expect_zero
    plain = _accuracy(masked, pgd(masked, x, y, steps=10), y)
    adaptive = _accuracy(masked, pgd(through, x, y, steps=10), y)
    assert adaptive < plain - 0.2


def test_bpda_with_a_differentiable_approximation() -> None:
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    out = BPDA(lambda t: torch.round(t * 4) / 4, lambda t: 2 * t)(x)
    assert torch.equal(out, torch.round(x.detach() * 4) / 4)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.allclose(grad, torch.full_like(grad, 2.0))


# ------------------------------------------------------------------------ targeted attacks


def test_targeted_attacks_reach_the_target_more_often(victim) -> None:  # noqa: ANN001
    model, x, y = victim
    x, y = x[:96], y[:96]
    with torch.no_grad():
        targets = model(x).argmin(1)  # the least likely class
    def hit(x_adv: torch.Tensor) -> float:
        with torch.no_grad():
            return float((model(x_adv).argmax(1) == targets).float().mean())
    eps = 16 / 255
    untargeted = hit(apgd(model, x, y, eps=eps, steps=20))
    targeted = hit(apgd_targeted(model, x, y, eps=eps, steps=20, targets=targets))
    assert targeted > untargeted + 0.2
    assert hit(pgd(model, x, targets, eps=eps, steps=20, targeted=True)) > untargeted + 0.2


def test_apgd_t_top_k_mode_leaves_misclassified_samples_and_is_strong(batch) -> None:  # noqa: ANN001
    model, x, y = batch
    clean = _correct(model, x, y)
    x_adv = apgd_targeted(model, x, y, steps=10, n_target_classes=3)
    assert torch.equal(x_adv[~clean], x[~clean])
    assert _accuracy(model, x_adv, y) <= _accuracy(model, apgd(model, x, y, steps=10), y) + 0.05


# ---------------------------------------------------------------- reference implementations


def test_pgd_last_iterate_matches_madry_reference(batch) -> None:  # noqa: ANN001
    """keep_best='last' without a random start is Madry et al.'s update, step by step."""
    model, x, y = batch
    eps, alpha, steps = 8 / 255, 2 / 255, 7
    reference = x.clone()
    for _ in range(steps):
        leaf = reference.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(leaf), y, reduction="sum"), leaf)
        reference = reference + alpha * grad.sign()
        reference = torch.min(torch.max(reference, x - eps), x + eps).clamp(0, 1)
    ours = pgd(model, x, y, eps=eps, steps=steps, step_size=alpha, random_start=False,
               keep_best="last")
    assert torch.allclose(ours, reference, atol=1e-6)


def test_apgd_checkpoints_follow_the_official_integer_schedule() -> None:
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 -> w = ceil(p * 100)
    assert step_size_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    # 20 steps: intervals int(4.4) = 4, then 3, 2 and 1 (floor(0.06 * 20) = 1, at least 1), as
    # the authors' code halves; ceil(p * 20) would give 5, 9, 12, 14, 16, 18, 19, 20.
    assert step_size_checkpoints(20) == [4, 7, 9, *range(10, 21)]
    assert step_size_checkpoints(1) == [1] and step_size_checkpoints(10) == [2, 3, *range(4, 11)]
    import encshield.attacks.whitebox as whitebox  # no name clash with encshield.checkpoints
    assert not hasattr(whitebox, "checkpoints")


def test_apgd_agrees_with_torchattacks(victim) -> None:  # noqa: ANN001
    """APGD-CE/-DLR vs ``torchattacks.APGD`` (an independent implementation, test-only).

    Setup: the module's trained CNN (clean accuracy ~97 %), all 256 test images, L-inf 8/255,
    50 iterations, 1 restart, seed 0 on both sides. Robust accuracies must agree within
    2 percentage points (5 samples). FGSM is reported as a weak baseline: it leaves clearly
    more samples robust, so a 2-point agreement is meaningful.
    """
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = victim
    results = {}
    for loss in ("ce", "dlr"):
        ours = WHITEBOX_ATTACKS.get(f"apgd_{loss}")(model, x, y, eps=8 / 255, steps=50, seed=0)
        theirs = torchattacks.APGD(model, norm="Linf", eps=8 / 255, steps=50, n_restarts=1,
                                   loss=loss, seed=0)(x, y)
        results[loss] = (_accuracy(model, ours, y), _accuracy(model, theirs, y))
    weak = _accuracy(model, fgsm(model, x, y), y)
    print(f"robust accuracy (ours, torchattacks): {results}; FGSM {weak}")  # shown with -s
    for loss, (ours_ra, theirs_ra) in results.items():
        assert abs(ours_ra - theirs_ra) <= 0.02, (loss, results)
        assert ours_ra < weak - 0.03, (loss, results, weak)


# ------------------------------------------------------------------------------ objectives


def test_objectives_per_sample_and_invariances() -> None:
    torch.manual_seed(0)
    logits = torch.randn(10, 6)
    y = torch.arange(10) % 6
    targets = (y + 1) % 6
    misclassified = logits.argmax(1) != y
    assert torch.equal(cw_margin(logits, y) > 0, misclassified)
    assert torch.equal(dlr(logits, y) > 0, misclassified)
    assert torch.allclose(dlr(3 * logits + 1, y), dlr(logits, y), atol=1e-5)
    assert torch.allclose(dlr_targeted(3 * logits - 2, (y, targets)),
                          dlr_targeted(logits, (y, targets)), atol=1e-5)
    for name in ("ce", "cw", "dlr"):
        assert OBJECTIVES.get(name)(logits, y).shape == (10,)
    features = torch.randn(10, 32)
    assert torch.allclose(feature_cosine_distance(features, features), torch.zeros(10), atol=1e-6)
    assert torch.allclose(OBJECTIVES.get("feature_l2")(features, 2 * features),
                          features.norm(dim=1), atol=1e-5)
    with pytest.raises(ConfigError, match="at least 3 classes"):
        dlr(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="apgd_t"):
        pgd(nn.Flatten(), torch.rand(2, 1, 2, 2), torch.zeros(2, dtype=torch.long),
            objective="dlr_targeted")


class _TwoBranches(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": self.a(x), "b": self.b(x)}


def test_custom_objective_joint_attack_on_an_ensemble(batch) -> None:  # noqa: ANN001
    model, x, y = batch
    other = nn.Sequential(nn.Upsample(scale_factor=1), model)
    ensemble = _TwoBranches(model, other).eval()

    def joint(outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        return sum(F.cross_entropy(z, labels, reduction="none") for z in outputs.values())

    def fused(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(z.softmax(1) for z in outputs.values()).argmax(1)

    for name in ("pgd", "apgd_ce"):
        x_adv = _attack(name, ensemble, x, y, objective=joint, predict=fused)
        with torch.no_grad():
            fused_acc = float((fused(ensemble(x_adv)) == y).float().mean())
        assert fused_acc < _accuracy(model, x, y) - 0.3


# ------------------------------------------------------------------------- feature attack


def test_feature_pgd_beats_random_noise() -> None:
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", width=8, input_size=16).eval()
    x, _ = _images(32, seed=5)
    with torch.no_grad():
        clean = encoder(x)
    eps = 10 / 255
    state = torch.get_rng_state()
    x_adv = feature_pgd(encoder, x, eps=eps, steps=10)
    assert torch.equal(torch.get_rng_state(), state)
    assert float((x_adv - x).abs().max()) <= eps + 1e-6 and 0 <= float(x_adv.min())
    with torch.no_grad():
        attacked = feature_cosine_distance(encoder(x_adv), clean)
        noisy = feature_cosine_distance(encoder(_uniform_noise(x, eps, "linf")), clean)
    assert float(attacked.mean()) > 2 * float(noisy.mean())
    assert bool((attacked > noisy).all())
    x_l2 = feature_pgd(encoder, x, eps=eps, steps=5, distance="l2")
    with torch.no_grad():
        assert float((encoder(x_l2) - clean).norm(dim=1).mean()) > float(
            (encoder(_uniform_noise(x, eps, "linf")) - clean).norm(dim=1).mean())
    assert all(p.grad is None for p in encoder.parameters())


def test_pgd_with_a_feature_objective_keeps_the_highest_loss(batch) -> None:  # noqa: ANN001
    model, x, _ = batch
    with torch.no_grad():
        reference = model(x)
    x_adv = pgd(model, x, reference, objective="feature_l2", steps=5)
    with torch.no_grad():
        assert float((model(x_adv) - reference).norm(dim=1).min()) > 0


# -------------------------------------------------------------------------- sanity checks


def test_sanity_check_clean_model_raises_no_flags(batch) -> None:  # noqa: ANN001
    model, x, y = batch
    flags = sanity_check(model, x, y, attack="apgd_ce", attack_config={"steps": 20})
    assert flags == [], [str(f) for f in flags]


def test_sanity_check_flags_gradient_masking(batch) -> None:  # noqa: ANN001
    model, x, y = batch
    masked = nn.Sequential(_Quantise(), model).eval()
    flags = {f.name: f for f in sanity_check(masked, x, y, attack="pgd",
                                             attack_config={"steps": 10})}
    assert "zero_gradient" in flags
    assert flags["zero_gradient"].numbers["zero_gradient_fraction"] == 1.0
    assert "randomness" not in flags


def test_sanity_check_flags_randomness(batch) -> None:  # noqa: ANN001
    model, x, y = batch
    flags = sanity_check(_Dropout(model), x, y, attack="pgd", attack_config={"steps": 5})
    names = [f.name for f in flags]
    assert "randomness" in names and "zero_gradient" not in names
    flag = flags[names.index("randomness")]
    assert flag.numbers["max_abs_difference"] > 0 and "EOT" in flag.message


def test_sanity_check_flags_an_attack_weaker_than_noise(batch) -> None:  # noqa: ANN001
    """A broken 'iterative' attack (ascent on the negated loss, no random start) is caught."""
    model, x, y = batch
    flags = {f.name for f in sanity_check(
        model, x, y, attack="pgd",
        attack_config={"steps": 5, "random_start": False,
                       "objective": lambda out, t: -F.cross_entropy(out, t, reduction="none")})}
    assert {"weaker_than_simple_attack", "eps_not_decreasing"} <= flags


def test_l2_budget_is_respected_for_large_gradients(batch) -> None:  # noqa: ANN001
    model, x, y = batch
    for eps in (0.1, 1.0, 3.0):
        x_adv = pgd(model, x, y, norm="l2", eps=eps, steps=5)
        norms = (x_adv - x).flatten(1).norm(dim=1)
        assert float(norms.max()) <= eps + 1e-5
    norms = apgd(model, x, y, norm="l2", eps=0.25, steps=5).sub(x).flatten(1).norm(dim=1)
    assert float(norms.max()) <= 0.25 + 1e-5 and float(norms.max()) > 0.2
