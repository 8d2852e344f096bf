"""The model zoo: manifest validation, sha256-verified get, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from encshield import zoo
from encshield.checkpoints import save_encoder
from encshield.cli import main
from encshield.errors import ChecksumMismatchError, ConfigError
from encshield.models import build_encoder


def _zoo(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", width=4, stem="cifar", normalization="cifar10")
    (tmp_path / "weights").mkdir()
    sha = save_encoder(encoder, tmp_path / "weights" / "tiny.safetensors", ssl_method="simclr",
                       pretrain_data="cifar10/train")
    manifest = {"encoders": [{
        "name": "tiny", "file": "weights/tiny.safetensors", "sha256": sha, "arch": "resnet18",
        "width": 4, "stem": "cifar", "normalization": "cifar10", "method": "simclr",
        "pretrain_data": "cifar10/train", "image_size": 32, "feature_dim": 32,
        "metrics": {"knn_top1_k200": 0.5}, "command": "encshield pretrain --config x.yaml",
    }]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path, encoder


def test_get_verifies_and_loads_the_same_encoder(tmp_path: Path) -> None:
    zoo_dir, encoder = _zoo(tmp_path)
    assert [item.name for item in zoo.entries(zoo_dir)] == ["tiny"]
    loaded = zoo.load("tiny", zoo_dir=zoo_dir)
    x = torch.rand(2, 3, 32, 32)
    encoder.eval()
    assert torch.equal(loaded.encoder(x), encoder(x))
    copy = zoo.get("tiny", tmp_path / "out" / "copy.safetensors", zoo_dir=zoo_dir)
    assert copy.read_bytes() == (zoo_dir / "weights" / "tiny.safetensors").read_bytes()


def test_tampered_file_and_unknown_name_are_refused(tmp_path: Path) -> None:
    zoo_dir, _ = _zoo(tmp_path)
    with pytest.raises(ConfigError, match="allowed values: tiny"):
        zoo.get("nope", zoo_dir=zoo_dir)
    path = zoo_dir / "weights" / "tiny.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="restore it from git"):
        zoo.get("tiny", zoo_dir=zoo_dir)


def test_shipped_manifest_is_valid_and_every_file_verifies() -> None:
    for item in zoo.entries():
        assert zoo.get(item.name).is_file()
        assert item.command.startswith("encshield ")


def test_cli_list_json_and_get(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [item["name"] for item in listed] == [item.name for item in zoo.entries()]
    assert main(["zoo", "get", "no-such-encoder"]) == 2
    assert "allowed values" in capsys.readouterr().err
