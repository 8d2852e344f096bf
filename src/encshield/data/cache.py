"""The decoded-dataset cache: uint8 ``.npy`` files + a JSON sidecar per (dataset, split, size).

Layout under ``paths.cache_dir()/datasets/``::

    <name>-<split>-<key>.images.npy   uint8 (N, 3, H, W), memory-mappable
    <name>-<split>-<key>.labels.npy   int64 (N,)
    <name>-<split>-<key>.json         sidecar: shapes, dtypes, byte sizes, class names, provenance

``key`` hashes the identity of the source files (resolved path, size, mtime_ns), the format and
its version, the cache version and the requested image size. Files are written atomically (temp
file + rename) and the sidecar last, so a sidecar always describes complete files. An entry whose
files do not match the sidecar (shape, dtype, byte size) is ignored and rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encshield import paths

#: Bump to invalidate every cache entry.
CACHE_VERSION = 1


@dataclass
class CachedSplit:
    """A cache hit: ``images`` is a copy-on-write memory map (writable, nothing copied)."""

    images: np.ndarray
    labels: np.ndarray
    meta: dict[str, Any]


def cache_key(material: dict[str, Any]) -> str:
    """Stable hash of the key material (JSON, sorted keys)."""
    blob = json.dumps({"cache_version": CACHE_VERSION, **material}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _folder() -> Path:
    return paths.cache_dir() / "datasets"


def _stem(name: str, split: str, key: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{name}-{split}")
    return f"{safe}-{key}"


def entry_paths(name: str, split: str, key: str) -> tuple[Path, Path, Path]:
    """(images .npy, labels .npy, sidecar .json) paths of a cache entry."""
    stem = _stem(name, split, key)
    folder = _folder()
    return (
        folder / f"{stem}.images.npy",
        folder / f"{stem}.labels.npy",
        folder / f"{stem}.json",
    )


def _check_array(path: Path, spec: dict[str, Any], mmap: bool) -> np.ndarray | None:
    try:
        if path.stat().st_size != int(spec["bytes"]):
            return None
        array: np.ndarray = np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    if list(array.shape) != list(spec["shape"]) or str(array.dtype) != spec["dtype"]:
        return None
    if mmap and not array.flags.c_contiguous:
        return None
    return array


def read(name: str, split: str, key: str) -> CachedSplit | None:
    """The cached split for ``key`` if its files match the sidecar, else ``None``."""
    images_path, labels_path, sidecar_path = entry_paths(name, split, key)
    try:
        meta = json.loads(sidecar_path.read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(meta, dict) or meta.get("cache_version") != CACHE_VERSION
            or meta.get("key") != key):
        return None
    try:
        images = _check_array(images_path, meta["images"], mmap=True)
        labels = _check_array(labels_path, meta["labels"], mmap=False)
    except (KeyError, TypeError):
        return None
    if images is None or labels is None:
        return None
    if images.ndim != 4 or images.dtype != np.uint8 or labels.shape != (images.shape[0],):
        return None
    return CachedSplit(images, labels, meta)


def _save_atomic(path: Path, array: np.ndarray) -> int:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path.stat().st_size


def write(
    name: str, split: str, key: str, images: np.ndarray, labels: np.ndarray, meta: dict[str, Any]
) -> bool:
    """Store a split; returns False (and stores nothing) where the cache folder is not writable."""
    images_path, labels_path, sidecar_path = entry_paths(name, split, key)
    try:
        images_path.parent.mkdir(parents=True, exist_ok=True)
        if sidecar_path.exists():
            sidecar_path.unlink()  # never leave a sidecar describing files being replaced
        image_bytes = _save_atomic(images_path, images)
        label_bytes = _save_atomic(labels_path, labels.astype(np.int64, copy=False))
        sidecar = {
            **meta,
            "cache_version": CACHE_VERSION,
            "key": key,
            "name": name,
            "split": split,
            "images": {
                "file": images_path.name,
                "shape": list(images.shape),
                "dtype": str(images.dtype),
                "bytes": image_bytes,
            },
            "labels": {
                "file": labels_path.name,
                "shape": list(labels.shape),
                "dtype": "int64",
                "bytes": label_bytes,
            },
        }
        fd, tmp = tempfile.mkstemp(
            dir=sidecar_path.parent, prefix=f".{sidecar_path.name}.", suffix=".tmp"
        )
        with os.fdopen(fd, "w") as fh:
            json.dump(sidecar, fh, indent=1)
        os.replace(tmp, sidecar_path)
    except OSError:
        return False
    return True
