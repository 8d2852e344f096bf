"""Models: torchvision-named ResNets, stems, normalisation, the Encoder contract, heads."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from encshield.errors import ConfigError, ImageRangeError
from encshield.models import (
    ARCHITECTURES,
    HEADS,
    MAX_WIDTH,
    NORMALIZATIONS,
    STEMS,
    Classifier,
    Encoder,
    MLPClassifier,
    Normalization,
    ProjectionMLP,
    Provenance,
    build_backbone,
    build_encoder,
    build_head,
    check_width,
)

# torchvision's resnet18 parameter names (named_parameters order), without fc.*
RESNET18_PARAMETERS = """
conv1.weight bn1.weight bn1.bias
layer1.0.conv1.weight layer1.0.bn1.weight layer1.0.bn1.bias
layer1.0.conv2.weight layer1.0.bn2.weight layer1.0.bn2.bias
layer1.1.conv1.weight layer1.1.bn1.weight layer1.1.bn1.bias
layer1.1.conv2.weight layer1.1.bn2.weight layer1.1.bn2.bias
layer2.0.conv1.weight layer2.0.bn1.weight layer2.0.bn1.bias
layer2.0.conv2.weight layer2.0.bn2.weight layer2.0.bn2.bias
layer2.0.downsample.0.weight layer2.0.downsample.1.weight layer2.0.downsample.1.bias
layer2.1.conv1.weight layer2.1.bn1.weight layer2.1.bn1.bias
layer2.1.conv2.weight layer2.1.bn2.weight layer2.1.bn2.bias
layer3.0.conv1.weight layer3.0.bn1.weight layer3.0.bn1.bias
layer3.0.conv2.weight layer3.0.bn2.weight layer3.0.bn2.bias
layer3.0.downsample.0.weight layer3.0.downsample.1.weight layer3.0.downsample.1.bias
layer3.1.conv1.weight layer3.1.bn1.weight layer3.1.bn1.bias
layer3.1.conv2.weight layer3.1.bn2.weight layer3.1.bn2.bias
layer4.0.conv1.weight layer4.0.bn1.weight layer4.0.bn1.bias
layer4.0.conv2.weight layer4.0.bn2.weight layer4.0.bn2.bias
layer4.0.downsample.0.weight layer4.0.downsample.1.weight layer4.0.downsample.1.bias
layer4.1.conv1.weight layer4.1.bn1.weight layer4.1.bn1.bias
layer4.1.conv2.weight layer4.1.bn2.weight layer4.1.bn2.bias
""".split()

# torchvision's BatchNorm modules of resnet18 (each has running_mean, running_var,
# num_batches_tracked buffers)
RESNET18_BATCHNORMS = """
bn1 layer1.0.bn1 layer1.0.bn2 layer1.1.bn1 layer1.1.bn2
layer2.0.bn1 layer2.0.bn2 layer2.0.downsample.1 layer2.1.bn1 layer2.1.bn2
layer3.0.bn1 layer3.0.bn2 layer3.0.downsample.1 layer3.1.bn1 layer3.1.bn2
layer4.0.bn1 layer4.0.bn2 layer4.0.downsample.1 layer4.1.bn1 layer4.1.bn2
""".split()


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------- backbones


def test_resnet18_parameter_names_match_torchvision() -> None:
    net = build_backbone("resnet18", width=8, stem="cifar")
    assert [name for name, _ in net.named_parameters()] == RESNET18_PARAMETERS
    buffers = {name for name, _ in net.named_buffers()}
    expected = {
        f"{bn}.{b}" for bn in RESNET18_BATCHNORMS
        for b in ("running_mean", "running_var", "num_batches_tracked")
    }
    assert buffers == expected
    assert not any(name.startswith("fc") for name in net.state_dict())


def test_resnet50_layout_matches_torchvision() -> None:
    net = build_backbone("resnet50", width=4, stem="imagenet")
    names = [name for name, _ in net.named_parameters()]
    assert names[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert "layer1.0.conv3.weight" in names
    assert "layer1.0.downsample.0.weight" in names  # channel change in stage 1 (4x expansion)
    assert "layer3.5.bn3.bias" in names and "layer3.6.conv1.weight" not in names
    # torchvision's v1.5 bottleneck: the stride sits on the 3x3 conv2
    assert net.layer2[0].conv2.stride == (2, 2) and net.layer2[0].conv1.stride == (1, 1)
    assert tuple(net.layer1[0].conv3.weight.shape) == (16, 4, 1, 1)


@pytest.mark.parametrize(
    ("arch", "width", "feature_dim"),
    [("resnet18", 8, 64), ("resnet18", 16, 128), ("resnet34", 4, 32), ("resnet50", 4, 128)],
)
def test_backbone_output_shape(arch: str, width: int, feature_dim: int) -> None:
    net = build_backbone(arch, width=width, stem="cifar").eval()
    assert net.feature_dim == feature_dim == ARCHITECTURES.get(arch).feature_dim(width)
    with torch.no_grad():
        out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, feature_dim)


def test_parameter_counts_match_torchvision_totals() -> None:
    # ResNet-18 with the CIFAR stem and no fc: torchvision's 11,689,512 - fc 513,000
    # - 7x7 conv1 9,408 + 3x3 conv1 1,728
    assert _count(build_backbone("resnet18", 64, "cifar")) == 11_168_832
    # torchvision resnet18 / resnet50 totals minus their fc layers
    assert _count(build_backbone("resnet18", 64, "imagenet")) == 11_689_512 - 513_000
    assert _count(build_backbone("resnet50", 64, "imagenet")) == 25_557_032 - 2_049_000


@pytest.mark.parametrize(
    ("stem", "size", "after_stem", "conv1_spec"),
    [
        ("cifar", 32, 32, (3, 1, 1)),
        ("cifar_sololearn", 32, 34, (3, 1, 2)),
        ("imagenet", 64, 16, (7, 2, 3)),
        ("zepad_imagenet", 64, 60, (7, 1, 1)),
    ],
)
def test_stems_spatial_sizes(stem: str, size: int, after_stem: int, conv1_spec: tuple) -> None:
    enc = build_encoder("resnet18", 4, stem, "identity", size).eval()
    conv1 = enc.backbone.conv1
    assert (conv1.kernel_size[0], conv1.stride[0], conv1.padding[0]) == conv1_spec
    assert isinstance(enc.backbone.maxpool, nn.MaxPool2d) == (stem == "imagenet")
    assert STEMS.get(stem).output_size(size) == after_stem
    with torch.no_grad():
        acts = enc.features(torch.rand(1, 3, size, size), ["maxpool", "layer4", "output"])
    assert acts["maxpool"].shape[-1] == after_stem
    expected_l4 = (after_stem + 7) // 8  # three stride-2 stages (ceil)
    assert acts["layer4"].shape == (1, 32, expected_l4, expected_l4)
    assert acts["output"].shape == (1, 32)


def test_init_and_zero_init_residual() -> None:
    net = build_backbone("resnet18", 8, "cifar")
    assert torch.all(net.bn1.weight == 1) and torch.all(net.bn1.bias == 0)
    assert net.layer1[0].bn2.weight.abs().sum() > 0
    zeroed = build_backbone("resnet18", 8, "cifar", zero_init_residual=True)
    assert torch.all(zeroed.layer1[0].bn2.weight == 0)
    assert torch.all(zeroed.layer1[0].bn1.weight == 1)
    z50 = build_backbone("resnet50", 4, "cifar", zero_init_residual=True)
    assert torch.all(z50.layer2[1].bn3.weight == 0)


def test_unknown_names_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="allowed values"):
        build_backbone("resnet101")
    with pytest.raises(ConfigError, match="cifar"):
        build_backbone("resnet18", 8, "weird")
    with pytest.raises(ConfigError):
        build_encoder("resnet18", 8, "cifar", "no-such-normalisation")


@pytest.mark.parametrize("width", [0, -1, MAX_WIDTH + 1, 10**9, True, 2.5, "16", None])
def test_width_is_bounded_before_allocating(width: object) -> None:
    """An absurd width used to try to allocate it (a traceback from the allocator for 10**9);
    now a one-line ConfigError names the allowed range before any tensor exists."""
    with pytest.raises(ConfigError, match=rf"width must be an integer in 1\.\.{MAX_WIDTH}") as info:
        build_backbone("resnet18", width)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"--width must be"):
        check_width(width, "--width")


def test_width_accepts_integer_types() -> None:
    import numpy as np

    assert check_width(np.int64(16)) == 16 and type(check_width(np.int64(16))) is int
    assert check_width(MAX_WIDTH) == MAX_WIDTH
    assert build_backbone("resnet18", np.int64(2)).width == 2  # type: ignore[arg-type]


# --------------------------------------------------------------------------- normalisation


def test_normalization_presets() -> None:
    assert set(NORMALIZATIONS.names()) >= {
        "cifar10", "badencoder_cifar10", "imagenet", "stl10", "identity"
    }
    cifar = Normalization.from_preset("cifar10")
    assert cifar.mean_values == pytest.approx([0.4914, 0.4822, 0.4465])
    assert cifar.std_values == pytest.approx([0.2470, 0.2435, 0.2616])
    bad = Normalization.from_preset("badencoder_cifar10")
    assert bad.std_values == pytest.approx([0.2023, 0.1994, 0.2010])
    stl = Normalization.from_preset("stl10")
    assert stl.mean_values == pytest.approx([0.44087798, 0.42790666, 0.38678814])
    assert Normalization.from_preset("imagenet").std_values == pytest.approx([0.229, 0.224, 0.225])
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(Normalization.from_preset("identity")(x), x)
    with pytest.raises(ConfigError):
        Normalization((0.5,), (0.0,))


# --------------------------------------------------------------------------------- encoder


@pytest.fixture
def encoder() -> Encoder:
    torch.manual_seed(0)
    return build_encoder("resnet18", 8, "cifar", "cifar10", 32, ssl_method="simclr").eval()


def test_encoder_normalises_inside(encoder: Encoder) -> None:
    x = torch.rand(3, 3, 32, 32)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = encoder(x)
        manual = encoder.backbone((x - mean) / std)
    assert ours.shape == (3, encoder.feature_dim) == (3, 64)
    torch.testing.assert_close(ours, manual, rtol=0, atol=1e-6)
    assert encoder.input_size == (3, 32, 32)
    # normalisation buffers are not part of the weights
    assert all(k.startswith("backbone.") for k in encoder.state_dict())


def test_encoder_range_check(encoder: Encoder) -> None:
    x = torch.rand(2, 3, 32, 32) * 255
    with pytest.raises(ImageRangeError, match="encoder input"):
        encoder(x)
    with pytest.raises(ImageRangeError):
        encoder(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8))
    with pytest.raises(ImageRangeError, match="channels"):
        encoder(torch.rand(2, 1, 32, 32))
    encoder.check_inputs = False  # hot loops may switch the check off
    with torch.no_grad():
        assert encoder(x).shape == (2, 64)


def _hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_features_shapes_and_no_hooks_left(encoder: Encoder) -> None:
    x = torch.rand(2, 3, 32, 32)
    names = ["conv1", "bn1", "relu", "layer1", "layer2.1", "layer3", "layer4.1.conv2", "avgpool",
             "output"]
    assert set(names) <= set(encoder.layer_names())
    with torch.no_grad():
        acts = encoder.features(x, names)
        plain = encoder(x)
    assert list(acts) == names
    assert acts["conv1"].shape == (2, 8, 32, 32)
    assert acts["layer1"].shape == (2, 8, 32, 32)
    assert acts["layer2.1"].shape == (2, 16, 16, 16)
    assert acts["layer3"].shape == (2, 32, 8, 8)
    assert acts["layer4.1.conv2"].shape == (2, 64, 4, 4)
    assert acts["avgpool"].shape == (2, 64, 1, 1)
    torch.testing.assert_close(acts["output"], plain, rtol=0, atol=0)
    # the in-place ReLU after bn1 must not alter the captured BN output
    assert (acts["bn1"] < 0).any() and not (acts["relu"] < 0).any()
    torch.testing.assert_close(acts["relu"], acts["bn1"].clamp_min(0))
    assert _hook_count(encoder) == 0
    with pytest.raises(ConfigError, match="unknown encoder layer"):
        encoder.features(x, ["layer9"])
    assert _hook_count(encoder) == 0


def test_features_hooks_removed_on_error(encoder: Encoder) -> None:
    encoder.check_inputs = False
    with pytest.raises(RuntimeError):
        encoder.features(torch.rand(2, 5, 32, 32), ["layer1", "layer2"])  # conv1 fails
    assert _hook_count(encoder) == 0
    encoder.check_inputs = True
    with pytest.raises(ImageRangeError):
        encoder.features(torch.rand(2, 3, 32, 32) + 3, ["layer1"])
    assert _hook_count(encoder) == 0


def test_features_gradients_flow(encoder: Encoder) -> None:
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    acts = encoder.features(x, ["bn1", "layer2"])
    loss = acts["layer2"].pow(2).mean() + acts["bn1"].mean()
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())


def test_provenance_json_roundtrip(encoder: Encoder) -> None:
    prov = encoder.provenance
    assert (prov.arch, prov.width, prov.stem, prov.ssl_method) == ("resnet18", 8, "cifar", "simclr")
    prov.extra["note"] = {"a": 1}
    data = json.loads(json.dumps(prov.to_dict()))
    assert Provenance.from_dict(data) == prov
    prov.extra["bad"] = object()
    with pytest.raises(ConfigError, match="JSON"):
        prov.to_dict()
    with pytest.raises(ConfigError, match="provenance"):
        build_encoder("resnet18", 4, unknown_field=1)


# ----------------------------------------------------------------------------------- heads


def test_heads_registry_and_shapes() -> None:
    assert set(HEADS.names()) >= {"linear", "mlp", "badencoder_mlp", "projector", "predictor"}
    feats = torch.randn(5, 64)
    for name in ("linear", "mlp", "badencoder_mlp"):
        head = build_head(name, 64, 10).eval()
        assert head(feats).shape == (5, 10)
    assert build_head("projector", 64, 16, hidden_dim=32)(feats).shape == (5, 16)
    assert build_head("predictor", 64, 64, hidden_dim=32)(feats).shape == (5, 64)
    with pytest.raises(ConfigError):
        build_head("nope", 64, 10)
    with pytest.raises(ConfigError, match="bad arguments"):
        build_head("linear", 64, 10, hidden_dim=3)


def test_mlp_layer_structure() -> None:
    head = build_head("mlp", 512, 10)
    assert isinstance(head, MLPClassifier)
    assert [(n, m.in_features, m.out_features) for n, m in head.named_children()
            if isinstance(m, nn.Linear)] == [("fc1", 512, 512), ("fc2", 512, 512), ("fc3", 512, 10)]
    assert head.dropout.p == pytest.approx(0.2)
    assert set(head.state_dict()) == {f"fc{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    # dropout sits between fc1-ReLU and fc2: in eval mode it is the identity
    head.eval()
    x = torch.randn(3, 512)
    manual = head.fc3(torch.relu(head.fc2(torch.relu(head.fc1(x)))))
    torch.testing.assert_close(head(x), manual)
    custom = build_head("mlp", 64, 7, hidden_dim=128, dropout=0.1)
    assert (custom.fc1.out_features, custom.fc2.out_features, custom.dropout.p) == (128, 128, 0.1)

    bad = build_head("badencoder_mlp", 512, 10)
    assert (bad.fc1.out_features, bad.fc2.out_features, bad.fc3.in_features) == (512, 256, 256)
    assert bad.dropout.p == pytest.approx(0.5)


def test_projection_mlp_structure() -> None:
    proj = ProjectionMLP(64, 32, 16)
    assert [type(m) for m in proj] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert {"0.weight", "0.bias", "1.running_mean", "3.weight", "3.bias"} <= set(proj.state_dict())
    # BadEncoder's g: Linear(no bias)-BN-ReLU-Linear
    g = ProjectionMLP(512, 512, 128, bias=False)
    assert g[0].bias is None and g[3].bias is not None
    deep = ProjectionMLP(64, 32, 16, num_layers=3, last_batch_norm=True)
    assert [type(m) for m in deep] == [
        nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear,
        nn.BatchNorm1d,
    ]
    nobn = ProjectionMLP(64, 32, 16, batch_norm=False)
    assert [type(m) for m in nobn] == [nn.Linear, nn.ReLU, nn.Linear]
    assert deep(torch.randn(4, 64)).shape == (4, 16)


def test_classifier(encoder: Encoder) -> None:
    clf = Classifier(encoder, build_head("linear", encoder.feature_dim, 10)).eval()
    x = torch.rand(4, 3, 32, 32)
    logits = clf(x)
    assert logits.shape == (4, 10) and clf.num_classes == 10
    assert clf.encoder is encoder
    torch.testing.assert_close(logits, clf.head(encoder(x)))
    assert Classifier(encoder, build_head("mlp", 64, 3)).num_classes == 3
    with pytest.raises(ImageRangeError):
        clf(x * 255)


def test_channels_last_is_skipped_where_the_cpu_kernels_corrupt_memory() -> None:
    """A strided 1x1 convolution with < 8 input channels (the shortcut of a width-4 ResNet)
    crashes torch 2.13's CPU backward in channels-last memory on one thread: such a model stays
    contiguous, with a warning; wider models are converted."""
    from encshield.models.modules import channels_last_safe, set_channels_last

    narrow, wide = (build_encoder("resnet18", width=w, input_size=32) for w in (4, 8))
    assert not channels_last_safe(narrow) and channels_last_safe(wide)
    with pytest.warns(RuntimeWarning, match="channels_last skipped"):
        set_channels_last(narrow)
    set_channels_last(wide)
    weights = [m.weight for m in narrow.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous() for w in weights)
    conv = next(m for m in wide.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 3)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
