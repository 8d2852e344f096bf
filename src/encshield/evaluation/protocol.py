"""The evaluation protocol: one classifier, one test set, every attack, one record.

* :func:`evaluate_classifier` evaluates **any** classifier (images in [0, 1] -> logits): the
  no-defense model of the DAE protocol, a defended model, an ensemble. Clean predictions once;
  then per universal perturbation the predictions on ``perturbation.apply(x, clamp=clamp)``; per
  encoder-only attack (feature PGD on ``classifier.encoder``) and per white-box attack on the
  classifier itself the predictions on its adversarial examples (on a fixed, seeded,
  class-stratified subset when limited). Metrics per row via
  :func:`encshield.evaluation.metrics.summarize`, all per sample.
* :func:`run_dae_protocol` is the DAE experiment (DESIGN.md): load a victim encoder, train the
  downstream head on the downstream train split (:func:`encshield.downstream.train_head`, the CGCL
  protocol) -- or build any other classifier through ``build_classifier`` -- and evaluate it on the
  test split with :func:`evaluate_classifier`.
* :class:`WhiteboxSpec` / :func:`parse_whitebox` / :func:`parse_budget`: attack specs such as
  ``pgd:eps=8/255,steps=10``.
* :func:`select_subset`: the fixed, seeded, class-stratified (or first-N) subset.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from encshield.errors import ConfigError
from encshield.evaluation.metrics import summarize
from encshield.evaluation.records import (
    AttackMetrics,
    EvaluationRecord,
    PerSampleRecord,
    config_digest,
    machine_info,
    now_iso,
    version_info,
)

__all__ = [
    "ENCODER_ATTACK_NAMES",
    "SUBSET_MODES",
    "ClassifierBuilder",
    "EncoderAttackFn",
    "PerturbationLike",
    "WhiteboxAttackFn",
    "WhiteboxSpec",
    "describe_classifier",
    "describe_perturbation",
    "evaluate_classifier",
    "format_budget",
    "load_perturbations",
    "parse_budget",
    "parse_whitebox",
    "predict",
    "run_dae_protocol",
    "run_model_protocol",
    "select_subset",
]

#: Spec names evaluated as per-sample attacks on the **encoder alone** (their adversarial
#: examples are then classified by the full classifier), resolved in
#: :mod:`encshield.attacks.whitebox`.
ENCODER_ATTACK_NAMES = ("feature_pgd",)

#: How a limited row picks its test samples.
SUBSET_MODES = ("stratified", "first")


class PerturbationLike(Protocol):
    """What the protocol needs of an :class:`encshield.attacks.Perturbation`."""

    def apply(self, x: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Images ``(N, C, H, W)`` in [0, 1] -> perturbed images (in [0, 1] when clamped)."""
        ...


#: ``fn(encoder, x) -> x_adv``: a configured per-sample attack on the encoder alone.
EncoderAttackFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]
#: ``fn(model, x, y, *, eps, seed, **config) -> x_adv``: the white-box attack interface.
WhiteboxAttackFn = Callable[..., torch.Tensor]
#: ``fn(encoder, train_set, seed) -> (classifier, description)``: a downstream model builder (the
#: no-defense head by default; a defense plugs in here).
ClassifierBuilder = Callable[[nn.Module, Any, int], tuple[nn.Module, dict[str, Any]]]


# ------------------------------------------------------------------------------------------
# budgets and attack specs
# ------------------------------------------------------------------------------------------


