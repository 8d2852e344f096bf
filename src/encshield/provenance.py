"""Where a result came from and how it is written: versions, machine, time, JSON, atomic files.

Every record the project writes (evaluation, attack, defense, encoder evaluation, bench cells,
benchmark JSON) takes its ``versions``/``machine``/``created`` fields from here, converts its
values with :func:`to_jsonable` (strict JSON: no ``NaN``/``Infinity``) and is written with
:func:`atomic_write` (a temporary file in the target folder, fsynced, then renamed), so an
interrupted run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, is_dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

import encshield
from encshield.errors import ConfigError

__all__ = [
    "atomic_path",
    "atomic_write",
    "dumps_strict",
    "machine_info",
    "now_iso",
    "to_jsonable",
    "version_info",
    "write_json",
]


def version_info() -> dict[str, str]:
    """Versions of encshield, torch, python and numpy."""
    import numpy

    return {
        "encshield": encshield.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Platform, CPU, core/thread counts and the device (with its name for CUDA)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python_implementation": sys.implementation.name,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(dev)
    return info


def now_iso() -> str:
    """Current UTC time, ISO-8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON types.

    Tuples and sets -> lists (sets sorted), small tensors -> lists (larger ones -> a shape
    string), paths/devices/dtypes -> str, dataclasses and objects with ``to_dict`` -> dicts,
    numpy scalars -> Python numbers, non-finite floats -> ``None``, anything else -> its
    ``repr``. Dict keys become strings.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [to_jsonable(v) for v in items]
    if isinstance(value, torch.Tensor):
        if value.numel() <= 64:
            return to_jsonable(value.detach().cpu().tolist())
        return f"tensor{tuple(value.shape)}"
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    if isinstance(value, Fraction):
        return float(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        try:
            return to_jsonable(value.item())
        except (TypeError, ValueError):
            pass
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return to_jsonable(value.to_dict())
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if hasattr(value, "model_dump") and callable(value.model_dump):  # pydantic models
        return to_jsonable(value.model_dump(mode="json"))
    return repr(value)


def dumps_strict(value: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Strict JSON text of :func:`to_jsonable` ``(value)`` (never ``NaN``/``Infinity``)."""
    return json.dumps(to_jsonable(value), indent=indent, sort_keys=sort_keys, allow_nan=False)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsynced and renamed to ``path``.

    For writers that take a file name (``torch.save``, safetensors). The parent folder is
    created; on error the temporary file is removed and ``path`` is left as it was.

    Raises:
        ConfigError: ``path`` is a directory, or its folder cannot be created or written.
    """
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"output {target} is a directory; give a file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create the folder of {target}: {error.strerror or error}"
        ) from None
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except PermissionError as error:
        raise ConfigError(f"cannot write {target}: permission denied ({error.strerror})") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns the path."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def write_json(path: str | os.PathLike[str], value: Any, *, indent: int | None = 2) -> Path:
    """Write strict JSON (:func:`dumps_strict`) of ``value`` to ``path`` atomically."""
    return atomic_write(path, dumps_strict(value, indent=indent) + "\n")
