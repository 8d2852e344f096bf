"""Batched SSL view augmentation on the device.

Every transform draws its parameters per sample and is applied to the whole batch with tensor
ops (one ``grid_sample`` for all crops, masks for flips, broadcasting for colour jitter), so
that augmentation costs a small fraction of the encoder's forward/backward. Images are float32
NCHW in [0, 1]; data stays uint8 until it is on the device (:func:`to_float`).

The standard views follow SimCLR (Chen et al., ICML 2020) and BYOL (Grill et al., NeurIPS 2020)
as configured by solo-learn for 32 px and 64 px images: random resized crop (scale 0.08-1),
horizontal flip, colour jitter (0.4, 0.4, 0.2, 0.1) with p = 0.8, grey-scale with p = 0.2,
Gaussian blur (64 px only) and solarisation (BYOL's second view).

Differences from torchvision's per-image pipeline, on purpose: colour-jitter operations are
applied in one random order per batch (torchvision: per image), and an infeasible crop after
10 tries falls back to the whole image (torchvision: a central crop of clamped ratio).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

# ITU-R 601 luma weights, as in torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


class ColorAugmentConfig(BaseModel):
    """Horizontal flip, colour jitter and grayscale (probabilities in [0, 1]); :meth:`apply`
    runs them in that order. The SSL views extend it (:class:`ViewConfig`), BadEncoder's
    reference augmentation is it."""

    model_config = ConfigDict(extra="forbid")

    flip_prob: float = Field(0.5, ge=0, le=1)
    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0)
    saturation: float = Field(0.4, ge=0)
    hue: float = Field(0.1, ge=0, le=0.5)
    jitter_prob: float = Field(0.8, ge=0, le=1)
    grayscale_prob: float = Field(0.2, ge=0, le=1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Flip, jitter, grayscale a float batch ``(N, 3, H, W)`` in [0, 1] (one draw per
        image)."""
        x = random_flip(x, self.flip_prob)
        x = color_jitter(x, self.brightness, self.contrast, self.saturation, self.hue,
                         self.jitter_prob)
        return random_grayscale(x, self.grayscale_prob)


