"""Generic tests of every registered defense (smoke tier: width-4 ResNet-18, 16 px, 64 images)."""

from __future__ import annotations

import pytest
import torch

from encshield.data import ImageDataset
from encshield.defenses import (
    DEFENSES,
    Defense,
    DefenseResult,
    FinetuningDefense,
    build_defense,
    check_no_parameter_grads,
    load_classifier,
    save_classifier,
)
from encshield.errors import ConfigError
from encshield.models import Classifier, Encoder
from tests.synthetic import NUM_CLASSES, encoder, synthetic

#: the defenses of the shared loop (``genaf``, stages 1 + 2, has its own tests)
FINETUNING = [n for n in DEFENSES.names() if issubclass(DEFENSES.get(n), FinetuningDefense)]
SMOKE = dict(epochs=2, batch_size=32, head_init_epochs=1,
             attack={"eps": 4 / 255, "steps": 2, "step_size": 2 / 255})



@pytest.fixture(scope="module")
def data() -> ImageDataset:
    return synthetic()



@pytest.mark.parametrize("name", FINETUNING)
def test_defense_runs(name: str, data: ImageDataset) -> None:
    enc = encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    defense = build_defense(name, **SMOKE)
    leaks: list[bool] = []
    optimizer_ids: list[dict[str, int]] = []
    adam_steps: list[int] = []

    def callback(event: str, info: dict) -> None:
        if event == "after_attack":
            leaks.append(any(p.grad is not None for p in info["model"].parameters()))
            assert (info["x_adv"] - info["x"]).abs().max() <= defense.config.attack.eps + 1e-6
        elif event == "epoch_end":
            optimizer_ids.append({k: id(o) for k, o in info["optimizers"].items()})
            opt = info["optimizers"]["encoder"]
            adam_steps.append(int(next(iter(opt.state.values()))["step"]))

    defense.add_callback(callback)
    result = defense.fit(enc, data, NUM_CLASSES, seed=0)
    assert isinstance(result, DefenseResult)
    clf = result.classifier
    assert isinstance(clf, Classifier) and not clf.training
    with torch.no_grad():
        out = clf(data.to_float(slice(0, 5)))
    assert out.shape == (5, NUM_CLASSES) and torch.isfinite(out).all()
    # the input encoder is unchanged (deep copy)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    rec = result.record
    assert rec.name == name and rec.epochs == 2 and rec.seed == 0
    assert len(rec.losses) == 2 and len(rec.train_accuracy) == 2
    assert len(rec.loss_parts) == 2 and rec.time_s > 0
    assert rec.config["epochs"] == 2
    # optimisers created once: same objects, Adam state keeps counting across epochs
    assert optimizer_ids[0] == optimizer_ids[1]
    batches = (len(data) + 31) // 32
    assert adam_steps == [batches, 2 * batches]
    if DEFENSES.get(name).uses_attack:
        assert leaks and not any(leaks)  # no attack gradient in any parameter's .grad
    else:
        assert not leaks


@pytest.mark.parametrize("name", FINETUNING)
def test_same_seed_same_weights(name: str, data: ImageDataset) -> None:
    cfg = dict(SMOKE, epochs=1)
    a = build_defense(name, **cfg).fit(encoder(), data, NUM_CLASSES, seed=3).classifier
    b = build_defense(name, **cfg).fit(encoder(), data, NUM_CLASSES, seed=3).classifier
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka


def test_standard_loss_decreases(data: ImageDataset) -> None:
    result = build_defense("standard", epochs=4, batch_size=16, head_init="random",
                           encoder_lr=1e-3).fit(encoder(), data, NUM_CLASSES, seed=0)
    losses = result.record.losses
    assert losses[-1] < losses[0]


def test_leak_check_catches_parameter_grads() -> None:
    clf = Classifier(encoder(), torch.nn.Linear(encoder().feature_dim, NUM_CLASSES))
    check_no_parameter_grads(clf)
    clf(torch.rand(2, 3, 16, 16)).sum().backward()
    with pytest.raises(RuntimeError, match="leak"):
        check_no_parameter_grads(clf)


