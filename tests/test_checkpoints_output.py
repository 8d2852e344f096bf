"""Where checkpoints are written: an output path that is a folder, lies under a file or in a
read-only folder is refused with one line before any work (CLI: ``encshield: error: ...``, exit
status 2), and a write that fails midway leaves nothing behind.

The helpers here are shared by the other hostile-input tests of checkpoints.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import encshield.checkpoints.api as checkpoints_api
from encshield.checkpoints import convert_checkpoint, load_encoder
from encshield.errors import CheckpointError
from encshield.models import build_backbone
from tests.test_checkpoints import randomize, solo_learn_checkpoint
from tests.test_checkpoints_cli import cli  # noqa: F401 - pytest fixture

# ----------------------------------------------------------------------------- helpers


def one_line_cli_error(main: Callable[[list[str]], int], args: list[str],
                       capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI; assert exit status 2 and exactly one ``encshield: error:`` line."""
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("encshield: error: ") and "Traceback" not in err
    return lines[0]


def assert_one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message, message
    return message


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def solo_ckpt(path: Path, width: int = 4, seed: int = 50) -> Path:
    backbone = randomize(build_backbone("resnet18", width, "cifar"), seed)
    head = randomize(nn.Linear(backbone.feature_dim, 10), seed + 1)
    torch.save(solo_learn_checkpoint(backbone, head, {"method": "simclr"}), path)
    return path



# ------------------------------------------------------------------------ output paths


def test_convert_into_a_folder(cli, tmp_path: Path,  # noqa: F811
                               capsys: pytest.CaptureFixture[str]) -> None:
    src = solo_ckpt(tmp_path / "s.ckpt")
    folder = tmp_path / "out"
    folder.mkdir()
    for dst in (str(folder), f"{folder}/", str(tmp_path / "new") + "/"):
        with pytest.raises(CheckpointError, match="is a folder; give a file name") as info:
            convert_checkpoint(src, dst)
        assert_one_line(info.value)
        line = one_line_cli_error(cli, ["encoder", "convert", str(src), dst], capsys)
        assert "is a folder" in line
        line = one_line_cli_error(cli, ["encoder", "build", dst], capsys)
        assert "is a folder" in line
    assert files_in(tmp_path) == ["out", "s.ckpt"]
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        load_encoder(folder)


def test_output_under_a_file(cli, tmp_path: Path,  # noqa: F811
                             capsys: pytest.CaptureFixture[str]) -> None:
    src = solo_ckpt(tmp_path / "s.ckpt")
    dst = tmp_path / "s.ckpt" / "deeper" / "out.safetensors"
    line = one_line_cli_error(cli, ["encoder", "convert", str(src), str(dst)], capsys)
    assert "is a file, not a folder" in line
    assert files_in(tmp_path) == ["s.ckpt"]


def test_unwritable_parent(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                           capsys: pytest.CaptureFixture[str]) -> None:
    src = solo_ckpt(tmp_path / "s.ckpt")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = checkpoints_api.os.access
    # root may write anywhere, so simulate a read-only folder through os.access
    monkeypatch.setattr(checkpoints_api.os, "access", lambda p, *args, **kwargs: Path(p) != locked
                        and real_access(p, *args, **kwargs))
    line = one_line_cli_error(
        cli, ["encoder", "convert", str(src), str(locked / "sub" / "o.safetensors")], capsys)
    assert f"folder {locked} is not writable" in line
    assert files_in(tmp_path) == ["locked", "s.ckpt"]


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    src = solo_ckpt(tmp_path / "s.ckpt")

    def disk_full(tensors: Any, filename: str, metadata: Any = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device") as info:
        convert_checkpoint(src, tmp_path / "a" / "b" / "out.safetensors")
    assert_one_line(info.value)
    assert files_in(tmp_path) == ["s.ckpt"]  # no temporary file, no folder it created
