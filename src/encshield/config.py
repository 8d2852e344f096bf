"""Typed run configurations: YAML files validated by pydantic, with ``--set key=value`` overrides.

Errors name the field (dotted path), the bad value and the allowed values, e.g.::

    optimizer.name: 'adagrad' is not allowed; allowed values: 'sgd', 'lars', 'adam', 'adamw'
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from encshield.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def _format_error(error: ValidationError, raw: dict[str, Any]) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"])
        value = item.get("input")
        message = item["msg"]
        ctx = item.get("ctx") or {}
        if item["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown field")
            continue
        if "expected" in ctx:
            message = f"{value!r} is not allowed; allowed values: {ctx['expected']}"
        elif item["type"] != "missing":
            message = f"{message} (got {value!r})"
        lines.append(f"{loc}: {message}")
    return "invalid configuration: " + "; ".join(lines)


def validate(model: type[M], raw: dict[str, Any]) -> M:
    """Validate ``raw`` against ``model``; raise :class:`ConfigError` with readable messages."""
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_error(error, raw)) from None


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML (``3``, ``0.1``, ``[1,2]``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optimizer.lr=0.1")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(text)
    return raw


def load_config(model: type[M], path: str | Path | None, overrides: Sequence[str] = ()) -> M:
    """Read a YAML file (optional), apply overrides, validate."""
    raw = read_yaml(path) if path is not None else {}
    return validate(model, apply_overrides(raw, overrides))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (``{}`` for an empty file).

    Raises:
        ConfigError: the file is missing, not valid YAML, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(loaded).__name__}")
    return loaded or {}


def config_hash(config: BaseModel) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of a config."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_FRACTION = re.compile(r"^\s*[+-]?\d+(\.\d*)?\s*/\s*\d+(\.\d*)?\s*$")


def parse_fractions(value: Any) -> Any:
    """Recursively replace strings such as ``"8/255"`` by their float value."""
    if isinstance(value, dict):
        return {k: parse_fractions(v) for k, v in value.items()}
    if isinstance(value, list):
        return [parse_fractions(v) for v in value]
    if isinstance(value, str) and _FRACTION.match(value):
        try:
            return float(Fraction(value.replace(" ", "")))
        except ZeroDivisionError:
            raise ConfigError(f"{value!r}: division by zero") from None
    return value
