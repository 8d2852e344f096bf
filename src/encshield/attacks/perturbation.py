"""Universal perturbations: an additive delta within an L-inf budget, or a pasted patch.

A :class:`Perturbation` is what every universal (downstream-agnostic) attack of
:mod:`encshield.attacks.universal` returns. It applies itself to a batch of images in [0, 1],
saves and loads itself (safetensors + JSON metadata, written atomically) and renders itself as a
PNG.

* ``kind="additive"``: ``delta`` is float32 ``(3, H, W)`` with ``|delta| <= eps``;
  ``apply(x) = clamp(x + delta, 0, 1)``. ``apply(x, clamp=False)`` gives the unclamped ``x + delta``
  of the CGCL-family code (AdvEncoder, Gen-AF, ZePAD evaluate on ``x + delta`` without clipping,
  docs/methods.md, "Metrics" and "Universal attacks"); it is a named compatibility option, not the
  default.
* ``kind="patch"``: ``delta`` holds the patch pixels, float32 ``(3, h, w)`` in [0, 1], pasted with
  its top-left corner at ``position = (top, left)``: ``x * (1 - m) + patch * m`` (Adv-PAT,
  Zhou et al., ICCV 2023). Its patch pixels live in [0, 1] (not the normalised-range quirk of the
  official code, docs/methods.md, "Universal attacks").

The image size a perturbation was made for is part of it: applying it to images of another size
raises :class:`PerturbationError` naming both sizes (no silent resize).

File layout (``.safetensors``): one tensor ``delta``; the safetensors metadata entry
``"encshield"`` holds JSON with ``kind="perturbation"``, ``perturbation_kind``, ``eps``,
``position``, ``image_size``, the free-form ``metadata`` (attack, config, encoder sha256 and
provenance, surrogate data, seed, fit time, objective before/after ...) and a sha256 of the tensor
payload that is verified on load. :meth:`Perturbation.load` also re-checks the declared budget: a
delta outside it is refused.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F

from encshield.errors import CheckpointError, ConfigError
from encshield.images import check_images
from encshield.provenance import atomic_path

__all__ = ["BUDGET_TOLERANCE", "Perturbation", "PerturbationError", "paste_patch"]

#: Slack allowed on ``|delta| <= eps`` (float32 rounding of ``eps``) and on patch pixels in [0, 1].
BUDGET_TOLERANCE = 1e-6

#: ``kind`` written in the file metadata (``load_encoder`` refuses such a file with a clear error).
FILE_KIND = "perturbation"

Kind = Literal["additive", "patch"]


class PerturbationError(ConfigError):
    """A perturbation is inconsistent (budget, shape, placement) or does not fit the images."""


def _mask_and_canvas(
    patch: torch.Tensor, position: tuple[int, int], size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded patch ``(C, H, W)`` and its binary mask ``(1, H, W)`` (differentiable)."""
    top, left = position
    _, h, w = patch.shape
    height, width = size
    pad = (left, width - left - w, top, height - top - h)
    canvas = F.pad(patch, pad)
    mask = F.pad(torch.ones(1, h, w, dtype=patch.dtype, device=patch.device), pad)
    return canvas, mask


def paste_patch(x: torch.Tensor, patch: torch.Tensor, position: tuple[int, int]) -> torch.Tensor:
    """``x * (1 - m) + patch * m``: paste ``patch`` ``(C, h, w)`` at ``position = (top, left)``.

    Differentiable with respect to both ``x`` and ``patch`` (the patch attacks optimise through
    it). ``x`` is ``(N, C, H, W)``; the patch must fit inside it.
    """
    top, left = int(position[0]), int(position[1])
    _, h, w = patch.shape
    height, width = int(x.shape[-2]), int(x.shape[-1])
    if top < 0 or left < 0 or top + h > height or left + w > width:
        raise PerturbationError(
            f"a {h}x{w} patch at (top, left) = ({top}, {left}) does not fit in {height}x{width} "
            "images"
        )
    canvas, mask = _mask_and_canvas(patch.to(x.dtype), (top, left), (height, width))
    return x * (1 - mask) + canvas * mask


def _as_size(value: Any, what: str) -> tuple[int, int]:
    try:
        size = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise PerturbationError(f"{what} must be (H, W), got {value!r}") from None
    if len(size) != 2 or size[0] < 1 or size[1] < 1:
        raise PerturbationError(f"{what} must be two positive ints (H, W), got {value!r}")
    return size


