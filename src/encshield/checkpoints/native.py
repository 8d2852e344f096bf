"""encshield's own checkpoint format: safetensors + one JSON metadata entry.

Layout of a file:

* tensors ``backbone.<torchvision name>`` (the encoder) and optionally
  ``surrogate_head.weight`` / ``surrogate_head.bias`` (a linear head that came with the weights,
  e.g. solo-learn's online classifier);
* safetensors metadata ``{"encshield": "<json>"}`` with :data:`FORMAT_VERSION`, ``kind``,
  architecture, width, stem, normalisation (preset name *and* values), input size, SSL method,
  pre-training data, training-config hash, code version, provenance and ``payload_sha256``: a
  sha256 over the tensors (names, dtypes, shapes and bytes in sorted-name order) that is
  verified on every load.

Files are written atomically (temporary file in the same folder, then ``os.replace``); an
output path that cannot be written (a folder, a file where a folder should be, a read-only
folder) is refused with one line before anything is written, and a failed write leaves nothing
behind (no temporary file, no folder it created).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from encshield.errors import CheckpointError, ChecksumMismatchError

__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "check_output_path",
    "payload_sha256",
    "read_native",
    "sha256_file",
    "write_native",
]

#: Version of the metadata schema written by this code.
FORMAT_VERSION = 1
#: The safetensors metadata key holding encshield's JSON.
METADATA_KEY = "encshield"


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (read in chunks)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(chunk_size):
                digest.update(chunk)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file not found: {path}") from None
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error}") from None
    return digest.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def payload_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over tensor names, dtypes, shapes and bytes, in sorted-name order.

    Independent of the container (safetensors header order, metadata), so it identifies the
    weights themselves.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        data = _tensor_bytes(tensor)
        header = json.dumps([name, str(tensor.dtype).replace("torch.", ""), list(tensor.shape)])
        digest.update(header.encode("utf-8"))
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`~pathlib.Path` after checking a file can be written there.

    Nothing is created. Missing parent folders are fine (:func:`write_native` creates them).

    Raises:
        CheckpointError: the path names a folder (exists as one, or ends with a separator), a
            parent is a file, or the nearest existing parent folder is not writable.
    """
    text = os.fspath(path)
    dst = Path(text)
    separators = tuple(sep for sep in (os.sep, os.altsep) if sep)
    if not text or text.endswith(separators) or dst.is_dir():
        raise CheckpointError(
            f"output path {text!r} is a folder; give a file name, e.g. "
            f"{str(Path(text or '.') / 'encoder.safetensors')!r}"
        )
    ancestor = dst.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CheckpointError(
            f"cannot write {dst}: {ancestor} is a file, not a folder; choose another output path"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CheckpointError(
            f"cannot write {dst}: folder {ancestor} is not writable; choose another output path "
            "or fix the folder's permissions"
        )
    return dst


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the ones this call made, deepest first."""
    missing: list[Path] = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    made: list[Path] = []
    for candidate in reversed(missing):
        try:
            candidate.mkdir()
        except FileExistsError:  # made meanwhile by another writer: not ours to remove
            continue
        made.append(candidate)
    return made[::-1]


def _discard(tmp: Path, created: list[Path]) -> None:
    """Remove a temporary file and the (still empty) folders a failed write created."""
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)
    for folder in created:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


def write_native(
    path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: dict[str, Any]
) -> str:
    """Write ``tensors`` with ``metadata`` (JSON under :data:`METADATA_KEY`) atomically.

    ``payload_sha256`` and ``format_version`` are added to the metadata. Returns the sha256 of the
    written file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    dst = check_output_path(path)
    # safetensors refuses shared or non-contiguous storage: give each tensor its own copy.
    payload = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    meta = dict(metadata)
    meta["format_version"] = FORMAT_VERSION
    meta["payload_sha256"] = payload_sha256(payload)
    try:
        text = json.dumps(meta, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint metadata for {dst} is not JSON-serialisable: {error}"
        ) from None
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.tmp")
    created: list[Path] = []
    try:
        created = _make_parents(dst.parent)
        save_file(payload, str(tmp), metadata={METADATA_KEY: text})
        os.replace(tmp, dst)
    except (OSError, SafetensorError) as error:
        _discard(tmp, created)
        detail = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        detail = " ".join(detail.split())  # one line, whatever the library said
        raise CheckpointError(f"cannot write {dst}: {detail}; choose another output path") from None
    except BaseException:
        _discard(tmp, created)
        raise
    return sha256_file(dst)


def read_native(
    path: str | os.PathLike[str], *, verify: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read a safetensors file: ``(tensors, encshield metadata or None)``.

    Args:
        path: the file.
        verify: check ``payload_sha256`` when the file has encshield metadata.

    Raises:
        ChecksumMismatchError: the tensors do not match the recorded payload sha256.
        CheckpointError: unreadable/corrupt file or invalid metadata (names the file).
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    try:
        with safe_open(str(p), framework="pt", device="cpu") as handle:
            raw_meta = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file not found: {p}") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"cannot read safetensors file {p} (truncated or corrupt?): {error}"
        ) from None
    text = raw_meta.get(METADATA_KEY)
    if text is None:
        return tensors, None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{p}: invalid encshield metadata JSON ({error})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{p}: encshield metadata must be a JSON object")
    if verify:
        expected = meta.get("payload_sha256")
        if not isinstance(expected, str):
            raise CheckpointError(f"{p}: encshield metadata lacks payload_sha256")
        actual = payload_sha256(tensors)
        if actual != expected:
            raise ChecksumMismatchError(
                f"tensor payload of {p} does not match its recorded sha256 (recorded {expected}, "
                f"computed {actual}): the file was modified or corrupted after it was written"
            )
    return tensors, meta