class ViewConfig(ColorAugmentConfig):
    """Parameters of one augmented view (probabilities in [0, 1])."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    saturation: float = Field(0.2, ge=0)
    blur_prob: float = Field(0.0, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = Field(0.0, ge=0, le=1)


class AugmentConfig(BaseModel):
    """The views of an SSL method: one :class:`ViewConfig` per view, output size in pixels."""

    model_config = ConfigDict(extra="forbid")

    size: int = Field(32, gt=0)
    views: list[ViewConfig] = Field(default_factory=lambda: [ViewConfig(), ViewConfig()])


def preset(name: str, size: int = 32) -> AugmentConfig:
    """Named view recipes: ``simclr`` (two identical views), ``byol`` (asymmetric views) and
    ``ressl`` (a strong view, then a weak one).

    At 64 px and above the views get Gaussian blur (p = 1.0 / 0.1 for BYOL, 0.5 for SimCLR), as
    in the ImageNet recipes; at 32 px blur is off, as in solo-learn's CIFAR recipes.

    ``ressl`` (Zheng et al., "ReSSL: Relational Self-Supervised Learning with Weak
    Augmentation", NeurIPS 2021): view 0 is the student's strong view (the SimCLR view); view 1
    is the teacher's weak view, only a random resized crop of scale 0.2-1 and a horizontal flip.
    """
    big = size >= 64
    if name == "simclr":
        view = ViewConfig(blur_prob=0.5 if big else 0.0)
        return AugmentConfig(size=size, views=[view, view.model_copy()])
    if name == "byol":
        return AugmentConfig(
            size=size,
            views=[
                ViewConfig(blur_prob=1.0 if big else 0.0, solarize_prob=0.0),
                ViewConfig(blur_prob=0.1 if big else 0.0, solarize_prob=0.2),
            ],
        )
    if name == "ressl":
        weak = ViewConfig(
            crop_scale=(0.2, 1.0), jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
            solarize_prob=0.0,
        )
        return AugmentConfig(size=size, views=[ViewConfig(blur_prob=0.5 if big else 0.0), weak])
    from encshield.errors import ConfigError

    raise ConfigError(
        f"augment.preset: unknown preset {name!r}; allowed values: byol, ressl, simclr"
    )


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` in 0..255 -> float32 in [0, 1] (identity for float input)."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    tries: int = 10,
) -> torch.Tensor:
    """Crop a random area/aspect region per sample and resize it to ``size`` (bilinear).

    Args:
        x: ``(N, C, H, W)`` float in [0, 1].
    Returns:
        ``(N, C, size, size)`` float in [0, 1].
    """
    n, _, height, width = x.shape
    device = x.device
    area = torch.empty(n, tries, device=device).uniform_(*scale)
    log_ratio = torch.empty(n, tries, device=device).uniform_(
        math.log(ratio[0]), math.log(ratio[1])
    )
    aspect = log_ratio.exp()
    # Crop sides as fractions of the image sides (area fraction = w * h for square images).
    w = (area * aspect * height / width).sqrt()
    h = (area / aspect * width / height).sqrt()
    valid = (w <= 1) & (h <= 1)
    first = valid.float().argmax(dim=1)
    ok = valid.any(dim=1)
    rows = torch.arange(n, device=device)
    w = torch.where(ok, w[rows, first], torch.ones(n, device=device))
    h = torch.where(ok, h[rows, first], torch.ones(n, device=device))
    cx = (torch.rand(n, device=device) * (1 - w) + w / 2) * 2 - 1
    cy = (torch.rand(n, device=device) * (1 - h) + h / 2) * 2 - 1
    theta = torch.zeros(n, 2, 3, device=device, dtype=x.dtype)
    theta[:, 0, 0] = w
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_flip(x: torch.Tensor, prob: float) -> torch.Tensor:
    """Flip each sample horizontally with probability ``prob``."""
    if prob <= 0:
        return x
    mask = (torch.rand(x.shape[0], device=x.device) < prob).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(-1), x)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma of ``(N, 3, H, W)`` as ``(N, 1, H, W)``."""
    weights = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * a + (1 - factor) * b).clamp_(0, 1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB ``(N, 3, H, W)`` in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = x.unbind(1)
    maxc, argmax = x.max(dim=1)
    minc = x.min(dim=1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hr = ((g - b) / safe) % 6
    hg = (b - r) / safe + 2
    hb = (r - g) / safe + 4
    hue = torch.where(argmax == 0, hr, torch.where(argmax == 1, hg, hb)) / 6
    hue = torch.where(delta > 0, hue, torch.zeros_like(hue))
    sat = torch.where(
        maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), 0 * maxc
    )
    return torch.stack((hue % 1.0, sat, maxc), dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """HSV (hue in [0, 1)) -> RGB in [0, 1]."""
    h, s, v = x.unbind(1)
    k = torch.stack(((5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6), dim=1)
    t = torch.minimum(k, 4 - k).clamp(0, 1)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * t


def color_jitter(
    x: torch.Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    prob: float,
) -> torch.Tensor:
    """Random brightness/contrast/saturation/hue per sample, applied with probability ``prob``.

    Factors are drawn per sample as in torchvision (``U(1 - b, 1 + b)``, hue shift ``U(-h, h)``);
    the four operations run in one random order per batch.
    """
    n = x.shape[0]
    device = x.device
    apply = (torch.rand(n, device=device) < prob).view(-1, 1, 1, 1)
    if prob <= 0:
        return x
    out = x
    factors = {
        "brightness": _uniform(n, max(0.0, 1 - brightness), 1 + brightness, device),
        "contrast": _uniform(n, max(0.0, 1 - contrast), 1 + contrast, device),
        "saturation": _uniform(n, max(0.0, 1 - saturation), 1 + saturation, device),
        "hue": _uniform(n, -hue, hue, device),
    }
    order = torch.randperm(4).tolist()
    names = ("brightness", "contrast", "saturation", "hue")
    for index in order:
        name = names[index]
        f = factors[name].view(-1, 1, 1, 1)
        if name == "brightness" and brightness > 0:
            out = (out * f).clamp_(0, 1)
        elif name == "contrast" and contrast > 0:
            mean = grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
            out = _blend(out, mean, f)
        elif name == "saturation" and saturation > 0:
            out = _blend(out, grayscale(out), f)
        elif name == "hue" and hue > 0:
            hsv = rgb_to_hsv(out)
            hsv = torch.cat(((hsv[:, :1] + f) % 1.0, hsv[:, 1:]), dim=1)
            out = hsv_to_rgb(hsv)
    return torch.where(apply, out, x)


def random_grayscale(x: torch.Tensor, prob: float) -> torch.Tensor:
    """Replace each sample by its 3-channel grey version with probability ``prob``."""
    if prob <= 0:
        return x
    mask = (torch.rand(x.shape[0], device=x.device) < prob).view(-1, 1, 1, 1)
    return torch.where(mask, grayscale(x).expand_as(x), x)


def random_gaussian_blur(
    x: torch.Tensor, prob: float, sigma: tuple[float, float] = (0.1, 2.0)
) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma, applied with probability ``prob``.

    The kernel spans about 10% of the image side (odd, at least 3), as in SimCLR.
    """
    if prob <= 0:
        return x
    n, c, height, width = x.shape
    size = max(3, int(0.1 * height) // 2 * 2 + 1)
    radius = size // 2
    sig = _uniform(n, sigma[0], sigma[1], x.device).view(n, 1)
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype).view(1, -1)
    kernel = torch.exp(-(offsets**2) / (2 * sig**2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (N, size)
    kernel = kernel.repeat_interleave(c, dim=0)  # (N*C, size)
    flat = x.reshape(1, n * c, height, width)
    padded = F.pad(flat, (radius, radius, 0, 0), mode="reflect")
    flat = F.conv2d(padded, kernel.view(n * c, 1, 1, size), groups=n * c)
    padded = F.pad(flat, (0, 0, radius, radius), mode="reflect")
    flat = F.conv2d(padded, kernel.view(n * c, 1, size, 1), groups=n * c)
    blurred = flat.view(n, c, height, width)
    mask = (torch.rand(n, device=x.device) < prob).view(-1, 1, 1, 1)
    return torch.where(mask, blurred, x)


def random_solarize(x: torch.Tensor, prob: float, threshold: float = 0.5) -> torch.Tensor:
    """Invert pixels above ``threshold`` with probability ``prob`` per sample."""
    if prob <= 0:
        return x
    mask = (torch.rand(x.shape[0], device=x.device) < prob).view(-1, 1, 1, 1)
    return torch.where(mask & (x >= threshold), 1 - x, x)


def augment_view(x: torch.Tensor, config: ViewConfig, size: int) -> torch.Tensor:
    """One augmented view of a batch: ``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, size, size)``."""
    out = config.apply(random_resized_crop(x, size, config.crop_scale, config.crop_ratio))
    out = random_gaussian_blur(out, config.blur_prob, config.blur_sigma)
    out = random_solarize(out, config.solarize_prob)
    return out.clamp_(0, 1)


def make_views(images: torch.Tensor, config: AugmentConfig) -> list[torch.Tensor]:
    """All views of a batch; ``images`` uint8 or float ``(N, 3, H, W)`` already on the device.

    Randomness comes from the global torch RNG, which the trainer seeds per step so that a
    resumed run draws exactly the same views as an uninterrupted one.
    """
    x = to_float(images)
    with torch.no_grad():
        return [augment_view(x, view, config.size) for view in config.views]
