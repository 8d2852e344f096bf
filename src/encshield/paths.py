"""Where encshield looks for data and keeps its caches.

* data root: ``--data-root`` / ``root=`` argument, else ``$ENCSHIELD_DATA``, else
  ``$XDG_DATA_HOME/encshield`` (default ``~/.local/share/encshield``).
* cache: ``$ENCSHIELD_CACHE``, else ``$XDG_CACHE_HOME/encshield`` (default ``~/.cache/encshield``).
"""

from __future__ import annotations

import os
from pathlib import Path


def default_data_root() -> Path:
    """The user's download directory for datasets (created on demand by downloads)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "encshield"


def data_roots(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Candidate data roots in priority order: explicit root, $ENCSHIELD_DATA, the user dir."""
    if root is not None:
        return [Path(root).expanduser()]
    roots: list[Path] = []
    env = os.environ.get("ENCSHIELD_DATA")
    if env:
        roots.append(Path(env).expanduser())
    roots.append(default_data_root())
    return roots


def cache_dir() -> Path:
    """The cache directory (decoded datasets etc.); created on demand."""
    env = os.environ.get("ENCSHIELD_CACHE")
    if env:
        path = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "encshield"
    path.mkdir(parents=True, exist_ok=True)
    return path
