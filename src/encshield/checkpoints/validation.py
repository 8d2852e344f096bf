"""Checks that run before a checkpoint's weights are trusted.

* :func:`verify_zip_archive`: every member of a ``torch.save`` zip archive against its CRC-32
  (torch's own reader does not check them, so flipped bytes inside a tensor would load).
* :func:`check_finite`: refuse NaN/inf weights (one ``torch.isfinite(...).all()`` per tensor).

Every problem raises an :class:`encshield.errors.EncshieldError` with a one-line message naming
the file, the problem and the fix.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import torch

from encshield.errors import CheckpointError, ChecksumMismatchError

__all__ = ["check_finite", "verify_zip_archive"]

#: how many non-finite tensors an error message names
MAX_LISTED_TENSORS = 5


# ------------------------------------------------------------------------------------------
# zip integrity
# ------------------------------------------------------------------------------------------


def verify_zip_archive(path: Path, *, chunk_size: int = 1 << 20) -> None:
    """Read every member of the zip archive ``path`` through :mod:`zipfile`, checking its CRC-32.

    Raises:
        ChecksumMismatchError: a member's bytes do not match the CRC-32 recorded in the archive
            (the file was corrupted after it was written).
        CheckpointError: the archive itself is truncated or malformed.
    """
    current = "?"
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                current = info.filename
                with archive.open(info) as member:  # ZipExtFile checks the CRC at its end
                    while member.read(chunk_size):
                        pass
    except zipfile.BadZipFile as error:
        if "CRC" in str(error):
            raise ChecksumMismatchError(
                f"checkpoint {path} is corrupt: zip member {current!r} fails its CRC-32 "
                "check (its bytes changed after the file was written); nothing was loaded: "
                "download or copy the file again"
            ) from None
        raise CheckpointError(
            f"cannot read checkpoint {path} (truncated or corrupt zip archive?): "
            f"{' '.join(str(error).split())}"
        ) from None
    except (OSError, EOFError, zlib.error, NotImplementedError, ValueError) as error:
        raise CheckpointError(
            f"cannot read checkpoint {path} (truncated or corrupt zip archive?): "
            f"{type(error).__name__}: {' '.join(str(error).split())}"
        ) from None


# ------------------------------------------------------------------------------------------
# non-finite weights
# ------------------------------------------------------------------------------------------


def check_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse NaN or infinite values in any floating-point tensor of ``tensors``.

    One ``torch.isfinite(t).all()`` per tensor; values are counted only for offending tensors.

    Args:
        tensors: name -> tensor.
        what: how the tensors are described in the message (``checkpoint x.ckpt``...).

    Raises:
        CheckpointError: names the offending tensors and how many of their values are NaN/inf.
    """
    bad: list[tuple[str, int, int]] = []
    for name in sorted(tensors):
        tensor = tensors[name]
        if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.numel() == 0:
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad.append((name, int(finite.numel() - finite.sum()), tensor.numel()))
    if not bad:
        return
    shown = ", ".join(f"{name} ({count:,} of {total:,})" for name, count, total in
                      bad[:MAX_LISTED_TENSORS])
    if len(bad) > MAX_LISTED_TENSORS:
        shown += f", ... ({len(bad) - MAX_LISTED_TENSORS} more)"
    raise CheckpointError(
        f"{what} holds non-finite weights (NaN or inf) in {len(bad)} tensor(s): {shown}; the "
        "file is corrupt or its training diverged: use another checkpoint (e.g. an earlier epoch)"
    )