def parse_budget(text: str | float | int, *, name: str = "eps") -> float:
    """``"8/255"`` -> 0.03137..., ``"0.03"`` -> 0.03, ``8/255`` (a float) unchanged.

    Raises:
        ConfigError: not a number or fraction, division by zero, negative or not finite.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        raw = str(text).strip()
        try:
            if "/" in raw:
                num, den = raw.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(raw)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(
                f"{name}: {text!r} is not a budget; write a number (0.03) or a fraction (8/255)"
            ) from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}: {text!r} must be a finite, non-negative budget")
    return value


def format_budget(eps: float) -> str:
    """``8/255`` for multiples of 1/255 (to 1e-9), else the shortest float repr (``0.05``)."""
    scaled = eps * 255
    if abs(scaled - round(scaled)) < 1e-9 and round(scaled) != 0:
        return f"{int(round(scaled))}/255"
    return repr(float(eps))


def _parse_value(key: str, text: str) -> float | int | bool | str:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    try:
        return int(lowered)
    except ValueError:
        pass
    if "/" in lowered or any(ch.isdigit() for ch in lowered):
        try:
            return parse_budget(lowered, name=key)
        except ConfigError:
            pass
    return text.strip()


@dataclass(frozen=True)
class WhiteboxSpec:
    """One per-sample attack row: a white-box attack on the classifier, or an encoder attack.

    Attributes:
        name: a name of :data:`encshield.attacks.whitebox.WHITEBOX_ATTACKS` (``pgd``, ``pgd_l2``,
            ``apgd_ce``, ``apgd_dlr``, ``apgd_t``, ``fgsm``), or one of
            :data:`ENCODER_ATTACK_NAMES` (``feature_pgd``: the encoder-only attack).
        eps: budget (L-inf for most; L2 for ``pgd_l2``), e.g. ``8/255``.
        steps: iterations, passed as ``steps=`` when given.
        limit: number of test samples (a fixed, seeded subset); ``None`` -> the evaluation's
            ``whitebox_limit``; ``0`` -> the whole test set even when a default limit is set.
        seed: the attack's random seed (batch ``b`` uses ``seed + b``).
        params: further keyword arguments of the attack (``alpha``, ``restarts`` ...).
        label: row name in the table and the record; default :attr:`text`.
    """

    name: str
    eps: float
    steps: int | None = None
    limit: int | None = None
    seed: int = 0
    params: Mapping[str, float | int | bool | str] = field(default_factory=dict)
    label: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("white-box spec: the attack name is empty")
        object.__setattr__(self, "name", self.name.strip().lower())
        object.__setattr__(self, "eps", parse_budget(self.eps, name=f"{self.name}: eps"))
        if self.steps is not None and int(self.steps) < 1:
            raise ConfigError(f"{self.name}: steps must be >= 1, got {self.steps}")
        if self.limit is not None and int(self.limit) < 0:
            raise ConfigError(f"{self.name}: limit must be >= 0, got {self.limit}")
        object.__setattr__(self, "params", dict(self.params))

    @property
    def is_encoder_attack(self) -> bool:
        """True for encoder-only attacks (:data:`ENCODER_ATTACK_NAMES`)."""
        return self.name in ENCODER_ATTACK_NAMES

    @property
    def text(self) -> str:
        """Canonical spec text, e.g. ``pgd:eps=8/255,steps=10`` (parsed back by :func:`parse_whitebox`
        to an equal spec)."""
        parts = [f"eps={format_budget(self.eps)}"]
        if self.steps is not None:
            parts.append(f"steps={self.steps}")
        if self.limit is not None:
            parts.append(f"limit={self.limit}")
        if self.seed:
            parts.append(f"seed={self.seed}")
        for key in sorted(self.params):
            value = self.params[key]
            shown = format_budget(value) if isinstance(value, float) else str(value)
            parts.append(f"{key}={shown}")
        if self.label is not None:
            parts.append(f"label={self.label}")
        return f"{self.name}:{','.join(parts)}"

    @property
    def row_name(self) -> str:
        """Row name in the table and in ``record.metrics``: ``label``, else :attr:`text`."""
        return self.label or self.text

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["params"] = dict(self.params)
        data["eps_text"] = format_budget(self.eps)
        return data


def parse_whitebox(text: str) -> WhiteboxSpec:
    """Parse ``NAME:key=value,...``, e.g. ``pgd:eps=8/255,steps=10`` or ``fgsm:eps=4/255``.

    Known keys: ``eps`` (required; ``8/255`` or ``0.03``), ``steps``, ``limit``, ``seed``,
    ``label``; any other key is passed to the attack (numbers and ``a/b`` fractions are parsed,
    ``true``/``false`` become booleans).

    Raises:
        ConfigError: malformed text, missing ``eps``, bad values.
    """
    raw = text.strip()
    name, _, rest = raw.partition(":")
    if not name.strip():
        raise ConfigError(f"white-box spec {text!r}: expected NAME:eps=8/255,steps=10")
    values: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"white-box spec {text!r}: {item!r} is not KEY=VALUE")
        values[key.strip().lower()] = value.strip()
    if "eps" not in values:
        raise ConfigError(f"white-box spec {text!r}: eps is required, e.g. {name}:eps=8/255")

    def as_int(key: str) -> int | None:
        if key not in values:
            return None
        try:
            return int(values.pop(key))
        except ValueError:
            raise ConfigError(f"white-box spec {text!r}: {key} must be an integer") from None

    eps = parse_budget(values.pop("eps"), name=f"{name}: eps")
    steps, limit, seed = as_int("steps"), as_int("limit"), as_int("seed")
    label = values.pop("label", None)
    params = {key: _parse_value(key, value) for key, value in values.items()}
    return WhiteboxSpec(name=name, eps=eps, steps=steps, limit=limit, seed=seed or 0,
                        params=params, label=label)


# ------------------------------------------------------------------------------------------
# subsets
# ------------------------------------------------------------------------------------------


def select_subset(
    labels: torch.Tensor, limit: int | None, *, seed: int = 0, mode: str = "stratified"
) -> torch.Tensor | None:
    """Positions of a fixed subset of ``limit`` samples, sorted; ``None`` when no limit applies.

    ``mode="stratified"``: a seeded, class-stratified sample -- each class gets a number of samples
    proportional to its frequency (within one of ``limit * n_c / N``), the members drawn by a
    ``torch.randperm`` seeded with ``seed`` (identical on every machine). ``mode="first"``: the
    first ``limit`` samples.

    Args:
        labels: int ``(N,)``.
        limit: subset size; ``None``, ``0`` or ``>= N`` -> ``None`` (use everything).
    Returns:
        int64 ``(limit,)`` positions in increasing order, or ``None``.
    """
    if mode not in SUBSET_MODES:
        raise ConfigError(f"subset mode {mode!r} is not allowed; allowed values: {', '.join(SUBSET_MODES)}")
    n = int(labels.shape[0])
    if limit is None or limit <= 0 or limit >= n:
        return None
    if mode == "first":
        return torch.arange(limit, dtype=torch.int64)
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=generator)
    permuted = labels.detach().cpu()[perm]
    keys = torch.empty(n, dtype=torch.float64)
    for cls in torch.unique(permuted):
        where = (permuted == cls).nonzero().squeeze(1)
        keys[where] = (torch.arange(where.numel(), dtype=torch.float64) + 0.5) / where.numel()
    order = torch.sort(keys, stable=True).indices  # equal keys keep the random permuted order
    return torch.sort(perm[order[:limit]]).values


def _subset_info(labels: torch.Tensor, idx: torch.Tensor, limit: int, seed: int, mode: str) -> dict[str, Any]:
    chosen = labels.detach().cpu()[idx]
    classes, counts = torch.unique(chosen, return_counts=True)
    digest = hashlib.sha256(idx.to(torch.int64).numpy().tobytes()).hexdigest()[:16]
    return {
        "mode": mode,
        "seed": seed,
        "limit": limit,
        "count": int(idx.numel()),
        "class_counts": {str(int(c)): int(k) for c, k in zip(classes, counts)},
        "indices_sha256": digest,
    }


# ------------------------------------------------------------------------------------------
# prediction helpers
# ------------------------------------------------------------------------------------------


def _to_float(batch: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    batch = batch.to(device, non_blocking=True)
    if batch.dtype == torch.uint8:
        return batch.float().div_(255.0)
    return batch.float()


def _batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int,
             device: torch.device | str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, images.shape[0], batch_size):
        yield (_to_float(images[start : start + batch_size], device),
               labels[start : start + batch_size].to(device))


@contextlib.contextmanager
def _inputs_unchecked(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Switch off the [0, 1] input check of every sub-module exposing ``check_inputs``.

    Used only for ``clamp=False`` (the CGCL code's unclamped ``x + delta``, whose values leave
    [0, 1] on purpose); restored afterwards.
    """
    if not enabled:
        yield
        return
    saved = [(m, m.check_inputs) for m in model.modules() if isinstance(getattr(m, "check_inputs", None), bool)]
    try:
        for module, _ in saved:
            module.check_inputs = False  # type: ignore[assignment]
        yield
    finally:
        for module, value in saved:
            module.check_inputs = value  # type: ignore[assignment]


