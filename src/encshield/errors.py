"""Exception hierarchy.

Every error raised on bad user input derives from :class:`EncshieldError`; its message says what
was wrong and how to fix it. The CLI prints such errors without a traceback.
"""

from __future__ import annotations


class EncshieldError(Exception):
    """Base class of all errors caused by bad input, missing files or bad configuration."""


class ConfigError(EncshieldError, ValueError):
    """A configuration value is invalid (names the field, the value and the allowed values)."""


class ImageRangeError(EncshieldError, ValueError):
    """An image tensor is not float NCHW in [0, 1]."""


class DatasetError(EncshieldError):
    """Base class of dataset problems."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset's files are not where we looked (the message lists where and how to get them)."""


class DatasetCorruptError(DatasetError):
    """A dataset file is truncated, corrupt or inconsistent (names the file and the fix)."""


class ChecksumMismatchError(EncshieldError):
    """A file's sha256 differs from the expected value."""


class DownloadError(EncshieldError):
    """A download failed (network error or HTTP status)."""


class CheckpointError(EncshieldError):
    """A checkpoint cannot be read or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint would import or call code while loading; it was refused unexecuted."""


class CheckpointKeyError(CheckpointError):
    """A state dict has unknown or missing keys (the message lists them)."""
