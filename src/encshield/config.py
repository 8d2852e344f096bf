"""Typed run configurations: YAML files validated by pydantic, with ``--set key=value`` overrides.

Errors name the field (dotted path), the bad value and the allowed values, e.g.::

    optimizer.name: 'adagrad' is not allowed; allowed values: 'sgd', 'lars', 'adam', 'adamw'
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
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
        message = item["msg"].removeprefix("Value error, ")
        ctx = item.get("ctx") or {}
        if item["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown field")
            continue
        if not loc:  # a check across fields: its message says what is wrong
            lines.append(message)
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


#: Deepest nesting of mappings and lists a config may have (real configs use under 10 levels).
MAX_DEPTH = 32


class _ConfigLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no types
    """PyYAML's safe loader without aliases (``*name``) and with a nesting limit.

    Aliases let a few hundred bytes expand into gigabytes (a "billion laughs" bomb) and deep
    nesting exhausts Python's recursion limit, so both are refused while composing, before any
    value is built. Anchors alone (``&name``) are harmless and left alone.
    """

    def __init__(self, stream: str) -> None:
        """A loader for one document ``stream``."""
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        """PyYAML's hook for every node: refuse aliases and nesting beyond :data:`MAX_DEPTH`."""
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*{event.anchor}) are not allowed in encshield "
                "configs; write the value out in full", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_DEPTH} levels is not allowed in "
                    "encshield configs", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _yaml_problem(error: Exception) -> str:
    """One line describing a YAML error (PyYAML's own messages span several lines)."""
    if isinstance(error, yaml.MarkedYAMLError):
        text = error.problem or error.context or "invalid YAML"
        mark = error.problem_mark or error.context_mark
        if mark is not None:
            text += f" (line {mark.line + 1}, column {mark.column + 1})"
    elif isinstance(error, RecursionError):
        text = "nesting too deep"
    elif isinstance(error, (ValueError, OverflowError)):
        text = "a number is too large or malformed"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def check_finite(value: Any, where: str = "") -> None:
    """Refuse ``nan`` / ``inf`` anywhere in a config value (a learning rate of ``.inf`` trains
    an all-NaN model; JSON records cannot hold such numbers).

    Raises:
        ConfigError: naming the dotted path of the first non-finite number.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where or 'value'}: {value!r} is not a finite number; use a finite "
                          "value (e.g. 0.1)")
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_finite(item, f"{where}[{i}]")


def load_yaml_text(text: str, source: str) -> Any:
    """Parse one YAML document the safe way: no code-running tags, no aliases, bounded nesting,
    finite numbers only.

    Args:
        text: the YAML text.
        source: what it is, for messages (``config file x.yaml``, ``--set lr=...``).
    Raises:
        ConfigError: one line naming ``source``, the problem and where it is.
    """
    loader = _ConfigLoader(text)
    try:
        loaded = loader.get_single_data()
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as error:
        problem = _yaml_problem(error)
        hint = ("" if "not allowed" in problem else
                "; YAML tags such as !!python/... are not allowed, write plain values"
                if "constructor for the tag" in problem else
                "; fix the YAML (quote strings with ':' or '#')")
        raise ConfigError(f"{source} is not valid YAML for encshield: {problem}{hint}") from None
    finally:
        loader.dispose()
    try:
        check_finite(loaded, "")
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    return loaded


def parse_value(text: str, source: str) -> Any:
    """One command-line value: safe YAML (:func:`load_yaml_text`), with scientific notation
    without a dot (``5e-3``, a string in YAML 1.1) read as the number it means."""
    value = load_yaml_text(text, source)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value  # "nan"/"inf" stay text
    return value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML (``3``, ``0.1``, ``[1,2]``).

    Raises:
        ConfigError: not ``KEY=VALUE``, a key through a non-section, or a value that is not
            safe YAML (see :func:`load_yaml_text`).
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optimizer.lr=0.1")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty key part; expected KEY=VALUE, e.g. "
                              "--set optimizer.lr=0.1")
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = parse_value(text, f"--set {key.strip()}={text!r}")
    return raw


def read_overrides(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The raw settings a user gave: a YAML file (optional), then every ``--set KEY=VALUE``
    (dotted keys for nested fields), with budgets such as ``8/255`` turned into floats."""
    raw = read_yaml(path) if path is not None else {}
    return parse_fractions(apply_overrides(raw, overrides))  # type: ignore[no-any-return]


def merge(base: dict[str, Any], update: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    """Merge ``update`` into ``base`` in place and return it; nested mappings merge key by key
    (``{"attack": {"eps": 0.01}}`` keeps the other attack fields of ``base``)."""
    items = update.model_dump() if isinstance(update, BaseModel) else update
    for key, value in items.items():
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def resolve(model: type[M], config: BaseModel | Mapping[str, Any] | None = None,
            **overrides: Any) -> M:
    """The one override merger: ``model``'s defaults, then ``config`` (a model or a mapping,
    merged key by key), then ``overrides``; validated (errors name the field and the value).

    Raises:
        ConfigError: ``config`` of the wrong type, or an invalid field.
    """
    if config is not None and not isinstance(config, (BaseModel, Mapping)):
        raise ConfigError(f"config must be a {model.__name__}, a mapping or None, got "
                          f"{type(config).__name__}")
    try:
        raw = model().model_dump()
    except ValidationError:  # a model with required fields: start from nothing
        raw = {}
    return validate(model, merge(merge(raw, config or {}), overrides))


def load_config(model: type[M], path: str | Path | None, overrides: Sequence[str] = ()) -> M:
    """Read a YAML file (optional), apply ``--set`` overrides, validate."""
    return validate(model, read_overrides(path, overrides))


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a YAML config file (``{}`` for an empty file), read as UTF-8 text with
    :func:`load_yaml_text` (no aliases, bounded nesting, finite numbers).

    Raises:
        ConfigError: the file is missing or unreadable, not UTF-8, not valid YAML, or not a
            mapping.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {path} {what}")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}); save it as UTF-8") from None
    loaded = load_yaml_text(text, f"config file {path}")
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
        num, den = value.replace(" ", "").split("/")
        try:
            result = float(num) / float(den)
        except ZeroDivisionError:
            raise ConfigError(f"{value!r}: division by zero") from None
        if not math.isfinite(result):
            raise ConfigError(f"{value[:40]!r}: the fraction is too large; use a number such as "
                              "8/255")
        return result
    return value


def split_spec(text: str, what: str, example: str) -> tuple[str, dict[str, str]]:
    """``NAME[:key=value,...]`` -> ``(NAME, {key: value})`` (stripped text; values unparsed).

    Raises:
        ConfigError: an empty name or an item that is not ``KEY=VALUE``, naming ``what`` and
            showing ``example``.
    """
    name, _, rest = str(text).strip().partition(":")
    if not name.strip():
        raise ConfigError(f"{what} {text!r}: expected {example}")
    values: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} {text!r}: {item!r} is not KEY=VALUE")
        values[key.strip()] = value.strip()
    return name.strip(), values
