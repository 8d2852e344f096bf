"""Checks that run before a checkpoint's weights are trusted or a model is allocated for them.

* :func:`verify_zip_archive`: every member of a ``torch.save`` zip archive against its CRC-32
  (torch's own reader does not check them, so flipped bytes inside a tensor would load).
* :func:`check_finite`: refuse NaN/inf weights (one ``torch.isfinite(...).all()`` per tensor).
* :func:`validate_metadata`: types and ranges of the JSON metadata of encshield files, so that a
  bad field is named instead of failing deep inside model construction.
* :func:`meta_state_shapes` + :func:`check_state_shapes`: the state-dict shapes a model *would*
  have, built on the ``meta`` device (no memory), compared with a checkpoint's tensors before the
  real model is allocated; mismatches are reported on one line.

Every problem raises an :class:`encshield.errors.EncshieldError` with a one-line message naming
the file, the problem and the fix.
"""

from __future__ import annotations

import math
import numbers
import os
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encshield.errors import CheckpointError, CheckpointKeyError, ChecksumMismatchError
from encshield.models.normalization import NORMALIZATIONS
from encshield.models.resnet import ARCHITECTURES, MAX_WIDTH, STEMS

__all__ = [
    "MAX_DIM",
    "MAX_INPUT_SIZE",
    "MAX_LISTED_KEYS",
    "check_finite",
    "check_state_shapes",
    "list_keys",
    "meta_state_shapes",
    "validate_metadata",
    "verify_zip_archive",
]

#: how many keys an error message lists per category
MAX_LISTED_KEYS = 20
#: largest head dimension (features, hidden units, classes) accepted from metadata
MAX_DIM = 1 << 20
#: largest nominal input size (pixels or channels) accepted from metadata
MAX_INPUT_SIZE = 1 << 16
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


# ------------------------------------------------------------------------------------------
# shapes before allocation
# ------------------------------------------------------------------------------------------


