"""Encoder checkpoints: encshield's safetensors format and safe importers of third-party files.

* :func:`load_encoder` -> :class:`LoadedCheckpoint` (encoder, optional surrogate head, format,
  sha256, metadata, skipped keys); :func:`inspect_checkpoint`; :func:`convert_checkpoint`;
  :func:`save_encoder`; :func:`sha256_file`.
* :data:`FORMATS`: ``encshield``, ``solo-learn``, ``badencoder``, ``torchvision``.
* Pickles are read only with ``torch.load(weights_only=True)``; metadata classes from a short
  allowlist become inert stubs; anything else is refused with
  :class:`encshield.errors.UnsafeCheckpointError` (see :mod:`encshield.checkpoints.safe_pickle`).
* Before weights are trusted (:mod:`encshield.checkpoints.validation`): zip archives are checked
  against their CRC-32s, NaN/inf weights are refused, encshield metadata is type- and
  range-checked, and keys and shapes are compared on the ``meta`` device before a model is
  allocated.
"""

from encshield.checkpoints.api import (
    LoadedCheckpoint,
    convert_checkpoint,
    infer_architecture,
    inspect_checkpoint,
    load_encoder,
    save_encoder,
)
from encshield.checkpoints.formats import (
    FORMATS,
    CheckpointFormat,
    ImportedWeights,
    detect_format,
)
from encshield.checkpoints.native import (
    FORMAT_VERSION,
    check_output_path,
    payload_sha256,
    read_native,
    sha256_file,
)
from encshield.checkpoints.safe_pickle import (
    METADATA_GLOBALS,
    safe_torch_load,
    scan_pickle_globals,
    to_plain,
)

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "METADATA_GLOBALS",
    "CheckpointFormat",
    "ImportedWeights",
    "LoadedCheckpoint",
    "check_output_path",
    "convert_checkpoint",
    "detect_format",
    "infer_architecture",
    "inspect_checkpoint",
    "load_encoder",
    "payload_sha256",
    "read_native",
    "safe_torch_load",
    "save_encoder",
    "scan_pickle_globals",
    "sha256_file",
    "to_plain",
]
