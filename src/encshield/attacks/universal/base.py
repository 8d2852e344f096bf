"""The common machinery of universal (downstream-agnostic) attacks.

A universal attack is fitted on the victim encoder alone, with the attacker's surrogate images
(never the downstream test data), and returns a :class:`~encshield.attacks.Perturbation`::

    attack = UNIVERSAL_ATTACKS.get("pap")(variant="ugs", steps=300)
    delta = attack.fit(encoder, surrogate_images, eps=10 / 255, seed=0)
    x_adv = delta.apply(x)                      # clamp(x + delta, 0, 1)
    attack.objective(encoder, images, delta)    # lower = better for the attacker

This module provides the base class :class:`UniversalAttack` (typed pydantic ``Config`` with a
default for every field, seeding, frozen encoder in eval mode, batching, metadata, objective
before/after), the registry :data:`UNIVERSAL_ATTACKS`, :func:`fit_universal` and helpers shared by
the attacks (:class:`ActivationTap` for intermediate activations, :func:`frozen`).

Hygiene kept by every attack: gradients are taken with :func:`torch.autograd.grad` with respect
to the perturbation (or the attack's own generator) only; the encoder's parameters are switched to
``requires_grad=False`` during the fit (and restored afterwards), so they never receive ``.grad``;
the encoder runs in eval mode; randomness comes from a local ``torch.Generator`` seeded with
``seed`` and the global RNG state is restored afterwards (``torch.random.fork_rng``), so the same
seed gives the identical perturbation and the caller's random stream is untouched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from encshield.attacks.perturbation import Perturbation
from encshield.config import config_hash, resolve
from encshield.errors import ConfigError, ImageRangeError
from encshield.images import check_images, to_float
from encshield.models.modules import frozen, module_device
from encshield.progress import Advance, progress
from encshield.registry import Registry

__all__ = [
    "DEFAULT_EPS",
    "UNIVERSAL_ATTACKS",
    "ActivationTap",
    "UniversalAttackConfig",
    "FitContext",
    "UniversalAttack",
    "check_surrogate_images",
    "cosine_distance",
    "fit_universal",
    "frozen",
    "module_device",
]

#: The DAE protocol's default L-inf budget (docs/methods.md, "Universal attacks"): 10/255 at any
#: image size.
DEFAULT_EPS = 10 / 255

#: Registry of universal attacks: name -> :class:`UniversalAttack` subclass.
UNIVERSAL_ATTACKS: Registry[type[UniversalAttack]] = Registry("universal attack")

#: Keyword arguments of :meth:`UniversalAttack.fit` (everything else in :func:`fit_universal`
#: is a config override).
FIT_KEYWORDS = (
    "eps",
    "seed",
    "surrogate_labels",
    "surrogate_head",
    "progress",
    "data_description",
)


# ------------------------------------------------------------------------------------- helpers


def check_surrogate_images(images: torch.Tensor, name: str = "surrogate_images") -> torch.Tensor:
    """Accept uint8 ``(N, C, H, W)`` (0..255) or float in [0, 1]; return the tensor unchanged."""
    if not isinstance(images, torch.Tensor):
        raise ImageRangeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ImageRangeError(f"{name} must be a batch (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] < 1:
        raise ImageRangeError(f"{name} is empty: a universal attack needs surrogate images")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise ImageRangeError(f"{name} has dtype {images.dtype}; pass uint8 or float in [0, 1]")
    return check_images(images, name)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample ``1 - cos(a_i, b_i)`` of two feature batches ``(N, D)`` -> ``(N,)``."""
    return 1 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-8)


class _StopForward(Exception):
    """Raised by a forward hook once every requested activation is captured."""


