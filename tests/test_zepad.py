"""ZePAD (Lei, Yang, Zhang, ICLR 2026): fusion, detector, fused model, defense, attacks.

Smoke tier: width-4 ResNet-18 encoders on 16 px synthetic images of 4 classes
(:mod:`tests.synthetic`); the branch encoders are written to files as the defense reads them.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from encshield.attacks.whitebox import (
    WHITEBOX_ATTACKS,
    BranchOutputs,
    branch_objective,
    sanity_check,
)
from encshield.checkpoints import load_encoder, save_encoder
from encshield.data import ImageDataset
from encshield.defenses import (
    EnsembleAverage,
    ZePAD,
    build_defense,
    load_classifier,
    load_encoder_set,
    save_classifier,
    save_encoder_set,
)
from encshield.errors import ConfigError
from encshield.evaluation import evaluate_classifier
from encshield.evaluation.detection import ConfidenceGapDetector, detection_summary, detector_of
from encshield.evaluation.records import EvaluationRecord
from encshield.models import (
    Encoder,
    FusedClassifier,
    build_encoder,
    build_head,
    fuse_logits,
    fusion_weights,
)
from encshield.models.fusion import confidence_gap
from tests.synthetic import NUM_CLASSES, encoder, synthetic

AFT = {"epochs": 1, "batch_size": 32, "head_init_epochs": 1,
       "attack": {"eps": 4 / 255, "steps": 1, "step_size": 4 / 255}}
HEADS = {"epochs": 2, "batch_size": 32}


def _smoke(seed: int) -> Encoder:
    torch.manual_seed(seed)
    return build_encoder("resnet18", width=4, stem="cifar", normalization="cifar10",
                         input_size=16)


@pytest.fixture(scope="module")
def data() -> ImageDataset:
    return synthetic()


@pytest.fixture(scope="module")
def branch_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("zepad-branches")
    files = {}
    for name, seed in (("helper", 1), ("bmp", 2)):
        save_encoder(_smoke(seed), base / f"{name}.safetensors", ssl_method="random",
                     pretrain_data="none")
        files[name] = str(base / f"{name}.safetensors")
    return files


def _config(files: dict[str, str], **changes: object) -> dict:
    return {"branches": [{"encoder": "victim", "role": "mpae"},
                         {"encoder": files["helper"], "role": "mpae"},
                         {"encoder": files["bmp"], "role": "bmp"}],
            "aft": AFT, "heads": HEADS, **changes}


@pytest.fixture(scope="module")
def fitted(branch_files: dict[str, str], data: ImageDataset):  # noqa: ANN201
    return build_defense("zepad", _config(branch_files)).fit(encoder(), data, NUM_CLASSES, seed=0)


def _fused(k: float = 3.0) -> FusedClassifier:
    torch.manual_seed(0)
    encoders = [_smoke(i) for i in range(3)]
    heads = [build_head("mlp", 32, NUM_CLASSES) for _ in range(3)]
    return FusedClassifier(encoders, heads, ["mpae", "mpae", "bmp"], k=k,
                           detector={"threshold": 0.1, "statistic": "mean",
                                     "confidence": "raw", "k": k}).eval()


# ------------------------------------------------------------------------------- fusion


def test_rfdm_equals_the_hand_computed_rule_per_sample() -> None:
    """Two branches, two samples: the weights are computed per sample from each branch's
    top softmax probability m, c = m exp(3 (m - 0.5)), w = c / sum c; fused LOGITS = sum w z."""
    z_a = torch.tensor([[math.log(9.0), 0.0], [0.0, 0.0]])        # m = 0.9, 0.5
    z_b = torch.tensor([[math.log(1.5), 0.0], [0.0, math.log(4.0)]])  # m = 0.6, 0.8

    def c(m: float) -> float:
        return m * math.exp(3 * (m - 0.5))

    w0 = (c(0.9) / (c(0.9) + c(0.6)), c(0.6) / (c(0.9) + c(0.6)))
    w1 = (c(0.5) / (c(0.5) + c(0.8)), c(0.8) / (c(0.5) + c(0.8)))
    assert w0[0] == pytest.approx(0.78675, abs=1e-4) and w1[1] == pytest.approx(0.79738, abs=1e-4)
    weights = fusion_weights([z_a, z_b], "rfdm", k=3)
    assert torch.allclose(weights, torch.tensor([w0, w1]), atol=1e-6)
    fused = fuse_logits([z_a, z_b], "rfdm", k=3)
    expected = torch.tensor([[w0[0] * math.log(9.0) + w0[1] * math.log(1.5), 0.0],
                             [0.0, w1[1] * math.log(4.0)]])
    assert torch.allclose(fused, expected, atol=1e-6)
    assert fused[0, 0] == pytest.approx(1.81513, abs=1e-4)
    # k = 0: c = m, the weights are the normalised confidences
    assert torch.allclose(fusion_weights([z_a, z_b], "rfdm", k=0)[0],
                          torch.tensor([0.9 / 1.5, 0.6 / 1.5]), atol=1e-6)
    # ablations: the plain mean, and weights proportional to the entropy
    assert torch.allclose(fuse_logits([z_a, z_b], "equal"), (z_a + z_b) / 2)
    h = [-(p * math.log(p) + (1 - p) * math.log(1 - p)) for p in (0.9, 0.6)]
    assert torch.allclose(fusion_weights([z_a, z_b], "entropy")[0],
                          torch.tensor([h[0] / sum(h), h[1] / sum(h)]), atol=1e-6)


def test_fused_classifier_uses_its_branches_and_rule() -> None:
    model = _fused(k=2.0)
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        branches = [model.branch(i)(x) for i in range(3)]
        assert torch.allclose(model(x), fuse_logits(branches, "rfdm", k=2.0), atol=1e-6)
        assert all(torch.allclose(a, b) for a, b in zip(model.branch_logits(x), branches))
    assert model.num_classes == NUM_CLASSES and model.indices("bmp") == [2]
    assert model.encoder.feature_dim == 3 * 32
    with pytest.raises(ConfigError, match="roles"):
        FusedClassifier([_smoke(0)], [build_head("mlp", 32, 4)], ["helper"])


# ----------------------------------------------------------------------------- detector


def test_confidence_gap_and_detection_metrics_by_hand() -> None:
    probs = [(0.9, 0.1), (0.7, 0.3), (0.6, 0.4)]  # MPAE, MPAE, BMP: m = 0.9, 0.7, 0.6
    logits = [torch.log(torch.tensor([p])) for p in probs]
    m = [0.9, 0.7, 0.6]

    def amplified(v: float) -> float:
        return v * math.exp(3 * (v - 0.5))

    cases = {("mean", "raw"): (m[0] + m[1]) / 2 - m[2], ("max", "raw"): m[0] - m[2],
             ("mean", "amplified"): (amplified(m[0]) + amplified(m[1])) / 2 - amplified(m[2]),
             ("max", "amplified"): amplified(m[0]) - amplified(m[2])}
    for (statistic, confidence), expected in cases.items():
        gap = confidence_gap(logits, [0, 1], [2], statistic=statistic,  # type: ignore[arg-type]
                             confidence=confidence, k=3)  # type: ignore[arg-type]
        assert float(gap) == pytest.approx(expected, abs=1e-6), (statistic, confidence)
    # the mix: 4 clean, 4 adversarial scores, threshold 0.1 (flag when score > 0.1)
    clean = torch.tensor([0.0, 0.05, 0.2, -0.1])
    adversarial = torch.tensor([0.3, 0.15, 0.05, 0.5])
    summary = detection_summary(clean, adversarial, 0.1, fpr=0.05, sweep=[0.0, 0.25])
    assert summary["accuracy"] == pytest.approx(6 / 8)  # 3 true negatives + 3 true positives
    assert summary["tpr"] == pytest.approx(3 / 4) and summary["fpr"] == pytest.approx(1 / 4)
    # AUROC: adversarial > clean in 4 + 3 + (2 + one tie) + 4 of 16 pairs
    assert summary["auroc"] == pytest.approx(13.5 / 16)
    # at most 5 % of 4 clean samples flagged = none: threshold 0.2, TPR 2/4
    assert summary["threshold_at_fpr"] == pytest.approx(0.2)
    assert summary["tpr_at_fpr"] == pytest.approx(0.5)
    sweep = {p["threshold"]: p for p in summary["sweep"]}
    assert set(sweep) == {0.0, 0.1, 0.25}
    assert sweep[0.25]["accuracy"] == pytest.approx((4 + 2) / 8)


def test_a_fused_model_exposes_its_detector() -> None:
    model = _fused()
    detector = detector_of(model)
    assert isinstance(detector, ConfidenceGapDetector) and detector.threshold == 0.1
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        expected = confidence_gap(model.branch_logits(x), [0, 1], [2])
    assert torch.allclose(detector.scores(x), expected)
    model.detector_settings = None
    assert detector_of(model) is None
    assert detector_of(torch.nn.Linear(3, 3)) is None


# ------------------------------------------------------------------ gradients and attacks


def test_adaptive_gradient_reaches_every_branch_and_the_fusion_weights() -> None:
    model = _fused()
    x, y = torch.rand(6, 3, 16, 16), torch.arange(6) % NUM_CLASSES
    firsts = [e.backbone.conv1.weight for e in model.ensemble.encoders]
    heads = [h.fc3.weight for h in model.fusion_head.heads]
    for p in model.parameters():
        p.requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, [*firsts, *heads])
    assert all(float(g.abs().sum()) > 0 for g in grads)
    # the input gradient flows through the per-sample fusion weights too
    leaf = x.clone().requires_grad_(True)
    (full,) = torch.autograd.grad(F.cross_entropy(model(leaf), y), leaf)
    logits = model.branch_logits(leaf)
    weights = fusion_weights(logits, "rfdm", 3.0).detach()
    frozen = torch.einsum("nb,bnc->nc", weights, torch.stack(logits))
    (without,) = torch.autograd.grad(F.cross_entropy(frozen, y), leaf)
    assert not torch.allclose(full, without)
    # the joint objective differentiates every branch's loss
    outputs = BranchOutputs(model)(x)
    objective = branch_objective("ce")(outputs, y)
    expected = sum(F.cross_entropy(z, y, reduction="none") for z in outputs["branches"])
    assert torch.allclose(objective, expected)
    grads = torch.autograd.grad(objective.sum(), firsts)
    assert all(float(g.abs().sum()) > 0 for g in grads)
    for p in model.parameters():
        p.requires_grad_(False)


def test_adaptive_attacks_on_the_fused_model(data: ImageDataset) -> None:
    model = _fused()
    x, y = data.to_float(slice(0, 16)), data.labels[:16]
    for name in ("pgd", "apgd_ce", "joint_pgd", "detection_aware_pgd"):
        x_adv = WHITEBOX_ATTACKS.get(name)(model, x, y, eps=8 / 255, steps=3, seed=0)
        assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6 and not torch.equal(x_adv, x)
        assert all(p.grad is None for p in model.parameters())
    # the penalty: the detection-aware objective is the fused CE minus 10 relu(gap - 0.1)
    outputs = BranchOutputs(model, gap=True)(x)
    objective = branch_objective("ce", fused_weight=1, branch_weight=0, detection_penalty=10,
                                 threshold=0.1)(outputs, y)
    expected = (F.cross_entropy(outputs["logits"], y, reduction="none")
                - 10 * torch.relu(outputs["gap"] - 0.1))
    assert torch.allclose(objective, expected)


def test_detection_aware_attack_lowers_the_confidence_gap(fitted) -> None:  # noqa: ANN001
    """With the penalty active on every sample (threshold below every gap), the
    detection-aware attack ends with a lower MPAE-BMP gap than plain PGD."""
    model = fitted.classifier
    data = synthetic(32, seed=4)
    x, y = data.to_float(), data.labels
    detector = detector_of(model)
    assert detector is not None
    plain = WHITEBOX_ATTACKS.get("pgd")(model, x, y, eps=8 / 255, steps=5, seed=0)
    aware = WHITEBOX_ATTACKS.get("detection_aware_pgd")(model, x, y, eps=8 / 255, steps=5,
                                                         seed=0, threshold=-1.0)
    assert float(detector.scores(aware).mean()) < float(detector.scores(plain).mean())


def test_sanity_flags_on_a_zepad_model(fitted) -> None:  # noqa: ANN001
    """The fused model is deterministic and differentiable: no randomness and no
    vanishing-gradient flag (the other checks run and return their numbers)."""
    data = synthetic(32, seed=5)
    flags = sanity_check(fitted.classifier, data.to_float(), data.labels, eps=8 / 255,
                         attack="pgd", attack_config={"steps": 5}, noise_draws=2)
    names = {f.name for f in flags}
    assert not names & {"randomness", "zero_gradient"}, [str(f) for f in flags]


# ----------------------------------------------------------------------------- defense


def test_zepad_fit_record_and_round_trip(fitted, data: ImageDataset, tmp_path: Path) -> None:  # noqa: ANN001
    model, record = fitted.classifier, fitted.record
    assert isinstance(model, FusedClassifier) and model.roles == ["mpae", "mpae", "bmp"]
    assert not model.training and all(not p.requires_grad for p in model.parameters())
    details = record.details
    assert [b["role"] for b in details["branches"]] == ["mpae", "mpae", "bmp"]
    assert details["finetune"]["adversarial"] and not details["finetune"]["reused"]
    assert details["cost"]["branches"] == 3 and details["cost"]["fused_ms_per_image"] > 0
    assert details["detector"]["threshold"] == 0.1 and details["detector"]["k"] == 3.0
    # the BMP is the clean pre-trained encoder; the MPAE encoders moved
    clean = load_encoder(details["branches"][2]["identity"]["spec"]).encoder
    assert all(torch.equal(a, b) for a, b in zip(clean.state_dict().values(),
                                                 model.ensemble.encoders[2].state_dict().values()))
    moved = any(not torch.equal(a, b) for a, b in zip(
        encoder().state_dict().values(), model.ensemble.encoders[0].state_dict().values()))
    assert moved
    path = tmp_path / "zepad.safetensors"
    save_classifier(model, path, record)
    loaded, meta = load_classifier(path)
    assert isinstance(loaded, FusedClassifier) and meta["kind"] == "fused_classifier"
    assert loaded.roles == model.roles and loaded.names == model.names
    assert loaded.detector_settings == model.detector_settings
    assert meta["record"]["name"] == "zepad" and meta["head"]["out_dim"] == NUM_CLASSES
    x = data.to_float(slice(0, 16))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(detector_of(loaded).scores(x), detector_of(model).scores(x))


def test_finetune_once_then_reuse_gives_the_same_model(branch_files: dict[str, str], fitted,  # noqa: ANN001
                                                       data: ImageDataset, tmp_path: Path) -> None:
    defense = build_defense("zepad", _config(branch_files))
    assert isinstance(defense, ZePAD)
    tuned = defense.finetune(encoder(), seed=0, train=data, num_classes=NUM_CLASSES)
    path = tmp_path / "mpae.safetensors"
    save_encoder_set(tuned, path)
    reloaded = load_encoder_set(path)
    assert reloaded.key == tuned.key and reloaded.roles == ["mpae", "mpae"]
    # a different downstream model (other k) reuses the encoders, heads trained anew
    again = build_defense("zepad", _config(branch_files))
    again.use_finetuned(reloaded)
    result = again.fit(encoder(), data, NUM_CLASSES, seed=0)
    assert result.record.details["finetune"]["reused"] == reloaded.sha256
    x = data.to_float(slice(0, 16))
    with torch.no_grad():
        assert torch.equal(result.classifier(x), fitted.classifier(x))
    other = build_defense("zepad", _config(branch_files, aft={**AFT, "lambda_gr": 1.0}))
    other.use_finetuned(reloaded)
    with pytest.raises(ConfigError, match="fine-tuned encoders were made with other"):
        other.fit(encoder(), data, NUM_CLASSES, seed=0)


def test_branch_rules(branch_files: dict[str, str], data: ImageDataset, tmp_path: Path) -> None:
    victim = encoder()
    save_encoder(victim, tmp_path / "victim.safetensors", ssl_method="random",
                 pretrain_data="none")
    refused = _config(branch_files, branches=[
        {"encoder": "victim", "role": "mpae"},
        {"encoder": str(tmp_path / "victim.safetensors"), "role": "bmp"}])
    with pytest.raises(ConfigError, match="victim's weights"):
        build_defense("zepad", refused).fit(victim, data, NUM_CLASSES)
    with pytest.raises(ConfigError, match="role mpae"):
        build_defense("zepad", branches=[{"encoder": "victim", "role": "bmp"}])
    with pytest.raises(ConfigError, match="unknown zoo encoder"):
        build_defense("zepad", branches=[{"encoder": "zoo:nope", "role": "mpae"}])
    with pytest.raises(ConfigError, match="fusion"):
        build_defense("zepad", fusion="median")
    # the defaults pick zoo encoders that are not the victim
    from encshield import zoo
    from encshield.defenses.branches import resolve_specs

    simclr = zoo.entry("simclr-cifar10-r18w16").sha256
    specs = resolve_specs(None, simclr)
    assert [s.role for s in specs] == ["mpae", "mpae", "bmp"]
    assert specs[0].encoder == "victim" and "zoo:simclr-cifar10-r18w16" not in \
        {s.encoder for s in specs}
    byol = resolve_specs(None, zoo.entry("byol-tinyimagenet-r18w16").sha256)
    assert [(s.encoder, s.role) for s in byol] == [("victim", "mpae"),
                                                   ("zoo:simclr-cifar10-r18w16", "bmp")]


def test_ensemble_average_keeps_the_pretrained_encoders(branch_files: dict[str, str],
                                                        data: ImageDataset) -> None:
    result = build_defense("ensemble_average", branches=_config(branch_files)["branches"],
                           heads=HEADS).fit(encoder(), data, NUM_CLASSES, seed=0)
    model = result.classifier
    assert isinstance(model, FusedClassifier) and model.fusion_head.fusion == "equal"
    assert isinstance(build_defense("ensemble"), EnsembleAverage)
    assert all(torch.equal(a, b) for a, b in zip(
        encoder().state_dict().values(), model.ensemble.encoders[0].state_dict().values()))
    assert not result.record.details["finetune"]["adversarial"]


def test_evaluation_record_has_detection_and_cost(fitted, data: ImageDataset) -> None:  # noqa: ANN001
    test = synthetic(32, seed=3)
    noise = type("Noise", (), {"apply": staticmethod(
        lambda x, clamp=True: (x + 8 / 255 * torch.sign(torch.randn_like(x))).clamp(0, 1))})()
    record = evaluate_classifier(
        fitted.classifier, test.images, test.labels, perturbations={"noise": noise},
        whitebox=["pgd:eps=8/255,steps=2", "detection_aware_pgd:eps=8/255,steps=2,limit=16"])
    detection = record.detection
    assert detection is not None and detection["detector"]["type"] == "confidence_gap"
    rows = detection["rows"]
    assert set(rows) == {"noise", "pgd:eps=8/255,steps=2",
                         "detection_aware_pgd:eps=8/255,steps=2,limit=16"}
    assert rows["noise"]["num_clean"] == rows["noise"]["num_adversarial"] == 32
    assert rows["detection_aware_pgd:eps=8/255,steps=2,limit=16"]["num_adversarial"] == 16
    assert 0 <= rows["noise"]["auroc"] <= 1
    assert record.cost is not None and record.cost["branches"] == 3
    again = EvaluationRecord.from_json(record.to_json())
    assert again.detection == record.detection and again.cost == record.cost
    plain = evaluate_classifier(fitted.classifier.branch(0), test.images, test.labels)
    assert plain.detection is None and plain.cost["branches"] == 1
