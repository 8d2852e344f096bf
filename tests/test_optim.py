"""LARS against values computed by hand on tiny tensors (You et al., 2017; solo-learn's variant)."""

from __future__ import annotations

import math

import pytest
import torch

from encshield.optim import LARS, OptimizerConfig, build_optimizer


def _step(weight: list[list[float]], grad: list[list[float]], **options) -> torch.Tensor:
    w = torch.nn.Parameter(torch.tensor(weight, dtype=torch.float64))
    w.grad = torch.tensor(grad, dtype=torch.float64)
    LARS([w], **options).step()
    return w.detach()


def test_lars_trust_ratio_reference_values() -> None:
    # w = (3, 4), ||w|| = 5; g = (0.8, -0.6) orthogonal to w, ||g|| = 1; wd 0.1, eta 0.02:
    # r = 0.02 * 5 / (1 + 0.1 * 5) = 1/15; d = (g + 0.1 w) r = (1.1, -0.2) / 15; w -= 0.5 d.
    # (The ratio with ||g + wd w|| = sqrt(1.25) would be 0.0894 instead of 0.0667.)
    got = _step([[3.0, 4.0]], [[0.8, -0.6]], lr=0.5, weight_decay=0.1, eta=0.02, eps=0.0)
    expected = torch.tensor([[3.0 - 0.5 * 1.1 / 15, 4.0 + 0.5 * 0.2 / 15]], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    # the default eps = 1e-8 is in the denominator (solo-learn)
    got = _step([[3.0, 4.0]], [[0.8, -0.6]], lr=0.5, weight_decay=0.1, eta=0.02)
    r = 0.1 / (1.5 + 1e-8)
    torch.testing.assert_close(got, torch.tensor([[3.0 - 0.5 * 1.1 * r, 4.0 + 0.5 * 0.2 * r]],
                                                 dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("lr", "ratio"), [(0.5, (1 / 15) / 0.5), (0.01, 1.0)])
def test_lars_clip_lr(lr: float, ratio: float) -> None:
    # clip_lr: r = min(r / lr, 1): 2/15 at lr 0.5; clipped to 1 at lr 0.01 (1/15 / 0.01 = 6.7)
    got = _step([[3.0, 4.0]], [[0.8, -0.6]], lr=lr, weight_decay=0.1, eta=0.02, eps=0.0,
                clip_lr=True)
    expected = torch.tensor([[3.0 - lr * 1.1 * ratio, 4.0 + lr * 0.2 * ratio]],
                            dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_lars_excludes_biases_zero_norms_and_keeps_momentum() -> None:
    bias = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    zero = torch.nn.Parameter(torch.tensor([[0.0, 0.0]], dtype=torch.float64))
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    optimizer = LARS([bias, zero, w], lr=0.5, weight_decay=0.1, eta=0.02, eps=0.0, momentum=0.9)
    bias.grad = torch.tensor([0.5, 0.5], dtype=torch.float64)
    zero.grad = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    w.grad = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    optimizer.step()
    # 1-D: plain SGD, no decay; ||w|| = 0 or ||g|| = 0: the plain gradient (no decay either)
    torch.testing.assert_close(bias.detach(), torch.tensor([0.75, -2.25], dtype=torch.float64))
    torch.testing.assert_close(zero.detach(), torch.tensor([[-0.5, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(w.detach(), torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    bias.grad = torch.tensor([0.5, 0.5], dtype=torch.float64)
    optimizer.step()  # buf = 0.9 * 0.5 + 0.5 = 0.95
    assert math.isclose(float(bias.detach()[0]), 0.75 - 0.5 * 0.95, abs_tol=1e-12)


def test_build_optimizer_passes_clip_lr() -> None:
    w = torch.nn.Parameter(torch.ones(2, 2))
    optimizer = build_optimizer([w], OptimizerConfig(clip_lr=True), batch_size=256)
    assert isinstance(optimizer, LARS) and optimizer.param_groups[0]["clip_lr"] is True
    assert OptimizerConfig().clip_lr is False