def meta_state_shapes(build: Callable[[], nn.Module]) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of the module ``build()`` returns, built on the ``meta`` device.

    Nothing is allocated, so shapes can be compared with a checkpoint's tensors before the real
    module exists. ``build`` must not read tensor values (ResNets and linear/MLP heads do not).
    """
    with torch.device("meta"):
        module = build()
    return {name: tuple(value.shape) for name, value in module.state_dict().items()}


def list_keys(keys: Sequence[str]) -> str:
    """The first :data:`MAX_LISTED_KEYS` keys, comma-separated, with a count of the rest."""
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    if len(keys) > MAX_LISTED_KEYS:
        shown += f", ... ({len(keys) - MAX_LISTED_KEYS} more)"
    return shown


def check_state_shapes(
    expected: Mapping[str, tuple[int, ...]],
    state: Mapping[str, torch.Tensor],
    what: str,
    hint: str = "",
) -> list[str]:
    """Compare ``state``'s keys and shapes with a model's; returns keys to fill with defaults.

    Only ``*.num_batches_tracked`` may be absent (old torchvision files lack it).

    Raises:
        CheckpointKeyError: one line with the counts and the first keys of each category
            (unknown, missing, shape mismatches), then ``hint``.
    """
    unknown = sorted(k for k in state if k not in expected)
    missing = sorted(k for k in expected if k not in state)
    filled = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in filled]
    tail = f"; {hint}" if hint else ""
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} unknown key(s) (in the checkpoint, not in the model): "
                         f"{list_keys(unknown)}")
        if missing:
            parts.append(f"{len(missing)} missing key(s) (in the model, not in the checkpoint): "
                         f"{list_keys(missing)}")
        raise CheckpointKeyError(f"{what} does not fit the model: {'; '.join(parts)}{tail}")
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k])}"
        for k in sorted(state)
        if tuple(state[k].shape) != tuple(expected[k])
    ]
    if mismatched:
        raise CheckpointKeyError(
            f"{what} does not fit the model: {len(mismatched)} shape mismatch(es): "
            + ", ".join(mismatched[:MAX_LISTED_KEYS])
            + (f", ... ({len(mismatched) - MAX_LISTED_KEYS} more)"
               if len(mismatched) > MAX_LISTED_KEYS else "")
            + tail
        )
    return filled


# ------------------------------------------------------------------------------------------
# metadata
# ------------------------------------------------------------------------------------------

#: a checker returns ``None`` when the value is fine, else what was expected
Checker = Callable[[Any], "str | None"]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int_in(low: int, high: int) -> Checker:
    def check(value: Any) -> str | None:
        return None if _is_int(value) and low <= value <= high else \
            f"must be an integer in {low}..{high}"

    return check


def _opt_str(value: Any) -> str | None:
    return None if value is None or isinstance(value, str) else "must be a string or null"


def _name_in(registry: Any) -> Checker:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str) and value in registry:
            return None
        return f"must be one of {', '.join(registry.names())}"

    return check


def _numbers(value: Any, *, positive: bool) -> bool:
    return (
        isinstance(value, list)
        and 1 <= len(value) <= 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (v > 0 or not positive) for v in value)
    )


def _normalization(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _name_in(NORMALIZATIONS)(value)
    if not isinstance(value, dict):
        return "must be a preset name or an object with 'name', 'mean' and 'std'"
    if not isinstance(value.get("name", "custom"), str):
        return "must have a string 'name'"
    mean, std = value.get("mean"), value.get("std")
    if mean is None and std is None:  # a preset by name, or an identity
        return None
    valid = _numbers(mean, positive=False) and _numbers(std, positive=True)
    if not valid or not isinstance(mean, list) or not isinstance(std, list) or \
            len(mean) != len(std):
        return ("must hold 'mean' and 'std' as lists of 1-4 finite numbers of the same length "
                "(std > 0), or neither")
    return None


def _input_size(value: Any) -> str | None:
    if value is None:
        return None
    ok = _int_in(1, MAX_INPUT_SIZE)
    if isinstance(value, list) and len(value) in (2, 3) and not any(ok(v) for v in value):
        return None
    return f"must be a list [C, H, W] or [H, W] of integers in 1..{MAX_INPUT_SIZE}"


_PROVENANCE_STRINGS = ("arch", "stem", "ssl_method", "pretrain_data", "source_file",
                       "source_format", "sha256", "config_hash")


def _provenance(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        return "must be an object"
    for key in _PROVENANCE_STRINGS:
        if _opt_str(value.get(key)):
            return f"must have a string or null {key!r}"
    if value.get("width") is not None and not _is_int(value["width"]):
        return "must have an integer 'width'"
    if value.get("extra") is not None and not isinstance(value["extra"], dict):
        return "must have an object 'extra'"
    return None


def _optional(check: Checker) -> Checker:
    return lambda value: None if value is None else check(value)


def _object(fields: Mapping[str, Checker]) -> Checker:
    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return "must be an object"
        for key, sub in fields.items():
            problem = sub(value.get(key))
            if problem:
                return f"must have {key!r} that {problem.removeprefix('must ')}"
        return None

    return check


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _head(value: Any) -> str | None:
    dim = _int_in(1, MAX_DIM)
    if not isinstance(value, dict) or value.get("type") not in ("linear", "mlp_classifier"):
        return "must be an object whose 'type' is 'linear' or 'mlp_classifier'"
    if value["type"] == "linear":
        return _object({"in_dim": dim, "out_dim": dim, "bias": _bool})(value)

    def hidden(v: Any) -> str | None:
        return None if isinstance(v, list) and len(v) == 2 and not any(dim(h) for h in v) else \
            f"must be a list of two integers in 1..{MAX_DIM}"

    def dropout(v: Any) -> str | None:
        return None if isinstance(v, (int, float)) and not isinstance(v, bool) and \
            0 <= v < 1 else "must be a number in [0, 1)"

    return _object({"in_dim": dim, "out_dim": dim, "hidden_dims": hidden,
                     "dropout": dropout})(value)


_DIM = _int_in(1, MAX_DIM)
_COMMON: dict[str, Checker] = {
    "architecture": _name_in(ARCHITECTURES),
    "width": _optional(_int_in(1, MAX_WIDTH)),
    "stem": _name_in(STEMS),
    "feature_dim": _optional(_DIM),
    "normalization": _normalization,
    "input_size": _input_size,
    "provenance": _provenance,
    "code_version": _opt_str,
}
#: field -> checker, per ``kind``
SCHEMAS: dict[str, dict[str, Checker]] = {
    "encoder": {
        **_COMMON,
        "ssl_method": _opt_str,
        "pretrain_data": _opt_str,
        "config_hash": _opt_str,
        "surrogate_head": _optional(_object({"in_features": _DIM, "out_features": _DIM,
                                             "bias": _bool})),
    },
    "classifier": {
        **_COMMON,
        "head": _head,
        "record": lambda v: None if v is None or isinstance(v, dict) else "must be an object",
    },
}
#: fields that must be present (not null), per ``kind``
REQUIRED: dict[str, tuple[str, ...]] = {
    "encoder": (),
    "classifier": ("architecture", "width", "stem", "input_size", "head"),
}


def _shown(value: Any) -> str:
    text = repr(value)
    return (text[:60] + "...") if len(text) > 60 else text


def validate_metadata(
    meta: Mapping[str, Any], path: str | os.PathLike[str], *, kind: str
) -> None:
    """Check the types and ranges of an encshield file's metadata fields.

    Also checks that a recorded ``feature_dim`` matches the architecture and width, and that a
    normalisation's channel count matches a ``[C, H, W]`` input size.

    Args:
        meta: the parsed ``encshield`` JSON metadata.
        path: the file (named in messages).
        kind: ``"encoder"`` or ``"classifier"``.

    Raises:
        CheckpointError: one line naming the field, what it must be and what it is.
    """
    fix = "the metadata was edited or damaged: re-create the file with encshield"
    for field in REQUIRED[kind]:
        if meta.get(field) is None:
            raise CheckpointError(f"invalid metadata in {path}: field {field!r} is missing; {fix}")
    for field, check in SCHEMAS[kind].items():
        value = meta.get(field)
        problem = check(value)
        if problem:
            raise CheckpointError(
                f"invalid metadata in {path}: field {field!r} {problem}, got {_shown(value)} "
                f"({type(value).__name__}); {fix}"
            )
    arch, width, dim = meta.get("architecture"), meta.get("width"), meta.get("feature_dim")
    if arch is not None and width is not None and dim is not None:
        want = ARCHITECTURES.get(arch).feature_dim(int(width))
        if int(dim) != want:
            raise CheckpointError(
                f"invalid metadata in {path}: field 'feature_dim' is {dim}, but a {arch} of "
                f"width {width} has {want} features; {fix}"
            )
    norm, size = meta.get("normalization"), meta.get("input_size")
    if isinstance(norm, dict) and isinstance(norm.get("mean"), list) and \
            isinstance(size, list) and len(size) == 3 and len(norm["mean"]) != size[0]:
        raise CheckpointError(
            f"invalid metadata in {path}: field 'normalization' has {len(norm['mean'])} "
            f"channel(s) but 'input_size' {size} has {size[0]}; {fix}"
        )