class ActivationTap:
    """Named intermediate activations of an encoder, stopping the forward early when possible.

    Layer names are those of :meth:`encshield.models.Encoder.layer_names` (``relu`` = the stem
    activation after ``bn1``, ``layer1`` ... ``layer4``, ``output``). When every requested module
    runs exactly once per forward (checked once with a one-image probe), the forward is stopped as
    soon as the last one has run, so an attack on ``layer2`` does not pay for ``layer3``/``layer4``;
    otherwise (a module that runs several times, or ``output``) the whole forward runs and the
    last call is reported, as :meth:`Encoder.features` does. Gradients flow through the results.
    """

    def __init__(self, encoder: nn.Module, layers: str | Sequence[str]) -> None:
        from encshield.models.encoder import OUTPUT_LAYER

        if isinstance(layers, str):
            layers = [layers]
        self.encoder = encoder
        self.layers = list(dict.fromkeys(layers))
        if not self.layers:
            raise ConfigError("ActivationTap needs at least one layer name")
        root = getattr(encoder, "backbone", encoder)
        modules = dict(root.named_modules())
        unknown = [n for n in self.layers if n != OUTPUT_LAYER and (not n or n not in modules)]
        if unknown:
            names = [n for n in modules if n] + [OUTPUT_LAYER]
            shown = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
            raise ConfigError(f"unknown encoder layer(s) {unknown}; valid names: {shown}")
        self._output = OUTPUT_LAYER in self.layers
        self._modules = {n: modules[n] for n in self.layers if n != OUTPUT_LAYER}
        self._early: bool | None = None if not self._output else False

    def _probe(self, x: torch.Tensor) -> None:
        counts = dict.fromkeys(self._modules, 0)
        handles = []
        for name, module in self._modules.items():

            def hook(_m: nn.Module, _i: Any, _o: Any, name: str = name) -> None:
                counts[name] += 1

            handles.append(module.register_forward_hook(hook))
        try:
            with torch.no_grad():
                self.encoder(x[:1])
        finally:
            for handle in handles:
                handle.remove()
        missing = [n for n, c in counts.items() if c == 0]
        if missing:
            raise ConfigError(f"encoder layer(s) {missing} did not run during forward")
        self._early = all(c == 1 for c in counts.values())

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations ``{name: tensor}`` (in the requested order) for images ``x`` in [0, 1]."""
        from encshield.models.encoder import OUTPUT_LAYER

        if self._early is None:
            self._probe(x)
        early = bool(self._early)
        captured: dict[str, torch.Tensor] = {}
        wanted = len(self._modules)
        handles = []
        for name, module in self._modules.items():

            def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
                if early and len(captured) + 1 == wanted and name not in captured:
                    captured[name] = out
                    raise _StopForward
                # a copy: later in-place operations (ReLU(inplace=True)) must not alter it
                captured[name] = out.clone()

            handles.append(module.register_forward_hook(hook))
        output = None
        try:
            output = self.encoder(x)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if self._output:
            captured[OUTPUT_LAYER] = output  # type: ignore[assignment]
        return {name: captured[name] for name in self.layers}


# ------------------------------------------------------------------------------------- context


@dataclass
class FitContext:
    """Everything an attack's ``_fit`` needs; built by :meth:`UniversalAttack.fit`.

    Attributes:
        encoder: the victim (frozen, eval mode).
        images: surrogate images as given (uint8 or float; any device; batches are moved to
            ``device`` and converted to float on the fly).
        labels: surrogate labels ``(N,)`` or ``None``.
        surrogate_head: a head (features -> logits) or a full classifier, or ``None``.
        eps: L-inf budget (additive attacks).
        seed: the seed.
        generator: CPU ``torch.Generator`` seeded with ``seed``: every random draw of the
            attack comes from it (drawn on the CPU, then moved), so results do not depend on the
            device's RNG.
        device: the encoder's device.
        progress: show a progress bar.
        history: per-epoch/pass records appended by the attack (stored in the metadata).
        info: extra metadata set by the attack (e.g. how its surrogate classifier was made).
    """

    encoder: nn.Module
    images: torch.Tensor
    labels: torch.Tensor | None
    surrogate_head: nn.Module | None
    eps: float
    seed: int
    generator: torch.Generator
    device: torch.device
    progress: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the surrogate images (= the perturbation's shape)."""
        _, c, h, w = self.images.shape
        return int(c), int(h), int(w)

    def batch(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Float images in [0, 1] at ``index``, on ``device``."""
        return to_float(self.images[index], self.device)

    def rand(self, *shape: int) -> torch.Tensor:
        """``U(0, 1)`` from the seeded generator, on ``device``."""
        return torch.rand(*shape, generator=self.generator).to(self.device)

    def randn(self, *shape: int) -> torch.Tensor:
        """``N(0, 1)`` from the seeded generator, on ``device``."""
        return torch.randn(*shape, generator=self.generator).to(self.device)

    def uniform_delta(self, eps: float | None = None) -> torch.Tensor:
        """``U(-eps, eps)`` per pixel, shape ``(C, H, W)`` (the usual random start)."""
        eps = self.eps if eps is None else eps
        return (self.rand(*self.image_shape) * 2 - 1) * eps

    def permutation(self) -> torch.Tensor:
        return torch.randperm(self.num_images, generator=self.generator)

    def epoch(self, batch_size: int, *, shuffle: bool = True) -> Iterator[torch.Tensor]:
        """One pass over the surrogate images in (shuffled) mini-batches of float images."""
        order = self.permutation() if shuffle else torch.arange(self.num_images)
        for start in range(0, self.num_images, batch_size):
            yield self.batch(order[start : start + batch_size])

    def stream(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Endless mini-batches, reshuffled every pass (for step-budgeted attacks)."""
        while True:
            yield from self.epoch(batch_size)

    def bar(self, total: int, description: str) -> AbstractContextManager[Advance]:
        """Progress bar context manager (no-op unless ``progress``)."""
        return progress(description, total, enabled=self.progress)


# ------------------------------------------------------------------------------------- base


class UniversalAttackConfig(BaseModel):
    """Settings shared by every universal attack (each attack extends this; every field has a
    default, so ``Config()`` is always valid)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(64, ge=1, description="mini-batch size over the surrogate images")
    objective_samples: int = Field(
        512, ge=0,
        description="surrogate images (a seeded random subset) on which the objective before and "
        "after the fit is recorded in the metadata; 0 = skip",
    )


class UniversalAttack:
    """Base class of universal attacks: ``fit(encoder, surrogate_images) -> Perturbation``.

    Subclasses get :attr:`name` from ``@UNIVERSAL_ATTACKS.register(name)``, :attr:`kind`,
    :attr:`stochastic`, :attr:`paper`, a nested pydantic ``Config`` (every field defaulted) and
    implement :meth:`_fit` and :meth:`_objective_values`.

    Args:
        config: a ``Config`` instance or a dict of its fields (validated; errors name the field,
            the bad value and the allowed values).
        **overrides: individual config fields, applied on top of ``config``.
    """

    name: ClassVar[str] = ""
    #: "additive" (an L-inf-bounded delta) or "patch".
    kind: ClassVar[Literal["additive", "patch"]] = "additive"
    #: whether the result depends on the seed (a deterministic attack ignores it).
    stochastic: ClassVar[bool] = True
    #: the paper the attack implements.
    paper: ClassVar[str] = ""
    #: what :meth:`objective` measures (lower = better for the attacker).
    objective_name: ClassVar[str] = ""
    Config: ClassVar[type[UniversalAttackConfig]] = UniversalAttackConfig

    def __init__(
        self, config: UniversalAttackConfig | dict[str, Any] | None = None, **overrides: Any
    ):
        self.config = resolve(self.Config, config, **overrides)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({fields})"

    # ------------------------------------------------------------------------------ fitting

    def fit(
        self,
        encoder: nn.Module,
        surrogate_images: torch.Tensor,
        *,
        eps: float = DEFAULT_EPS,
        seed: int = 0,
        surrogate_labels: torch.Tensor | None = None,
        surrogate_head: nn.Module | None = None,
        progress: bool = False,
        data_description: str | dict[str, Any] | None = None,
    ) -> Perturbation:
        """Fit the universal perturbation on the encoder alone.

        Args:
            encoder: the victim, images float in [0, 1] -> features ``(N, D)``. Kept in eval mode
                with ``requires_grad=False`` during the fit; both are restored afterwards.
            surrogate_images: the attacker's images, uint8 ``(N, 3, H, W)`` or float in [0, 1]
                (never the downstream test data). The perturbation gets their size.
            eps: L-inf budget of an additive perturbation (default 10/255); ignored by patch
                attacks (recorded as ``None``).
            seed: seeds every random draw (same seed -> identical perturbation).
            surrogate_labels: labels ``(N,)`` of the surrogate images (classifier-based attacks
                train a surrogate head on them when no ``surrogate_head`` is given).
            surrogate_head: a head mapping encoder features to logits (e.g. the checkpoint's
                online linear classifier) or a full classifier (images -> logits);
                classifier-based attacks only.
            progress: show a progress bar.
            data_description: free-form description of the surrogate data, stored in the
                metadata (e.g. ``{"dataset": "tiny_imagenet", "split": "val", "limit": 2000}``).

        Returns:
            The :class:`Perturbation` with its metadata (attack, config, encoder sha256 and
            provenance, surrogate data, eps, seed, image size, version, fit time, objective
            before/after on a subset of the surrogate images, per-epoch history).
        """
        images = check_surrogate_images(surrogate_images)
        if surrogate_labels is not None:
            if not isinstance(surrogate_labels, torch.Tensor) or surrogate_labels.shape != (
                images.shape[0],
            ):
                raise ConfigError(
                    f"surrogate_labels must be a tensor of shape ({images.shape[0]},), got "
                    f"{getattr(surrogate_labels, 'shape', type(surrogate_labels).__name__)}"
                )
            surrogate_labels = surrogate_labels.long()
        if self.kind == "additive":
            eps = _check_eps(eps)
        else:
            eps = float(eps) if eps is not None else DEFAULT_EPS
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an int, got {seed!r}")
        device = module_device(encoder)
        rng_devices = [device] if device.type == "cuda" else []
        with frozen(encoder, surrogate_head), torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(seed)
            context = FitContext(
                encoder=encoder,
                images=images,
                labels=surrogate_labels,
                surrogate_head=surrogate_head,
                eps=eps,
                seed=seed,
                generator=torch.Generator().manual_seed(seed),
                device=device,
                progress=progress,
            )
            start = time.perf_counter()
            result = self._fit(context)
            elapsed = time.perf_counter() - start
            objective = self._record_objective(encoder, images, result, seed, eps)
        metadata = self._metadata(encoder, context, result, elapsed, objective, data_description)
        metadata.update(result.metadata)
        result.metadata = metadata
        return result

    def _fit(self, context: FitContext) -> Perturbation:  # pragma: no cover - abstract
        raise NotImplementedError

    def _record_objective(
        self, encoder: nn.Module, images: torch.Tensor, result: Perturbation, seed: int,
        eps: float,
    ) -> dict[str, Any]:
        count = min(self.config.objective_samples, int(images.shape[0]))
        if count == 0:
            return {"name": self.objective_name, "samples": 0}
        generator = torch.Generator().manual_seed(seed + 7919)
        index = torch.randperm(int(images.shape[0]), generator=generator)[:count]
        subset = images[index]
        null = self.null_perturbation(tuple(images.shape[-3:]), eps)
        before = self.objective(encoder, subset, null)
        after = self.objective(encoder, subset, result)
        return {"name": self.objective_name, "samples": count, "before": before, "after": after}

    def _metadata(
        self,
        encoder: nn.Module,
        context: FitContext,
        result: Perturbation,
        elapsed: float,
        objective: dict[str, Any],
        data_description: str | dict[str, Any] | None,
    ) -> dict[str, Any]:
        from encshield import __version__

        provenance = getattr(encoder, "provenance", None)
        try:
            prov = provenance.to_dict() if provenance is not None else None
        except Exception:  # never fail a fit over a metadata detail
            prov = {"repr": repr(provenance)}
        images = context.images
        surrogate: dict[str, Any] = {
            "num_images": int(images.shape[0]),
            "shape": list(images.shape[1:]),
            "dtype": str(images.dtype).replace("torch.", ""),
            "labelled": context.labels is not None,
        }
        if data_description is not None:
            surrogate["description"] = data_description
        _, h, w = context.image_shape
        return {
            "attack": self.name,
            "paper": self.paper,
            "kind": self.kind,
            "config": self.config.model_dump(mode="json"),
            "config_hash": config_hash(self.config),
            "eps": result.eps,
            "eps_255": None if result.eps is None else result.eps * 255,
            "seed": context.seed,
            "image_size": [h, w],
            "encoder": {
                "sha256": getattr(provenance, "sha256", None),
                "class": type(encoder).__name__,
                "feature_dim": getattr(encoder, "feature_dim", None),
                "input_size": list(getattr(encoder, "input_size", ()) or ()) or None,
                "provenance": prov,
            },
            "surrogate": surrogate,
            **context.info,
            "encshield_version": __version__,
            "torch_version": torch.__version__,
            "device": str(context.device),
            "fit_seconds": round(elapsed, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "objective": objective,
            "history": context.history,
        }

    # ------------------------------------------------------------------------------ objective

    def null_perturbation(self, shape: Sequence[int], eps: float = DEFAULT_EPS) -> Perturbation:
        """The zero (additive) perturbation of images of ``shape`` ``(C, H, W)``: "no attack"."""
        c, h, w = (int(v) for v in shape)
        return Perturbation("additive", torch.zeros(c, h, w), eps=float(eps or DEFAULT_EPS),
                            metadata={"attack": "none"})

    def objective(
        self,
        encoder: nn.Module,
        images: torch.Tensor,
        perturbation: Perturbation,
        *,
        surrogate_head: nn.Module | None = None,
    ) -> float:
        """The quantity this attack optimises, on ``images``, oriented so LOWER is better for the
        attacker; a per-sample mean over all images (no mean of batch means).

        Args:
            encoder: the encoder.
            images: uint8 or float [0, 1] images ``(N, C, H, W)``.
            perturbation: the perturbation to evaluate (e.g. :meth:`null_perturbation` for "no
                attack").
            surrogate_head: classifier-based attacks only (defaults to the head used by the last
                :meth:`fit`).
        """
        images = check_surrogate_images(images, "images")
        device = module_device(encoder)
        fitted_head = getattr(self, "surrogate_head_", None)
        with frozen(encoder, surrogate_head, fitted_head), torch.no_grad():
            state = self._objective_state(encoder, surrogate_head, perturbation)
            total = torch.zeros((), dtype=torch.float64, device=device)
            for start in range(0, int(images.shape[0]), self.config.batch_size):
                x = to_float(images[start : start + self.config.batch_size], device)
                values = self._objective_values(encoder, x, perturbation.apply(x), state)
                total += values.double().sum()
        return float(total) / int(images.shape[0])

    def _objective_state(
        self, encoder: nn.Module, surrogate_head: nn.Module | None, perturbation: Perturbation
    ) -> Any:
        """Prepared once per :meth:`objective` call (e.g. an :class:`ActivationTap`)."""
        return None

    def _objective_values(
        self, encoder: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, state: Any
    ) -> torch.Tensor:  # pragma: no cover - abstract
        """Per-sample objective ``(b,)`` for clean images ``x`` and perturbed ``x_adv``."""
        raise NotImplementedError


def _check_eps(eps: Any) -> float:
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ConfigError(f"eps must be a number in (0, 1], got {eps!r}") from None
    if not (0 < value <= 1):
        raise ConfigError(
            f"eps must be in (0, 1] (pixels in [0, 1]; e.g. 10/255 = 0.0392), got {eps!r}"
        )
    return value


def fit_universal(
    name: str,
    encoder: nn.Module,
    surrogate_images: torch.Tensor,
    *,
    config: UniversalAttackConfig | dict[str, Any] | None = None,
    **kwargs: Any,
) -> Perturbation:
    """``UNIVERSAL_ATTACKS.get(name)(config, **overrides).fit(encoder, surrogate_images, ...)``.

    Keyword arguments named like :meth:`UniversalAttack.fit`'s (``eps``, ``seed``,
    ``surrogate_labels``, ``surrogate_head``, ``progress``, ``data_description``) go to ``fit``;
    every other keyword is a config override (e.g. ``steps=100``).
    """
    fit_kwargs = {k: kwargs.pop(k) for k in FIT_KEYWORDS if k in kwargs}
    attack = UNIVERSAL_ATTACKS.get(name)(config, **kwargs)
    return attack.fit(encoder, surrogate_images, **fit_kwargs)
