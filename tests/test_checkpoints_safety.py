"""Loading a third-party checkpoint must never run its code.

Each malicious file below would create a marker file when unpickled by ``pickle``/``torch.load``
with ``weights_only=False``; encshield must refuse it with UnsafeCheckpointError (naming the file
and the offending global) and the marker must not appear.
"""

from __future__ import annotations

import os
import pathlib
import pickle
from pathlib import Path

import pytest
import torch

from encshield.checkpoints import load_encoder, safe_torch_load, scan_pickle_globals, to_plain
from encshield.checkpoints.safe_pickle import stub_class
from encshield.errors import CheckpointError, UnsafeCheckpointError
from encshield.models import build_backbone


class _TouchViaPath:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # pickle protocol
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class _TouchViaExec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


class _TouchViaSystem:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


PAYLOADS = {"path_touch": _TouchViaPath, "exec": _TouchViaExec, "os_system": _TouchViaSystem}
EXPECTED_GLOBAL = {"path_touch": "getattr|pathlib", "exec": "builtins.exec",
                   "os_system": "posix.system|nt.system"}


def _lightning_like(payload: object) -> dict:
    """An otherwise normal solo-learn checkpoint with ``payload`` hidden in hyper_parameters."""
    backbone = build_backbone("resnet18", 4, "cifar")
    return {
        "epoch": 10,
        "global_step": 100,
        "state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()},
        "hyper_parameters": {"method": "simclr", "callback": payload},
    }


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_malicious_torch_save_checkpoint_is_refused(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil_{kind}.ckpt"
    torch.save(_lightning_like(PAYLOADS[kind](marker)), path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_encoder(path)
    message = str(info.value)
    assert path.name in message
    assert "Nothing from the file was executed" in message
    assert any(name in message for name in EXPECTED_GLOBAL[kind].split("|")), message
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_malicious_raw_pickle_is_refused(tmp_path: Path, kind: str, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {"conv1.weight": 1}, "x": PAYLOADS[kind](marker)}, handle,
                    protocol=protocol)
    with pytest.raises(UnsafeCheckpointError, match="evil.pth") as info:
        load_encoder(path)
    assert any(name in str(info.value) for name in EXPECTED_GLOBAL[kind].split("|"))
    assert not marker.exists()


def test_malicious_legacy_torch_format_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "legacy.pt"
    torch.save(_lightning_like(_TouchViaExec(marker)), path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeCheckpointError, match="builtins.exec"):
        load_encoder(path)
    assert not marker.exists()


def test_benign_legacy_torch_format_loads(tmp_path: Path) -> None:
    backbone = build_backbone("resnet18", 4, "cifar").eval()
    path = tmp_path / "legacy.pth"
    torch.save(backbone.state_dict(), path, _use_new_zipfile_serialization=False)
    loaded = load_encoder(path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encoder.backbone(x), backbone(x))


def test_arbitrary_class_is_refused_not_imported(tmp_path: Path) -> None:
    import collections

    path = tmp_path / "obj.pt"
    torch.save({"state_dict": {}, "obj": collections.deque([1, 2])}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"obj\.pt.*collections\.deque"):
        safe_torch_load(path)
    bound = tmp_path / "bound.pt"
    torch.save({"cfg": Path.cwd}, bound)
    with pytest.raises(UnsafeCheckpointError, match="getattr"):
        safe_torch_load(bound)


def test_scan_lists_globals_without_loading(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"a": torch.zeros(2), "b": _TouchViaExec(marker)}, path)
    found = scan_pickle_globals(path)
    assert "builtins.exec" in found and "torch._utils._rebuild_tensor_v2" in found
    assert not marker.exists()


def test_metadata_stubs_are_inert(tmp_path: Path) -> None:
    import argparse

    path = tmp_path / "meta.pt"
    torch.save({"ns": argparse.Namespace(method="simclr", root=pathlib.PosixPath("/data/x")),
                "t": torch.ones(2)}, path)
    obj = safe_torch_load(path)
    ns = obj["ns"]
    assert type(ns) is stub_class("argparse.Namespace")
    assert not isinstance(ns, argparse.Namespace)  # a stand-in, not the real class
    assert to_plain(ns) == {"method": "simclr", "root": "/data/x"}
    assert torch.equal(obj["t"], torch.ones(2))
    # extra metadata names can be allowlisted per call, still as inert stubs
    class Marker:  # pickled under this test module's name
        pass

    Marker.__qualname__ = "Marker"
    globals()["Marker"] = Marker
    try:
        torch.save({"m": Marker()}, tmp_path / "m.pt")
    finally:
        del globals()["Marker"]
    with pytest.raises(UnsafeCheckpointError, match="Marker"):
        safe_torch_load(tmp_path / "m.pt")
    loaded = safe_torch_load(tmp_path / "m.pt", extra_metadata_globals=[f"{__name__}.Marker"])
    assert type(loaded["m"]).__name__ == "Marker" and not isinstance(loaded["m"], Marker)


def test_truncated_and_corrupt_files(tmp_path: Path) -> None:
    good = tmp_path / "good.ckpt"
    torch.save(_lightning_like("fine"), good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.ckpt") as info:
        load_encoder(truncated)
    assert not isinstance(info.value, UnsafeCheckpointError)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_encoder(garbage)

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt is empty"):
        load_encoder(empty)

    raw_truncated = tmp_path / "raw.pkl"
    raw_truncated.write_bytes(pickle.dumps({"a": [1, 2, 3]}, protocol=2)[:-4])
    with pytest.raises(CheckpointError, match="raw.pkl"):
        load_encoder(raw_truncated)


def test_truncated_safetensors(tmp_path: Path) -> None:
    from encshield.checkpoints import save_encoder
    from encshield.models import build_encoder

    path = tmp_path / "enc.safetensors"
    save_encoder(build_encoder("resnet18", 4), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="enc.safetensors"):
        load_encoder(path)