def predict(
    classifier: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, float]:
    """Per-sample predictions of ``classifier`` under ``torch.inference_mode``, batched.

    Args:
        classifier: images in [0, 1] -> logits ``(n, C)``; evaluated as it is (call ``.eval()``).
        images: uint8 ``(N, 3, H, W)`` (0..255) or float in [0, 1], on any device.
        transform: applied to each float batch before the classifier (e.g. a perturbation).
    Returns:
        ``(pred, max_linf)``: int64 ``(N,)`` on the CPU, and the largest ``|transform(x) - x|``
        (0 without ``transform``).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    preds: list[torch.Tensor] = []
    max_linf = 0.0
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            x = _to_float(images[start : start + batch_size], device)
            if transform is not None:
                x_t = transform(x)
                if x_t.shape != x.shape:
                    raise ConfigError(
                        f"the perturbation changed the batch shape from {tuple(x.shape)} to "
                        f"{tuple(x_t.shape)}; its size must match the test images"
                    )
                max_linf = max(max_linf, float((x_t - x).abs().max()))
                x = x_t
            preds.append(classifier(x).argmax(1).cpu())
    pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)
    return pred.to(torch.int64), max_linf


# ------------------------------------------------------------------------------------------
# descriptions (for the record's config)
# ------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: tuples -> lists, tensors -> lists (small) or a shape
    string, paths/devices/dtypes -> str, dataclasses -> dicts, non-finite floats -> ``None``,
    anything else -> its ``repr``. Dict keys become strings."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(v) for v in items]
    if isinstance(value, torch.Tensor):
        if value.numel() <= 64:
            return _jsonable(value.detach().cpu().tolist())
        return f"tensor{tuple(value.shape)}"
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    if isinstance(value, Fraction):
        return float(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        try:
            return _jsonable(value.item())
        except (TypeError, ValueError):
            pass
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return _jsonable(value.to_dict())
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(asdict(value))
    return repr(value)


def _tensor_sha256(tensor: torch.Tensor) -> str:
    data = tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def describe_perturbation(perturbation: PerturbationLike) -> dict[str, Any]:
    """What a perturbation is: its ``summary()`` when it has one (kind, shape, eps, L-inf,
    position, metadata) or the attributes ``kind``/``eps``/``position``/``metadata``, plus the
    sha256 of its delta tensor (float32 bytes)."""
    out: dict[str, Any] = {"type": type(perturbation).__name__}
    summary = getattr(perturbation, "summary", None)
    if callable(summary):
        out.update(summary())
    else:
        for key in ("kind", "eps", "position", "metadata"):
            if hasattr(perturbation, key):
                out[key] = getattr(perturbation, key)
    delta = getattr(perturbation, "delta", None)
    if isinstance(delta, torch.Tensor):
        out.setdefault("shape", list(delta.shape))
        out["delta_sha256"] = _tensor_sha256(delta)
    return _jsonable(out)


def describe_classifier(classifier: nn.Module) -> dict[str, Any]:
    """Type, parameter count, head, and the encoder's provenance/normalisation when present."""
    out: dict[str, Any] = {
        "type": type(classifier).__name__,
        "num_parameters": sum(p.numel() for p in classifier.parameters()),
    }
    head = getattr(classifier, "head", None)
    if isinstance(head, nn.Module):
        out["head"] = type(head).__name__
        num_classes = getattr(classifier, "num_classes", None)
        if num_classes is not None:
            out["num_classes"] = num_classes
    encoder = getattr(classifier, "encoder", None)
    if isinstance(encoder, nn.Module):
        out["encoder"] = describe_encoder(encoder)
    return _jsonable(out)


def describe_encoder(encoder: nn.Module) -> dict[str, Any]:
    """Provenance (architecture, method, source file, sha256), feature dim, input size, normalisation."""
    out: dict[str, Any] = {"type": type(encoder).__name__}
    provenance = getattr(encoder, "provenance", None)
    if provenance is not None and hasattr(provenance, "to_dict"):
        out["provenance"] = provenance.to_dict()
    for key in ("feature_dim", "input_size"):
        value = getattr(encoder, key, None)
        if value is not None:
            out[key] = value
    normalization = getattr(encoder, "normalization", None)
    if normalization is not None and hasattr(normalization, "to_dict"):
        out["normalization"] = normalization.to_dict()
    return _jsonable(out)


