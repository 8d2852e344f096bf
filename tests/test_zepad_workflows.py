"""ZePAD through the workflow layer: the CLI (`defend zepad`, `evaluate --model`, fine-tune once
and reuse) and the bench (one shared `finetune` cell, transfer attacks, the report sections).

Smoke tier: width-4 encoders written to files, a small ImageFolder tree written here (CLI) and
small real subsets (bench, which needs registered datasets).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from encshield.bench import ResultsStore, expand, load_bench_config, run_bench
from encshield.checkpoints import save_encoder
from encshield.cli import main
from encshield.models import build_encoder
from encshield.report import write_report

QUICK = ["--set", "aft.epochs=1", "--set", "aft.batch_size=16", "--set", "aft.head_init_epochs=1",
         "--set", "aft.attack.steps=1", "--set", "heads.epochs=2", "--set", "heads.batch_size=16"]


def _encoder(path: Path, seed: int, size: int) -> str:
    torch.manual_seed(seed)
    save_encoder(build_encoder("resnet18", width=4, input_size=size), path, ssl_method="random",
                 pretrain_data="none")
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("zepad-cli")
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 12)):
        for i in range(n):
            folder = base / "data" / split / f"class{i % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(
                folder / f"{i}.png")
    names = ("victim", "helper", "bmp")
    out = {name: _encoder(base / f"{name}.safetensors", seed, 16)
           for seed, name in enumerate(names)}
    return {**out, "base": str(base), "data": str(base / "data")}


def _branches(files: dict[str, str]) -> list[str]:
    value = (f"[{{encoder: victim, role: mpae}}, {{encoder: '{files['helper']}', role: mpae}}, "
             f"{{encoder: '{files['bmp']}', role: bmp}}]")
    return ["--set", f"branches={value}"]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("encshield: error: ") and err.count("\n") == 1, err
    return err


def test_cli_defend_zepad_then_evaluate_the_model(files: dict[str, str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    base, data = Path(files["base"]), files["data"]
    model = base / "zepad.safetensors"
    assert main(["defend", "zepad", "--encoder", files["victim"], "--data", "imagefolder:train",
                 "--root", data, *_branches(files), *QUICK, "--output", str(model)]) == 0
    out = capsys.readouterr().out
    assert "3 branches" in out and "fusion rfdm" in out and model.is_file()
    record = json.loads(model.with_suffix(".json").read_text())
    assert record["name"] == "zepad" and record["details"]["cost"]["branches"] == 3
    noise = base / "noise.safetensors"
    assert main(["attack", "fit", "random_noise", "--encoder", files["victim"], "--surrogate",
                 "imagefolder:train", "--root", data, "--output", str(noise)]) == 0
    capsys.readouterr()
    result = base / "eval.json"
    assert main(["evaluate", "--model", str(model), "--dataset", "imagefolder", "--root", data,
                 "--perturbation", str(noise), "--whitebox", "pgd:eps=8/255,steps=2",
                 "--whitebox", "joint_pgd:eps=8/255,steps=2",
                 "--whitebox", "detection_aware_pgd:eps=8/255,steps=2",
                 "--output", str(result)]) == 0
    out = capsys.readouterr().out
    assert "DAE detection" in out and "ms/image" in out
    evaluation = json.loads(result.read_text())
    assert evaluation["config"]["head"]["defense"] == "zepad"
    assert set(evaluation["detection"]["rows"]) == {
        "noise", "pgd:eps=8/255,steps=2", "joint_pgd:eps=8/255,steps=2",
        "detection_aware_pgd:eps=8/255,steps=2"}
    assert evaluation["cost"]["branches"] == 3
    assert evaluation["metrics"]["clean"]["num_samples"] == 12


def test_cli_fine_tune_once_then_heads_only(files: dict[str, str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    base, data = Path(files["base"]), files["data"]
    ft = ["--set", "finetune_on=imagefolder:train", "--root", data]
    encoders = base / "mpae.safetensors"
    assert main(["defend", "zepad", "--encoder", files["victim"], "--finetune-only", *ft,
                 *_branches(files), *QUICK, "--output", str(encoders)]) == 0
    assert "fine-tuned 2 encoder(s)" in capsys.readouterr().out
    model = base / "reused.safetensors"
    assert main(["defend", "zepad", "--encoder", files["victim"], "--data", "imagefolder:test",
                 *ft, *_branches(files), *QUICK, "--set", "k=1", "--finetuned", str(encoders),
                 "--output", str(model)]) == 0
    capsys.readouterr()
    record = json.loads(model.with_suffix(".json").read_text())
    finetune = record["details"]["finetune"]
    assert finetune["reused"] and finetune["data"]["split"] == "train" and record["num_train"] == 12
    # another fine-tuning than the file's is refused, in one line
    assert main(["defend", "zepad", "--encoder", files["victim"], "--data", "imagefolder:test",
                 *ft, *_branches(files), *QUICK, "--set", "aft.lambda_gr=1",
                 "--finetuned", str(encoders), "--output", str(model)]) == 2
    assert "fine-tuned encoders were made with other" in _one_line_error(capsys)
    for bad in (["--set", "fusion=nope"], ["--set", "detector.statistic=median"],
                ["--set", "branches=[{encoder: victim, role: bmp}]"]):
        assert main(["defend", "zepad", "--encoder", files["victim"], "--data",
                     "imagefolder:train", "--root", data, *bad, "--output",
                     str(base / "x.safetensors")]) == 2
        _one_line_error(capsys)
    assert main(["defend", "pgd_at", "--encoder", files["victim"], "--data", "imagefolder:train",
                 "--root", data, "--finetuned", str(encoders), "--output",
                 str(base / "x.safetensors")]) == 2
    assert "no shared fine-tuning" in _one_line_error(capsys)


def test_transfer_dae_fitted_on_an_ensemble_of_public_encoders(
        files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """``ensemble:A+B`` is an encoder spec: ``attack fit`` fits a universal attack on the
    concatenated features of both encoders (the transfer attacker who downloads them all)."""
    from encshield.attacks import Perturbation
    from encshield.workflows import encoder_identity, resolve_encoder

    spec = f"ensemble:{files['helper']}+{files['bmp']}"
    resolved = resolve_encoder(spec)
    assert resolved.encoder.feature_dim == 2 * 32 and resolved.format == "ensemble"
    assert encoder_identity(spec)["sha256"] == resolved.sha256
    out = Path(files["base"]) / "advencoder-ensemble.safetensors"
    assert main(["attack", "fit", "advencoder", "--encoder", spec, "--surrogate",
                 "imagefolder:train", "--root", files["data"], "--set", "epochs=1",
                 "--set", "batch_size=16", "--output", str(out)]) == 0
    capsys.readouterr()
    meta = Perturbation.load(out).metadata["encoder"]
    assert meta["spec"] == spec and meta["sha256"] == resolved.sha256
    assert main(["attack", "fit", "advencoder", "--encoder", "ensemble:", "--surrogate",
                 "imagefolder:train", "--root", files["data"], "--output", str(out)]) == 2
    assert "an ensemble needs members" in _one_line_error(capsys)


def _zepad_entry(label: str, **changes: object) -> dict:
    aft = {"epochs": 1, "batch_size": 32, "head_init_epochs": 1, "attack": {"steps": 1}}
    return {"name": "zepad", "label": label, "set": {
        "aft": aft, "heads": {"epochs": 2, "batch_size": 32}, "finetune_on": "cifar10:train",
        "finetune_limit": 64, **changes}}


def test_bench_fine_tunes_once_for_every_dataset_and_reports(tmp_path: Path,
                                                             shared_data: Path) -> None:
    victim = _encoder(tmp_path / "victim.safetensors", 0, 32)
    bmp = _encoder(tmp_path / "bmp.safetensors", 1, 32)
    branches = [{"encoder": "victim", "role": "mpae"}, {"encoder": bmp, "role": "bmp"}]
    raw = {
        "name": "zepad-smoke", "encoders": [victim],
        "surrogate": {"dataset": "cifar10", "split": "test", "limit": 32},
        "attacks": ["random_noise", {"name": "random_noise", "label": "noise-from-bmp",
                                     "encoder": bmp}],
        "whitebox": ["joint_pgd:eps=8/255,steps=1"], "whitebox_limit": 16,
        "defenses": [{"name": "none", "set": {"epochs": 1}},
                     _zepad_entry("zepad", branches=branches),
                     _zepad_entry("zepad-k1", branches=branches, k=1,
                                  detector={"threshold": 0.2})],
        "datasets": [{"name": "cifar10", "limit_train": 48, "limit_test": 32},
                     {"name": "mnist", "train_split": "test[:5000]",
                      "test_split": "test[5000:]", "limit_train": 48, "limit_test": 32}],
        "seeds": [0], "batch_size": 64,
    }
    config = load_bench_config(None, raw=raw)
    cells = expand(config)
    finetune = [c for c in cells if c.kind == "finetune"]
    assert len(finetune) == 1  # two datasets x two zepad entries share one fine-tuning
    users = [c for c in cells if c.kind == "model" and finetune[0].id in c.deps]
    assert len(users) == 4 and finetune[0].params["dataset"] is None
    assert sum(c.kind == "attack" for c in cells) == 2
    summary = run_bench(config, tmp_path / "r.db", progress=False)
    assert summary.computed == len(cells)
    with ResultsStore(tmp_path / "r.db", readonly=True) as store:
        done = list(store.cells("finetune"))
        assert len(done) == 1 and done[0].result["record"]["data"]["used"] == 64
        rows = {(m["dataset"], m["defense"], m["row"]) for m in store.metrics()}
        assert ("mnist", "zepad-k1", "noise-from-bmp") in rows
        evaluations = [c for c in store.cells("evaluate") if c.result["defense"] == "zepad"]
        assert all(c.result["record"]["detection"]["rows"] for c in evaluations)
    paths = write_report(tmp_path / "r.db", tmp_path / "report", formats=("md", "html"))
    text = paths["md"].read_text()
    for heading in ("## DAE detection", "## Inference cost", "## Persistent robustness"):
        assert heading in text
    assert "cifar10:train" in text and "threshold sweep" in text
    assert "<h2>Persistent robustness</h2>" in paths["html"].read_text()
