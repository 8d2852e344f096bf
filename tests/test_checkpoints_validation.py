"""Checkpoint metadata is checked before it is used: fields of the wrong type or range are
named in one line, model sizes from metadata or ``--width`` are compared with the tensors on the
``meta`` device before any model is allocated, and key mismatches are reported on one line, for
encoder and classifier files alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import encshield.checkpoints.api as checkpoints_api
import encshield.defenses.io as defenses_io
from encshield.checkpoints import inspect_checkpoint, load_encoder, payload_sha256, save_encoder
from encshield.checkpoints.native import METADATA_KEY
from encshield.defenses import load_classifier, save_classifier
from encshield.errors import CheckpointError, CheckpointKeyError, ConfigError, EncshieldError
from encshield.models import Classifier, MLPClassifier, build_backbone, build_encoder
from tests.test_checkpoints import randomize, solo_learn_checkpoint
from tests.test_checkpoints_cli import cli  # noqa: F401 - pytest fixture
from tests.test_checkpoints_output import assert_one_line, files_in, one_line_cli_error, solo_ckpt

# ----------------------------------------------------------------------------- helpers


def rewrite_metadata(path: Path, dst: Path, **changes: Any) -> Path:
    """Copy a safetensors file with some encshield metadata fields changed (tensors and their
    payload sha256 untouched; ``None`` deletes a field)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()[METADATA_KEY])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    save_file(tensors, str(dst), metadata={METADATA_KEY: json.dumps(meta)})
    return dst


@pytest.fixture
def encoder_file(tmp_path: Path) -> Path:
    enc = randomize(build_encoder("resnet18", 4, "cifar", "cifar10", 32), 7)
    path = tmp_path / "enc.safetensors"
    save_encoder(enc, path)
    return path


@pytest.fixture
def classifier_file(tmp_path: Path) -> Path:
    enc = randomize(build_encoder("resnet18", 4, "cifar", "cifar10", 32), 8)
    head = randomize(MLPClassifier(32, 10, (16, 8), 0.1), 9)
    path = tmp_path / "clf.safetensors"
    save_classifier(Classifier(enc, head), path, {"defense": "none"})
    return path