def _describe_callable(fn: Callable[..., Any]) -> dict[str, Any]:
    import functools

    if isinstance(fn, functools.partial):
        inner = _describe_callable(fn.func)
        inner["keywords"] = _jsonable(dict(fn.keywords))
        return inner
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return {"callable": f"{module}.{name}"}


# ------------------------------------------------------------------------------------------
# attack resolution
# ------------------------------------------------------------------------------------------


def _lookup(registry: Any, name: str, what: str) -> Callable[..., Any]:
    try:
        found = registry.get(name)
    except (KeyError, ConfigError):
        found = None
    if found is None:
        names = registry.names() if hasattr(registry, "names") else sorted(registry)
        raise ConfigError(f"unknown {what} {name!r}; allowed values: {', '.join(names)}")
    return found  # type: ignore[no-any-return]


def _resolve_whitebox(name: str, overrides: Mapping[str, WhiteboxAttackFn] | None) -> WhiteboxAttackFn:
    if overrides is not None and name in overrides:
        return overrides[name]
    try:
        from encshield.attacks import whitebox as wb
    except ImportError as error:
        raise ConfigError(
            f"white-box attack {name!r} needs encshield.attacks.whitebox, which cannot be imported: {error}"
        ) from None
    if name in ENCODER_ATTACK_NAMES:
        fn = getattr(wb, name, None)
        if fn is None:
            raise ConfigError(f"encshield.attacks.whitebox has no encoder attack {name!r}")
        return fn  # type: ignore[no-any-return]
    registry = getattr(wb, "WHITEBOX_ATTACKS", None)
    if registry is None:
        raise ConfigError(f"white-box attack {name!r}: encshield.attacks.whitebox has no WHITEBOX_ATTACKS")
    return _lookup(registry, name, "white-box attack")


