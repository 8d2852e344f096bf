"""ResNet-18/34/50 backbones with torchvision-compatible parameter names.

The module tree (and therefore every parameter and buffer name) is the one of torchvision's
``ResNet``: ``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1`` ... ``layer4`` (each a
``Sequential`` of ``BasicBlock`` / ``Bottleneck`` with ``conv1``, ``bn1``, ``conv2``, ``bn2``
[, ``conv3``, ``bn3``] and an optional ``downsample`` = ``Sequential(conv1x1, bn)``) and
``avgpool``. There is no ``fc``: a backbone maps images to pooled features ``(N, D)``. A
torchvision-style state dict without ``fc.*`` therefore loads with ``strict=True``.

Two knobs that torchvision does not have:

* ``width``: channels of the first stage (64 = standard). Stage ``i`` has ``width * 2**i``
  planes, so ``feature_dim = 8 * width * expansion`` (512 for ResNet-18, 2048 for ResNet-50 at
  width 64).
* ``stem``: a named preset from :data:`STEMS` giving ``conv1``'s kernel/stride/padding and whether
  the 3x3/2 max-pool is used (when it is not, ``maxpool`` is an ``nn.Identity``).

This file is an independent implementation; only the *names* follow torchvision.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
from torch import nn

from encshield.errors import ConfigError
from encshield.registry import Registry

__all__ = [
    "ARCHITECTURES",
    "MAX_WIDTH",
    "STEMS",
    "ArchitectureSpec",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "StemSpec",
    "build_backbone",
    "check_width",
]

#: Largest ``width`` accepted: 8x the standard 64 (SimCLR's widest ResNet-50 is 4x = 256). A
#: ResNet-50 at this width already holds 1.5 billion parameters (6 GB of float32).
MAX_WIDTH = 512


def check_width(width: object, name: str = "width") -> int:
    """``width`` as an int after checking it is an integer in ``1..MAX_WIDTH``.

    Args:
        width: the requested channels of the first stage.
        name: how the value is called in the message (``--width``, a metadata field...).

    Raises:
        ConfigError: not an integer (bools are refused too) or outside ``1..MAX_WIDTH``.
    """
    if (
        isinstance(width, bool)
        or not isinstance(width, numbers.Integral)
        or not 1 <= int(width) <= MAX_WIDTH
    ):
        raise ConfigError(
            f"{name} must be an integer in 1..{MAX_WIDTH} (channels of the first stage: 64 is "
            f"the standard ResNet, 16 the tiny tier), got {width!r}"
        )
    return int(width)


# --------------------------------------------------------------------------------------------
# Stems
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StemSpec:
    """How ``conv1`` (and the optional max-pool) of a ResNet are built."""

    kernel_size: int
    stride: int
    padding: int
    maxpool: bool
    description: str = ""

    def output_size(self, size: int) -> int:
        """Spatial size of the stem's output (after ``maxpool``) for an input of ``size`` pixels."""
        out = (size + 2 * self.padding - self.kernel_size) // self.stride + 1
        if self.maxpool:
            out = (out + 2 * 1 - 3) // 2 + 1
        return out


STEMS: Registry[StemSpec] = Registry("stem")
STEMS.add(
    "cifar",
    StemSpec(3, 1, 1, False, "3x3 stride 1 padding 1, no max-pool (CGCL family, BadEncoder)"),
)
STEMS.add(
    "cifar_sololearn",
    StemSpec(3, 1, 2, False, "3x3 stride 1 padding 2, no max-pool (solo-learn CIFAR, exact)"),
    aliases=("cifar-sololearn", "sololearn_cifar"),
)
STEMS.add(
    "imagenet",
    StemSpec(7, 2, 3, True, "7x7 stride 2 padding 3 + 3x3/2 max-pool (torchvision)"),
)
STEMS.add(
    "zepad_imagenet",
    StemSpec(7, 1, 1, False, "7x7 stride 1 padding 1, no max-pool (ZePAD ImageNet encoders)"),
    aliases=("zepad-imagenet",),
)


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34).

    Input ``(N, in_planes, H, W)`` -> output ``(N, planes, H / stride, W / stride)``.
    """

    expansion: int = 1

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        result: torch.Tensor = self.relu(out + identity)
        return result


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, "ResNet v1.5") -> 1x1 convolutions with a residual (ResNet-50).

    Input ``(N, in_planes, H, W)`` -> output ``(N, 4 * planes, H / stride, W / stride)``.
    """

    expansion: int = 4

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        result: torch.Tensor = self.relu(out + identity)
        return result


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchitectureSpec:
    """Block type and number of blocks per stage of a ResNet."""

    block: type[BasicBlock] | type[Bottleneck]
    layers: tuple[int, int, int, int]

    def feature_dim(self, width: int) -> int:
        """Dimension of the pooled features at the given width."""
        return 8 * width * self.block.expansion


