"""Tests of the SSL methods in :data:`encshield.ssl.methods.METHODS`.

Every registered method (and any method registered later) is built on a tiny CIFAR-stem ResNet-18
(width 4, 16 px) with small heads and trained for a few optimiser steps on one fixed batch of 32
synthetic images with fixed augmented views. The tests check that the loss decreases and stays
finite, that momentum targets follow the EMA rule exactly and get no gradient, that queues and
centres are buffers updated after the step (and saved in ``state_dict``), and that a
``state_dict`` round trip reproduces the loss.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from encshield.errors import ConfigError
from encshield.models import build_encoder
from encshield.ssl.augment import make_views, preset
from encshield.ssl.methods import METHODS, SSLMethod

N = 32
SIZE = 16
STEPS = 20

#: Small heads for the smoke tests (methods not listed here are built with their defaults).
#: Queues hold two batches, so they are in steady state after two steps (see ``_burn_in``).
SMALL: dict[str, dict[str, Any]] = {
    "simclr": {"proj_hidden_dim": 32, "proj_output_dim": 16},
    "byol": {"proj_hidden_dim": 32, "proj_output_dim": 16, "pred_hidden_dim": 32},
    "mocov2plus": {"proj_hidden_dim": 32, "proj_output_dim": 16, "queue_size": 64},
    "simsiam": {"proj_hidden_dim": 32, "proj_output_dim": 32, "pred_hidden_dim": 8},
    "barlow_twins": {"proj_hidden_dim": 32, "proj_output_dim": 32},
    "vicreg": {"proj_hidden_dim": 32, "proj_output_dim": 32},
    "wmse": {"proj_hidden_dim": 32, "proj_output_dim": 8, "w_size": 32},
    "dino": {"proj_hidden_dim": 32, "proj_output_dim": 16, "num_prototypes": 64},
    "nnclr": {
        "proj_hidden_dim": 32, "proj_output_dim": 16, "pred_hidden_dim": 32, "queue_size": 64,
    },
    "swav": {"proj_hidden_dim": 32, "proj_output_dim": 16, "num_prototypes": 20, "queue_size": 64},
    "ressl": {"proj_hidden_dim": 32, "proj_output_dim": 16, "queue_size": 64},
    "mocov3": {"proj_hidden_dim": 32, "proj_output_dim": 16, "pred_hidden_dim": 32},
    "vibcreg": {"proj_hidden_dim": 32, "proj_output_dim": 32, "iternorm_groups": 4},
}

#: Buffers (besides queues) that must change after a step and be saved.
STATE_BUFFERS: dict[str, list[str]] = {"dino": ["center", "progress", "steps"], "swav": ["steps"]}

#: The defaults the methods must keep (paper / solo-learn CIFAR values).
DEFAULTS: dict[str, dict[str, Any]] = {
    "mocov2plus": {"proj_hidden_dim": 2048, "proj_output_dim": 256, "temperature": 0.2,
                   "queue_size": 32768, "base_tau": 0.99, "final_tau": 1.0},
    "simsiam": {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "pred_hidden_dim": 512},
    "barlow_twins": {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "lambd": 0.0051,
                     "scale_loss": 0.1},
    "vicreg": {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "sim_loss_weight": 25.0,
               "var_loss_weight": 25.0, "cov_loss_weight": 1.0},
    "wmse": {"proj_hidden_dim": 1024, "proj_output_dim": 64, "w_size": 128, "w_iter": 1},
    "dino": {"proj_hidden_dim": 2048, "proj_output_dim": 256, "num_prototypes": 4096,
             "norm_last_layer": True, "center_momentum": 0.9, "warmup_teacher_temperature": 0.04,
             "teacher_temperature": 0.07, "student_temperature": 0.1, "base_tau": 0.99,
             "final_tau": 1.0},
    "nnclr": {"proj_output_dim": 256, "queue_size": 65536, "temperature": 0.2},
    "swav": {"proj_hidden_dim": 2048, "proj_output_dim": 128, "num_prototypes": 3000,
             "sk_epsilon": 0.05, "sk_iters": 3, "temperature": 0.1, "queue_size": 0},
    "ressl": {"temperature_q": 0.1, "temperature_k": 0.04, "base_tau": 0.99, "final_tau": 1.0},
    "mocov3": {"proj_hidden_dim": 4096, "proj_output_dim": 256, "pred_hidden_dim": 4096,
               "temperature": 0.2, "base_tau": 0.99, "final_tau": 1.0},
    "vibcreg": {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "sim_loss_weight": 25.0,
                "var_loss_weight": 25.0, "cov_loss_weight": 200.0},
}

ALL = METHODS.names()


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

_VIEWS: dict[str, list[torch.Tensor]] = {}


def views_for(method_cls: type[SSLMethod]) -> list[torch.Tensor]:
    """Two views of one fixed batch, drawn once per preset under a fixed seed."""
    name = method_cls.augment_preset
    if name not in _VIEWS:
        g = torch.Generator().manual_seed(0)
        images = F.interpolate(
            torch.rand(N, 3, 4, 4, generator=g), size=SIZE, mode="bilinear", align_corners=False
        )
        state = torch.random.get_rng_state()
        torch.manual_seed(1)
        _VIEWS[name] = make_views(images, preset(name, SIZE))
        torch.random.set_rng_state(state)
    return [v.clone() for v in _VIEWS[name]]


def build(name: str, seed: int = 0, **overrides: Any) -> SSLMethod:
    torch.manual_seed(seed)
    encoder = build_encoder("resnet18", width=4, stem="cifar", normalization="cifar10",
                            input_size=SIZE)
    method = METHODS.get(name).from_args(encoder, {**SMALL.get(name, {}), **overrides})
    method.train()
    return method


def optimiser(method: SSLMethod) -> torch.optim.Optimizer:
    return torch.optim.Adam(method.trainable_parameters(), lr=1e-3)


def step(method: SSLMethod, opt: torch.optim.Optimizer, views: list[torch.Tensor],
         progress: float) -> float:
    """One step of the shared loop: loss, backward, optimiser step, ``after_step``."""
    loss = method.training_loss(views)["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    method.after_step(progress)
    return loss.item()


def _burn_in(method: SSLMethod) -> int:
    """Steps until every queue holds only keys of this run (a fixed batch then stays in it)."""
    return max([math.ceil(getattr(method, q).shape[0] / N) for q in method.queue_names()] or [0])


# --------------------------------------------------------------------------------------------
# registry and configuration
# --------------------------------------------------------------------------------------------


def test_all_methods_registered() -> None:
    expected = {"simclr", "byol", "mocov2plus", "simsiam", "barlow_twins", "vicreg", "wmse",
                "dino", "nnclr", "swav", "ressl", "mocov3", "vibcreg"}
    assert expected <= set(ALL)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_defaults(name: str) -> None:
    config = METHODS.get(name).Config()
    for field, value in DEFAULTS[name].items():
        assert getattr(config, field) == value, field


@pytest.mark.parametrize("name", ALL)
def test_unknown_field_raises(name: str) -> None:
    encoder = build_encoder("resnet18", width=4, stem="cifar", normalization="cifar10",
                            input_size=SIZE)
    with pytest.raises(ConfigError, match="no_such_field"):
        METHODS.get(name).from_args(encoder, {"no_such_field": 1})


@pytest.mark.parametrize("name", ALL)
def test_augment_preset_exists(name: str) -> None:
    config = preset(METHODS.get(name).augment_preset, 32)
    assert len(config.views) == 2


def test_ressl_teacher_view_is_weak() -> None:
    strong, weak = preset("ressl", 32).views
    assert strong.jitter_prob > 0 and strong.grayscale_prob > 0
    assert weak.crop_scale == (0.2, 1.0) and weak.flip_prob == 0.5
    assert weak.jitter_prob == weak.grayscale_prob == weak.blur_prob == weak.solarize_prob == 0


@pytest.mark.parametrize(
    ("name", "args"),
    [("wmse", {"w_size": 64, "proj_output_dim": 64}), ("vibcreg", {"iternorm_groups": 3}),
     ("dino", {"warmup_teacher_temperature": 0.1, "teacher_temperature": 0.07})],
)
def test_inconsistent_fields_raise(name: str, args: dict[str, Any]) -> None:
    encoder = build_encoder("resnet18", width=4, input_size=SIZE)
    with pytest.raises(ConfigError):
        METHODS.get(name).from_args(encoder, args)


# --------------------------------------------------------------------------------------------
# training behaviour
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_loss_decreases(name: str) -> None:
    method = build(name)
    views = views_for(type(method))
    opt = optimiser(method)
    losses = [step(method, opt, views, (i + 1) / STEPS) for i in range(STEPS)]
    assert all(math.isfinite(x) for x in losses), losses
    # With one fixed batch a queue soon holds earlier keys of the same images: compare from the
    # step where the queues are in that steady state (none for queue-free methods).
    start = _burn_in(method)
    assert start + 3 <= STEPS - 3
    first = sum(losses[start : start + 3]) / 3
    last = sum(losses[-3:]) / 3
    assert last < first - 0.02 * abs(first), losses


@pytest.mark.parametrize("name", ALL)
def test_momentum_targets(name: str) -> None:
    method = build(name)
    pairs = method.momentum_pairs()
    views = views_for(type(method))
    opt = optimiser(method)
    trainable = {id(p) for p in method.trainable_parameters()}
    for _, target in pairs:
        for p in target.parameters():
            assert not p.requires_grad
            assert id(p) not in trainable

    loss = method.training_loss(views)["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    for _, target in pairs:
        assert all(p.grad is None for p in target.parameters())
    assert any(p.grad is not None for p in method.encoder.parameters())
    opt.step()

    before = [[p.detach().clone() for p in t.parameters()] for _, t in pairs]
    online = [[p.detach().clone() for p in o.parameters()] for o, _ in pairs]
    progress = 0.3
    tau = method.momentum_tau(progress)
    assert 0.99 <= tau < 1.0 or not pairs
    method.after_step(progress)
    moved = False
    for (o_mod, t_mod), old_t, new_o in zip(pairs, before, online, strict=True):
        for p_t, t0, o1 in zip(t_mod.parameters(), old_t, new_o, strict=True):
            assert_close(p_t.detach(), tau * t0 + (1 - tau) * o1, rtol=1e-5, atol=1e-7)
            moved = moved or not torch.equal(p_t, t0)
        for b_o, b_t in zip(o_mod.buffers(), t_mod.buffers(), strict=True):
            assert torch.equal(b_o, b_t)
    assert moved or not pairs


@pytest.mark.parametrize("name", ALL)
def test_queues_and_state_buffers(name: str) -> None:
    method = build(name)
    views = views_for(type(method))
    opt = optimiser(method)
    names = method.queue_names() + STATE_BUFFERS.get(name, [])
    state = method.state_dict()
    for buffer in names:
        assert buffer in state
    for queue in method.queue_names():
        assert f"{queue}_ptr" in state and f"{queue}_filled" in state

    before = {b: getattr(method, b).clone() for b in names}
    ptrs = {q: int(getattr(method, f"{q}_ptr")) for q in method.queue_names()}
    loss = method.training_loss(views)["loss"]
    for b in names:  # the loss alone changes no state; after_step does
        assert torch.equal(getattr(method, b), before[b]), b
    staged = dict(method._staged_keys)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    method.after_step(1 / STEPS)
    for b in names:
        assert not torch.equal(getattr(method, b), before[b]), b
    for q in method.queue_names():
        size = getattr(method, q).shape[0]
        assert int(getattr(method, f"{q}_ptr")) == (ptrs[q] + N) % size
        rows = (torch.arange(N) + ptrs[q]) % size
        assert_close(getattr(method, q)[rows], staged[q])
        assert int(getattr(method, f"{q}_filled")) >= N
        assert not getattr(method, q).requires_grad
    assert not method._staged_keys


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip(name: str) -> None:
    method = build(name, seed=0)
    views = views_for(type(method))
    opt = optimiser(method)
    for i in range(3):
        step(method, opt, views, (i + 1) / STEPS)
    state = {k: v.clone() for k, v in method.state_dict().items()}
    fresh = build(name, seed=123)
    fresh.load_state_dict(state)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key
    expected = method.training_loss(views)
    got = fresh.training_loss(views)
    assert set(got) == set(expected)
    for key in expected:
        assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# method-specific details
# --------------------------------------------------------------------------------------------


def test_dino_center_and_temperature_schedule() -> None:
    method = build("dino")
    c = method.config
    assert method.teacher_temperature(0.0) == pytest.approx(c.warmup_teacher_temperature)
    half = c.warmup_teacher_temperature_fraction / 2
    mid = (c.warmup_teacher_temperature + c.teacher_temperature) / 2
    assert method.teacher_temperature(half) == pytest.approx(mid)
    assert method.teacher_temperature(0.9) == pytest.approx(c.teacher_temperature)

    views = views_for(type(method))
    with torch.no_grad():
        teacher = method.momentum_head(method.momentum_encoder(torch.cat(views)))
    center0 = method.center.clone()
    method.training_loss(views)
    method.after_step(half)
    expected = 0.9 * center0 + 0.1 * teacher.mean(dim=0, keepdim=True)
    assert_close(method.center, expected, rtol=1e-5, atol=1e-6)
    assert float(method.progress) == pytest.approx(half)
    # the last layer's weight-norm magnitude stays frozen at 1 and is not trained
    g = method.head.last_layer.weight_g
    assert not g.requires_grad and torch.all(g == 1)
    assert id(g) not in {id(p) for p in method.trainable_parameters()}


def test_dino_freeze_last_layer() -> None:
    method = build("dino", freeze_last_layer_steps=1)
    views = views_for(type(method))
    method.training_loss(views)["loss"].backward()
    assert method.head.last_layer.weight_v.grad is None
    assert method.head.mlp[0].weight.grad is not None


def test_swav_prototypes_normalised_and_frozen() -> None:
    method = build("swav", freeze_prototypes_steps=1)
    views = views_for(type(method))
    opt = optimiser(method)
    norms = method.prototypes.weight.norm(dim=1)
    assert_close(norms, torch.ones_like(norms))
    loss = method.training_loss(views)["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    assert method.prototypes.weight.grad is None  # frozen during the first step
    opt.step()
    method.after_step(0.1)
    loss = method.training_loss(views)["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    assert method.prototypes.weight.grad is not None
    opt.step()
    method.after_step(0.2)
    norms = method.prototypes.weight.norm(dim=1)
    assert_close(norms, torch.ones_like(norms))


def test_swav_without_queue_has_no_queue() -> None:
    method = build("swav", queue_size=0)
    assert method.queue_names() == []
    loss = method.training_loss(views_for(type(method)))["loss"]
    assert torch.isfinite(loss)


def test_nnclr_uses_only_filled_support_rows() -> None:
    method = build("nnclr", queue_size=256)
    views = views_for(type(method))
    assert method.queue_rows("queue").shape[0] == 0
    assert torch.isfinite(method.training_loss(views)["loss"])  # empty support set
    method.after_step(0.1)
    support = method.queue_rows("queue")
    assert support.shape == (N, method.config.proj_output_dim)
    assert_close(support.norm(dim=1), torch.ones(N))
    assert torch.all(method.queue[N:] == 0)
    assert torch.isfinite(method.training_loss(views)["loss"])


@pytest.mark.parametrize("name", ["mocov2plus", "swav", "barlow_twins"])
def test_wrong_number_of_views(name: str) -> None:
    method = build(name)
    views = views_for(type(method))
    with pytest.raises(ValueError, match="views"):
        method.training_loss(views + views[:1])
