"""The evaluation: evaluate_classifier, records, specs and subsets (the evaluate_model workflow
on synthetic files and ``encshield evaluate``: :mod:`tests.test_evaluate_workflow`).

Smoke tier: a seeded random-init ResNet-18 of width 8 and tiny synthetic datasets whose classes
differ in colour (so that even random features separate them). One test on real CIFAR-10.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from encshield.attacks.perturbation import Perturbation
from encshield.budgets import format_budget, parse_budget
from encshield.downstream import train_head
from encshield.errors import ConfigError
from encshield.evaluation import (
    WhiteboxSpec,
    evaluate_classifier,
    metrics,
    parse_whitebox,
    select_subset,
)
from encshield.evaluation.records import EvaluationRecord, config_digest
from encshield.models import Encoder, build_encoder
from encshield.workflows import DataSpec, evaluate_model


def _has_whitebox() -> bool:
    """Whether the white-box attacks (written concurrently by others) are importable yet."""
    try:
        from encshield.attacks import whitebox
    except ImportError:
        return False
    return hasattr(whitebox, "WHITEBOX_ATTACKS") and hasattr(whitebox, "feature_pgd")


HAS_WHITEBOX = _has_whitebox()
NUM_CLASSES = 3
COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=np.int16)


def synthetic(n_per_class: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, size, size) = class colour + uniform noise; labels int64 (N,)."""
    r = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES), n_per_class)
    noise = r.integers(-60, 61, size=(labels.size, 3, size, size))
    images = np.clip(COLOURS[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def smoke_encoder(seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    return build_encoder("resnet18", 8, "cifar", "cifar10", 32).eval()


@pytest.fixture(scope="module")
def smoke() -> dict[str, object]:
    """A trained no-defense classifier (width-8 encoder + linear head) and a test set."""
    encoder = smoke_encoder()
    train_x, train_y = synthetic(20, seed=1)
    test_x, test_y = synthetic(10, seed=2)
    classifier, record = train_head(encoder, train_x, train_y, NUM_CLASSES, head="linear",
                                    epochs=15, seed=0)
    return {"classifier": classifier, "test_x": test_x, "test_y": test_y, "record": record}


def hand_predictions(classifier: torch.nn.Module, images: torch.Tensor) -> list[int]:
    """Predictions one image at a time (the reference for the batched protocol)."""
    out = []
    with torch.no_grad():
        for i in range(images.shape[0]):
            x = images[i : i + 1].float() / 255
            out.append(int(classifier(x).argmax(1)))
    return out


def fgsm_stand_in(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                  seed: int = 0, steps: int = 1, **config: object) -> torch.Tensor:
    """A local L-inf attack with the white-box interface (sign-gradient ascent of the CE)."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + (eps / steps) * grad.sign()
        x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)
    return x_adv.detach()


def zero_perturbation() -> Perturbation:
    return Perturbation(kind="additive", delta=torch.zeros(3, 32, 32), eps=8 / 255,
                        metadata={"attack": "identity"})


def constant_perturbation(value: float = 0.5) -> Perturbation:
    """A patch covering the whole image: every perturbed image is the same constant image."""
    return Perturbation(kind="patch", delta=torch.full((3, 32, 32), value), position=(0, 0),
                        metadata={"attack": "constant", "image_size": [32, 32]})


# ------------------------------------------------------------------------------------------
# evaluate_classifier
# ------------------------------------------------------------------------------------------


def test_record_has_the_required_fields(smoke: dict) -> None:
    record = evaluate_classifier(smoke["classifier"], smoke["test_x"], smoke["test_y"],
                                 perturbations={"zero": zero_perturbation()}, batch_size=7,
                                 context={"seed": 0})
    data = record.to_dict()
    for key in ("config", "config_hash", "versions", "machine", "wall_time_s", "metrics",
                "created"):
        assert key in data, key
    assert set(data["versions"]) >= {"encshield", "torch", "python"}
    assert set(data["machine"]) >= {"platform", "cpu", "threads", "device"}
    assert set(data["wall_time_s"]) >= {"clean", "zero", "evaluation_total"}
    evaluation = data["config"]["evaluation"]
    assert evaluation["clamp"] is True and evaluation["batch_size"] == 7
    assert evaluation["num_test"] == 30
    assert evaluation["perturbations"]["zero"]["kind"] == "additive"
    assert len(evaluation["perturbations"]["zero"]["delta_sha256"]) == 64
    assert evaluation["classifier"]["encoder"]["provenance"]["width"] == 8
    assert data["config"]["seed"] == 0
    assert list(data["metrics"]) == ["clean", "zero"]
    for key in metrics.SUMMARY_KEYS:
        assert key in data["metrics"]["zero"]
    assert data["config_hash"] == config_digest(data["config"])


def test_benign_accuracy_equals_hand_computed_accuracy(smoke: dict) -> None:
    record = evaluate_classifier(
        smoke["classifier"], smoke["test_x"], smoke["test_y"], batch_size=8
    )
    preds = hand_predictions(smoke["classifier"], smoke["test_x"])
    labels = smoke["test_y"].tolist()
    expected = sum(p == y for p, y in zip(preds, labels)) / len(labels)
    assert record.benign_accuracy == pytest.approx(expected, abs=1e-12)
    assert record.metrics["clean"].num_samples == 30
    assert record.per_sample is not None and record.per_sample.clean_pred == preds
    assert expected > 1 / NUM_CLASSES  # colour classes are separable by random features


def test_identity_perturbation_changes_nothing(smoke: dict) -> None:
    record = evaluate_classifier(smoke["classifier"], smoke["test_x"], smoke["test_y"],
                                 perturbations={"zero": zero_perturbation()})
    row = record.metrics["zero"]
    assert row.kind == "universal" and row.num_samples == 30
    assert row.robust_accuracy == row.benign_accuracy == record.benign_accuracy
    assert row.fooling_rate == 0.0
    assert row.attack_success_rate == 0.0
    assert row.error_rate == pytest.approx(1 - row.benign_accuracy)
    assert row.max_linf == 0.0


def test_constant_image_perturbation(smoke: dict) -> None:
    classifier = smoke["classifier"]
    record = evaluate_classifier(classifier, smoke["test_x"], smoke["test_y"],
                                 perturbations={"grey": constant_perturbation(0.5)})
    with torch.no_grad():
        constant_class = int(classifier(torch.full((1, 3, 32, 32), 0.5)).argmax(1))
    clean = torch.tensor(hand_predictions(classifier, smoke["test_x"]))
    labels = smoke["test_y"]
    row = record.metrics["grey"]
    # every perturbed image is the same grey image: all predicted as constant_class
    assert record.per_sample is not None
    assert set(record.per_sample.adv_pred["grey"]) == {constant_class}
    assert row.fooling_rate == pytest.approx(float((clean != constant_class).float().mean()))
    assert row.robust_accuracy == pytest.approx(float((labels == constant_class).float().mean()))
    correct = clean == labels
    expected_asr = float((correct & (labels != constant_class)).sum()) / float(correct.sum())
    assert row.attack_success_rate == pytest.approx(expected_asr)


def test_no_clamp_feeds_the_unclamped_images(smoke: dict) -> None:
    classifier = smoke["classifier"]
    delta = torch.full((3, 32, 32), 0.6)
    perturbation = Perturbation(kind="additive", delta=delta, eps=0.6)
    clamped = evaluate_classifier(classifier, smoke["test_x"], smoke["test_y"],
                                  perturbations={"p": perturbation})
    unclamped = evaluate_classifier(classifier, smoke["test_x"], smoke["test_y"],
                                    perturbations={"p": perturbation}, clamp=False)
    x = smoke["test_x"].float() / 255
    encoder = classifier.encoder
    assert encoder.check_inputs  # restored after the unclamped evaluation
    encoder.check_inputs = False
    try:
        with torch.no_grad():
            expected_unclamped = classifier(x + delta).argmax(1).tolist()
    finally:
        encoder.check_inputs = True
    with torch.no_grad():
        expected_clamped = classifier((x + delta).clamp(0, 1)).argmax(1).tolist()
    assert unclamped.per_sample.adv_pred["p"] == expected_unclamped
    assert clamped.per_sample.adv_pred["p"] == expected_clamped
    assert unclamped.config["evaluation"]["clamp"] is False
    assert unclamped.config_hash != clamped.config_hash
    assert unclamped.metrics["p"].max_linf == pytest.approx(0.6, abs=1e-6)


def test_whitebox_rows_use_a_recorded_stratified_subset(smoke: dict) -> None:
    spec = WhiteboxSpec(name="pgd", eps=8 / 255, steps=2, limit=12, seed=3)
    record = evaluate_classifier(smoke["classifier"], smoke["test_x"], smoke["test_y"],
                                 whitebox=[spec, "fgsm:eps=4/255"], whitebox_limit=9,
                                 whitebox_attacks={"pgd": fgsm_stand_in, "fgsm": fgsm_stand_in},
                                 batch_size=5)
    pgd = record.metrics["pgd:eps=8/255,steps=2,limit=12,seed=3"]
    fgsm = record.metrics["fgsm:eps=4/255"]
    assert pgd.kind == "whitebox" and pgd.num_samples == 12 and fgsm.num_samples == 9
    assert pgd.subset["class_counts"] == {"0": 4, "1": 4, "2": 4}
    assert pgd.max_linf <= 8 / 255 + 1e-6
    idx = record.per_sample.indices["pgd:eps=8/255,steps=2,limit=12,seed=3"]
    assert idx == sorted(idx) and len(idx) == 12
    expected = select_subset(smoke["test_y"], 12, seed=0).tolist()
    assert idx == expected
    # BA of the row is on its subset; RA <= BA for an attack that maximises the loss
    clean = record.per_sample.clean_pred
    labels = record.per_sample.labels
    assert pgd.benign_accuracy == pytest.approx(sum(clean[i] == labels[i] for i in idx) / 12)
    assert pgd.robust_accuracy <= pgd.benign_accuracy
    assert record.per_sample.adv_correct("fgsm:eps=4/255") == [
        p == labels[i] for p, i in zip(record.per_sample.adv_pred["fgsm:eps=4/255"],
                                       record.per_sample.indices["fgsm:eps=4/255"])
    ]
    specs = record.config["evaluation"]["whitebox"]
    assert specs[0]["eps_text"] == "8/255" and specs[0]["limit"] == 12 and specs[0]["seed"] == 3


def test_encoder_attack_callables(smoke: dict) -> None:
    seen: list[type] = []

    def flip(encoder: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        seen.append(type(encoder))
        return x.flip(-1)

    record = evaluate_classifier(smoke["classifier"], smoke["test_x"], smoke["test_y"],
                                 encoder_attacks={"flip": flip})
    assert seen and all(t is Encoder for t in seen)
    row = record.metrics["flip"]
    assert row.kind == "encoder_deployed" and row.num_samples == 30
    with torch.no_grad():
        expected = smoke["classifier"]((smoke["test_x"].float() / 255).flip(-1)).argmax(1).tolist()
    assert record.per_sample.adv_pred["flip"] == expected
    assert "flip" in record.config["evaluation"]["encoder_attacks"]["flip"]["callable"]


@pytest.mark.skipif(not HAS_WHITEBOX, reason="encshield.attacks.whitebox not written yet")
def test_real_pgd_row_has_ra_at_most_ba(smoke: dict) -> None:
    record = evaluate_classifier(smoke["classifier"], smoke["test_x"], smoke["test_y"],
                                 whitebox=["pgd:eps=8/255,steps=5",
                                           "feature_pgd:eps=8/255,steps=3"],
                                 whitebox_limit=15)
    pgd = record.metrics["pgd:eps=8/255,steps=5"]
    assert pgd.kind == "whitebox" and pgd.num_samples == 15
    assert pgd.robust_accuracy <= pgd.benign_accuracy
    assert pgd.max_linf <= 8 / 255 + 1e-5
    feature = record.metrics["feature_pgd:eps=8/255,steps=3"]
    assert feature.kind == "encoder_deployed" and feature.max_linf <= 8 / 255 + 1e-5
    assert list(record.metrics) == ["clean", "feature_pgd:eps=8/255,steps=3",
                                    "pgd:eps=8/255,steps=5", "worst-case all"]


def test_validation_errors(smoke: dict) -> None:
    clf, x, y = smoke["classifier"], smoke["test_x"], smoke["test_y"]
    with pytest.raises(ConfigError, match="unique"):
        evaluate_classifier(clf, x, y, whitebox=["pgd:eps=1/255", "pgd:eps=1/255"],
                            whitebox_attacks={"pgd": fgsm_stand_in})
    with pytest.raises(ConfigError, match="test_labels"):
        evaluate_classifier(clf, x, y[:-1])
    if not HAS_WHITEBOX:
        with pytest.raises(ConfigError, match="whitebox"):
            evaluate_classifier(clf, x, y, whitebox=["pgd:eps=1/255"])
    if HAS_WHITEBOX:  # bad attack parameters are refused before anything runs
        with pytest.raises(ConfigError, match="bogus"):
            evaluate_classifier(clf, x, y, whitebox=["pgd:eps=8/255,bogus=1"])
        with pytest.raises(ConfigError, match="bogus"):
            evaluate_classifier(clf, x, y, whitebox=["feature_pgd:eps=8/255,bogus=1"])
        with pytest.raises(ConfigError, match="unknown per-sample attack"):
            evaluate_classifier(clf, x, y, whitebox=["nope:eps=8/255"])
    wrong_size = Perturbation(kind="additive", delta=torch.zeros(3, 16, 16), eps=0.1)
    with pytest.raises(ConfigError, match="size"):
        evaluate_classifier(clf, x, y, perturbations={"small": wrong_size})
    headless = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    with pytest.raises(ConfigError, match="classifier.encoder"):
        evaluate_classifier(headless, x, y, encoder_attacks={"a": lambda e, z: z})


def test_any_classifier_module_is_evaluated() -> None:
    """The protocol needs only images -> logits (a defended model or an ensemble plugs in)."""
    x, y = synthetic(4, seed=5)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3))
    model.train()
    record = evaluate_classifier(model, x, y, perturbations={"zero": zero_perturbation()})
    assert model.training  # mode restored
    assert record.config["evaluation"]["classifier"]["type"] == "Sequential"
    assert record.metrics["zero"].fooling_rate == 0.0


# ------------------------------------------------------------------------------------------
# records
# ------------------------------------------------------------------------------------------


def test_json_round_trip_and_undefined_values(smoke: dict, tmp_path: Path) -> None:
    clf, x = smoke["classifier"], smoke["test_x"]
    clean = torch.tensor(hand_predictions(clf, x))
    wrong_labels = (clean + 1) % NUM_CLASSES  # BA = 0 -> attack success rate undefined
    record = evaluate_classifier(clf, x, wrong_labels, perturbations={"zero": zero_perturbation()})
    assert record.benign_accuracy == 0.0
    assert record.metrics["zero"].attack_success_rate is None
    text = record.to_json()
    assert "NaN" not in text
    path = record.save(tmp_path / "sub" / "record.json")
    loaded = EvaluationRecord.load(path)
    assert loaded == record
    assert json.loads(path.read_text())["metrics"]["zero"]["attack_success_rate"] is None
    slim = json.loads(record.to_json(include_per_sample=False))
    assert slim["per_sample"] is None
    with pytest.raises(ConfigError, match="missing field"):
        EvaluationRecord.from_dict({"config": {}})


def test_config_hash_is_stable_and_ignores_paths(smoke: dict) -> None:
    clf, x, y = smoke["classifier"], smoke["test_x"], smoke["test_y"]
    a = evaluate_classifier(
        clf, x, y, context={"encoder": {"path": "/a/enc.safetensors", "sha256": "x"}}
    )
    b = evaluate_classifier(
        clf, x, y, context={"encoder": {"path": "/b/enc.safetensors", "sha256": "x"}}
    )
    c = evaluate_classifier(
        clf, x, y, context={"encoder": {"path": "/a/enc.safetensors", "sha256": "y"}}
    )
    assert a.config_hash == b.config_hash != c.config_hash


# ------------------------------------------------------------------------------------------
# specs and subsets
# ------------------------------------------------------------------------------------------


def test_parse_budget_and_whitebox_specs() -> None:
    assert parse_budget("8/255") == pytest.approx(8 / 255)
    assert parse_budget("0.03") == 0.03
    assert format_budget(8 / 255) == "8/255" and format_budget(0.05) == "0.05"
    for bad in ("abc", "1/0", "-0.1", "nan"):
        with pytest.raises(ConfigError):
            parse_budget(bad)
    spec = parse_whitebox("PGD:eps=8/255,steps=10,limit=500,seed=2,alpha=2/255,random_start=false")
    assert spec.name == "pgd" and spec.eps == pytest.approx(8 / 255)
    assert (spec.steps, spec.limit, spec.seed) == (10, 500, 2)
    assert spec.params == {"alpha": pytest.approx(2 / 255), "random_start": False}
    assert parse_whitebox(spec.text) == spec  # the canonical text parses back
    assert parse_whitebox("feature_pgd:eps=0.04,label=feat").row_name == "feat"
    assert parse_whitebox("feature_pgd:eps=0.04").is_encoder_attack
    for bad in ("pgd", "pgd:steps=10", ":eps=1", "pgd:eps=1/255,steps=x", "pgd:eps=1/255,junk"):
        with pytest.raises(ConfigError):
            parse_whitebox(bad)


def test_select_subset() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    idx = select_subset(labels, 10, seed=0)
    assert idx is not None and idx.tolist() == sorted(set(idx.tolist())) and idx.numel() == 10
    counts = torch.bincount(labels[idx], minlength=3).tolist()
    assert counts == [5, 3, 2]  # proportional to 50 / 30 / 20
    assert torch.equal(idx, select_subset(labels, 10, seed=0))  # deterministic
    assert not torch.equal(idx, select_subset(labels, 10, seed=1))
    assert select_subset(labels, 7, mode="first").tolist() == list(range(7))
    assert select_subset(labels, None) is None and select_subset(labels, 100) is None
    for n in (1, 3, 33, 99):  # every class within one of its proportional share
        counts = torch.bincount(labels[select_subset(labels, n, seed=4)], minlength=3)
        share = torch.tensor([0.5, 0.3, 0.2]) * n
        assert int(counts.sum()) == n and bool(((counts - share).abs() <= 1).all())
    with pytest.raises(ConfigError, match="subset mode"):
        select_subset(labels, 5, mode="random")


# ------------------------------------------------------------------------------------------
# real data
# ------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_random_encoder_on_real_cifar10(shared_data: Path) -> None:
    """Tiny tier: random-init width-16 encoder + linear head, 2,000 train / 500 test images."""
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", 16, "cifar", "cifar10", 32).eval()
    noise = torch.empty(3, 32, 32).uniform_(
        -8 / 255, 8 / 255, generator=torch.Generator().manual_seed(0)
    )
    random_noise = Perturbation(
        kind="additive", delta=noise, eps=8 / 255, metadata={"attack": "noise"}
    )
    whitebox = ["pgd:eps=8/255,steps=10", "feature_pgd:eps=8/255,steps=10"] if HAS_WHITEBOX else []
    record = evaluate_model(
        DataSpec("cifar10", "test", limit=500, seed=0, root=str(shared_data)), encoder=encoder,
        train=DataSpec("cifar10", "train", limit=2000, seed=0, root=str(shared_data)),
        head="linear", head_epochs=20, seed=0, perturbations={"noise": random_noise},
        whitebox=whitebox, whitebox_limit=100)
    seconds = record.wall_time_s["total"] - record.wall_time_s["load_data"]
    assert seconds < 60, record.wall_time_s
    assert record.config["dataset"]["train"]["used"] == 2000
    assert record.metrics["clean"].num_samples == 500
    counts = record.config["dataset"]["test"]["subset"]["class_counts"]
    assert counts == {str(c): 50 for c in range(10)}
    ba = record.benign_accuracy
    assert ba is not None and ba > 0.1 + 0.05, ba  # random conv features beat chance clearly
    noise_row = record.metrics["noise"]
    assert noise_row.max_linf <= 8 / 255 + 1e-6
    assert math.isfinite(noise_row.fooling_rate)
    if HAS_WHITEBOX:
        pgd = record.metrics["pgd:eps=8/255,steps=10"]
        assert pgd.num_samples == 100 and pgd.robust_accuracy <= pgd.benign_accuracy
        # PGD at 8/255 on an undefended model: nearly every correct prediction flips
        assert pgd.robust_accuracy < 0.5 * pgd.benign_accuracy
        feature = record.metrics["feature_pgd:eps=8/255,steps=10"]
        assert feature.kind == "encoder_deployed"
        assert feature.fooling_rate > noise_row.fooling_rate


class _PixelCode(torch.nn.Module):
    """Predicts the class written in pixel (0, 0, 0) as ``round(10 * value) % 3``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = (x[:, 0, 0, 0] * 10).round().long() % NUM_CLASSES
        return torch.nn.functional.one_hot(code, NUM_CLASSES).float()


class _Fool:
    """A 'universal' perturbation that shifts the code pixel of the samples listed (a sample's
    id is written in pixel (0, 0, 1))."""

    def __init__(self, ids: set[int]) -> None:
        self.ids = ids

    def apply(self, x: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        out = x.clone()
        ids = (x[:, 0, 0, 1] * 100).round().long()
        hit = torch.tensor([int(i) in self.ids for i in ids])
        out[hit, 0, 0, 0] += 0.1
        return out


def test_worst_case_rows_are_per_sample() -> None:
    """Worst case over the DAE rows: robust only where every row is; over all rows: on the
    samples every row saw (the white-box subset), including the white-box row's failures."""
    n = 9
    x = torch.zeros(n, 3, 4, 4)
    labels = torch.arange(n) % NUM_CLASSES
    x[:, 0, 0, 0] = labels.float() / 10
    x[:, 0, 0, 1] = torch.arange(n).float() / 100

    def fool_some(model: torch.nn.Module, xb: torch.Tensor, y: torch.Tensor, *, eps: float,
                  seed: int) -> torch.Tensor:
        return _Fool({7, 8}).apply(xb)

    record = evaluate_classifier(
        _PixelCode(), x, labels, perturbations={"a": _Fool({0, 1}), "b": _Fool({1, 2})},
        whitebox=["fool:eps=1/255,limit=6"], whitebox_attacks={"fool": fool_some})
    assert record.metrics["a"].robust_accuracy == pytest.approx(7 / 9)
    dae = record.metrics["worst-case DAE"]
    assert dae.kind == "worst_case" and dae.num_samples == 9
    assert dae.robust_accuracy == pytest.approx(6 / 9)  # samples 0, 1, 2 fooled by a or b
    assert dae.fooling_rate == pytest.approx(3 / 9)
    subset = record.per_sample.indices["fool:eps=1/255,limit=6"]
    everything = record.metrics["worst-case all"]
    fooled = {0, 1, 2, 7, 8} & set(subset)
    assert everything.num_samples == 6
    assert everything.robust_accuracy == pytest.approx(1 - len(fooled) / 6)
    assert "worst-case DAE" not in record.per_sample.adv_pred  # derived, not stored twice


@pytest.mark.skipif(not HAS_WHITEBOX, reason="encshield.attacks.whitebox not written yet")
def test_encoder_attack_on_the_public_or_the_deployed_encoder(smoke: dict) -> None:
    """``on=public`` crafts feature PGD on the public encoder (transferred), ``on=deployed``
    (default) on the classifier's own encoder."""
    clf, x, y = smoke["classifier"], smoke["test_x"], smoke["test_y"]
    specs = ["feature_pgd:eps=8/255,steps=2,limit=8",
             "feature_pgd:eps=8/255,steps=2,limit=8,on=public"]
    with pytest.raises(ConfigError, match="public encoder"):
        evaluate_classifier(clf, x, y, whitebox=specs)
    import copy

    class Counting(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.inner(images)

    public = Counting(copy.deepcopy(clf.encoder))
    record = evaluate_classifier(clf, x, y, whitebox=specs, public_encoder=public)
    deployed, transferred = (record.metrics[s] for s in specs)
    assert deployed.kind == "encoder_deployed" and transferred.kind == "encoder_public"
    assert public.calls > 0  # the public row attacked the public encoder
    # the public encoder equals the deployed one here: same seed, same adversarial examples
    assert record.per_sample.adv_pred[specs[0]] == record.per_sample.adv_pred[specs[1]]
    assert "worst-case DAE" not in record.metrics  # one DAE-kind row only
    assert record.metrics["worst-case all"].num_samples == 8
