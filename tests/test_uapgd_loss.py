"""UAPGD's per-image step uses the cross-entropy of L2-normalised logits (METHODS.md 6.3).

Reference values are computed by hand (closed-form gradient of CE(z / ||z||) for a linear
classifier), not with autograd.
"""

from __future__ import annotations

import math

import torch

from encshield.attacks.universal.uapgd import UAPGD, normalized_cross_entropy

#: A linear "classifier" on 3 pixels (z = x @ A) where normalising the logits flips the sign of
#: the first pixel's gradient: raw CE gradient (+0.429, +0.306, -0.797), normalised
#: (-0.0146, +0.365, -0.257).
A = [[-2.0, -3.0, 0.5], [3.0, 2.0, 1.5], [0.5, 2.5, -2.5]]
X = [0.2, 0.5, 0.7]
LABEL = 1  # the clean prediction: z = (1.45, 2.15, -0.9)


def _hand_gradient(normalise: bool) -> list[float]:
    z = [sum(X[i] * A[i][j] for i in range(3)) for j in range(3)]
    norm = math.sqrt(sum(v * v for v in z))
    u = [v / norm for v in z] if normalise else z
    exp = [math.exp(v) for v in u]
    g_u = [e / sum(exp) - (1.0 if j == LABEL else 0.0) for j, e in enumerate(exp)]
    if normalise:  # d(z/||z||)/dz = (I - u u^T) / ||z||
        dot = sum(a * b for a, b in zip(u, g_u))
        g_z = [(g_u[j] - u[j] * dot) / norm for j in range(3)]
    else:
        g_z = g_u
    return [sum(A[i][j] * g_z[j] for j in range(3)) for i in range(3)]


def test_normalized_cross_entropy_reference_value() -> None:
    z = [sum(X[i] * A[i][j] for i in range(3)) for j in range(3)]
    norm = math.sqrt(sum(v * v for v in z))
    u = [v / norm for v in z]
    expected = -u[LABEL] + math.log(sum(math.exp(v) for v in u))  # = 0.74389...
    got = normalized_cross_entropy(torch.tensor([z]), torch.tensor([LABEL]))
    assert abs(float(got) - expected) < 1e-6
    assert abs(expected - 0.74389) < 1e-5  # raw logits: CE = 0.4343


def test_uapgd_step_follows_the_normalised_logit_gradient() -> None:
    raw, normalised = _hand_gradient(False), _hand_gradient(True)
    assert raw[0] > 0 > normalised[0]  # the two losses disagree on the first pixel
    weights = torch.tensor(A)

    def logits(images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ weights

    attack = UAPGD(steps=1)
    x = torch.tensor(X).view(1, 1, 1, 3)
    delta = torch.zeros(1, 1, 3)
    new = attack._update(logits, x, torch.tensor([LABEL]), delta, None, index=0)  # type: ignore[arg-type]
    # v = 0.5 * 0 + 1e-5 * (x + 0) + grad; delta0 = 0.002 * sign(v) (alpha for the first images)
    expected = [0.002 * math.copysign(1.0, g + 1e-5 * xi) for g, xi in zip(normalised, X)]
    assert torch.allclose(new.flatten(), torch.tensor(expected), atol=1e-9)
    assert float(new.flatten()[0]) < 0  # the raw-logit CE would step the other way
