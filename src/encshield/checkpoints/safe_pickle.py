"""Loading third-party pickled checkpoints without ever running their code.

A ``.ckpt`` / ``.pth`` / ``.pt`` file is a pickle; unpickling an untrusted pickle with the
standard ``pickle`` module can import any module and call any function (``os.system``...). A
backdoored encoder downloaded from the internet is exactly this field's threat model, so
encshield reads pickles **only** with ``torch.load(..., weights_only=True, map_location="cpu")``:
torch's restricted unpickler, which builds tensors, plain containers and primitive values and
refuses every other global.

Lightning / solo-learn checkpoints also carry harmless *metadata* objects in
``hyper_parameters`` (OmegaConf ``DictConfig``, ``argparse.Namespace``, ``pathlib`` paths...).
For a short explicit allowlist of such names (:data:`METADATA_GLOBALS`) we register **inert stub
classes** under those names via ``torch.serialization.safe_globals``: the unpickler then creates
a stub that merely records the pickled arguments/state. Nothing is imported from omegaconf,
argparse or pathlib, and no method of theirs runs. :func:`to_plain` turns stubs back into plain
dicts/lists/strings so string hyper-parameters can be read.

A file that needs any other global is refused with :class:`UnsafeCheckpointError` naming the file
and the global; nothing from the file was executed.
"""

from __future__ import annotations

import _compat_pickle
import os
import pickle
import pickletools
import re
import threading
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, ClassVar

import torch

from encshield.checkpoints.validation import verify_zip_archive
from encshield.errors import CheckpointError, UnsafeCheckpointError

__all__ = [
    "METADATA_GLOBALS",
    "InertStub",
    "safe_torch_load",
    "scan_pickle_globals",
    "sniff_container",
    "stub_class",
    "to_plain",
]

#: Metadata-only classes that may appear in third-party checkpoints (Lightning ``hyper_parameters``
#: and friends). Each is replaced by an inert :class:`InertStub` subclass while unpickling; none is
#: imported. ``builtins.*`` and ``typing.*`` entries are *type references* stored as values inside
#: OmegaConf metadata (``object_type=dict``, ``key_type=Any``); they become stubs too.
METADATA_GLOBALS: tuple[str, ...] = (
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.BytesNode",
    "omegaconf.nodes.PathNode",
    "omegaconf.nodes.EnumNode",
    "argparse.Namespace",
    "pathlib.Path",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath",
    "typing.Any",
    "typing.Dict",
    "typing.List",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.str",
    "builtins.int",
    "builtins.float",
    "builtins.bool",
    "builtins.object",
)


class InertStub:
    """Stand-in for an allowlisted metadata class: records what the pickle gave it, nothing else.

    ``stub_args`` holds the constructor arguments (``REDUCE`` / ``NEWOBJ``), ``stub_state`` the
    ``BUILD`` state. No method of the original class exists here, so nothing of it can run.
    """

    stub_name: ClassVar[str] = "?"
    stub_args: tuple[Any, ...]
    stub_state: Any

    def __new__(cls, *args: Any, **kwargs: Any) -> InertStub:
        obj = object.__new__(cls)
        object.__setattr__(obj, "stub_args", args)
        object.__setattr__(obj, "stub_state", None)
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # inert on purpose
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "stub_state", state)

    def __repr__(self) -> str:
        return f"<inert {self.stub_name}>"


_STUBS: dict[str, type[InertStub]] = {}
_STUB_LOCK = threading.Lock()
#: torch's allowlist is process-global; serialise loads so that one load's context exit cannot
#: remove the stubs while another load runs.
_LOAD_LOCK = threading.RLock()


def stub_class(full_name: str) -> type[InertStub]:
    """The (cached) inert stub class registered under ``full_name`` (``module.QualName``)."""
    with _STUB_LOCK:
        cls = _STUBS.get(full_name)
        if cls is None:
            short = full_name.rsplit(".", 1)[-1]
            cls = type(short, (InertStub,), {"stub_name": full_name, "__module__": __name__})
            _STUBS[full_name] = cls
        return cls


def _stub_pairs(
    names: Iterable[str],
) -> list[Callable[..., Any] | tuple[Callable[..., Any], str]]:
    return [(stub_class(name), name) for name in dict.fromkeys(names)]


# ------------------------------------------------------------------------------------------
# File signature
# ------------------------------------------------------------------------------------------