def _attack_kwargs(spec: WhiteboxSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(spec.params)
    if spec.steps is not None:
        kwargs["steps"] = spec.steps
    return kwargs


def _validate_spec(fn: Callable[..., Any], spec: WhiteboxSpec) -> None:
    """Check a spec's keyword arguments before any (long) attack runs.

    Registered attacks validate through their ``config(**values)`` (pydantic: ConfigError naming
    the field); plain functions by their signature.
    """
    kwargs = _attack_kwargs(spec)
    config = getattr(fn, "config", None)
    if callable(config):
        config(eps=spec.eps, **kwargs)
        return
    import inspect

    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        allowed = sorted(k for k in parameters if k not in ("encoder", "model", "x", "y", "eps", "seed"))
        raise ConfigError(
            f"{spec.name}: unknown parameter(s) {unknown}; allowed: {', '.join(allowed)}"
        )


# ------------------------------------------------------------------------------------------
# evaluate_classifier
# ------------------------------------------------------------------------------------------


def _check_test_set(images: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ConfigError(f"test_images must be a tensor (N, C, H, W), got {getattr(images, 'shape', type(images))}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ConfigError(f"test_images must be uint8 (0..255) or float in [0, 1], got {images.dtype}")
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        raise ConfigError(
            f"test_labels must be int64 (N,) with N = {images.shape[0]} test images, got "
            f"{tuple(getattr(labels, 'shape', ()))}"
        )
    if images.shape[0] == 0:
        raise ConfigError("the test set is empty")


def _run_per_sample_attack(
    attack: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device | str,
) -> tuple[torch.Tensor, float]:
    """Adversarial predictions of ``classifier``: ``attack(x, y, batch_index) -> x_adv`` per batch.

    The attack runs with autograd enabled (outside inference mode); predictions on ``x_adv`` are
    made under ``torch.inference_mode``. Returns ``(pred (N,) int64 CPU, max |x_adv - x|)``.
    """
    preds: list[torch.Tensor] = []
    max_linf = 0.0
    for b, (x, y) in enumerate(_batches(images, labels, batch_size, device)):
        with torch.enable_grad():
            x_adv = attack(x, y, b)
        if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
            raise ConfigError(
                f"the attack returned {getattr(x_adv, 'shape', type(x_adv))}, expected a tensor "
                f"of shape {tuple(x.shape)}"
            )
        x_adv = x_adv.detach()
        with torch.inference_mode():
            max_linf = max(max_linf, float((x_adv - x).abs().max()))
            preds.append(classifier(x_adv).argmax(1).cpu())
    return torch.cat(preds).to(torch.int64), max_linf


def evaluate_classifier(
    classifier: nn.Module,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    perturbations: Mapping[str, PerturbationLike] | None = None,
    encoder_attacks: Mapping[str, EncoderAttackFn] | None = None,
    whitebox: Sequence[WhiteboxSpec | str] = (),
    batch_size: int = 256,
    clamp: bool = True,
    device: torch.device | str = "cpu",
    whitebox_limit: int | None = None,
    subset_mode: str = "stratified",
    subset_seed: int = 0,
    keep_per_sample: bool = True,
    context: Mapping[str, Any] | None = None,
    whitebox_attacks: Mapping[str, WhiteboxAttackFn] | None = None,
    log: Callable[[str], None] | None = None,
) -> EvaluationRecord:
    """Evaluate ``classifier`` on a test set under every given attack; one record.

    Rows, in this order (the row name is the key of ``record.metrics``):

    1. ``clean``: BA over all test samples (one batched pass under ``torch.inference_mode``).
    2. one per universal perturbation (``perturbations`` key): predictions on
       ``perturbation.apply(x, clamp=clamp)`` for all test samples. With ``clamp=False`` (the CGCL
       code's unclamped ``x + delta``) the encoder's [0, 1] input check is switched off for
       these rows.
    3. one per encoder attack (``encoder_attacks``: ``fn(classifier.encoder, x) -> x_adv``, e.g.
       a configured feature PGD) and per :class:`WhiteboxSpec` named in
       :data:`ENCODER_ATTACK_NAMES` (``feature_pgd(encoder, x, eps=, steps=, seed=)``): the
       adversarial examples are crafted on the encoder alone and classified by the classifier.
    4. one per other :class:`WhiteboxSpec` (``attack(classifier, x, y, eps=, seed=, steps=,
       **params)`` from :data:`encshield.attacks.whitebox.WHITEBOX_ATTACKS`): the white-box robust
       accuracy of the classifier itself.

    Rows 3-4 are per-sample gradient attacks (run with autograd, outside inference mode, batch
    ``b`` seeded with ``seed + b``); they use a fixed subset of ``spec.limit`` (or
    ``whitebox_limit``) test samples chosen by :func:`select_subset` with ``subset_mode`` and
    ``subset_seed``; their ``benign_accuracy`` is then measured on that subset. Every row's
    metrics come from :func:`encshield.evaluation.metrics.summarize` (per sample).

    Args:
        classifier: images float ``(n, C, H, W)`` in [0, 1] -> logits ``(n, num_classes)``; any
            module (no-defense model, defended model, ensemble). Put in eval mode for the
            evaluation (its mode is restored afterwards).
        test_images: uint8 ``(N, C, H, W)`` (0..255) or float in [0, 1].
        test_labels: int64 ``(N,)``.
        perturbations: row name -> universal perturbation (anything with ``apply(x, clamp)``).
        encoder_attacks: row name -> ``fn(encoder, x) -> x_adv`` (already configured).
        whitebox: :class:`WhiteboxSpec` s or spec strings (``"pgd:eps=8/255,steps=10"``).
        batch_size: images per forward pass / per attack batch.
        clamp: clamp ``x + delta`` to [0, 1] (default; ``False`` = CGCL compatibility).
        device: where the model and batches run.
        whitebox_limit: default number of test samples of rows 3-4 (``None`` = all).
        subset_mode, subset_seed: how limited rows choose their samples.
        keep_per_sample: store per-sample predictions in ``record.per_sample``.
        context: extra configuration merged into ``record.config`` (encoder file, dataset, head
            training record, defense ...).
        whitebox_attacks: name -> attack function, consulted before the registry (custom
            attacks; tests).
        log: called with one line per finished row (e.g. ``print``).
    Returns:
        an :class:`~encshield.evaluation.records.EvaluationRecord`.
    """
    _check_test_set(test_images, test_labels)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if subset_mode not in SUBSET_MODES:
        raise ConfigError(
            f"subset_mode {subset_mode!r} is not allowed; allowed values: {', '.join(SUBSET_MODES)}"
        )
    specs = [parse_whitebox(s) if isinstance(s, str) else s for s in whitebox]
    perturbations = dict(perturbations or {})
    encoder_attacks = dict(encoder_attacks or {})
    names = ["clean", *perturbations, *encoder_attacks, *(s.row_name for s in specs)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"attack row names must be unique; repeated: {duplicates}")
    # resolve every attack before the (possibly long) evaluation starts
    resolved = {spec.row_name: _resolve_whitebox(spec.name, whitebox_attacks) for spec in specs}
    for spec in specs:
        _validate_spec(resolved[spec.row_name], spec)
    encoder = getattr(classifier, "encoder", None)
    if (encoder_attacks or any(s.is_encoder_attack for s in specs)) and not isinstance(encoder, nn.Module):
        raise ConfigError(
            f"encoder-only attacks need classifier.encoder; {type(classifier).__name__} has none"
        )

    labels = test_labels.detach().cpu().to(torch.int64)
    n = int(labels.shape[0])
    emit = log or (lambda line: None)
    was_training = classifier.training
    classifier.eval()
    classifier.to(device)
    timings: dict[str, float] = {}
    metrics: dict[str, AttackMetrics] = {}
    per_sample = PerSampleRecord(labels=labels.tolist(), clean_pred=[]) if keep_per_sample else None
    started_all = time.perf_counter()
    try:
        started = time.perf_counter()
        clean_pred, _ = predict(classifier, test_images, batch_size=batch_size, device=device)
        timings["clean"] = time.perf_counter() - started
        clean_summary = summarize(clean_pred, clean_pred, labels)
        metrics["clean"] = AttackMetrics(kind="clean", num_samples=n,
                                         benign_accuracy=clean_summary["benign_accuracy"])
        if per_sample is not None:
            per_sample.clean_pred = clean_pred.tolist()
        emit(f"clean: BA {clean_summary['benign_accuracy']:.4f} on {n} samples ({timings['clean']:.1f} s)")

        def record_row(name: str, kind: str, adv_pred: torch.Tensor, idx: torch.Tensor | None,
                       max_linf: float, subset: dict[str, Any] | None, seconds: float) -> None:
            sub_clean = clean_pred if idx is None else clean_pred[idx]
            sub_labels = labels if idx is None else labels[idx]
            summary = summarize(sub_clean, adv_pred, sub_labels)
            metrics[name] = AttackMetrics.from_summary(kind, int(adv_pred.numel()), summary,
                                                       max_linf=max_linf, subset=subset)
            timings[name] = seconds
            if per_sample is not None:
                per_sample.adv_pred[name] = adv_pred.tolist()
                if idx is not None:
                    per_sample.indices[name] = idx.tolist()
            emit(f"{name}: RA {summary['robust_accuracy']:.4f}, fooling rate "
                 f"{summary['fooling_rate']:.4f} on {adv_pred.numel()} samples ({seconds:.1f} s)")

        # universal perturbations
        for name, perturbation in perturbations.items():
            started = time.perf_counter()

            def apply(x: torch.Tensor, p: PerturbationLike = perturbation) -> torch.Tensor:
                return p.apply(x, clamp=clamp)

            with _inputs_unchecked(classifier, enabled=not clamp):
                adv_pred, max_linf = predict(classifier, test_images, batch_size=batch_size,
                                             device=device, transform=apply)
            record_row(name, "universal", adv_pred, None, max_linf, None, time.perf_counter() - started)

        def subset_for(limit: int | None) -> tuple[torch.Tensor | None, dict[str, Any] | None]:
            idx = select_subset(labels, limit, seed=subset_seed, mode=subset_mode)
            if idx is None:
                return None, None
            return idx, _subset_info(labels, idx, int(limit or 0), subset_seed, subset_mode)

        # configured encoder attacks
        for name, fn in encoder_attacks.items():
            started = time.perf_counter()
            idx, subset = subset_for(whitebox_limit)
            images = test_images if idx is None else test_images[idx]
            sub_labels = labels if idx is None else labels[idx]
            adv_pred, max_linf = _run_per_sample_attack(
                lambda x, y, b, fn=fn: fn(encoder, x), classifier, images, sub_labels,  # type: ignore[misc]
                batch_size=batch_size, device=device,
            )
            record_row(name, "encoder", adv_pred, idx, max_linf, subset, time.perf_counter() - started)

        # white-box specs (encoder-only ones first, in the order given)
        for spec in sorted(specs, key=lambda s: not s.is_encoder_attack):
            started = time.perf_counter()
            limit = whitebox_limit if spec.limit is None else spec.limit
            idx, subset = subset_for(limit)
            images = test_images if idx is None else test_images[idx]
            sub_labels = labels if idx is None else labels[idx]
            fn = resolved[spec.row_name]
            kwargs = _attack_kwargs(spec)
            if spec.is_encoder_attack:
                def attack(x: torch.Tensor, y: torch.Tensor, b: int, fn: Any = fn, spec: WhiteboxSpec = spec,
                           kwargs: dict[str, Any] = kwargs) -> torch.Tensor:
                    return fn(encoder, x, eps=spec.eps, seed=spec.seed + b, **kwargs)
                kind = "encoder"
            else:
                def attack(x: torch.Tensor, y: torch.Tensor, b: int, fn: Any = fn, spec: WhiteboxSpec = spec,
                           kwargs: dict[str, Any] = kwargs) -> torch.Tensor:
                    return fn(classifier, x, y, eps=spec.eps, seed=spec.seed + b, **kwargs)
                kind = "whitebox"
            adv_pred, max_linf = _run_per_sample_attack(attack, classifier, images, sub_labels,
                                                        batch_size=batch_size, device=device)
            record_row(spec.row_name, kind, adv_pred, idx, max_linf, subset, time.perf_counter() - started)
    finally:
        classifier.train(was_training)

    # keep the rows in the documented order: clean, universal, encoder, white-box
    order = ["clean", *perturbations, *encoder_attacks,
             *(s.row_name for s in specs if s.is_encoder_attack),
             *(s.row_name for s in specs if not s.is_encoder_attack)]
    metrics = {name: metrics[name] for name in order}
    timings["evaluation_total"] = time.perf_counter() - started_all

    evaluation_config: dict[str, Any] = {
        "classifier": describe_classifier(classifier),
        "num_test": n,
        "test_image_size": list(test_images.shape[1:]),
        "batch_size": batch_size,
        "clamp": clamp,
        "perturbations": {name: describe_perturbation(p) for name, p in perturbations.items()},
        "encoder_attacks": {name: _describe_callable(fn) for name, fn in encoder_attacks.items()},
        "whitebox": [spec.to_dict() for spec in specs],
        "whitebox_limit": whitebox_limit,
        "subset_mode": subset_mode,
        "subset_seed": subset_seed,
        "metric_convention": "per-sample over each row's samples (not a mean of batch means)",
    }
    config: dict[str, Any] = _jsonable(dict(context or {}))
    config["evaluation"] = _jsonable(evaluation_config)
    return EvaluationRecord(
        config=config,
        config_hash=config_digest(config),
        versions=version_info(),
        machine=machine_info(device),
        wall_time_s={k: round(v, 4) for k, v in timings.items()},
        metrics=metrics,
        created=now_iso(),
        per_sample=per_sample,
    )


# ------------------------------------------------------------------------------------------
# the DAE protocol
# ------------------------------------------------------------------------------------------


def load_perturbations(
    files: Sequence[str | os.PathLike[str]],
    loader: Callable[[str], PerturbationLike] | None = None,
) -> tuple[dict[str, PerturbationLike], dict[str, dict[str, Any]]]:
    """Load perturbation files; row names are the file stems (made unique with ``#2``, ``#3``).

    Args:
        files: paths of files written by :meth:`encshield.attacks.Perturbation.save`.
        loader: ``path -> perturbation`` (default :meth:`encshield.attacks.Perturbation.load`).
    Returns:
        ``({name: perturbation}, {name: {"path", "sha256", ...description}})``.
    """
    from encshield.checkpoints import sha256_file

    if loader is None:
        try:
            from encshield.attacks.perturbation import Perturbation
        except ImportError as error:
            raise ConfigError(f"loading perturbation files needs encshield.attacks: {error}") from None
        loader = Perturbation.load
    loaded: dict[str, PerturbationLike] = {}
    described: dict[str, dict[str, Any]] = {}
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"perturbation file not found: {path}")
        name = path.stem
        k = 2
        while name in loaded:
            name, k = f"{path.stem}#{k}", k + 1
        perturbation = loader(str(path))
        loaded[name] = perturbation
        described[name] = {"path": str(path), "sha256": sha256_file(path), **describe_perturbation(perturbation)}
    return loaded, described


def _resolve_encoder(encoder: Any) -> tuple[nn.Module, dict[str, Any]]:
    """An encoder and its description from a path, ``zoo:NAME``, LoadedCheckpoint or Encoder."""
    from encshield.checkpoints import LoadedCheckpoint, load_encoder

    if isinstance(encoder, (str, os.PathLike)):
        text = str(encoder)
        if text.startswith("zoo:"):
            from encshield import zoo

            loaded = zoo.load(text[4:])
            info = {"zoo": text[4:]}
        else:
            loaded = load_encoder(text)
            info = {}
        encoder = loaded
    else:
        info = {}
    if isinstance(encoder, LoadedCheckpoint):
        info.update({"path": encoder.path, "sha256": encoder.sha256, "format": encoder.format,
                     **describe_encoder(encoder.encoder)})
        return encoder.encoder, info
    if isinstance(encoder, nn.Module):
        return encoder, describe_encoder(encoder)
    raise ConfigError(
        f"encoder must be a checkpoint path, 'zoo:NAME', a LoadedCheckpoint or an Encoder; "
        f"got {type(encoder).__name__}"
    )


def _limited(dataset: Any, limit: int | None, seed: int) -> tuple[Any, dict[str, Any], torch.Tensor | None]:
    idx = select_subset(dataset.labels, limit, seed=seed, mode="stratified")
    info: dict[str, Any] = {"split": dataset.split, "available": len(dataset), "used": len(dataset)}
    if idx is None:
        return dataset, info, None
    info["used"] = int(idx.numel())
    info["subset"] = _subset_info(dataset.labels, idx, int(limit or 0), seed, "stratified")
    return dataset.subset(idx), info, idx


def run_dae_protocol(
    encoder: str | os.PathLike[str] | Any,
    dataset: str,
    *,
    root: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    head: str = "mlp",
    head_epochs: int = 20,
    perturbation_files: Sequence[str | os.PathLike[str]] = (),
    whitebox: Sequence[WhiteboxSpec | str] = (),
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    clamp: bool = True,
    device: torch.device | str = "cpu",
    whitebox_limit: int | None = None,
    train_split: str = "train",
    test_split: str = "test",
    keep_per_sample: bool = True,
    perturbations: Mapping[str, PerturbationLike] | None = None,
    encoder_attacks: Mapping[str, EncoderAttackFn] | None = None,
    whitebox_attacks: Mapping[str, WhiteboxAttackFn] | None = None,
    build_classifier: ClassifierBuilder | None = None,
    log: Callable[[str], None] | None = None,
) -> EvaluationRecord:
    """The DAE experiment: victim encoder -> downstream model on ``dataset`` -> every attack.

    1. Load the encoder (a checkpoint path, ``"zoo:NAME"``, a
       :class:`~encshield.checkpoints.LoadedCheckpoint` or an :class:`~encshield.models.Encoder`).
    2. Load ``dataset``'s ``train_split`` and ``test_split`` at ``image_size`` (default: the
       encoder's nominal input size), optionally limited to seeded class-stratified subsets of
       ``limit_train`` / ``limit_test`` images (seed ``seed``).
    3. Build the downstream classifier: by default the no-defense model,
       :func:`encshield.downstream.train_head` (frozen encoder, ``head`` trained ``head_epochs``
       epochs, CGCL protocol, seed ``seed``); or ``build_classifier(encoder, train_set, seed) ->
       (classifier, description)`` for a defense.
    4. :func:`evaluate_classifier` on the test split with the perturbations loaded from
       ``perturbation_files`` (plus ``perturbations`` given as objects), the encoder attacks and
       the ``whitebox`` specs (limited to ``whitebox_limit`` samples unless a spec says
       otherwise), white-box subsets seeded with ``seed``.

    Returns:
        an :class:`~encshield.evaluation.records.EvaluationRecord` whose ``config`` holds the
        encoder (path, sha256, provenance), the dataset (name, splits, sizes, image size), the
        head and its training record, the perturbation files (sha256, metadata), the white-box
        specs, seeds and ``clamp``; ``wall_time_s`` adds ``load_encoder``, ``load_data``,
        ``train_head`` and ``total``.
    """
    from encshield import data

    emit = log or (lambda line: None)
    timings: dict[str, float] = {}
    started_all = time.perf_counter()

    started = time.perf_counter()
    victim, encoder_info = _resolve_encoder(encoder)
    victim.eval()
    timings["load_encoder"] = time.perf_counter() - started
    if image_size is None:
        size = getattr(victim, "input_size", None)
        image_size = int(size[-1]) if size is not None else None

    started = time.perf_counter()
    train_full = data.load(dataset, train_split, root=root, image_size=image_size)
    test_full = data.load(dataset, test_split, root=root, image_size=image_size)
    train_set, train_info, _ = _limited(train_full, limit_train, seed)
    test_set, test_info, test_idx = _limited(test_full, limit_test, seed)
    timings["load_data"] = time.perf_counter() - started
    emit(f"data: {dataset} {train_split} {len(train_set)} / {test_split} {len(test_set)} images "
         f"at {test_set.image_size[1]} px ({timings['load_data']:.1f} s)")

    started = time.perf_counter()
    if build_classifier is None:
        from encshield.downstream import train_head

        classifier, training = train_head(
            victim, train_set.images, train_set.labels, train_full.num_classes,  # type: ignore[arg-type]
            head=head, epochs=head_epochs, seed=seed, device=device,
        )
        head_info: dict[str, Any] = {"defense": "none", "name": head, "epochs": head_epochs,
                                     "training_record": asdict(training)}
    else:
        classifier, description = build_classifier(victim, train_set, seed)
        head_info = {"defense": "custom", **dict(description)}
    timings["train_head"] = time.perf_counter() - started
    emit(f"downstream model ready ({timings['train_head']:.1f} s)")

    started = time.perf_counter()
    loaded, perturbation_info = load_perturbations(perturbation_files)
    if perturbations:
        clashes = sorted(set(loaded) & set(perturbations))
        if clashes:
            raise ConfigError(f"perturbation names given twice: {clashes}")
        loaded.update(perturbations)
    timings["load_perturbations"] = time.perf_counter() - started

    context = {
        "protocol": "dae",
        "seed": seed,
        "encoder": encoder_info,
        "dataset": {
            "name": dataset,
            "root": None if root is None else str(root),
            "image_size": image_size,
            "num_classes": train_full.num_classes,
            "class_names": list(train_full.class_names),
            "train": train_info,
            "test": test_info,
        },
        "head": head_info,
        "perturbation_files": perturbation_info,
    }
    record = evaluate_classifier(
        classifier, test_set.images, test_set.labels,
        perturbations=loaded, encoder_attacks=encoder_attacks, whitebox=whitebox,
        batch_size=batch_size, clamp=clamp, device=device, whitebox_limit=whitebox_limit,
        subset_seed=seed, keep_per_sample=keep_per_sample, context=context,
        whitebox_attacks=whitebox_attacks, log=log,
    )
    if record.per_sample is not None and test_idx is not None:
        record.per_sample.test_indices = test_idx.tolist()
    stages = {k: round(v, 4) for k, v in timings.items()}
    record.wall_time_s = {**stages, **record.wall_time_s,
                          "total": round(time.perf_counter() - started_all, 4)}
    return record


def run_model_protocol(
    model: str | os.PathLike[str],
    dataset: str,
    *,
    root: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    perturbation_files: Sequence[str | os.PathLike[str]] = (),
    whitebox: Sequence[WhiteboxSpec | str] = (),
    limit_test: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    clamp: bool = True,
    device: torch.device | str = "cpu",
    whitebox_limit: int | None = None,
    test_split: str = "test",
    keep_per_sample: bool = True,
    log: Callable[[str], None] | None = None,
) -> EvaluationRecord:
    """:func:`run_dae_protocol` for an already defended classifier file (no head training).

    Loads ``model`` with :func:`encshield.defenses.load_classifier` (a file written by
    ``encshield defend`` / :func:`~encshield.defenses.save_classifier`), loads only
    ``dataset``'s ``test_split`` (default size: the classifier's encoder input size; optional
    seeded class-stratified ``limit_test`` subset) and runs :func:`evaluate_classifier` with
    the same perturbation / white-box options. ``record.config["model"]`` holds the file's path
    and sha256 and the defense record stored in it; ``record.config["head"]["defense"]`` is the
    stored defense's name.
    """
    from encshield import data
    from encshield.checkpoints import sha256_file
    from encshield.defenses.io import load_classifier

    emit = log or (lambda line: None)
    timings: dict[str, float] = {}
    started_all = time.perf_counter()

    started = time.perf_counter()
    path = Path(model)
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}")
    classifier, meta = load_classifier(path, device=device)
    stored = meta.get("record") or {}
    model_info = {"path": str(path), "sha256": sha256_file(path), "head": meta.get("head"),
                  "code_version": meta.get("code_version"), "record": stored}
    timings["load_model"] = time.perf_counter() - started
    if image_size is None:
        size = getattr(classifier.encoder, "input_size", None)
        image_size = int(size[-1]) if size is not None else None

    started = time.perf_counter()
    test_full = data.load(dataset, test_split, root=root, image_size=image_size)
    test_set, test_info, test_idx = _limited(test_full, limit_test, seed)
    timings["load_data"] = time.perf_counter() - started
    out_dim = (meta.get("head") or {}).get("out_dim")
    if out_dim is not None and int(out_dim) != test_full.num_classes:
        raise ConfigError(f"the model has {out_dim} outputs but {dataset} has "
                          f"{test_full.num_classes} classes; evaluate on its downstream dataset")
    emit(f"data: {dataset} {test_split} {len(test_set)} images at {test_set.image_size[1]} px "
         f"({timings['load_data']:.1f} s)")

    started = time.perf_counter()
    loaded, perturbation_info = load_perturbations(perturbation_files)
    timings["load_perturbations"] = time.perf_counter() - started

    context = {
        "protocol": "dae",
        "seed": seed,
        "encoder": describe_encoder(classifier.encoder),
        "model": model_info,
        "dataset": {
            "name": dataset,
            "root": None if root is None else str(root),
            "image_size": image_size,
            "num_classes": test_full.num_classes,
            "class_names": list(test_full.class_names),
            "test": test_info,
        },
        "head": {"defense": stored.get("name", "unknown"), "loaded_from": str(path),
                 **dict(meta.get("head") or {})},
        "perturbation_files": perturbation_info,
    }
    record = evaluate_classifier(
        classifier, test_set.images, test_set.labels,
        perturbations=loaded, whitebox=whitebox, batch_size=batch_size, clamp=clamp,
        device=device, whitebox_limit=whitebox_limit, subset_seed=seed,
        keep_per_sample=keep_per_sample, context=context, log=log,
    )
    if record.per_sample is not None and test_idx is not None:
        record.per_sample.test_indices = test_idx.tolist()
    stages = {k: round(v, 4) for k, v in timings.items()}
    record.wall_time_s = {**stages, **record.wall_time_s,
                          "total": round(time.perf_counter() - started_all, 4)}
    return record
