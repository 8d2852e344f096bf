"""``encshield encoder inspect|convert|build`` through ``encshield.cli.main``."""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import encshield.cli
from encshield.checkpoints import load_encoder, sha256_file
from encshield.models import build_backbone
from tests.test_checkpoints import (
    CIFAR10,
    encode,
    images,
    randomize,
    reference_features,
    solo_learn_checkpoint,
)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch):
    """``encshield.cli.main``; sibling command groups not written yet are stubbed out so that
    this module's tests do not depend on them."""
    for name in ("data_cmd", "quickstart_cmd"):
        full = f"encshield.cli.{name}"
        try:
            importlib.import_module(full)
        except ModuleNotFoundError as error:
            if error.name != full:
                raise
            stub = types.ModuleType(full)
            stub.register = lambda subparsers: None  # type: ignore[attr-defined]
            monkeypatch.setitem(sys.modules, full, stub)
            monkeypatch.setattr(encshield.cli, name, stub, raising=False)
    return encshield.cli.main


@pytest.fixture
def solo_ckpt(tmp_path: Path) -> tuple[Path, nn.Module]:
    backbone = randomize(build_backbone("resnet18", 8, "cifar"), 50)
    path = tmp_path / "simclr-cifar10-ep=999.ckpt"
    torch.save(solo_learn_checkpoint(backbone, randomize(nn.Linear(64, 10), 51),
                                     {"method": "simclr", "dataset": "cifar10"}), path)
    return path, backbone


def test_inspect_json(cli, solo_ckpt, capsys: pytest.CaptureFixture[str]) -> None:
    path, backbone = solo_ckpt
    assert cli(["encoder", "inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "resnet18" and info["feature_dim"] == 64
    assert info["format"] == "solo-learn" and info["sha256"] == sha256_file(path)
    assert info["num_parameters"] == sum(p.numel() for p in backbone.parameters())
    assert info["ssl_method"] == "simclr" and info["pretrain_data"] == "cifar10"


def test_inspect_text_and_overrides(
    cli, solo_ckpt, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = solo_ckpt
    assert cli(["encoder", "inspect", str(path), "--stem", "cifar_sololearn",
                "--normalization", "imagenet"]) == 0
    out = capsys.readouterr().out
    assert "cifar_sololearn" in out and "imagenet" in out and "feature_dim" in out


def test_convert_then_load(
    cli, solo_ckpt, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, backbone = solo_ckpt
    out = tmp_path / "converted.safetensors"
    assert cli(["encoder", "convert", str(path), str(out), "--ssl-method", "simclr-v1",
                "--pretrain-data", "cifar10-train"]) == 0
    assert str(out) in capsys.readouterr().out
    loaded = load_encoder(out)
    x = images()
    assert torch.equal(encode(loaded.encoder, x), reference_features(backbone, CIFAR10, x))
    assert loaded.encoder.provenance.ssl_method == "simclr-v1"
    assert loaded.encoder.provenance.pretrain_data == "cifar10-train"
    assert loaded.surrogate_head is not None

    assert cli(["encoder", "inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "encshield" and info["sha256"] == sha256_file(out)


def test_build(cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny.safetensors"
    args = ["encoder", "build", "--arch", "resnet18", "--width", "16", "--stem", "cifar",
            "--normalization", "cifar10", "--seed", "3", str(out)]
    assert cli(args) == 0
    first = sha256_file(out)
    assert "feature_dim 128" in capsys.readouterr().out
    loaded = load_encoder(out)
    assert loaded.encoder.feature_dim == 128 and loaded.encoder.normalization.name == "cifar10"
    assert loaded.encoder.provenance.extra["random_init_seed"] == 3
    # same seed -> identical file; other seed -> other weights
    assert cli(args) == 0 and sha256_file(out) == first
    assert cli([*args[:-1], "--seed", "4", str(tmp_path / "other.safetensors")]) == 0
    assert sha256_file(tmp_path / "other.safetensors") != first


def test_errors_are_one_line_without_traceback(
    cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = tmp_path / "evil.ckpt"
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    torch.save({"state_dict": {}, "x": Evil()}, evil)
    assert cli(["encoder", "inspect", str(evil)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("encshield: error: refused to load") and "evil.ckpt" in err
    assert "Traceback" not in err and not marker.exists()

    assert cli(["encoder", "inspect", str(tmp_path / "nope.ckpt")]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli(["encoder", "build", "--arch", "resnet7", str(tmp_path / "x.safetensors")]) == 2
    assert "resnet18" in capsys.readouterr().err
