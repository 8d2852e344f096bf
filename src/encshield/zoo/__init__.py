"""The model zoo: victim encoders trained by the project's own recipes.

``manifest.json`` beside this file lists each encoder: its file (shipped in ``weights/`` inside
the package, at most 5 MB each) or a download URL, its sha256, architecture, SSL method,
pre-training data, measured kNN / linear-probe accuracy and the exact command that produced it.
:func:`get` verifies the sha256 before returning a path, so a corrupted or swapped file is never
used silently.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from encshield.errors import ChecksumMismatchError, ConfigError, EncshieldError

if TYPE_CHECKING:
    from encshield.checkpoints import LoadedCheckpoint

ZOO_DIR = Path(__file__).resolve().parent


class ZooEntry(BaseModel):
    """One encoder of the zoo."""

    model_config = ConfigDict(extra="forbid")

    name: str
    file: str | None = Field(None, description="path relative to the zoo folder (shipped)")
    url: str | None = Field(None, description="download URL (for encoders not shipped)")
    sha256: str
    size_bytes: int | None = None
    arch: str
    width: int
    stem: str
    normalization: str
    method: str
    pretrain_data: str
    image_size: int
    feature_dim: int
    metrics: dict[str, float] = Field(
        default_factory=dict, description="e.g. knn_top1_k200 on cifar10/test (fractions)"
    )
    evaluation: str = Field("", description="how the metrics were measured (command)")
    command: str = Field(..., description="the exact command that trained it")
    trained: str = Field("", description="date, machine and wall time of the training")
    notes: str = ""
    backdoor: dict[str, Any] | None = Field(
        None, description="backdoored encoders: the clean counterpart (zoo name), the targets "
        "(dataset, class) and their triggers; the file's metadata holds the same")


def _manifest_path(zoo_dir: Path | None = None) -> Path:
    return (zoo_dir or ZOO_DIR) / "manifest.json"


def entries(zoo_dir: Path | None = None) -> list[ZooEntry]:
    """All entries of the manifest, in file order."""
    path = _manifest_path(zoo_dir)
    if not path.exists():
        return []
    raw = json.loads(path.read_text(encoding="utf-8"))
    return [ZooEntry.model_validate(item) for item in raw.get("encoders", [])]


def entry(name: str, zoo_dir: Path | None = None) -> ZooEntry:
    """The entry called ``name``; ConfigError listing the names if there is none."""
    found = {item.name: item for item in entries(zoo_dir)}
    if name not in found:
        allowed = ", ".join(sorted(found)) or "(the zoo is empty)"
        raise ConfigError(f"unknown zoo encoder {name!r}; allowed values: {allowed}")
    return found[name]


def get(name: str, output: str | Path | None = None, *, zoo_dir: Path | None = None,
        progress: bool = True) -> Path:
    """Path of the verified checkpoint of zoo encoder ``name``.

    Shipped files are verified in place (or copied to ``output``); URL entries are downloaded
    into the user cache (or ``output``) and verified.

    Raises:
        ChecksumMismatchError: the file's sha256 differs from the manifest.
    """
    from encshield.checkpoints import sha256_file

    item = entry(name, zoo_dir)
    if item.file is not None:
        source = (zoo_dir or ZOO_DIR) / item.file
        if not source.is_file():
            raise EncshieldError(
                f"zoo file {source} of {name!r} is missing; reinstall encshield or restore it "
                "from git"
            )
        actual = sha256_file(source)
        if actual != item.sha256:
            raise ChecksumMismatchError(
                f"zoo file {source} has sha256 {actual}, the manifest expects {item.sha256}; "
                "the file is corrupt or was replaced: restore it from git"
            )
        if output is None:
            return source
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, output)
        return output
    if item.url is None:
        raise ConfigError(f"zoo entry {name!r} has neither file nor url")
    from encshield.data.base import Resource
    from encshield.data.download import fetch
    from encshield.paths import cache_dir

    destination = Path(output) if output else cache_dir() / "zoo" / f"{name}.safetensors"
    destination.parent.mkdir(parents=True, exist_ok=True)
    fetch(Resource(url=item.url, filename=destination.name, sha256=item.sha256,
                   size=item.size_bytes), destination, progress=progress)
    return destination


def load(name: str, *, zoo_dir: Path | None = None) -> LoadedCheckpoint:
    """Load zoo encoder ``name`` (verified) as a
    :class:`~encshield.checkpoints.LoadedCheckpoint`."""
    from encshield.checkpoints import load_encoder

    item = entry(name, zoo_dir)
    return load_encoder(get(name, zoo_dir=zoo_dir), expected_sha256=item.sha256)
