"""The registered two-stage ``genaf`` defense (Gen-AF stages 1 + 2, METHODS.md 2.2-2.3).

Smoke tier: width-4 ResNet-18 (cifar stem) + ``mlp`` head, 16 px synthetic images of 4 classes,
64 training images, 1 epoch per stage, 1 ascent epoch and a 16-image probe set.
"""

from __future__ import annotations

import pytest
import torch

from encshield.defenses import DEFENSES, GenAF, GenAFStage1, build_defense
from encshield.errors import ConfigError
from tests.synthetic import NUM_CLASSES, encoder, synthetic

SMOKE = dict(
    stage1=dict(epochs=1, batch_size=32, head_init_epochs=1,
                attack={"eps": 4 / 255, "steps": 2, "step_size": 2 / 255}),
    probe_size=16, probe_steps=2, probe_batch_size=16, ascent_epochs=1,
    stage2_epochs=1, stage2_batch_size=32,
)




def fit(**overrides):
    enc = encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    defense = build_defense("genaf", **{**SMOKE, **overrides})
    events: dict[str, dict] = {}
    defense.add_callback(lambda event, info: events.setdefault(event, info))
    result = defense.fit(enc, synthetic(), NUM_CLASSES, seed=0)
    return enc, before, result, events


@pytest.fixture(scope="module")
def fitted():
    return fit()


def test_registry_names_and_defaults() -> None:
    assert DEFENSES.get("genaf") is GenAF and DEFENSES.get("gen-af") is GenAF
    assert DEFENSES.get("genaf_stage1") is GenAFStage1
    cfg = build_defense("genaf").config
    assert cfg.stage1.epochs == 50 and cfg.stage1.lambda_gr == 20
    assert cfg.stage1.attack.eps == 0.03 and cfg.stage1.attack.random_start is False
    assert cfg.probe_size == 1000 and cfg.probe_eps == pytest.approx(8 / 255)
    assert cfg.probe_steps == 10 and cfg.probe_step_size == pytest.approx(2 / 255)
    assert (cfg.sensitivity_epsilon, cfg.ascent_epochs, cfg.k) == (0.1, 10, 0.2)
    assert (cfg.stage2_epochs, cfg.stage2_lr, cfg.bn_mode) == (50, 1e-3, "eval")
    assert cfg.interpolation_alpha is None
    # nested overrides keep stage 1's other defaults
    assert build_defense("genaf", stage1={"attack": {"eps": 0.01}}).config.stage1.attack.step_size \
        == 0.007
    assert isinstance(build_defense("genaf", k=4).config.k, int)


