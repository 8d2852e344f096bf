"""``advencoder_patch``: Adv-PAT, the universal adversarial patch of AdvEncoder (Zhou, Li, Wang, Hu,
Zhang, Xu, Jin, "Downstream-agnostic Adversarial Examples", ICCV 2023), docs/methods.md, "Universal
attacks".

Same generator and loss as Adv-PER (:mod:`encshield.attacks.universal.advencoder`), but the
generator's map is pasted as a square patch instead of added: ``x' = x * (1 - m) + P * m`` with
``P = (tanh(G'(z)) + 1) / 2`` in [0, 1].

Placement (configurable): side ``floor(sqrt(noise_percentage * H * W))`` (``noise_percentage``
0.03: 11 px at 64 px, 5 px at 32 px) at ``(top, left) = (H - round(margin * H) - side,
W - round(margin * W) - side)`` with ``margin = 14/64`` (the official offset 64 - 14 - 11 = 39 at
64 px, the same relative bottom-right placement at other sizes: 20 at 32 px); or an explicit
``position``.

Deviations from the official code: the patch pixels live in [0, 1] (the official code clamps
them to the *normalised* pixel range although it pastes them before normalisation); the
generator produces one map independent of the batch size (see Adv-PER); budget defaults as for
Adv-PER. ``eps`` does not apply to a patch (recorded as ``None``).

Objective (lower = better for the attacker): minus the mean cosine distance
``1 - cos(E(x), E(x'))``.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from encshield.attacks.perturbation import Perturbation, paste_patch
from encshield.attacks.universal.advencoder import AdvEncoder, AdvEncoderConfig
from encshield.attacks.universal.base import UNIVERSAL_ATTACKS, FitContext
from encshield.errors import ConfigError

__all__ = ["AdvEncoderPatch", "patch_placement"]


def patch_placement(
    image_size: tuple[int, int],
    noise_percentage: float = 0.03,
    margin: float = 14 / 64,
    position: tuple[int, int] | None = None,
) -> tuple[int, tuple[int, int]]:
    """``(side, (top, left))`` of the Adv-PAT patch for images ``(H, W)``."""
    h, w = image_size
    side = int(math.floor(math.sqrt(noise_percentage * h * w)))
    side = max(1, min(side, h, w))
    if position is None:
        top = h - int(round(margin * h)) - side
        left = w - int(round(margin * w)) - side
        top, left = max(0, top), max(0, left)
    else:
        top, left = (int(v) for v in position)
    if top < 0 or left < 0 or top + side > h or left + side > w:
        raise ConfigError(
            f"a {side}x{side} patch at (top, left) = ({top}, {left}) does not fit in {h}x{w} "
            "images; change position or noise_percentage"
        )
    return side, (top, left)


@UNIVERSAL_ATTACKS.register("advencoder_patch", aliases=("adv_pat", "adv-pat", "advencoder_pat"))
class AdvEncoderPatch(AdvEncoder):
    """Adv-PAT: a generator-made universal patch that pushes features away from their clean
    versions."""

    kind = "patch"
    paper = (
        "Zhou, Li, Wang, Hu, Zhang, Xu, Jin. Downstream-agnostic Adversarial Examples. ICCV 2023 "
        "(Adv-PAT)"
    )

    class Config(AdvEncoderConfig):
        noise_percentage: float = Field(
            0.03, gt=0, le=1, description="patch area as a fraction of the image area"
        )
        margin: float = Field(
            14 / 64, ge=0, lt=1,
            description="gap between the patch and the bottom/right border, as a fraction of the "
            "image size (official: 14 px at 64 px)",
        )
        position: tuple[int, int] | None = Field(
            None, description="explicit (top, left) of the patch; None = the bottom-right rule"
        )

    # the patch's options replace the perturbation's ``output``: not a subtype of Adv-PER's Config
    config: Config  # type: ignore[assignment]

    def _setup(self, context: FitContext) -> None:
        _, h, w = context.image_shape
        cfg = self.config
        self._side, self._position = patch_placement((h, w), cfg.noise_percentage, cfg.margin,
                                                     cfg.position)

    def _patch(self, raw: torch.Tensor) -> torch.Tensor:
        top, left = self._position
        side = self._side
        return (torch.tanh(raw[0, :, top : top + side, left : left + side]) + 1) / 2

    def _perturbed(self, x: torch.Tensor, raw: torch.Tensor, context: FitContext) -> torch.Tensor:
        return paste_patch(x, self._patch(raw), self._position)

    def _result(self, raw: torch.Tensor, context: FitContext) -> Perturbation:
        _, h, w = context.image_shape
        patch = self._patch(raw).clamp(0, 1).detach().cpu()
        return Perturbation("patch", patch, eps=None, position=self._position,
                            metadata={"image_size": [h, w], "patch_side": self._side})