ARCHITECTURES: Registry[ArchitectureSpec] = Registry("architecture")
ARCHITECTURES.add("resnet18", ArchitectureSpec(BasicBlock, (2, 2, 2, 2)), aliases=("resnet-18",))
ARCHITECTURES.add("resnet34", ArchitectureSpec(BasicBlock, (3, 4, 6, 3)), aliases=("resnet-34",))
ARCHITECTURES.add("resnet50", ArchitectureSpec(Bottleneck, (3, 4, 6, 3)), aliases=("resnet-50",))


def _arch_name(block: type[nn.Module], layers: tuple[int, ...]) -> str:
    """The registered architecture name for ``(block, layers)``, or ``"custom"``."""
    for name, spec in ARCHITECTURES.items():
        if spec.block is block and spec.layers == tuple(layers):
            return name
    return "custom"


class ResNet(nn.Module):
    """A ResNet trunk without ``fc``: images ``(N, 3, H, W)`` -> pooled features ``(N, D)``.

    The input is expected to be *normalised* already (use :class:`encshield.models.Encoder` for
    the [0, 1] pixel contract). ``feature_dim`` = D.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        width: planes of the first stage (64 = standard).
        stem: name of a preset in :data:`STEMS`.
        in_channels: input channels (3 for RGB).
        zero_init_residual: zero-initialise the last BN of each block (each block then starts as
            the identity), as torchvision's ``zero_init_residual``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int] | list[int],
        *,
        width: int = 64,
        stem: str = "cifar",
        in_channels: int = 3,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ConfigError(f"layers must be four positive block counts, got {list(layers)}")
        self.stem_name = STEMS.canonical(stem)
        spec = STEMS.get(stem)
        self.width = check_width(width)
        self.block = block
        self.layers_spec = tuple(int(n) for n in layers)
        self.in_channels = in_channels

        self._in_planes = self.width
        self.conv1 = nn.Conv2d(
            in_channels,
            self.width,
            kernel_size=spec.kernel_size,
            stride=spec.stride,
            padding=spec.padding,
            bias=False,
        )
        self.bn1 = nn.BatchNorm2d(self.width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if spec.maxpool else nn.Identity()
        )
        self.layer1 = self._make_layer(block, self.width, self.layers_spec[0], stride=1)
        self.layer2 = self._make_layer(block, self.width * 2, self.layers_spec[1], stride=2)
        self.layer3 = self._make_layer(block, self.width * 4, self.layers_spec[2], stride=2)
        self.layer4 = self._make_layer(block, self.width * 8, self.layers_spec[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim: int = self.width * 8 * block.expansion
        self.arch: str = _arch_name(block, self.layers_spec)
        del self._in_planes
        self.reset_parameters(zero_init_residual=zero_init_residual)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
    ) -> nn.Sequential:
        downsample: nn.Module | None = None
        out_planes = planes * block.expansion
        if stride != 1 or self._in_planes != out_planes:
            downsample = nn.Sequential(
                _conv1x1(self._in_planes, out_planes, stride), nn.BatchNorm2d(out_planes)
            )
        modules: list[nn.Module] = [block(self._in_planes, planes, stride, downsample)]
        self._in_planes = out_planes
        for _ in range(1, blocks):
            modules.append(block(self._in_planes, planes))
        return nn.Sequential(*modules)

    def reset_parameters(self, *, zero_init_residual: bool = False) -> None:
        """Standard init: Kaiming-normal (fan_out, ReLU) convs, BN weight 1 / bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
                module.reset_running_stats()
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(module.last_bn().weight)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        stem: torch.Tensor = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return stem

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images ``(N, C, H, W)`` -> features ``(N, feature_dim)``."""
        x = self.forward_stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def build_backbone(
    arch: str = "resnet18",
    width: int = 64,
    stem: str = "cifar",
    *,
    in_channels: int = 3,
    zero_init_residual: bool = False,
) -> ResNet:
    """Build a randomly initialised ResNet trunk (no ``fc``) returning features ``(N, D)``.

    Args:
        arch: a name in :data:`ARCHITECTURES` (``resnet18``, ``resnet34``, ``resnet50``).
        width: channels of the first stage; 64 is the standard network, 16 the "tiny" tier,
            8 or 4 the "smoke" tier.
        stem: a name in :data:`STEMS` (``cifar``, ``cifar_sololearn``, ``imagenet``,
            ``zepad_imagenet``).
        in_channels: input channels.
        zero_init_residual: zero-init the last BN of every residual block.

    Returns:
        a :class:`ResNet` whose ``feature_dim`` is ``8 * width * expansion``.
    """
    spec = ARCHITECTURES.get(arch)
    return ResNet(
        spec.block,
        spec.layers,
        width=width,
        stem=stem,
        in_channels=in_channels,
        zero_init_residual=zero_init_residual,
    )