def test_frozen_encoder_option(data: ImageDataset) -> None:
    enc = encoder()
    result = build_defense("pgd_at", **dict(SMOKE, epochs=1, train_encoder=False)).fit(
        enc, data, NUM_CLASSES)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, result.classifier.encoder.state_dict()[k]), k


@pytest.mark.parametrize("options", [
    {"feature_space": "encoder"},
    {"anchor": "frozen_pretrained"},
    {"feature_space": "encoder", "anchor": "frozen_pretrained", "paper_code_compat": True},
])
def test_genaf_options_run(options: dict, data: ImageDataset) -> None:
    result = build_defense("genaf_stage1", **dict(SMOKE, epochs=1), **options).fit(
        encoder(), data, NUM_CLASSES)
    rec = result.record
    assert all(k in rec.loss_parts[0] for k in ("ce_adv", "gr"))
    assert rec.details["paper_code_compat"] == options.get("paper_code_compat", False)


def _genaf_gr(model: Classifier, pretrained: Encoder, x: torch.Tensor, x_adv: torch.Tensor,
              y: torch.Tensor, **options: str) -> float:
    """The genetic-regularisation term of Gen-AF stage 1's loss with ``options``."""
    defense = build_defense("genaf_stage1", **options)
    defense.setup(model, pretrained)
    model.train()
    return defense.loss(model, x, x_adv, y)[1]["gr"]


def test_genaf_options_change_the_loss(data: ImageDataset) -> None:
    """``feature_space`` and ``anchor`` are honoured, checked against the loss computed by hand:
    the encoder-feature variant regularises encoder features (not logits), and the frozen
    anchor uses the pre-trained encoder (identical to ``current`` while nothing has moved, not
    after the working encoder changed)."""
    from encshield.defenses import genetic_regularization

    torch.manual_seed(0)
    work = encoder()
    model = Classifier(work, torch.nn.Linear(work.feature_dim, NUM_CLASSES)).eval()
    pretrained = encoder().eval()
    x = data.to_float(slice(0, 16))
    x_adv = (x + 0.03 * torch.randn_like(x).sign()).clamp(0, 1)
    y = data.labels[:16]
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        fa, fb = model.encoder(x), model.encoder(x_adv)
        w = torch.nn.functional.cross_entropy(model.head(fa), y, reduction="none")
        anchor = model.head(pretrained(x))  # the frozen anchor runs in eval mode
        by_hand = {
            "logits": float(genetic_regularization(model.head(fa), model.head(fb), y, w)),
            "encoder": float(genetic_regularization(fa, fb, y, w)),
            "anchor": float(genetic_regularization(anchor, model.head(fb), y, w)),
        }
    logits = _genaf_gr(model, pretrained, x, x_adv, y)
    features = _genaf_gr(model, pretrained, x, x_adv, y, feature_space="encoder")
    assert logits == pytest.approx(by_hand["logits"], rel=1e-5)
    assert features == pytest.approx(by_hand["encoder"], rel=1e-5)
    assert abs(features - logits) > 1e-3
    frozen = _genaf_gr(model, pretrained, x, x_adv, y, anchor="frozen_pretrained")
    assert frozen == pytest.approx(by_hand["anchor"], rel=1e-5)
    with torch.no_grad():  # the working encoder moves away from the pre-trained one
        for p in model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    moved = _genaf_gr(model, pretrained, x, x_adv, y, anchor="frozen_pretrained")
    moved_current = _genaf_gr(model, pretrained, x, x_adv, y)
    with torch.no_grad():
        model.train()
        fb2 = model.encoder(x_adv)
        w2 = torch.nn.functional.cross_entropy(model.head(model.encoder(x)), y, reduction="none")
        expected = float(genetic_regularization(anchor, model.head(fb2), y, w2))
    assert moved == pytest.approx(expected, rel=1e-5)  # the anchor did not move with the model
    assert abs(moved - moved_current) > 1e-3


