"""A restricted unpickler for data pickles (CIFAR batches).

A pickle can name any importable callable and call it while loading (``os.system`` and friends).
Data files from the internet are untrusted, so this unpickler resolves only the few numpy globals
that rebuild an array (``_reconstruct``, ``ndarray``, ``dtype``, ``_frombuffer``) plus
``_codecs.encode`` (how protocol-2 pickles written by Python 3 store ``bytes``); every other global
is refused before anything is imported or called. Object arrays are refused too: a data pickle
only ever holds numbers, strings, lists and dicts.
"""

from __future__ import annotations

import codecs
import io
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (nothing was imported or called)."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"it refers to {module}.{name}, which a data file never needs")
        self.module = module
        self.name = name


def _numpy_core(submodule: str) -> Any:
    try:  # numpy >= 2 renamed numpy.core to numpy._core (the old name warns)
        return __import__(f"numpy._core.{submodule}", fromlist=["_"])
    except ImportError:  # pragma: no cover - numpy 1.x
        return __import__(f"numpy.core.{submodule}", fromlist=["_"])


def _safe_dtype(*args: Any, **kwargs: Any) -> np.dtype[Any]:
    dtype: np.dtype[Any] = np.dtype(*args, **kwargs)
    if dtype.hasobject:
        raise pickle.UnpicklingError("object arrays are not allowed in a data pickle")
    return dtype


def _allowed() -> dict[tuple[str, str], Callable[..., Any] | type]:
    multiarray = _numpy_core("multiarray")
    numeric = _numpy_core("numeric")
    table: dict[tuple[str, str], Callable[..., Any] | type] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for prefix in ("numpy.core", "numpy._core"):
        table[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the allow-listed numpy array globals."""

    _table: dict[tuple[str, str], Callable[..., Any] | type] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._table is None:
            RestrictedUnpickler._table = _allowed()
        obj = RestrictedUnpickler._table.get((module, name))
        if obj is None:
            raise UnsafePickleError(module, name)
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a data pickle")


def safe_loads(data: bytes, *, encoding: str = "latin1") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    ``encoding="latin1"`` reads Python 2 pickles (the official CIFAR files) including the raw
    bytes of numpy arrays.

    Raises:
        UnsafePickleError: the pickle names a global outside the allow-list.
        pickle.UnpicklingError, EOFError, ValueError, ...: the bytes are not a valid pickle.
    """
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
