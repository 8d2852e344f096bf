"""Checkpoints: encshield safetensors round trip and the solo-learn / BadEncoder / torchvision
importers, each built here with the real key layout of its source."""

from __future__ import annotations

import argparse
import json
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from encshield.checkpoints import (
    FORMATS,
    convert_checkpoint,
    infer_architecture,
    inspect_checkpoint,
    load_encoder,
    payload_sha256,
    save_encoder,
    sha256_file,
)
from encshield.errors import CheckpointError, CheckpointKeyError, ChecksumMismatchError
from encshield.models import Normalization, ProjectionMLP, ResNet, build_backbone, build_encoder

CIFAR10 = Normalization.from_preset("cifar10")
BADENCODER = Normalization.from_preset("badencoder_cifar10")
IMAGENET = Normalization.from_preset("imagenet")


# ------------------------------------------------------------------------------- helpers


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Give every BN non-trivial affine parameters and running stats (so eval mode matters)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                if m.affine:
                    m.weight.copy_(1 + 0.2 * torch.randn(n, generator=gen))
                    m.bias.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.num_batches_tracked.fill_(123)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(0.1 * torch.randn(m.weight.shape, generator=gen))
    return module.eval()


def images(n: int = 4, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def reference_features(backbone: nn.Module, norm: Normalization, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return backbone.eval()(norm(x))


def encode(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return encoder.eval()(x)


def solo_learn_checkpoint(
    backbone: ResNet, classifier: nn.Linear, hyper_parameters: object
) -> dict:
    """A solo-learn (MoCo-style) Lightning checkpoint dict with its real key layout."""
    dim = backbone.feature_dim
    projector = randomize(ProjectionMLP(dim, 32, 16), 11)
    momentum_backbone = randomize(build_backbone("resnet18", backbone.width, "cifar"), 12)
    state = OrderedDict()
    for k, v in backbone.state_dict().items():
        state[f"backbone.{k}"] = v
    for k, v in projector.state_dict().items():
        state[f"projector.{k}"] = v
    for k, v in momentum_backbone.state_dict().items():
        state[f"momentum_backbone.{k}"] = v
    for k, v in projector.state_dict().items():
        state[f"momentum_projector.{k}"] = v.clone()
    state["classifier.weight"] = classifier.weight.detach()
    state["classifier.bias"] = classifier.bias.detach()
    state["queue"] = torch.randn(2, 16, 64)
    state["queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {
        "epoch": 999,
        "global_step": 195000,
        "pytorch-lightning_version": "1.5.10",
        "state_dict": state,
        "hyper_parameters": hyper_parameters,
        "optimizer_states": [{"state": {0: {"momentum_buffer": torch.zeros(3)}},
                              "param_groups": [{"lr": 0.4, "params": [0]}]}],
        "lr_schedulers": [{"last_epoch": 999, "base_lrs": [0.4]}],
        "callbacks": {},
    }


class _FakeOmegaConf:
    """Installs stand-ins importable as ``omegaconf.*`` so a test can pickle objects under
    OmegaConf's names (omegaconf itself is not installed), then removes them again."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        root = types.ModuleType("omegaconf")
        dictconfig = types.ModuleType("omegaconf.dictconfig")
        listconfig = types.ModuleType("omegaconf.listconfig")
        nodes = types.ModuleType("omegaconf.nodes")
        base = types.ModuleType("omegaconf.base")

        class ContainerMetadata:
            def __init__(self, key: object = None) -> None:
                self.ref_type = object
                self.object_type = dict
                self.key_type = str
                self.element_type = object
                self.optional = True
                self.key = key
                self.flags: dict = {}

        class AnyNode:
            def __init__(self, value: object, parent: object = None) -> None:
                self._val = value
                self._parent = parent
                self._metadata = None

            def __getstate__(self) -> dict:
                return dict(self.__dict__)

        class DictConfig:
            def __init__(self, content: dict) -> None:
                self._parent = None
                self._metadata = ContainerMetadata()
                self._content = {
                    k: v if isinstance(v, (DictConfig, ListConfig)) else AnyNode(v)
                    for k, v in content.items()
                }

            def __getstate__(self) -> dict:  # as omegaconf's Container.__getstate__
                return dict(self.__dict__)

        class ListConfig:
            def __init__(self, content: list) -> None:
                self._parent = None
                self._metadata = ContainerMetadata()
                self._content = [AnyNode(v) for v in content]

            def __getstate__(self) -> dict:
                return dict(self.__dict__)

        for cls, module in ((ContainerMetadata, base), (AnyNode, nodes), (DictConfig, dictconfig),
                            (ListConfig, listconfig)):
            cls.__module__ = module.__name__
            cls.__qualname__ = cls.__name__
            setattr(module, cls.__name__, cls)
        self.modules = {m.__name__: m for m in (root, dictconfig, listconfig, nodes, base)}
        for name, module in self.modules.items():
            monkeypatch.setitem(sys.modules, name, module)
        self.DictConfig = DictConfig
        self.ListConfig = ListConfig

    def uninstall(self) -> None:
        for name in self.modules:
            self.monkeypatch.delitem(sys.modules, name)


# --------------------------------------------------------------------- encshield format


@pytest.fixture
def small_encoder() -> nn.Module:
    torch.manual_seed(0)
    enc = build_encoder("resnet18", 8, "cifar", "cifar10", 32, ssl_method="simclr",
                        pretrain_data="cifar10")
    return randomize(enc, 3)


def test_native_round_trip(tmp_path: Path, small_encoder: nn.Module) -> None:
    head = randomize(nn.Linear(64, 10), 4)
    path = tmp_path / "enc.safetensors"
    digest = save_encoder(small_encoder, path, surrogate_head=head, config_hash="abc123",
                          extra={"note": "unit test"})
    assert digest == sha256_file(path)
    assert [p.name for p in tmp_path.iterdir()] == ["enc.safetensors"]  # no temp files left

    loaded = load_encoder(path)
    x = images()
    assert torch.equal(encode(loaded.encoder, x), encode(small_encoder, x))
    assert loaded.format == "encshield" and loaded.sha256 == digest
    assert torch.equal(loaded.surrogate_head.weight, head.weight)
    assert torch.equal(loaded.surrogate_head.bias, head.bias)
    assert not loaded.encoder.training
    prov = loaded.encoder.provenance
    assert (prov.arch, prov.width, prov.stem) == ("resnet18", 8, "cifar")
    assert (prov.ssl_method, prov.pretrain_data) == ("simclr", "cifar10")
    assert prov.config_hash == "abc123"
    assert (prov.source_file, prov.source_format, prov.sha256) == (str(path), "encshield", digest)
    assert prov.extra["note"] == "unit test"
    meta = loaded.metadata
    assert meta["kind"] == "encoder" and meta["format_version"] == 1
    assert meta["normalization"]["name"] == "cifar10"
    assert meta["normalization"]["std"] == pytest.approx([0.2470, 0.2435, 0.2616])
    assert meta["input_size"] == [3, 32, 32] and meta["feature_dim"] == 64
    assert meta["code_version"]
    assert meta["surrogate_head"] == {"in_features": 64, "out_features": 10, "bias": True}
    assert loaded.encoder.normalization.name == "cifar10"
    # num_batches_tracked and other buffers survive
    assert int(loaded.encoder.backbone.bn1.num_batches_tracked) == 123


def test_native_custom_normalization_values_preserved(tmp_path: Path) -> None:
    enc = build_encoder("resnet18", 4, "zepad_imagenet", Normalization((0.1, 0.2, 0.3),
                        (0.5, 0.6, 0.7), name="mine"), 64)
    save_encoder(enc, tmp_path / "e.safetensors")
    loaded = load_encoder(tmp_path / "e.safetensors")
    assert loaded.encoder.normalization.mean_values == pytest.approx([0.1, 0.2, 0.3])
    assert loaded.encoder.normalization.name == "mine"
    assert loaded.encoder.input_size == (3, 64, 64)
    assert loaded.encoder.provenance.stem == "zepad_imagenet"
    x = images(2, 64)
    assert torch.equal(encode(loaded.encoder, x), encode(enc, x))


def test_native_tampered_payload(tmp_path: Path, small_encoder: nn.Module) -> None:
    path = tmp_path / "enc.safetensors"
    save_encoder(small_encoder, path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last tensor's bytes; the header is untouched
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="enc.safetensors"):
        load_encoder(path)


def test_expected_sha256(tmp_path: Path, small_encoder: nn.Module) -> None:
    path = tmp_path / "enc.safetensors"
    digest = save_encoder(small_encoder, path)
    assert load_encoder(path, expected_sha256=digest).sha256 == digest
    assert load_encoder(path, expected_sha256="sha256:" + digest.upper()).sha256 == digest
    with pytest.raises(ChecksumMismatchError, match=r"enc\.safetensors.*expected 0+"):
        load_encoder(path, expected_sha256="0" * 64)


def test_payload_hash_is_container_independent() -> None:
    a = {"x": torch.arange(6.0).view(2, 3), "y": torch.tensor(3)}
    b = {"y": torch.tensor(3), "x": torch.arange(6.0).view(2, 3).t().contiguous().t()}
    assert payload_sha256(a) == payload_sha256(b)
    assert payload_sha256(a) != payload_sha256({**a, "y": torch.tensor(4)})
    assert payload_sha256(a) != payload_sha256({**a, "x": a["x"].view(3, 2)})
    assert payload_sha256(a) != payload_sha256({**a, "x": a["x"].double()})


# -------------------------------------------------------------------------- solo-learn


def test_solo_learn_checkpoint_with_namespace(tmp_path: Path) -> None:
    torch.manual_seed(0)
    backbone = randomize(build_backbone("resnet18", 8, "cifar"), 5)
    classifier = randomize(nn.Linear(64, 10), 6)
    hparams = {"method": "mocov2plus", "dataset": "cifar10", "backbone": "resnet18",
               "args": argparse.Namespace(method="mocov2plus", dataset="cifar10", lr=0.3)}
    path = tmp_path / "mocov2plus-cifar10-abc-ep=999.ckpt"
    torch.save(solo_learn_checkpoint(backbone, classifier, hparams), path)

    loaded = load_encoder(path)
    assert loaded.format == "solo-learn"
    x = images()
    assert torch.equal(encode(loaded.encoder, x), reference_features(backbone, CIFAR10, x))
    assert loaded.encoder.normalization.name == "cifar10"
    assert torch.equal(loaded.surrogate_head.weight, classifier.weight)
    assert torch.equal(loaded.surrogate_head.bias, classifier.bias)
    prefixes = {k.split(".")[0] for k in loaded.skipped_keys}
    assert prefixes == {"projector", "momentum_backbone", "momentum_projector", "queue",
                        "queue_ptr"}
    prov = loaded.encoder.provenance
    assert (prov.ssl_method, prov.pretrain_data) == ("mocov2plus", "cifar10")
    assert (prov.arch, prov.width, prov.stem) == ("resnet18", 8, "cifar")
    assert prov.source_format == "solo-learn" and prov.sha256 == sha256_file(path)
    assert prov.extra["epoch"] == 999
    assert loaded.metadata["hyper_parameters"]["args"]["lr"] == 0.3


def test_solo_learn_checkpoint_with_omegaconf_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backbone = randomize(build_backbone("resnet18", 4, "cifar"), 7)
    classifier = randomize(nn.Linear(32, 10), 8)
    fake = _FakeOmegaConf(monkeypatch)
    cfg = fake.DictConfig({
        "method": "byol",
        "data": fake.DictConfig({"dataset": "cifar100", "train_path": "./datasets"}),
        "optimizer": fake.DictConfig({"name": "lars", "lr": 1.0}),
        "augmentations": fake.ListConfig(["a", "b"]),
    })
    path = tmp_path / "byol.ckpt"
    ckpt = solo_learn_checkpoint(backbone, classifier, {"cfg": cfg})
    ckpt["hparams_type"] = fake.DictConfig  # Lightning stores the hparams class itself
    torch.save(ckpt, path)
    fake.uninstall()
    assert "omegaconf" not in sys.modules

    loaded = load_encoder(path)
    assert "omegaconf" not in sys.modules  # nothing was imported
    assert (loaded.encoder.provenance.ssl_method, loaded.encoder.provenance.pretrain_data) == (
        "byol", "cifar100")
    hp = loaded.metadata["hyper_parameters"]["cfg"]
    assert hp["optimizer"] == {"name": "lars", "lr": 1.0}
    assert hp["augmentations"] == ["a", "b"]
    x = images()
    assert torch.equal(encode(loaded.encoder, x), reference_features(backbone, CIFAR10, x))


def test_solo_learn_stem_override(tmp_path: Path) -> None:
    backbone = randomize(build_backbone("resnet18", 4, "cifar_sololearn"), 9)
    path = tmp_path / "s.ckpt"
    torch.save(solo_learn_checkpoint(backbone, nn.Linear(32, 10), {}), path)
    exact = load_encoder(path, stem="cifar_sololearn")
    cgcl = load_encoder(path)  # default: CGCL padding 1
    x = images()
    assert torch.equal(encode(exact.encoder, x), reference_features(backbone, CIFAR10, x))
    assert cgcl.encoder.provenance.stem == "cifar"
    assert not torch.allclose(encode(cgcl.encoder, x), encode(exact.encoder, x))
    assert exact.encoder.provenance.ssl_method is None  # no hyper-parameters: unknown


# --------------------------------------------------------------------------- BadEncoder


class _BadEncoderSimCLR(nn.Module):
    """BadEncoder's SimCLR layout: ``f.f`` = Sequential(ResNet children minus maxpool/fc)
    and ``g`` = Linear(no bias)-BN-ReLU-Linear projector."""

    def __init__(self, width: int) -> None:
        super().__init__()
        resnet = build_backbone("resnet18", width, "cifar")
        self.f = nn.Module()
        self.f.f = nn.Sequential(
            *[m for name, m in resnet.named_children() if name != "maxpool"]
        )
        dim = 8 * width
        self.g = ProjectionMLP(dim, dim, 16, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.f.f(x), start_dim=1)


def test_badencoder_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = randomize(_BadEncoderSimCLR(8), 10)
    assert [type(m).__name__ for m in model.f.f] == [
        "Conv2d", "BatchNorm2d", "ReLU", "Sequential", "Sequential", "Sequential", "Sequential",
        "AdaptiveAvgPool2d",
    ]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    path = tmp_path / "model_200.pth"
    torch.save({"epoch": 200, "state_dict": model.state_dict(),
                "optimizer": optimizer.state_dict()}, path)
    assert any(k.startswith("f.f.4.0.downsample.0") for k in model.state_dict())

    loaded = load_encoder(path)
    assert loaded.format == "badencoder"
    assert loaded.encoder.normalization.name == "badencoder_cifar10"
    x = images()
    with torch.no_grad():
        expected = model.features(BADENCODER(x))
    assert torch.equal(encode(loaded.encoder, x), expected)
    assert loaded.surrogate_head is None
    assert loaded.skipped_keys and all(k.startswith("g.") for k in loaded.skipped_keys)
    assert loaded.encoder.provenance.ssl_method == "simclr"


# -------------------------------------------------------------------------- torchvision


def _torchvision_state(
    width: int, stem: str, classes: int, seed: int
) -> tuple[ResNet, nn.Linear, dict]:
    backbone = randomize(build_backbone("resnet18", width, stem), seed)
    fc = randomize(nn.Linear(backbone.feature_dim, classes), seed + 1)
    state = OrderedDict(backbone.state_dict())
    state["fc.weight"] = fc.weight.detach()
    state["fc.bias"] = fc.bias.detach()
    return backbone, fc, state


def test_torchvision_state_dict_with_fc(tmp_path: Path) -> None:
    backbone, fc, state = _torchvision_state(8, "imagenet", 7, 20)
    flat = tmp_path / "resnet18.pth"
    torch.save(state, flat)
    nested = tmp_path / "nested.pth"
    torch.save({"model": OrderedDict((f"module.{k}", v) for k, v in state.items()), "epoch": 3},
               nested)
    x = images(2, 64)
    for path in (flat, nested):
        loaded = load_encoder(path)
        assert loaded.format == "torchvision"
        prov = loaded.encoder.provenance
        assert (prov.arch, prov.width, prov.stem) == ("resnet18", 8, "imagenet")
        assert loaded.encoder.normalization.name == "imagenet"
        assert loaded.encoder.input_size == (3, 224, 224)
        assert torch.equal(encode(loaded.encoder, x), reference_features(backbone, IMAGENET, x))
        assert loaded.surrogate_head.out_features == 7
        assert torch.equal(loaded.surrogate_head.weight, fc.weight)
    # the caller's overrides win
    over = load_encoder(flat, normalization="identity", input_size=64, stem="imagenet")
    assert over.encoder.normalization.is_identity and over.encoder.input_size == (3, 64, 64)
    assert torch.equal(encode(over.encoder, x), reference_features(backbone, nn.Identity(), x))


def test_torchvision_resnet50_inferred(tmp_path: Path) -> None:
    backbone = randomize(build_backbone("resnet50", 4, "cifar"), 21)
    path = tmp_path / "r50.pt"
    torch.save({"state_dict": backbone.state_dict()}, path)
    loaded = load_encoder(path)
    assert (loaded.encoder.provenance.arch, loaded.encoder.feature_dim) == ("resnet50", 128)
    assert loaded.encoder.normalization.name == "cifar10"  # 3x3 stem -> CIFAR default
    x = images(2)
    assert torch.equal(encode(loaded.encoder, x), reference_features(backbone, CIFAR10, x))


def test_old_torchvision_file_without_num_batches_tracked(tmp_path: Path) -> None:
    backbone, _, state = _torchvision_state(4, "imagenet", 5, 22)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    loaded = load_encoder(tmp_path / "old.pth")
    x = images(2, 64)
    assert torch.equal(encode(loaded.encoder, x), reference_features(backbone, IMAGENET, x))


def test_safetensors_plain_state_dict(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    backbone, _, state = _torchvision_state(4, "cifar", 10, 23)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "plain.safetensors"))
    loaded = load_encoder(tmp_path / "plain.safetensors")
    assert loaded.format == "torchvision"
    x = images(2)
    assert torch.equal(encode(loaded.encoder, x), reference_features(backbone, CIFAR10, x))


# ------------------------------------------------------------------ key/shape errors


def test_unknown_and_missing_keys_are_listed(tmp_path: Path) -> None:
    _, _, state = _torchvision_state(4, "cifar", 10, 30)
    state["layer1.0.extra.weight"] = torch.zeros(3)
    state["projection_head.0.weight"] = torch.zeros(3)
    del state["layer4.1.bn2.weight"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointKeyError) as info:
        load_encoder(tmp_path / "bad.pth")
    message = str(info.value)
    assert "bad.pth" in message
    assert "2 unknown key(s)" in message and "layer1.0.extra.weight" in message
    assert "projection_head.0.weight" in message
    assert "1 missing key(s)" in message and "layer4.1.bn2.weight" in message


def test_many_missing_keys_are_truncated(tmp_path: Path) -> None:
    _, _, state = _torchvision_state(4, "cifar", 10, 31)
    torch.save(state, tmp_path / "r18.pth")
    with pytest.raises(CheckpointKeyError) as info:
        load_encoder(tmp_path / "r18.pth", arch="resnet34")
    message = str(info.value)
    # resnet34 has 8 more BasicBlocks: 8 x (2 convs + 2 BNs x 4 tensors) = 80 keys
    assert "80 missing key(s)" in message and "(60 more)" in message
    assert "layer1.2.conv1.weight" in message and "resnet34" in message


def test_shape_mismatch_names_key_and_shapes(tmp_path: Path) -> None:
    _, _, state = _torchvision_state(4, "cifar", 10, 32)
    torch.save(state, tmp_path / "w4.pth")
    wider = r"conv1\.weight: checkpoint \(4, 3, 3, 3\) vs model \(8, 3, 3, 3\)"
    with pytest.raises(CheckpointKeyError, match=wider):
        load_encoder(tmp_path / "w4.pth", width=8)
    kernel = r"conv1\.weight: checkpoint \(4, 3, 3, 3\) vs model \(4, 3, 7, 7\)"
    with pytest.raises(CheckpointKeyError, match=kernel):
        load_encoder(tmp_path / "w4.pth", stem="imagenet")


def test_unrecognised_layout_and_wrong_format(tmp_path: Path) -> None:
    torch.save({"weights": {"a": torch.zeros(2)}}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="cannot recognise the layout of .*odd.pt"):
        load_encoder(tmp_path / "odd.pt")
    _, _, state = _torchvision_state(4, "cifar", 10, 33)
    torch.save(state, tmp_path / "tv.pth")
    with pytest.raises(CheckpointError, match="not a solo-learn"):
        load_encoder(tmp_path / "tv.pth", format="solo-learn")
    with pytest.raises(CheckpointError, match="not an encshield checkpoint"):
        load_encoder(tmp_path / "tv.pth", format="encshield")
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_encoder(tmp_path / "missing.ckpt")


def test_infer_architecture() -> None:
    for arch, width, stem, kernel in (("resnet18", 4, "cifar", 3), ("resnet34", 4, "imagenet", 7),
                                      ("resnet50", 4, "zepad_imagenet", 7)):
        info = infer_architecture(build_backbone(arch, width, stem).state_dict())
        assert info == {"arch": arch, "width": width, "kernel_size": kernel, "in_channels": 3}
    with pytest.raises(CheckpointError, match="conv1.weight"):
        infer_architecture({"a": torch.zeros(1)})
    assert FORMATS.canonical("lightning") == "solo-learn"


# ----------------------------------------------------------------- inspect / convert


def test_inspect_checkpoint(tmp_path: Path) -> None:
    backbone = randomize(build_backbone("resnet18", 8, "cifar"), 40)
    path = tmp_path / "simclr.ckpt"
    torch.save(solo_learn_checkpoint(backbone, nn.Linear(64, 10), {"method": "simclr"}), path)
    info = inspect_checkpoint(path)
    json.dumps(info)  # JSON-serialisable
    assert info["architecture"] == "resnet18" and info["width"] == 8 and info["stem"] == "cifar"
    assert info["feature_dim"] == 64 and info["format"] == "solo-learn"
    assert info["num_parameters"] == sum(p.numel() for p in backbone.parameters())
    assert info["sha256"] == sha256_file(path)
    assert info["normalization"]["name"] == "cifar10" and info["input_size"] == [3, 32, 32]
    assert info["ssl_method"] == "simclr" and info["pretrain_data"] is None
    assert info["has_surrogate_head"] and info["surrogate_head_classes"] == 10
    assert info["skipped_keys"] > 0 and "projector" in info["skipped_key_groups"]


def test_convert_then_load_gives_identical_features(tmp_path: Path) -> None:
    backbone = randomize(build_backbone("resnet18", 8, "cifar"), 41)
    classifier = randomize(nn.Linear(64, 10), 42)
    src = tmp_path / "simclr.ckpt"
    torch.save(solo_learn_checkpoint(backbone, classifier, {"method": "simclr"}), src)
    dst = tmp_path / "out" / "simclr.safetensors"
    digest = convert_checkpoint(src, dst, pretrain_data="cifar10", config_hash="cfg1")
    assert digest == sha256_file(dst)
    loaded = load_encoder(dst)
    x = images()
    assert torch.equal(encode(loaded.encoder, x), encode(load_encoder(src).encoder, x))
    assert torch.equal(encode(loaded.encoder, x), reference_features(backbone, CIFAR10, x))
    assert torch.equal(loaded.surrogate_head.weight, classifier.weight)
    prov = loaded.encoder.provenance
    assert (prov.ssl_method, prov.pretrain_data, prov.config_hash) == ("simclr", "cifar10", "cfg1")
    assert prov.source_format == "encshield" and prov.sha256 == digest
    assert prov.extra["origin"] == {"source_file": str(src), "source_format": "solo-learn",
                                   "sha256": sha256_file(src)}
    # converting is deterministic: same input -> byte-identical file
    assert convert_checkpoint(src, tmp_path / "again.safetensors", pretrain_data="cifar10",
                              config_hash="cfg1") == digest
    no_head = convert_checkpoint(src, tmp_path / "nohead.safetensors",
                                 include_surrogate_head=False)
    reloaded = load_encoder(tmp_path / "nohead.safetensors", expected_sha256=no_head)
    assert reloaded.surrogate_head is None
