"""Per-sample attack rows of an evaluation, as text specs: ``pgd:eps=8/255,steps=10``.

A :class:`WhiteboxSpec` names a registered per-sample attack, its budget, steps, sample limit,
seed and further keyword arguments. Three threat models (the row *kind* in every record):

* ``whitebox``: an attack of :data:`encshield.attacks.whitebox.WHITEBOX_ATTACKS` on the deployed
  classifier itself (adaptive: it sees everything the defense added).
* ``encoder_deployed``: an encoder attack of :data:`encshield.attacks.whitebox.ENCODER_ATTACKS`
  (e.g. ``feature_pgd``) on the deployed model's encoder -- for a fine-tuning defense the
  *fine-tuned* encoder, so an adaptive attack (``on=deployed``, the default).
* ``encoder_public``: the same attack crafted on the *public* pre-trained encoder and
  transferred to the deployed model (``on=public``): the downstream-agnostic threat model of the
  universal DAEs, and their per-sample upper bound.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from encshield.budgets import format_budget, parse_budget
from encshield.config import split_spec
from encshield.errors import ConfigError

__all__ = [
    "ROW_KINDS",
    "AttackFn",
    "WhiteboxSpec",
    "attack_kwargs",
    "parse_whitebox",
    "resolve_attack",
    "validate_spec",
]

#: Kinds of rows in an evaluation record, in table order.
ROW_KINDS = ("clean", "universal", "encoder_public", "encoder_deployed", "whitebox", "backdoor")

#: ``fn(model, x, y, *, eps, seed, **config) -> x_adv`` (white-box) or
#: ``fn(encoder, x, *, eps, seed, **config) -> x_adv`` (encoder attack).
AttackFn = Callable[..., Any]

_TARGETS = ("deployed", "public")

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
            ``apgd_ce``, ``apgd_dlr``, ``apgd_t``, ``fgsm`` ...), or of
            :data:`encshield.attacks.whitebox.ENCODER_ATTACKS` (``feature_pgd``).
        eps: budget (L-inf for most; L2 for ``pgd_l2``), e.g. ``8/255``.
        steps: iterations, passed as ``steps=`` when given.
        limit: number of test samples (a fixed, seeded subset); ``None`` -> the evaluation's
            ``whitebox_limit``; ``0`` -> the whole test set even when a default limit is set.
        seed: the attack's random seed (batch ``b`` uses ``seed + b``).
        params: further keyword arguments of the attack (``alpha``, ``restarts`` ...).
        label: row name in the table and the record; default :attr:`text`.
        on: encoder attacks only: ``deployed`` (the deployed model's encoder, adaptive) or
            ``public`` (the public pre-trained encoder, transferred).
    """

    name: str
    eps: float
    steps: int | None = None
    limit: int | None = None
    seed: int = 0
    params: Mapping[str, float | int | bool | str] = field(default_factory=dict)
    label: str | None = None
    on: Literal["deployed", "public"] = "deployed"

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
        if self.on not in _TARGETS:
            raise ConfigError(f"{self.name}: on={self.on!r} is not allowed; allowed values: "
                              f"{', '.join(_TARGETS)}")
        if self.on != "deployed" and not self.is_encoder_attack:
            raise ConfigError(f"{self.name}: on={self.on} applies to encoder attacks "
                              f"({', '.join(_encoder_attacks().names())}) only")

    @property
    def is_encoder_attack(self) -> bool:
        """True for encoder-only attacks (:data:`~encshield.attacks.whitebox.ENCODER_ATTACKS`)."""
        return self.name in _encoder_attacks()

    @property
    def kind(self) -> str:
        """The row kind: ``whitebox``, ``encoder_deployed`` or ``encoder_public``."""
        return f"encoder_{self.on}" if self.is_encoder_attack else "whitebox"

    @property
    def text(self) -> str:
        """Canonical spec text, e.g. ``pgd:eps=8/255,steps=10`` (parsed back by
        :func:`parse_whitebox` to an equal spec)."""
        parts = [f"eps={format_budget(self.eps)}"]
        if self.steps is not None:
            parts.append(f"steps={self.steps}")
        if self.limit is not None:
            parts.append(f"limit={self.limit}")
        if self.seed:
            parts.append(f"seed={self.seed}")
        if self.on != "deployed":
            parts.append(f"on={self.on}")
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
    ``label``, ``on`` (encoder attacks: ``deployed`` or ``public``); any other key is passed to the
    attack (numbers and ``a/b`` fractions are parsed, ``true``/``false`` become booleans).

    Raises:
        ConfigError: malformed text, missing ``eps``, bad values.
    """
    name, items = split_spec(text, "white-box spec", "NAME:eps=8/255,steps=10")
    values = {key.lower(): value for key, value in items.items()}
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
    on = values.pop("on", "deployed").lower()
    params = {key: _parse_value(key, value) for key, value in values.items()}
    return WhiteboxSpec(name=name, eps=eps, steps=steps, limit=limit, seed=seed or 0,
                        params=params, label=label, on=on)  # type: ignore[arg-type]


def _encoder_attacks() -> Any:
    from encshield.attacks.whitebox import ENCODER_ATTACKS

    return ENCODER_ATTACKS


def resolve_attack(name: str, overrides: Mapping[str, AttackFn] | None = None) -> AttackFn:
    """The attack function of a spec name: ``overrides[name]`` (custom attacks, tests), else the
    encoder-attack registry, else the white-box registry.

    Raises:
        ConfigError: unknown name (listing the registered ones).
    """
    if overrides is not None and name in overrides:
        return overrides[name]
    from encshield.attacks.whitebox import WHITEBOX_ATTACKS

    encoder_attacks = _encoder_attacks()
    if name in encoder_attacks:
        return encoder_attacks.get(name)  # type: ignore[no-any-return]
    if name not in WHITEBOX_ATTACKS:
        allowed = sorted({*WHITEBOX_ATTACKS.names(), *encoder_attacks.names()})
        raise ConfigError(
            f"unknown per-sample attack {name!r}; allowed values: {', '.join(allowed)}"
        )
    return WHITEBOX_ATTACKS.get(name)


def attack_kwargs(spec: WhiteboxSpec) -> dict[str, Any]:
    """The keyword arguments a spec passes to its attack besides ``eps`` and ``seed``."""
    kwargs: dict[str, Any] = dict(spec.params)
    if spec.steps is not None:
        kwargs["steps"] = spec.steps
    return kwargs


def validate_spec(fn: AttackFn, spec: WhiteboxSpec) -> None:
    """Check a spec's keyword arguments before any (long) attack runs.

    Registered attacks validate through their ``config(**values)`` (pydantic: ConfigError naming
    the field); plain functions by their signature.
    """
    kwargs = attack_kwargs(spec)
    config = getattr(fn, "config", None)
    if callable(config):
        config(eps=spec.eps, **kwargs)
        return
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(kwargs) - set(parameters))
    if unknown:
        allowed = sorted(
            k for k in parameters if k not in ("encoder", "model", "x", "y", "eps", "seed")
        )
        raise ConfigError(
            f"{spec.name}: unknown parameter(s) {unknown}; allowed: {', '.join(allowed)}"
        )
