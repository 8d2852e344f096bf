"""The evaluate_model workflow and ``encshield evaluate`` on an ImageFolder tree written here.

Smoke tier, with the models and perturbations of :mod:`tests.test_evaluate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from PIL import Image

from encshield.checkpoints import save_encoder, sha256_file
from encshield.errors import ConfigError
from encshield.evaluation.records import EvaluationRecord
from encshield.models import Classifier
from encshield.workflows import DataSpec, evaluate_model
from tests.test_evaluate import (
    HAS_WHITEBOX,
    NUM_CLASSES,
    constant_perturbation,
    smoke_encoder,
    synthetic,
    zero_perturbation,
)

# ------------------------------------------------------------------------------------------
# run_dae_protocol and the CLI (on an ImageFolder tree written here)
# ------------------------------------------------------------------------------------------


def write_imagefolder(root: Path) -> Path:
    for split, n, seed in (("train", 12, 11), ("test", 6, 12)):
        images, labels = synthetic(n, seed=seed)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / f"class{int(label)}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("evaluate")
    encoder = smoke_encoder(seed=1)
    save_encoder(encoder, base / "encoder.safetensors", ssl_method="random", pretrain_data="none")
    zero_perturbation().save(base / "zero.safetensors")
    constant_perturbation(0.5).save(base / "grey.safetensors")
    return {"base": base, "root": write_imagefolder(base / "data"),
            "encoder": base / "encoder.safetensors",
            "zero": base / "zero.safetensors", "grey": base / "grey.safetensors"}


def _no_defense(files: dict[str, Path], **kwargs: object) -> EvaluationRecord:
    """evaluate_model with a linear head trained on 24 images, 12 test images (seed 0)."""
    return evaluate_model(
        DataSpec("imagefolder", "test", limit=12, seed=0, root=str(files["root"])),
        encoder=files["encoder"], train=DataSpec("imagefolder", "train", limit=24, seed=0,
                                                 root=str(files["root"])),
        head="linear", head_epochs=3, perturbations=[files["zero"], files["grey"]], seed=0,
        batch_size=8, **kwargs)  # type: ignore[arg-type]


def test_evaluate_model_records_the_experiment(files: dict[str, Path]) -> None:
    record = _no_defense(files)
    config = record.config
    assert config["encoder"]["sha256"] == sha256_file(files["encoder"])
    assert config["encoder"]["provenance"]["ssl_method"] == "random"
    assert config["dataset"]["name"] == "imagefolder" and config["dataset"]["image_size"] == 32
    assert config["dataset"]["train"]["available"] == 36
    assert config["dataset"]["train"]["used"] == 24
    assert config["dataset"]["test"]["used"] == 12
    assert config["dataset"]["test"]["subset"]["class_counts"] == {"0": 4, "1": 4, "2": 4}
    assert config["head"]["name"] == "linear" and config["head"]["epochs"] == 3
    assert len(config["head"]["training_record"]["losses"]) == 3
    assert config["perturbation_files"]["zero"]["sha256"] == sha256_file(files["zero"])
    assert config["perturbation_files"]["grey"]["kind"] == "patch"
    assert list(record.metrics) == ["clean", "zero", "grey", "worst-case DAE"]
    assert record.metrics["zero"].fooling_rate == 0.0
    assert set(record.wall_time_s) >= {"load_model", "load_data", "train_head", "clean", "total"}
    assert record.per_sample is not None and len(record.per_sample.test_indices) == 12
    # the same experiment gives the same hash (the head's losses are outcomes, not config)
    again = _no_defense(files)
    assert again.config_hash == record.config_hash
    assert again.metrics == record.metrics


def test_evaluate_model_on_a_given_classifier(files: dict[str, Path]) -> None:
    """model= takes a Classifier as it is: no head is trained, the stored record is empty."""
    encoder = smoke_encoder(seed=1)
    head = torch.nn.Linear(encoder.feature_dim, NUM_CLASSES)
    record = evaluate_model(DataSpec("imagefolder", "test", root=str(files["root"])),
                            model=Classifier(encoder, head))
    assert record.config["head"]["defense"] == "unknown" and "train_head" not in record.wall_time_s
    assert record.metrics["clean"].num_samples == 18
    with pytest.raises(ConfigError, match="exactly one"):
        evaluate_model(DataSpec("imagefolder", "test", root=str(files["root"])))


def _evaluate_main(argv: list[str]) -> int:
    """``encshield.cli.main`` when ``evaluate`` is registered there, else a local parser."""
    from tests.datafiles import cli_importable

    with cli_importable():
        from encshield.cli import build_parser, main

        parser = build_parser()
        commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        if "evaluate" in commands:
            return main(argv)
    from encshield.cli import evaluate_cmd

    local = argparse.ArgumentParser(prog="encshield")
    evaluate_cmd.register(local.add_subparsers(dest="command", required=True))
    args = local.parse_args(argv)
    return int(args.func(args))


def test_cli_end_to_end(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    output = files["base"] / "out" / "result.json"
    argv = [
        "evaluate", "--encoder", str(files["encoder"]), "--dataset", "imagefolder",
        "--root", str(files["root"]), "--head", "linear", "--head-epochs", "2",
        "--perturbation", str(files["zero"]), "--perturbation", str(files["grey"]),
        "--limit-test", "9", "--seed", "0", "--no-clamp", "--batch-size", "4",
        "--output", str(output),
    ]
    if HAS_WHITEBOX:
        argv += ["--whitebox", "fgsm:eps=8/255", "--whitebox-limit", "6"]
    code = _evaluate_main(argv)
    assert code == 0
    out = capsys.readouterr().out
    assert "fooling" in out and "zero" in out and "grey" in out and "wrote" in out
    record = EvaluationRecord.load(output)
    assert record.config["evaluation"]["clamp"] is False
    assert record.metrics["clean"].num_samples == 9
    assert record.metrics["zero"].fooling_rate == 0.0
    if HAS_WHITEBOX:
        row = record.metrics["fgsm:eps=8/255"]
        assert row.num_samples == 6 and row.robust_accuracy <= row.benign_accuracy


def test_cli_reports_bad_input_cleanly(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from encshield.cli import evaluate_cmd

    local = argparse.ArgumentParser(prog="encshield")
    evaluate_cmd.register(local.add_subparsers(dest="command", required=True))
    with pytest.raises(SystemExit):
        local.parse_args(["evaluate", "--encoder", "x", "--dataset", "cifar10",
                          "--output", "o.json", "--whitebox", "pgd:steps=3"])
    assert "eps is required" in capsys.readouterr().err
    args = local.parse_args(["evaluate", "--encoder", str(files["base"] / "missing.safetensors"),
                             "--dataset", "imagefolder", "--root", str(files["root"]),
                             "--output", str(files["base"] / "never.json")])
    with pytest.raises(ConfigError, match="neither 'zoo:NAME' nor an existing checkpoint"):
        args.func(args)
