"""Corrupt or poisoned weights are refused before they are used or re-stamped: zip members that
fail their CRC-32 (torch's reader does not check them) and NaN/inf weights, on load, inspect and
convert, for encoder and classifier files, each with one line naming the problem.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from encshield.checkpoints import (
    convert_checkpoint,
    inspect_checkpoint,
    load_encoder,
    safe_torch_load,
    save_encoder,
)
from encshield.defenses import load_classifier, save_classifier
from encshield.errors import CheckpointError, ChecksumMismatchError
from encshield.models import Classifier, build_backbone, build_encoder
from tests.test_checkpoints import randomize, solo_learn_checkpoint
from tests.test_checkpoints_cli import cli  # noqa: F401 - pytest fixture
from tests.test_checkpoints_output import assert_one_line, files_in, one_line_cli_error, solo_ckpt


def flip_byte_in_member(path: Path, member_suffix: str, offset: int = 10) -> str:
    """Flip one byte inside the stored data of the zip member ending with ``member_suffix``."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(member_suffix))
    start = info.header_offset
    name_len = int.from_bytes(data[start + 26:start + 28], "little")
    extra_len = int.from_bytes(data[start + 28:start + 30], "little")
    data[start + 30 + name_len + extra_len + min(offset, info.compress_size - 1)] ^= 0xFF
    path.write_bytes(bytes(data))
    return info.filename



# ----------------------------------------------------------------- corrupt zip archives


@pytest.mark.parametrize("member", ["data/0", "data.pkl"])
def test_flipped_byte_in_torch_zip_is_refused(tmp_path: Path, member: str) -> None:
    """torch's reader ignores the zip CRCs: a flipped byte inside a tensor loaded silently and
    `convert` stamped a fresh payload sha256 on the corrupted weights."""
    src = solo_ckpt(tmp_path / "simclr.ckpt")
    name = flip_byte_in_member(src, member)
    for call in (lambda: safe_torch_load(src), lambda: load_encoder(src),
                 lambda: inspect_checkpoint(src)):
        with pytest.raises(ChecksumMismatchError, match=r"simclr\.ckpt is corrupt.*CRC") as info:
            call()
        assert name in assert_one_line(info.value)
    dst = tmp_path / "out.safetensors"
    with pytest.raises(ChecksumMismatchError):
        convert_checkpoint(src, dst)
    assert files_in(tmp_path) == ["simclr.ckpt"]


def test_corrupt_torch_zip_cli(cli, tmp_path: Path,  # noqa: F811
                               capsys: pytest.CaptureFixture[str]) -> None:
    src = solo_ckpt(tmp_path / "simclr.ckpt")
    flip_byte_in_member(src, "data/3")
    line = one_line_cli_error(cli, ["encoder", "convert", str(src), str(tmp_path / "o.st")],
                              capsys)
    assert "CRC-32" in line and "download or copy the file again" in line
    assert files_in(tmp_path) == ["simclr.ckpt"]


# -------------------------------------------------------------------- non-finite weights


def test_nan_weights_refused_on_load_convert_inspect(tmp_path: Path) -> None:
    backbone = randomize(build_backbone("resnet18", 4, "cifar"), 60)
    state = dict(backbone.state_dict())
    state["conv1.weight"] = state["conv1.weight"].clone()
    state["conv1.weight"].view(-1)[:3] = float("nan")
    state["layer4.1.bn2.running_var"] = torch.full_like(state["layer4.1.bn2.running_var"],
                                                        float("inf"))
    src = tmp_path / "nan.pth"
    torch.save(state, src)
    for call in (lambda: load_encoder(src), lambda: inspect_checkpoint(src),
                 lambda: convert_checkpoint(src, tmp_path / "out.safetensors")):
        with pytest.raises(CheckpointError, match="non-finite") as info:
            call()
        message = assert_one_line(info.value)
        assert "nan.pth" in message and "2 tensor(s)" in message
        assert "conv1.weight (3 of 108)" in message
        assert "layer4.1.bn2.running_var (32 of 32)" in message
    assert files_in(tmp_path) == ["nan.pth"]


def test_inf_in_surrogate_head_and_native_file_refused(tmp_path: Path) -> None:
    backbone = randomize(build_backbone("resnet18", 4, "cifar"), 61)
    head = randomize(nn.Linear(32, 10), 62)
    with torch.no_grad():
        head.bias[2] = float("-inf")
    path = tmp_path / "solo.ckpt"
    torch.save(solo_learn_checkpoint(backbone, head, {"method": "simclr"}), path)
    with pytest.raises(CheckpointError, match=r"surrogate_head\.bias \(1 of 10\)"):
        load_encoder(path)

    enc = build_encoder("resnet18", 4)
    with torch.no_grad():
        enc.backbone.layer2[0].conv1.weight.fill_(float("nan"))
    save_encoder(enc, tmp_path / "enc.safetensors")  # a valid file holding NaN weights
    with pytest.raises(CheckpointError, match=r"layer2\.0\.conv1\.weight \(288 of 288\)"):
        load_encoder(tmp_path / "enc.safetensors")


def test_non_finite_outside_the_encoder_is_ignored(tmp_path: Path) -> None:
    """Only loaded tensors are checked: a NaN in a skipped projector does not block loading."""
    backbone = randomize(build_backbone("resnet18", 4, "cifar"), 63)
    ckpt = solo_learn_checkpoint(backbone, nn.Linear(32, 10), {"method": "simclr"})
    ckpt["state_dict"]["projector.0.weight"].fill_(float("nan"))
    torch.save(ckpt, tmp_path / "solo.ckpt")
    assert load_encoder(tmp_path / "solo.ckpt").format == "solo-learn"


def test_nan_weights_cli_inspect(cli, tmp_path: Path,  # noqa: F811
                                 capsys: pytest.CaptureFixture[str]) -> None:
    state = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v)
             for k, v in build_backbone("resnet18", 4, "cifar").state_dict().items()}
    torch.save(state, tmp_path / "allnan.pth")
    line = one_line_cli_error(cli, ["encoder", "inspect", str(tmp_path / "allnan.pth")], capsys)
    assert "non-finite" in line and "(95 more)" in line


def test_load_classifier_refuses_nan(tmp_path: Path) -> None:
    enc = build_encoder("resnet18", 4)
    head = nn.Linear(32, 10)
    with torch.no_grad():
        head.weight[0, :4] = float("nan")
    save_classifier(Classifier(enc, head), tmp_path / "clf.safetensors")
    with pytest.raises(CheckpointError, match=r"clf\.safetensors.*head\.weight \(4 of 320\)"):
        load_classifier(tmp_path / "clf.safetensors")
