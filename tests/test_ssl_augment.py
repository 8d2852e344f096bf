"""Batched view augmentation: ranges, shapes, per-sample randomness, reference maths."""

from __future__ import annotations

import colorsys

import pytest
import torch

from encshield.ssl import augment as A


def _images(n: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=generator)


def test_hsv_matches_colorsys_reference() -> None:
    x = _images(2, 4)
    hsv = A.rgb_to_hsv(x)
    for n in range(2):
        for i in range(4):
            for j in range(4):
                r, g, b = (float(v) for v in x[n, :, i, j])
                expected = colorsys.rgb_to_hsv(r, g, b)
                torch.testing.assert_close(
                    hsv[n, :, i, j], torch.tensor(expected), atol=1e-5, rtol=0
                )
    torch.testing.assert_close(A.hsv_to_rgb(hsv), x, atol=1e-5, rtol=0)


def test_grayscale_uses_luma_weights() -> None:
    x = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert float(A.grayscale(x)) == pytest.approx(0.299)


@pytest.mark.parametrize("name", ["simclr", "byol"])
@pytest.mark.parametrize("size", [32, 64])
def test_views_shape_range_and_determinism(name: str, size: int) -> None:
    config = A.preset(name, size)
    images = (_images(8, 40) * 255).to(torch.uint8)
    torch.manual_seed(3)
    views = A.make_views(images, config)
    torch.manual_seed(3)
    again = A.make_views(images, config)
    assert len(views) == len(config.views) == 2
    for view, same in zip(views, again):
        assert view.shape == (8, 3, size, size) and view.dtype == torch.float32
        assert float(view.min()) >= 0.0 and float(view.max()) <= 1.0
        assert torch.equal(view, same)
    assert not torch.equal(views[0], views[1])


def test_crop_with_full_scale_and_no_jitter_is_identity_up_to_flip() -> None:
    x = _images(6, 16)
    view = A.ViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0,
                        jitter_prob=0.0, grayscale_prob=0.0)
    out = A.augment_view(x, view, 16)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    flipped = A.augment_view(x, view.model_copy(update={"flip_prob": 1.0}), 16)
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-5, rtol=0)


def test_parameters_are_drawn_per_sample() -> None:
    x = _images(1, 16).expand(64, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = A.augment_view(x, A.ViewConfig(), 16)
    distinct = {tuple(out[i].flatten()[:8].tolist()) for i in range(64)}
    assert len(distinct) > 32


def test_grayscale_probability_one_gives_equal_channels() -> None:
    out = A.random_grayscale(_images(4, 8), 1.0)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def test_solarize_inverts_bright_pixels() -> None:
    x = torch.tensor([0.2, 0.7]).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    out = A.random_solarize(x, 1.0)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.2, 0.3]))


def test_blur_preserves_constant_images_and_smooths_noise() -> None:
    constant = torch.full((2, 3, 32, 32), 0.4)
    torch.testing.assert_close(A.random_gaussian_blur(constant, 1.0), constant)
    noise = _images(2, 32)
    assert float(A.random_gaussian_blur(noise, 1.0, (1.5, 1.5)).std()) < float(noise.std())


def test_unknown_preset_names_allowed_values() -> None:
    from encshield.errors import ConfigError

    with pytest.raises(ConfigError, match="allowed values"):
        A.preset("nope")