@pytest.fixture
def no_model_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if checkpoint loading builds a real model (it must refuse before allocating)."""

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a model was allocated: build_encoder{args}")

    monkeypatch.setattr(checkpoints_api, "build_encoder", forbidden)
    monkeypatch.setattr(defenses_io, "build_encoder", forbidden)


# ------------------------------------------------------ model size before allocation


def test_metadata_width_is_checked_before_allocating(
    tmp_path: Path, encoder_file: Path, no_model_allocation: None
) -> None:
    """A 300-wide ResNet-18 would need about 1 GB; the file holds width-4 tensors."""
    lying = rewrite_metadata(encoder_file, tmp_path / "wide.safetensors", width=300,
                             feature_dim=None)
    with pytest.raises(CheckpointKeyError, match=r"width 300 \(from the file's metadata\)") as e:
        load_encoder(lying)
    assert r"conv1.weight: checkpoint (4, 3, 3, 3) vs model (300, 3, 3, 3)" in \
        assert_one_line(e.value)
    other_arch = rewrite_metadata(encoder_file, tmp_path / "r50.safetensors",
                                  architecture="resnet50", feature_dim=None)
    with pytest.raises(CheckpointKeyError, match="does not fit the model") as e:
        load_encoder(other_arch)
    assert_one_line(e.value)


@pytest.mark.parametrize("width", [0, -3, 513, 10**9])
def test_width_override_bounded(encoder_file: Path, width: int,
                                no_model_allocation: None) -> None:
    with pytest.raises(ConfigError, match=r"width \(--width\) must be an integer in 1\.\.512"):
        load_encoder(encoder_file, width=width)


def test_cli_absurd_width(cli, tmp_path: Path,  # noqa: F811
                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "huge.safetensors"
    line = one_line_cli_error(cli, ["encoder", "build", "--width", str(10**9), str(out)], capsys)
    assert "--width must be an integer in 1..512" in line
    src = solo_ckpt(tmp_path / "s.ckpt")
    line = one_line_cli_error(
        cli, ["encoder", "convert", str(src), str(out), "--width", "100000"], capsys)
    assert "1..512" in line
    assert files_in(tmp_path) == ["s.ckpt"]


def test_classifier_head_size_checked_before_allocating(
    tmp_path: Path, classifier_file: Path, no_model_allocation: None
) -> None:
    """A head of 32 -> 10^6 classes recorded for a file holding 10 classes is refused from the
    shapes alone."""
    meta_head = {"type": "mlp_classifier", "in_dim": 32, "out_dim": 10**6,
                 "hidden_dims": [16, 8], "dropout": 0.1}
    lying = rewrite_metadata(classifier_file, tmp_path / "big.safetensors", head=meta_head)
    with pytest.raises(CheckpointKeyError, match=r"head\.fc3\.weight: checkpoint \(10, 8\) vs "
                       r"model \(1000000, 8\)") as info:
        load_classifier(lying)
    assert_one_line(info.value)


# ------------------------------------------------------------------ metadata of wrong type


@pytest.mark.parametrize(("field", "value"), [
    ("width", "abc"), ("width", [16]), ("width", 10**9), ("width", True), ("width", 0),
    ("normalization", 5), ("normalization", {"mean": "abc", "std": [1, 1, 1]}),
    ("normalization", {"mean": [0.5] * 3, "std": [0.0, 1.0, 1.0]}),
    ("normalization", "nope"), ("input_size", "x"), ("input_size", [3, -1, 32]),
    ("input_size", [3, 32, 32, 32]), ("architecture", 5), ("architecture", "vgg"),
    ("stem", ["a"]), ("provenance", 5), ("provenance", {"extra": 5}),
    ("provenance", {"sha256": 1}), ("ssl_method", 3), ("pretrain_data", ["c"]),
    ("feature_dim", "x"), ("feature_dim", 999), ("surrogate_head", 5),
])
def test_encoder_metadata_of_wrong_type(tmp_path: Path, encoder_file: Path, field: str,
                                        value: Any) -> None:
    bad = rewrite_metadata(encoder_file, tmp_path / "bad.safetensors", **{field: value})
    with pytest.raises(CheckpointError, match=rf"bad\.safetensors.*field '{field}'") as info:
        load_encoder(bad)
    assert_one_line(info.value)


def test_encoder_metadata_cli(cli, tmp_path: Path, encoder_file: Path,  # noqa: F811
                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = rewrite_metadata(encoder_file, tmp_path / "bad.safetensors", width="abc")
    line = one_line_cli_error(cli, ["encoder", "inspect", str(bad)], capsys)
    assert "field 'width'" in line and "'abc'" in line
    one_line_cli_error(cli, ["encoder", "convert", str(bad), str(tmp_path / "o.st")], capsys)
    assert not (tmp_path / "o.st").exists()


@pytest.mark.parametrize(("field", "value"), [
    ("width", "abc"), ("architecture", None), ("input_size", "x"), ("normalization", 5),
    ("head", {"type": "linear", "in_dim": "32", "out_dim": 10, "bias": True}),
    ("head", {"type": "mlp_classifier", "in_dim": 32, "out_dim": 10, "hidden_dims": [16],
              "dropout": 0.1}),
    ("head", {"type": "mlp_classifier", "in_dim": 32, "out_dim": 10, "hidden_dims": [16, 8],
              "dropout": 1.5}),
    ("head", {"type": "mlp_classifier", "in_dim": 64, "out_dim": 10, "hidden_dims": [16, 8],
              "dropout": 0.1}),
    ("head", {"type": "transformer"}), ("record", [1]), ("provenance", "x"),
])
def test_classifier_metadata_of_wrong_type(tmp_path: Path, classifier_file: Path, field: str,
                                           value: Any) -> None:
    bad = rewrite_metadata(classifier_file, tmp_path / "bad.safetensors", **{field: value})
    with pytest.raises(CheckpointError, match=rf"bad\.safetensors.*'{field}'") as info:
        load_classifier(bad)
    assert_one_line(info.value)


def test_valid_files_still_load(encoder_file: Path, classifier_file: Path) -> None:
    assert load_encoder(encoder_file).encoder.feature_dim == 32
    classifier, meta = load_classifier(classifier_file)
    assert meta["record"] == {"defense": "none"} and classifier.num_classes == 10


# ----------------------------------------------------------------- one-line key errors


def test_key_mismatch_messages_are_one_line(tmp_path: Path, classifier_file: Path) -> None:
    state = dict(build_backbone("resnet18", 4, "cifar").state_dict())
    state["layer1.0.extra.weight"] = torch.zeros(3)
    del state["layer4.1.bn2.weight"]
    torch.save(state, tmp_path / "keys.pth")
    with pytest.raises(CheckpointKeyError) as info:
        load_encoder(tmp_path / "keys.pth")
    message = assert_one_line(info.value)
    assert "1 unknown key(s)" in message and "1 missing key(s)" in message
    assert message.endswith("detected 'torchvision').")

    with pytest.raises(CheckpointKeyError) as info:  # many missing keys: counted, first listed
        load_encoder(tmp_path / "keys.pth", arch="resnet34")
    assert "more)" in assert_one_line(info.value)

    backbone = randomize(build_backbone("resnet18", 4, "cifar"), 70)
    ckpt = solo_learn_checkpoint(backbone, nn.Linear(32, 10), {"method": "simclr"})
    ckpt["state_dict"]["classifier.bias"] = torch.zeros(7)
    torch.save(ckpt, tmp_path / "head.ckpt")
    with pytest.raises(CheckpointKeyError, match="surrogate head") as info:
        load_encoder(tmp_path / "head.ckpt")
    assert_one_line(info.value)

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(classifier_file), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    tensors["head.fc9.weight"] = torch.zeros(2)
    parsed = json.loads(meta[METADATA_KEY])
    parsed["payload_sha256"] = payload_sha256(tensors)
    save_file(tensors, str(tmp_path / "extra.safetensors"),
              metadata={METADATA_KEY: json.dumps(parsed)})
    with pytest.raises(CheckpointKeyError, match=r"1 unknown key\(s\).*head\.fc9\.weight") as e:
        load_classifier(tmp_path / "extra.safetensors")
    assert_one_line(e.value)


def test_every_refusal_is_an_encshield_error(tmp_path: Path, encoder_file: Path) -> None:
    """The CLI prints EncshieldError subclasses as one line; nothing above may escape as
    another exception type (which the CLI would print as a traceback)."""
    bad = rewrite_metadata(encoder_file, tmp_path / "bad.safetensors", provenance=[1])
    with pytest.raises(EncshieldError):
        inspect_checkpoint(bad)
