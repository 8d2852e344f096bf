"""Gen-AF stage 2 (METHODS.md 2.3): layer sensitivity (RiFT MRC), selection, layer fine-tuning.

Smoke tier: a width-4 ResNet-18 encoder with the ``mlp`` head on 16x16 synthetic images of 4
classes (a class is a colour-cube corner plus per-pixel noise), 64 training images, 16 probes.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from encshield.defenses.layer_sensitivity import (
    LayerScore,
    candidate_layers,
    finetune_layers,
    freeze_all_but,
    interpolate,
    layer_sensitivity,
    make_probe_set,
    resolve_layers,
    select_layers,
)
from encshield.errors import ConfigError
from encshield.models import Classifier, build_encoder, build_head

NUM_CLASSES = 4


def make_model(seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    encoder = build_encoder("resnet18", width=4, stem="cifar", input_size=16)
    return Classifier(encoder, build_head("mlp", encoder.feature_dim, NUM_CLASSES, hidden_dim=32))


def make_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % NUM_CLASSES
    corners = torch.tensor([[0.3, 0.3, 0.3], [0.7, 0.3, 0.3], [0.3, 0.7, 0.3], [0.3, 0.3, 0.7]])
    x = corners[y][:, :, None, None] + 0.1 * torch.randn(n, 3, 16, 16, generator=generator)
    return x.clamp(0, 1), y


def states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def model() -> Classifier:
    return make_model()


@pytest.fixture(scope="module")
def probe(model: Classifier) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = make_data(16, seed=1)
    return make_probe_set(model, x, y, steps=2, batch_size=8)


@pytest.fixture(scope="module")
def scores(model: Classifier, probe: tuple[torch.Tensor, torch.Tensor]) -> list[LayerScore]:
    return layer_sensitivity(model, *probe, ascent_epochs=2, batch_size=8)


def test_candidates_resnet18_mlp(model: Classifier) -> None:
    layers = candidate_layers(model)
    convs = [n for n, m in layers if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in layers if isinstance(m, nn.Linear)]
    assert len(layers) == 23
    assert len(convs) == 20 and sum("downsample" in n for n in convs) == 3
    assert linears == ["head.fc1", "head.fc2", "head.fc3"]
    assert not any(n.endswith(".fc") for n, _ in layers)  # our backbone has no fc
    assert convs[0] == "encoder.backbone.conv1"
    order = [n for n, _ in model.named_modules()]
    assert [order.index(n) for n, _ in layers] == sorted(order.index(n) for n, _ in layers)


def test_probe_set_within_budget(model: Classifier,
                                 probe: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = make_data(16, seed=1)
    x_adv, y_adv = probe
    assert x_adv.shape == x.shape and torch.equal(y_adv, y)
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)
    again, _ = make_probe_set(model, x, y, steps=2, batch_size=8)
    assert torch.equal(again, x_adv)  # seeded


def test_sensitivity_leaves_model_unchanged(model: Classifier,
                                            probe: tuple[torch.Tensor, torch.Tensor]) -> None:
    before = copy.deepcopy(model.state_dict())
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    layer_sensitivity(model, *probe, ascent_epochs=1, batch_size=8)
    assert states_equal(before, model.state_dict())
    assert modes == [m.training for m in model.modules()]
    assert flags == [p.requires_grad for p in model.parameters()]
    assert all(p.grad is None for p in model.parameters())


def test_scores_nonnegative_and_projected(model: Classifier, scores: list[LayerScore]) -> None:
    layers = candidate_layers(model)
    assert [s.index for s in scores] == list(range(23))
    assert [s.name for s in scores] == [n for n, _ in layers]
    original = scores[0].original_loss
    for score, (_, module) in zip(scores, layers):
        assert score.original_loss == original
        assert score.max_loss >= score.original_loss
        assert score.score == pytest.approx(score.max_loss - score.original_loss)
        assert score.score >= 0
        assert score.num_params == module.weight.numel()
        assert score.weight_norm == pytest.approx(float(module.weight.detach().norm()))
        assert score.delta_norm <= 0.1 * score.weight_norm * (1 + 1e-5)
    assert any(s.score > 0 for s in scores)


def test_projection_is_active_and_exact(model: Classifier,
                                        probe: tuple[torch.Tensor, torch.Tensor]) -> None:
    # a huge ascent step leaves the ball for every layer: the projection puts W on its boundary
    big = layer_sensitivity(model, *probe, epsilon=0.05, ascent_epochs=1, lr=1e4)
    for score in big:
        assert score.delta_norm == pytest.approx(0.05 * score.weight_norm, rel=1e-4)


def test_sensitivity_epsilon_zero_and_no_epochs(model: Classifier,
                                                probe: tuple[torch.Tensor, torch.Tensor]) -> None:
    frozen = layer_sensitivity(model, *probe, epsilon=0.0, ascent_epochs=1)
    assert all(s.score == 0 and s.delta_norm == 0 for s in frozen)
    none = layer_sensitivity(model, *probe, ascent_epochs=0)
    assert all(s.score == 0 and s.max_loss == s.original_loss for s in none)


def test_select_layers(scores: list[LayerScore]) -> None:
    chosen = select_layers(scores, 0.2)
    assert len(chosen) == 4  # int(0.2 * 23)
    expected = sorted(scores, key=lambda s: s.score)[:4]
    assert [s.score for s in chosen] == [s.score for s in expected]
    assert max(s.score for s in chosen) <= min(s.score for s in scores if s not in chosen)
    assert len(select_layers(scores)) == 4
    assert len(select_layers(scores, 1)) == 1
    assert len(select_layers(scores, 23)) == 23
    assert len(select_layers(scores, 0.01)) == 1  # at least one
    assert len(select_layers(scores, 1.0)) == 23


@pytest.mark.parametrize("k", [0, 24, -1, 0.0, 1.5, -0.2, float("nan"), True, "2"])
def test_select_layers_rejects_bad_k(scores: list[LayerScore], k: object) -> None:
    with pytest.raises(ConfigError, match="k"):
        select_layers(scores, k)  # type: ignore[arg-type]


def test_select_layers_message_names_range(scores: list[LayerScore]) -> None:
    with pytest.raises(ConfigError, match=r"k=30.*\[1, 23\]"):
        select_layers(scores, 30)
    with pytest.raises(ConfigError, match=r"k=1.5.*\(0, 1\]"):
        select_layers(scores, 1.5)


def test_resolve_layers(model: Classifier, scores: list[LayerScore]) -> None:
    chosen = select_layers(scores, 3)
    modules = resolve_layers(model, chosen)
    layers = dict(candidate_layers(model))
    assert all(m is layers[s.name] for m, s in zip(modules, chosen))
    bad = LayerScore("nope", 0, 0.0, 0.0, 0.0, 1)
    with pytest.raises(ConfigError, match="nope"):
        resolve_layers(model, [bad])


def test_freeze_all_but_by_identity_not_substring() -> None:
    model = make_model()
    backbone = model.encoder.backbone
    top_conv1 = backbone.conv1
    trainable = freeze_all_but(model, [top_conv1])
    assert trainable == list(top_conv1.parameters())
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {n for n, _ in model.named_parameters()
                     if n.startswith("encoder.backbone.conv1.")}
    # the official substring bug would unfreeze these: they must stay frozen
    assert not backbone.layer1[0].conv1.weight.requires_grad
    assert not backbone.layer2[0].conv1.weight.requires_grad
    assert not any(p.requires_grad for n, p in model.named_parameters()
                   if "conv1" in n and not n.startswith("encoder.backbone.conv1."))
    # a second call re-freezes the first selection
    trainable = freeze_all_but(model, [model.head.fc3, backbone.layer1[0].conv1])
    assert {id(p) for p in trainable} == {id(p) for p in [
        *backbone.layer1[0].conv1.parameters(), *model.head.fc3.parameters()]}
    assert not top_conv1.weight.requires_grad
    with pytest.raises(ConfigError, match="not a submodule"):
        freeze_all_but(model, [nn.Linear(2, 2)])
    with pytest.raises(ConfigError, match="owns no parameters"):
        freeze_all_but(model, [model.head.relu])


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_finetune_only_selected(bn_mode: str) -> None:
    model = make_model(seed=3)
    x, y = make_data(64)
    chosen = [model.encoder.backbone.conv1, model.encoder.backbone.layer3[0].conv2,
              model.head.fc3]
    chosen_names = {"encoder.backbone.conv1.weight", "encoder.backbone.layer3.0.conv2.weight",
                    "head.fc3.weight", "head.fc3.bias"}
    model.eval()
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        loss0 = float(F.cross_entropy(model(x), y))
    rng = torch.get_rng_state()
    history = finetune_layers(model, chosen, x, y, epochs=4, lr=1e-2, batch_size=16,
                              bn_mode=bn_mode)  # type: ignore[arg-type]
    assert torch.equal(rng, torch.get_rng_state())
    assert len(history) == 4 and [r.epoch for r in history] == [1, 2, 3, 4]
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    if bn_mode == "eval":
        assert changed == chosen_names  # BN running stats of frozen BN untouched
    else:
        assert chosen_names <= changed
        assert all("bn" in k or "downsample.1" in k for k in changed - chosen_names)
        assert any(k.endswith("running_mean") for k in changed)
    # modes and flags restored
    assert not model.training and not any(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        loss1 = float(F.cross_entropy(model(x), y))
    assert loss1 < loss0
    assert history[-1].loss < history[0].loss


def test_finetune_is_deterministic() -> None:
    x, y = make_data(32)
    results = []
    for _ in range(2):
        model = make_model(seed=4)
        finetune_layers(model, [model.head.fc1, model.head.fc2], x, y, epochs=1,
                        batch_size=16)
        results.append(model.state_dict())
    assert states_equal(*results)


def test_finetune_rejects_bad_arguments() -> None:
    model = make_model()
    x, y = make_data(8)
    with pytest.raises(ConfigError, match="bn_mode"):
        finetune_layers(model, [model.head.fc3], x, y, epochs=1,
                        bn_mode="frozen")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least one module"):
        finetune_layers(model, [], x, y, epochs=1)
    with pytest.raises(ConfigError, match="labels"):
        finetune_layers(model, [model.head.fc3], x, y[:4], epochs=1)


def test_interpolate_endpoints_and_midpoint() -> None:
    a, b = make_model(seed=5), make_model(seed=6)
    b.encoder.backbone.bn1.num_batches_tracked += 7
    sa, sb = a.state_dict(), b.state_dict()
    assert states_equal(interpolate(sa, sb, 0.0), sa)
    assert states_equal(interpolate(sa, sb, 1.0), sb)
    assert states_equal(interpolate(sa, sb, 1), sb)
    mid = interpolate(sa, sb, 0.5)
    key = "head.fc1.weight"
    assert torch.allclose(mid[key], (sa[key] + sb[key]) / 2)
    assert torch.equal(interpolate(sa, sb, 0.3)["encoder.backbone.bn1.num_batches_tracked"],
                       sa["encoder.backbone.bn1.num_batches_tracked"])
    a.load_state_dict(mid)  # loads strictly
    with pytest.raises(ConfigError, match="alpha"):
        interpolate(sa, sb, 1.5)
    with pytest.raises(ConfigError, match="different keys"):
        interpolate(sa, {k: v for k, v in sb.items() if k != key}, 0.5)


class _CriticalAndHarmless(nn.Module):
    """A classifier with a layer that decides everything (``critical``: the only path from the
    input to the logits) and one whose output is multiplied by zero (``harmless``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.critical = nn.Linear(3 * 16 * 16, NUM_CLASSES)
        self.harmless = nn.Linear(3 * 16 * 16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return self.critical(flat) + 0.0 * self.harmless(flat)


def test_sensitivity_ranks_a_critical_layer_above_a_harmless_one() -> None:
    """MRC: perturbing the layer every prediction goes through raises the probe loss; a layer
    whose output is ignored cannot raise it (score 0), so it is the one selected for tuning."""
    model = _CriticalAndHarmless()
    x, y = make_data(32, seed=2)
    scores = {s.name: s for s in layer_sensitivity(model, x, y, ascent_epochs=3)}
    assert set(scores) == {"critical", "harmless"}
    assert scores["harmless"].score == pytest.approx(0.0, abs=1e-6)
    assert scores["critical"].score > 0.05
    assert [s.name for s in select_layers(list(scores.values()), 1)] == ["harmless"]