def test_config_defaults_and_errors() -> None:
    genaf = build_defense("genaf_stage1")
    assert genaf.config.attack.eps == 0.03 and genaf.config.attack.random_start is False
    assert genaf.config.lambda_gr == 20 and genaf.config.epochs == 50
    # nested overrides keep the defense's other attack defaults
    assert build_defense("genaf_stage1", attack={"eps": 0.01}).config.attack.step_size == 0.007
    pgd_at = build_defense("pgd_at")
    assert pgd_at.config.attack.eps == pytest.approx(8 / 255)
    assert (pgd_at.config.encoder_lr, pgd_at.config.head_lr) == (1e-4, 5e-3)
    assert build_defense("trades").config.beta == 6 and build_defense("mart").config.beta == 6
    with pytest.raises(ConfigError, match="feature_space.*'pixels'.*logits"):
        build_defense("genaf_stage1", feature_space="pixels")
    with pytest.raises(ConfigError, match="unknown field"):
        build_defense("pgd_at", epoch=3)
    with pytest.raises(ConfigError, match="unknown defense"):
        build_defense("nope")
    with pytest.raises(ConfigError, match="random_start"):
        build_defense("trades", attack={"random_start": False})
    for _, cls in DEFENSES.items():
        assert issubclass(cls, Defense)
        cls.Config()  # all fields have defaults


def test_save_load_roundtrip(tmp_path, data: ImageDataset) -> None:
    result = build_defense("standard", **dict(SMOKE, epochs=1)).fit(encoder(), data, NUM_CLASSES)
    path = tmp_path / "clf.safetensors"
    save_classifier(result.classifier, path, result.record)
    loaded, meta = load_classifier(path)
    assert meta["record"]["name"] == "standard" and meta["head"]["out_dim"] == NUM_CLASSES
    x = data.to_float(slice(0, 8))
    with torch.no_grad():
        assert torch.allclose(loaded(x), result.classifier(x))


def test_pgd_at_more_robust_than_standard() -> None:
    """Purpose: PGD-AT gives higher PGD robust accuracy than standard fine-tuning."""
    from encshield.attacks.whitebox import pgd

    train, test = synthetic(128, 0, amp=0.15), synthetic(128, 1, amp=0.15)
    eps = 4 / 255
    common = dict(epochs=15, batch_size=32, head_init="random", encoder_lr=1e-3,
                  attack={"eps": eps, "steps": 5, "step_size": eps / 2})
    x, y = test.to_float(), test.labels
    robust = {}
    for name in ("standard", "pgd_at"):
        clf = build_defense(name, **common).fit(encoder(), train, NUM_CLASSES).classifier
        x_adv = pgd(clf, x, y, eps=eps, steps=10, step_size=eps / 4)
        with torch.no_grad():
            robust[name] = float((clf(x_adv).argmax(1) == y).float().mean())
    assert robust["pgd_at"] > robust["standard"] + 0.1, robust


def test_genaf_refuses_a_random_head_as_logit_anchor() -> None:
    """The frozen anchor in logit space is the pre-trained encoder with the initial head: with
    a random initial head that anchor is noise, so the combination is refused in one line."""
    with pytest.raises(ConfigError, match="needs head_init=trained"):
        build_defense("genaf_stage1", head_init="random", anchor="frozen_pretrained")
    build_defense("genaf_stage1", head_init="random", anchor="frozen_pretrained",
                  feature_space="encoder")  # encoder features need no head: allowed


def test_mixed_precision_and_channels_last(data: ImageDataset, tmp_path) -> None:  # noqa: ANN001
    """``amp`` (bf16 autocast for the attack and the training forward) and ``channels_last``
    train a working model whose weights are float32, contiguous and savable; the losses stay
    float32."""
    fitted = build_defense("pgd_at", **dict(SMOKE, epochs=1, amp=True, channels_last=True)).fit(
        encoder(), data, NUM_CLASSES, seed=0)
    params = list(fitted.classifier.parameters())
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in params)
    assert all(torch.isfinite(torch.tensor(v)) for v in fitted.record.losses)
    save_classifier(fitted.classifier, tmp_path / "amp.safetensors", fitted.record)
    loaded, _ = load_classifier(tmp_path / "amp.safetensors")
    x = data.to_float(slice(0, 4))
    with torch.no_grad():
        assert torch.equal(loaded(x).argmax(1), fitted.classifier(x).argmax(1))