def sniff_container(path: str | os.PathLike[str]) -> str:
    """``"safetensors"``, ``"torch-zip"`` or ``"pickle"`` from the file's first bytes.

    Raises:
        CheckpointError: missing, empty or unrecognised file (names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint file not found: {p}")
    size = p.stat().st_size
    with open(p, "rb") as handle:
        head = handle.read(16)
    if not head:
        raise CheckpointError(f"checkpoint file {p} is empty")
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if len(head) >= 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 0 < header_len <= size - 8:
            return "safetensors"
    if head[0] == 0x80:  # pickle PROTO opcode: torch legacy format or a raw pickle
        return "pickle"
    raise CheckpointError(
        f"{p} is not a checkpoint encshield can read: its first bytes {head[:8]!r} are neither "
        "safetensors, a torch.save zip archive nor a pickle"
    )


# ------------------------------------------------------------------------------------------
# Static scan of the globals a pickle references (pure parsing, nothing is executed)
# ------------------------------------------------------------------------------------------

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
               "BINSTRING", "STRING"}


def _modern_name(module: str, name: str) -> str:
    """``module.name`` with Python 2 names mapped as the unpickler maps them."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _globals_in_pickle_bytes(data: bytes, *, all_pickles: bool) -> list[str]:
    """Globals named by GLOBAL / STACK_GLOBAL opcodes, in order (static parse)."""
    import io

    found: list[str] = []
    stream = io.BytesIO(data)
    while True:
        memo: dict[int, Any] = {}
        recent: list[Any] = []
        arg: Any  # its type depends on the opcode
        try:
            for opcode, arg, _pos in pickletools.genops(stream):
                name = opcode.name
                if name == "GLOBAL" and isinstance(arg, str):
                    module, _, qualname = arg.partition(" ")
                    found.append(_modern_name(module, qualname))
                elif name in _STRING_OPS:
                    recent.append(arg)
                elif name == "MEMOIZE" and recent:
                    memo[len(memo)] = recent[-1]
                elif name in ("BINPUT", "LONG_BINPUT", "PUT") and recent:
                    memo[int(arg)] = recent[-1]
                elif name in ("BINGET", "LONG_BINGET", "GET"):
                    recent.append(memo.get(int(arg)))
                elif name == "STACK_GLOBAL":
                    if len(recent) >= 2 and all(isinstance(v, str) for v in recent[-2:]):
                        found.append(_modern_name(recent[-2], recent[-1]))
                    else:
                        found.append("<unresolved STACK_GLOBAL>")
                elif name not in ("FRAME", "PROTO"):
                    recent.append(None)
                if len(recent) > 8:
                    del recent[:-8]
        except Exception:  # best effort: raw storage bytes follow legacy pickles
            break
        if not all_pickles or stream.tell() >= len(data):
            break
    return found


def scan_pickle_globals(path: str | os.PathLike[str]) -> list[str]:
    """All globals (``module.name``) the pickle(s) in ``path`` would look up, without loading.

    Works on torch zip archives (``*/data.pkl``), torch's legacy format and raw pickles. Best
    effort: used to *name* the offending global in error messages; torch's restricted unpickler
    is what enforces the policy.
    """
    p = Path(path)
    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as archive:
                members = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not members:
                    return []
                return _globals_in_pickle_bytes(archive.read(members[0]), all_pickles=False)
        return _globals_in_pickle_bytes(p.read_bytes(), all_pickles=True)
    except (OSError, zipfile.BadZipFile):
        return []


def _torch_default_allowed() -> set[str]:
    try:
        from torch import _weights_only_unpickler

        return set(_weights_only_unpickler._get_allowed_globals())
    except Exception:  # private API; only used to name the culprit
        return set()