@dataclass(eq=False)
class Perturbation:
    """A universal perturbation (additive delta or patch) with its metadata.

    Attributes:
        kind: ``"additive"`` or ``"patch"``.
        delta: additive: float32 ``(3, H, W)`` in ``[-eps, eps]``; patch: the patch pixels, float32
            ``(3, h, w)`` in [0, 1].
        eps: L-inf budget of an additive delta (required for ``additive``; ``None`` for a patch).
        position: ``(top, left)`` of a patch (required for ``patch``; ``None`` when additive).
        metadata: JSON-serialisable details (attack name and config, encoder sha256 and
            provenance, surrogate data, eps, seed, ``image_size``, encshield version, fit time,
            objective before/after). For a patch, ``metadata["image_size"]`` records the image
            size it was made for (then images of another size are refused).

    Raises:
        PerturbationError: an inconsistent perturbation (delta outside its budget, patch pixels
            outside [0, 1], missing eps/position, non-finite values, bad shape).
    """

    kind: Kind
    delta: torch.Tensor
    eps: float | None = None
    position: tuple[int, int] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("additive", "patch"):
            raise PerturbationError(
                f"perturbation kind must be 'additive' or 'patch', got {self.kind!r}"
            )
        if not isinstance(self.delta, torch.Tensor) or not self.delta.is_floating_point():
            raise PerturbationError(
                f"perturbation delta must be a float tensor, got "
                f"{getattr(self.delta, 'dtype', type(self.delta).__name__)}"
            )
        delta = self.delta.detach()
        if delta.dim() == 4 and delta.shape[0] == 1:
            delta = delta[0]
        if delta.dim() != 3:
            raise PerturbationError(
                f"perturbation delta must have shape (C, H, W), got {tuple(self.delta.shape)}"
            )
        self.delta = delta.to(torch.float32).contiguous()
        if not bool(torch.isfinite(self.delta).all()):
            raise PerturbationError("perturbation delta holds NaN or infinite values")
        if self.metadata is None:
            self.metadata = {}
        if not isinstance(self.metadata, dict):
            raise PerturbationError(
                f"perturbation metadata must be a dict, got {type(self.metadata).__name__}"
            )
        if self.kind == "additive":
            self._check_additive()
        else:
            self._check_patch()

    def _check_additive(self) -> None:
        if self.eps is None:
            raise PerturbationError("an additive perturbation needs its L-inf budget eps")
        eps = float(self.eps)
        if not (math.isfinite(eps) and 0 < eps <= 1):
            raise PerturbationError(f"eps must be in (0, 1] (pixels in [0, 1]), got {self.eps!r}")
        self.eps = eps
        if self.position is not None:
            raise PerturbationError("an additive perturbation has no position (patches only)")
        observed = self.linf()
        if observed > eps + BUDGET_TOLERANCE:
            raise PerturbationError(
                f"additive delta has L-inf norm {observed:.6g} = {observed * 255:.3f}/255, "
                f"outside its declared budget eps = {eps:.6g} = {eps * 255:.3f}/255"
            )

    def _check_patch(self) -> None:
        if self.eps is not None:
            raise PerturbationError(
                "a patch has no L-inf budget (eps must be None); its pixels lie in [0, 1]"
            )
        if self.position is None:
            raise PerturbationError("a patch needs its position (top, left)")
        try:
            top, left = (int(v) for v in self.position)
        except (TypeError, ValueError):
            raise PerturbationError(
                f"patch position must be (top, left) ints, got {self.position!r}"
            ) from None
        if top < 0 or left < 0:
            raise PerturbationError(f"patch position must be >= 0, got {(top, left)}")
        self.position = (top, left)
        lo, hi = float(self.delta.min()), float(self.delta.max())
        if lo < -BUDGET_TOLERANCE or hi > 1 + BUDGET_TOLERANCE:
            raise PerturbationError(
                f"patch pixels must lie in [0, 1]; observed range [{lo:.4g}, {hi:.4g}]"
            )
        size = self.image_size
        if size is not None:
            _, h, w = self.delta.shape
            if top + h > size[0] or left + w > size[1]:
                raise PerturbationError(
                    f"a {h}x{w} patch at (top, left) = ({top}, {left}) does not fit in the "
                    f"recorded image size {size[0]}x{size[1]}"
                )

    # ------------------------------------------------------------------------------ properties

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(H, W)`` of the images this perturbation is made for.

        Additive: the delta's spatial size. Patch: ``metadata["image_size"]`` (``None`` when not
        recorded; the patch then applies to any image it fits in).
        """
        if self.kind == "additive":
            return int(self.delta.shape[-2]), int(self.delta.shape[-1])
        recorded = self.metadata.get("image_size")
        return None if recorded is None else _as_size(recorded, "metadata image_size")

    @property
    def channels(self) -> int:
        return int(self.delta.shape[0])

    def linf(self) -> float:
        """The largest per-pixel change this perturbation can make to an image in [0, 1].

        Additive: ``max |delta|`` (clamping can only reduce it). Patch: ``max(patch, 1 - patch)``
        over the patch pixels (a patch is not budgeted in L-inf; this is its worst case).
        """
        if self.delta.numel() == 0:
            return 0.0
        if self.kind == "additive":
            return float(self.delta.abs().max())
        return float(torch.maximum(self.delta, 1 - self.delta).max())

    def mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Binary mask ``(1, H, W)`` of the pixels the perturbation changes (all ones if
        additive)."""
        size = self.image_size
        if size is None:
            raise PerturbationError("this patch does not record its image size; pass images")
        if self.kind == "additive":
            return torch.ones(1, *size, device=device)
        _, mask = _mask_and_canvas(self.delta.to(device), self.position, size)  # type: ignore[arg-type]
        return mask

    # ------------------------------------------------------------------------------- applying

    def _check_fits(self, x: torch.Tensor) -> None:
        if x.shape[1] != self.channels:
            raise PerturbationError(
                f"images have {x.shape[1]} channels but the perturbation has {self.channels}"
            )
        size = self.image_size
        observed = (int(x.shape[-2]), int(x.shape[-1]))
        if size is not None and observed != size:
            raise PerturbationError(
                f"image size mismatch: the images are {observed[0]}x{observed[1]} but this "
                f"{self.kind} perturbation was made for {size[0]}x{size[1]} images; resize the "
                "images (e.g. data.load(..., image_size=...)) or fit a perturbation at their size"
            )

    def apply(self, x: torch.Tensor, *, clamp: bool = True) -> torch.Tensor:
        """Apply to images ``x`` float ``(N, C, H, W)`` in [0, 1].

        Args:
            x: the images (any device; the delta follows it).
            clamp: clamp the result to [0, 1] (default). ``clamp=False`` is the compatibility
                option of the CGCL-family code, which evaluates the unclipped ``x + delta``.

        Returns:
            Additive: ``clamp(x + delta, 0, 1)``; patch: ``x * (1 - m) + patch * m``.

        Raises:
            ImageRangeError: ``x`` is not float NCHW in [0, 1].
            PerturbationError: ``x`` has another size (or channel count) than the perturbation.
        """
        check_images(x, "images to perturb")
        self._check_fits(x)
        delta = self.delta.to(device=x.device, dtype=x.dtype)
        if self.kind == "patch":
            out = paste_patch(x, delta, self.position)  # type: ignore[arg-type]
        else:
            out = x + delta
        return out.clamp(0, 1) if clamp else out

    __call__ = apply

    # ------------------------------------------------------------------------------- files

    def _file_metadata(self) -> dict[str, Any]:
        from encshield import __version__

        size = self.image_size
        return {
            "kind": FILE_KIND,
            "perturbation_kind": self.kind,
            "eps": self.eps,
            "position": None if self.position is None else list(self.position),
            "image_size": None if size is None else list(size),
            "shape": list(self.delta.shape),
            "encshield_version": __version__,
            "metadata": self.metadata,
        }

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write ``path`` (``.safetensors``) atomically; returns the file's sha256.

        Raises:
            CheckpointError: the metadata is not JSON-serialisable.
        """
        from encshield.checkpoints.native import write_native

        try:
            json.dumps(self.metadata)
        except (TypeError, ValueError) as error:
            raise CheckpointError(
                f"perturbation metadata is not JSON-serialisable: {error}"
            ) from None
        return write_native(path, {"delta": self.delta}, self._file_metadata())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Perturbation:
        """Read a file written by :meth:`save`, verifying its payload checksum, kind, shape and
        budget.

        Raises:
            CheckpointError: unreadable file, not a perturbation, corrupted tensors.
            PerturbationError: the stored delta is inconsistent with its declared kind, shape or
                budget (e.g. a delta outside its eps), naming the file.
        """
        from encshield.checkpoints.native import read_native

        tensors, meta = read_native(path, verify=True)
        where = str(path)
        if meta is None or meta.get("kind") != FILE_KIND:
            found = "no encshield metadata" if meta is None else f"kind {meta.get('kind')!r}"
            raise CheckpointError(
                f"{where} is not an encshield perturbation file ({found}; expected kind "
                f"{FILE_KIND!r})"
            )
        if set(tensors) != {"delta"}:
            raise CheckpointError(
                f"{where}: a perturbation file holds exactly one tensor 'delta', found "
                f"{sorted(tensors)}"
            )
        delta = tensors["delta"]
        declared = meta.get("shape")
        if declared is not None and list(delta.shape) != list(declared):
            raise PerturbationError(
                f"{where}: delta has shape {list(delta.shape)} but the file declares {declared}"
            )
        metadata = meta.get("metadata") or {}
        size = meta.get("image_size")
        kind = meta.get("perturbation_kind")
        if kind == "patch" and size is not None and "image_size" not in metadata:
            metadata["image_size"] = size
        position = meta.get("position")
        try:
            perturbation = cls(
                kind=cast(Kind, kind),  # checked by __post_init__
                delta=delta,
                eps=meta.get("eps"),
                position=None if position is None else tuple(position),
                metadata=metadata,
            )
        except PerturbationError as error:
            raise PerturbationError(f"{where}: refused: {error}") from None
        if kind == "additive" and size is not None and perturbation.image_size != tuple(size):
            raise PerturbationError(
                f"{where}: delta is {perturbation.image_size} but the file declares image size "
                f"{size}"
            )
        return perturbation

    # ------------------------------------------------------------------------------- rendering

    def render(self, scale: int = 8) -> torch.Tensor:
        """The perturbation as an RGB image float ``(3, h * scale, w * scale)`` in [0, 1].

        Additive: ``delta`` mapped linearly from ``[-eps, eps]`` to [0, 1] (grey = no change).
        Patch: the patch pixels. Upscaled by ``scale`` with nearest-neighbour.
        """
        if int(scale) < 1:
            raise ConfigError(f"scale must be a positive int, got {scale!r}")
        if self.kind == "additive":
            eps = float(self.eps)  # type: ignore[arg-type]
            image = (self.delta + eps) / (2 * eps)
        else:
            image = self.delta
        image = image.clamp(0, 1)
        scale = int(scale)
        return image.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)

    def to_png(
        self,
        path: str | os.PathLike[str],
        scale: int = 8,
        *,
        example: torch.Tensor | None = None,
    ) -> Path:
        """Write the rendering (:meth:`render`) as a PNG (atomically); returns the path.

        Args:
            path: output ``.png``.
            scale: nearest-neighbour upscaling factor.
            example: optionally one image ``(3, H, W)`` or ``(1, 3, H, W)`` in [0, 1]; the PNG
                then shows, left to right, the perturbation, the clean example and the example
                with the perturbation applied (clamped), all upscaled by ``scale``.
        """
        from PIL import Image

        panels = [self.render(scale)]
        if example is not None:
            x = example if example.dim() == 4 else example.unsqueeze(0)
            x = x[:1].detach().float().cpu()
            adv = self.apply(x)[0]
            for image in (x[0], adv):
                panels.append(
                    image.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
                )
        gap = max(1, scale // 2) if len(panels) > 1 else 0
        height = max(p.shape[1] for p in panels)
        width = sum(p.shape[2] for p in panels) + gap * (len(panels) - 1)
        canvas = torch.ones(3, height, width)
        offset = 0
        for panel in panels:
            canvas[:, : panel.shape[1], offset : offset + panel.shape[2]] = panel
            offset += panel.shape[2] + gap
        array = (canvas.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        with atomic_path(path) as tmp:
            Image.fromarray(array, mode="RGB").save(tmp, format="PNG")
        return Path(path)

    # ------------------------------------------------------------------------------- misc

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable description (kind, sizes, eps, L-inf, position, metadata)."""
        size = self.image_size
        return {
            "kind": self.kind,
            "shape": list(self.delta.shape),
            "image_size": None if size is None else list(size),
            "eps": self.eps,
            "eps_255": None if self.eps is None else self.eps * 255,
            "linf": self.linf(),
            "linf_255": self.linf() * 255,
            "position": None if self.position is None else list(self.position),
            "metadata": self.metadata,
        }

    def __repr__(self) -> str:
        size = self.image_size
        extra = (
            f"eps={self.eps:.5g}" if self.kind == "additive" else f"position={self.position}"
        )
        attack = self.metadata.get("attack")
        return (
            f"Perturbation(kind={self.kind!r}, shape={tuple(self.delta.shape)}, "
            f"image_size={size}, {extra}, linf={self.linf():.5g}"
            + (f", attack={attack!r}" if attack else "")
            + ")"
        )