@pytest.mark.parametrize("bad, match", [
    ({"k": 0}, "k"), ({"k": 1.5}, "k"), ({"k": True}, "k"), ({"bn_mode": "x"}, "bn_mode"),
    ({"interpolation_alpha": 2.0}, "interpolation_alpha"),
    ({"stage1": {"feature_space": "pixels"}}, "stage1.feature_space"),
    ({"epochs": 3}, "unknown field"),
])
def test_config_errors(bad: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_defense("genaf", **bad)


def test_genaf_runs_and_records(fitted) -> None:
    enc, before, result, events = fitted
    for k, v in enc.state_dict().items():  # the input encoder is unchanged
        assert torch.equal(v, before[k]), k
    clf = result.classifier
    assert not clf.training and not any(p.requires_grad for p in clf.parameters())
    with torch.no_grad():
        out = clf(synthetic().to_float(slice(0, 5)))
    assert out.shape == (5, NUM_CLASSES) and torch.isfinite(out).all()
    rec = result.record
    assert rec.name == "genaf" and rec.seed == 0
    details = rec.details
    assert details["stage1"]["name"] == "genaf_stage1" and details["stage1"]["epochs"] == 1
    assert len(details["layer_scores"]) == 23 == details["num_candidates"]
    for score in details["layer_scores"]:
        assert {"name", "score", "original_loss", "max_loss"} <= set(score)
        assert score["score"] >= 0
        assert score["max_loss"] == pytest.approx(score["original_loss"] + score["score"])
    assert len(details["chosen_layers"]) == int(0.2 * 23) == 4
    lowest = sorted(details["layer_scores"], key=lambda s: (s["score"], s["index"]))[:4]
    assert details["chosen_layers"] == [s["name"] for s in lowest]
    assert len(details["stage2_history"]) == 1 and details["probe"]["size"] == 16
    assert rec.config["k"] == 0.2 and rec.epochs == 2 and len(rec.losses) == 2


def test_only_chosen_layers_change(fitted) -> None:
    _, _, result, events = fitted
    stage1 = events["stage1_end"]["state"]
    final = result.classifier.state_dict()
    chosen = result.record.details["chosen_layers"]
    allowed = {f"{name}.{p}" for name in chosen for p in ("weight", "bias")}
    changed = {k for k in final if not torch.equal(final[k], stage1[k])}
    assert changed <= allowed, sorted(changed - allowed)  # BN statistics included
    for name in chosen:
        assert f"{name}.weight" in changed, name


def test_interpolation_alpha_zero_restores_stage1() -> None:
    _, _, result, events = fit(interpolation_alpha=0.0)
    stage1 = events["stage1_end"]["state"]
    for k, v in result.classifier.state_dict().items():
        assert torch.equal(v, stage1[k]), k
    assert result.record.details["interpolation_alpha"] == 0.0


def test_k_as_count() -> None:
    _, _, result, _ = fit(k=2, stage2_epochs=0)
    details = result.record.details
    assert len(details["chosen_layers"]) == 2 and details["stage2_history"] == []


# ------------------------------------------------------------------------------------------
# `encshield defend` and `encshield evaluate --model` (on an ImageFolder tree written here)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from PIL import Image

    from encshield.cli import main

    base = tmp_path_factory.mktemp("defend_cli")
    for split, n, seed in (("train", 32, 1), ("test", 12, 2)):
        data = synthetic(n, seed=seed)
        for i, (image, label) in enumerate(zip(data.images, data.labels)):
            folder = base / "data" / split / f"class{int(label)}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    encoder_path = base / "encoder.safetensors"
    assert main(["encoder", "build", str(encoder_path), "--width", "4", "--input-size", "16"]) == 0
    return {"base": base, "data": base / "data", "encoder": encoder_path}


SMOKE_SETS = [
    "stage1.epochs=1", "stage1.batch_size=16", "stage1.head_init_epochs=1",
    "stage1.attack.eps=4/255", "stage1.attack.steps=2", "stage1.attack.step_size=2/255",
    "probe_size=8", "probe_steps=2", "ascent_epochs=1", "stage2_epochs=1",
    "stage2_batch_size=16",
]


def test_cli_defend_then_evaluate(cli_files: dict, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from encshield.checkpoints import sha256_file
    from encshield.cli import main
    from encshield.defenses import load_classifier

    base = cli_files["base"]
    config = base / "genaf.yaml"
    config.write_text("k: 3\nstage1:\n  lambda_gr: 10\n")
    model = base / "out" / "genaf.safetensors"
    argv = ["defend", "genaf", "--encoder", str(cli_files["encoder"]), "--data", "imagefolder",
            "--root", str(cli_files["data"]), "--limit", "24", "--config", str(config),
            "--seed", "0", "--output", str(model)]
    for item in SMOKE_SETS:
        argv += ["--set", item]
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote {model}" in printed and "fine-tuned 3 of 23 layers" in printed
    record = json.loads(model.with_suffix(".json").read_text())
    assert record["name"] == "genaf" and len(record["details"]["chosen_layers"]) == 3
    assert record["config"]["stage1"]["attack"]["eps"] == pytest.approx(4 / 255)
    assert record["config"]["stage1"]["attack"]["random_start"] is False  # default kept
    assert record["config"]["stage1"]["lambda_gr"] == 10
    assert record["data"]["used"] == 24 and record["data"]["split"] == "train"
    assert record["output"]["sha256"] == sha256_file(model)
    assert record["encoder"]["sha256"] == sha256_file(cli_files["encoder"])
    _, meta = load_classifier(model)
    assert meta["record"]["details"]["chosen_layers"] == record["details"]["chosen_layers"]

    result = base / "out" / "eval.json"
    assert main(["evaluate", "--model", str(model), "--dataset", "imagefolder",
                 "--root", str(cli_files["data"]), "--whitebox", "pgd:eps=4/255,steps=2",
                 "--whitebox-limit", "8", "--batch-size", "8", "--output", str(result)]) == 0
    out = capsys.readouterr().out
    assert "genaf" in out and f"wrote {result}" in out
    saved = json.loads(result.read_text())
    text = json.dumps(saved)
    assert sha256_file(model) in text
    from encshield.evaluation.records import EvaluationRecord

    loaded = EvaluationRecord.load(result)
    assert loaded.config["model"]["sha256"] == sha256_file(model)
    assert (loaded.config["model"]["record"]["details"]["chosen_layers"]
            == record["details"]["chosen_layers"])
    assert loaded.config["head"]["defense"] == "genaf"
    clean = loaded.metrics["clean"]
    assert clean.num_samples == 12 and 0.0 <= clean.benign_accuracy <= 1.0
    row = loaded.metrics["pgd:eps=4/255,steps=2"]
    assert row.num_samples == 8 and row.robust_accuracy <= row.benign_accuracy


def test_cli_defend_list_and_errors(cli_files: dict, capsys: pytest.CaptureFixture[str]) -> None:
    from encshield.cli import main

    capsys.readouterr()
    assert main(["defend", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("genaf", "genaf_stage1", "pgd_at"):
        assert f"\n{name} " in f"\n{out}"
    assert "stage1.attack.eps=0.03" in out and "k=0.2" in out
    base = ["defend", "genaf", "--encoder", str(cli_files["encoder"]), "--data", "imagefolder",
            "--root", str(cli_files["data"]), "--output", str(cli_files["base"] / "x.safetensors")]
    for extra, message in (
        (["--set", "bn_mode=sideways"], "bn_mode: 'sideways' is not allowed"),
        (["--set", "stage1.feature_space=pixels"], "stage1.feature_space"),
        (["--set", "nope=1"], "nope: unknown field"),
        (["--set", "k=0"], "k"),
    ):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert main(["defend", "nope", "--encoder", "e", "--data", "d", "--output", "o"]) == 2
    assert "unknown defense" in capsys.readouterr().err
    assert main(["defend", "genaf"]) == 2
    assert "missing --encoder, --data, --output" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --model and --encoder are mutually exclusive
        main(["evaluate", "--model", "m", "--encoder", "e", "--dataset", "d", "--output", "o"])