def _offending_globals(path: Path, message: str, allowed_metadata: Iterable[str]) -> list[str]:
    """Globals of ``path`` outside the allowlists (from torch's message, else a static scan)."""
    named = re.findall(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", message)
    if named:
        # torch prints builtins without their module ("exec"): restore the full name
        return list(dict.fromkeys(n if "." in n else f"builtins.{n}" for n in named))
    allowed = _torch_default_allowed() | set(allowed_metadata)
    scanned = [g for g in scan_pickle_globals(path) if g not in allowed]
    if not scanned:
        match = re.search(r"unrecognized function (.+?)(?:$| which)", message, re.MULTILINE)
        if match:
            return [match.group(1).strip()]
    return list(dict.fromkeys(scanned))


# ------------------------------------------------------------------------------------------
# The loader
# ------------------------------------------------------------------------------------------


def safe_torch_load(
    path: str | os.PathLike[str], *, extra_metadata_globals: Iterable[str] = ()
) -> Any:
    """``torch.load(path, weights_only=True, map_location="cpu")`` with inert metadata stubs.

    Args:
        path: a ``torch.save`` file (zip or legacy) or a raw pickle.
        extra_metadata_globals: further ``module.QualName`` names to replace by inert stubs
            (never imported); use for harmless metadata classes outside :data:`METADATA_GLOBALS`.

    Returns:
        the unpickled object (tensors on CPU; allowlisted metadata as :class:`InertStub`).

    Raises:
        UnsafeCheckpointError: the pickle would import/call a global outside the allowlists
            (names the file and the global; nothing was executed).
        ChecksumMismatchError: a member of a zip archive fails its CRC-32 check (torch's reader
            does not check them; flipped bytes inside a tensor would otherwise load).
        CheckpointError: truncated, corrupt or otherwise unreadable file (names the file).
    """
    p = Path(path)
    # existence / emptiness / signature with a clear message
    if sniff_container(p) == "torch-zip":
        verify_zip_archive(p)
    names = (*METADATA_GLOBALS, *extra_metadata_globals)
    pairs = _stub_pairs(names)
    try:
        with _LOAD_LOCK, torch.serialization.safe_globals(pairs), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*pickle protocol.*")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        offending = _offending_globals(p, message, names)
        if offending:
            shown = ", ".join(offending[:5]) + (" ..." if len(offending) > 5 else "")
            raise UnsafeCheckpointError(
                f"refused to load {p}: unpickling it would import or call {shown}, which is "
                "not a tensor/container type nor on encshield's allowlist of metadata classes. "
                "Nothing from the file was executed. If you trust the file, re-save its weights "
                "as a plain state dict (or safetensors) in a trusted environment."
            ) from None
        detail = _last_line(message)
        raise CheckpointError(
            f"cannot read {p} with the safe (weights-only) loader: {detail}. The file may be "
            "truncated, corrupt, or use a pickle feature torch's safe loader does not support."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError,
            AttributeError, TypeError, IndexError) as error:
        raise CheckpointError(
            f"cannot read checkpoint {p} (truncated or corrupt?): "
            f"{type(error).__name__}: {_last_line(str(error))}"
        ) from None


def _last_line(message: str) -> str:
    """The last informative line of a (torch) error message, without documentation pointers."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    informative = [ln for ln in lines if "documentation" not in ln.lower() and "docs" not in ln]
    text = (informative or lines or [message])[-1]
    return text[:300]


# ------------------------------------------------------------------------------------------
# Stubs -> plain Python
# ------------------------------------------------------------------------------------------


def to_plain(obj: Any, *, _depth: int = 0) -> Any:
    """Convert unpickled metadata to plain dicts/lists/strings/numbers.

    OmegaConf ``DictConfig``/``ListConfig`` stubs become dicts/lists of their node values,
    ``Namespace`` stubs dicts, path stubs strings, type references their dotted name, tensors a
    short ``"<tensor (shape) dtype>"`` string. Unknown stubs become ``"<name>"`` strings.
    """
    if _depth > 50:
        return "<too deep>"
    nxt = _depth + 1
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, torch.Tensor):
        if obj.numel() == 1:
            return obj.item()
        return f"<tensor {tuple(obj.shape)} {str(obj.dtype).replace('torch.', '')}>"
    if isinstance(obj, dict):
        return {str(to_plain(k, _depth=nxt)): to_plain(v, _depth=nxt) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_plain(v, _depth=nxt) for v in obj]
    if isinstance(obj, type) and issubclass(obj, InertStub):
        return obj.stub_name
    if isinstance(obj, InertStub):
        name = obj.stub_name
        state = obj.stub_state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]
        if name.startswith("omegaconf.") and isinstance(state, dict):
            if "_content" in state:
                return to_plain(state["_content"], _depth=nxt)
            if "_val" in state:
                return to_plain(state["_val"], _depth=nxt)
        if name == "argparse.Namespace" and isinstance(state, dict):
            return to_plain(state, _depth=nxt)
        if name.startswith("pathlib."):
            parts = [a for a in obj.stub_args if isinstance(a, str)]
            if not parts:
                return f"<{name}>"
            pure = PureWindowsPath if "Windows" in name else PurePosixPath
            return str(pure(*parts))
        if state is not None:
            return to_plain(state, _depth=nxt)
        return f"<{name}>"
    return f"<{type(obj).__name__}>"
