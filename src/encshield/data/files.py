"""Uniform access to dataset files in plain folders and in archives.

A *container* is a folder walked recursively, or a ``.tar`` / ``.tar.gz`` / ``.tgz`` /
``.tar.xz`` / ``.txz`` / ``.tar.bz2`` / ``.zip`` archive. Its *entries* are the regular files it
holds, named by posix paths relative to the container (member names for archives). Dataset formats
look for their marker files among the entries at any depth, so archives that wrap everything in a
top folder work the same as archives without one.

Reading compressed tars is always ONE sequential pass (random access into a ``.tar.xz`` is
quadratic): :func:`read_entries` collects every wanted member of an archive in that pass. The whole
stream is drained and integrity-checked (gzip CRC, xz/bz2 checks) before the data is trusted.

Archive listings (member names and sizes) are cached under ``paths.cache_dir()/listings`` keyed by
the archive's resolved path, size and mtime, so locating a dataset inside a ``.tar.xz`` costs a
decompression pass only the first time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import zipfile
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from encshield import paths
from encshield.data.bounded import (
    CORRUPTION_ERRORS,
    check_announced,
    corrupt_error,
    open_decompressed,
    read_capped,
)
from encshield.errors import DatasetError

#: Bump when the listing cache format changes.
LISTING_VERSION = 1

ContainerKind = Literal["dir", "tar", "zip"]
T = TypeVar("T")

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".tbz")
_ZIP_SUFFIXES = (".zip",)


def archive_kind(path: str | os.PathLike[str]) -> ContainerKind | None:
    """``"tar"`` or ``"zip"`` when the file name has an archive suffix, else ``None``."""
    name = os.fspath(path).lower()
    if name.endswith(_ZIP_SUFFIXES):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    return None


_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> list[object]:
    """Sort key ordering ``img2`` before ``img10`` (identical to plain order for zero-padded
    names)."""
    parts: list[object] = _DIGITS.split(text)
    parts[1::2] = map(int, parts[1::2])  # type: ignore[arg-type]
    return parts


_ZEROS = str.maketrans("0123456789", "0000000000")


def natural_sorted(items: Iterable[T], name: Callable[[T], str]) -> list[T]:
    """``items`` sorted by :func:`natural_key` of ``name(item)``.

    Fast path: when every name has the same shape (digits at the same positions, e.g. zero-padded
    ``0001.jpg``), plain string order already is the natural order.
    """
    items = list(items)
    names = [name(item) for item in items]
    if len({n.translate(_ZEROS) for n in names}) <= 1:
        order = sorted(range(len(items)), key=names.__getitem__)
    else:
        keys = [natural_key(n) for n in names]
        order = sorted(range(len(items)), key=keys.__getitem__)
    return [items[i] for i in order]


def normalise_member(name: str) -> str | None:
    """Posix member name without ``./`` or leading ``/``; ``None`` for names to ignore."""
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/")
    if not name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None  # hidden files, macOS resource forks
    return "/".join(parts)


def _ignored_file(name: str) -> bool:
    return name.endswith((".part", ".tmp"))


@dataclass(eq=False, slots=True)
class FileEntry:
    """One regular file of a container (hashed by identity: each listing creates its own).

    Attributes:
        container: the folder or archive holding the file.
        path: posix path relative to the container (the member name inside an archive).
        size: size in bytes (uncompressed size for archive members).
        mtime_ns: modification time of a plain file (0 for archive members).
    """

    container: Container
    path: str
    size: int
    mtime_ns: int = 0

    @property
    def name(self) -> str:
        """The file name (last path component)."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> str:
        """The folder part of :attr:`path` (``""`` at the top level)."""
        return self.path.rsplit("/", 1)[0] if "/" in self.path else ""

    @property
    def fs_path(self) -> Path | None:
        """The file's path on disk for plain files, ``None`` for archive members."""
        return self.container.path / self.path if self.container.kind == "dir" else None

    @property
    def display(self) -> str:
        """Human-readable location: a path, or ``member 'x' of archive /a/b.tar.xz``."""
        if self.container.kind == "dir":
            return str(self.container.path / self.path)
        return f"member {self.path!r} of archive {self.container.path}"

    def identity(self) -> tuple[str, int, int]:
        """(resolved path, size, mtime_ns) of the file on disk that holds this entry."""
        if self.container.kind == "dir":
            return (str(self.container.path / self.path), self.size, self.mtime_ns)
        return self.container.identity()


@dataclass(eq=False)
class Container:
    """A folder or an archive, with the list of regular files it holds.

    ``entries`` is ``None`` for an archive whose listing was not computed (cheap mode).
    """

    path: Path
    kind: ContainerKind
    size: int = 0
    mtime_ns: int = 0
    entries: list[FileEntry] | None = None
    claimed: bool = True
    _by_path: dict[str, FileEntry] | None = field(default=None, repr=False)
    memo: dict[str, object] = field(default_factory=dict, repr=False)
    #: Member bytes kept from the listing pass (see :func:`archive_container`), or ``None``.
    retained: dict[str, bytes] | None = field(default=None, repr=False)

    def release(self) -> None:
        """Drop the member bytes kept from the listing pass."""
        self.retained = None

    def identity(self) -> tuple[str, int, int]:
        return (str(self.path), self.size, self.mtime_ns)

    @property
    def listed(self) -> bool:
        return self.entries is not None

    def get(self, path: str) -> FileEntry | None:
        """The entry at ``path`` (exact posix path), or ``None``."""
        if self.entries is None:
            return None
        if self._by_path is None:
            self._by_path = {e.path: e for e in self.entries}
        return self._by_path.get(path)

    def describe(self) -> str:
        what = {"dir": "folder", "tar": "archive", "zip": "archive"}[self.kind]
        return f"{what} {self.path}"


# --------------------------------------------------------------------------------------------
# Folders


def walk_dir(
    root: Path, *, max_depth: int = 64, prune_top: Iterable[str] = ()
) -> list[tuple[str, int, int]]:
    """Regular files under ``root`` as ``(posix relative path, size, mtime_ns)``.

    Hidden files/folders are skipped; ``prune_top`` names (lower-case) of direct sub-folders are
    not descended into. Symlinks are followed (each real folder is visited once: no cycles).
    """
    pruned = {p.lower() for p in prune_top}
    out: list[tuple[str, int, int]] = []
    try:
        st_root = os.stat(root)
        visited = {(st_root.st_dev, st_root.st_ino)}
    except OSError:
        return out
    stack: list[tuple[Path, str, int]] = [(root, "", 1)]
    while stack:
        folder, rel, depth = stack.pop()
        try:
            with os.scandir(folder) as it:
                items = list(it)
        except OSError:
            continue
        for item in items:
            if item.name.startswith(".") or item.name == "__MACOSX":
                continue
            relpath = f"{rel}{item.name}"
            try:
                if item.is_dir():
                    if depth == 1 and item.name.lower() in pruned:
                        continue
                    if depth < max_depth:
                        st = item.stat()
                        if (st.st_dev, st.st_ino) not in visited:
                            visited.add((st.st_dev, st.st_ino))
                            stack.append((Path(item.path), relpath + "/", depth + 1))
                elif item.is_file():
                    if _ignored_file(item.name):
                        continue
                    st = item.stat()
                    out.append((relpath, st.st_size, st.st_mtime_ns))
            except OSError:
                continue
    out.sort(key=lambda t: t[0])
    return out


def dir_container(
    root: Path, *, max_depth: int = 64, prune_top: Iterable[str] = ()
) -> Container:
    """A folder container with all its files listed."""
    root = root.resolve()
    container = Container(path=root, kind="dir")
    container.entries = [
        FileEntry(container, rel, size, mtime)
        for rel, size, mtime in walk_dir(root, max_depth=max_depth, prune_top=prune_top)
    ]
    return container


def single_file_container(path: Path) -> Container:
    """A folder container holding exactly one file (``root`` given as a plain data file)."""
    path = path.resolve()
    container = Container(path=path.parent, kind="dir")
    st = path.stat()
    container.entries = [FileEntry(container, path.name, st.st_size, st.st_mtime_ns)]
    return container


# --------------------------------------------------------------------------------------------
# Archives


def iter_tar(
    path: Path, *, verify: bool = True
) -> Generator[tuple[tarfile.TarInfo, str, tarfile.TarFile], None, None]:
    """Yield ``(member, normalised name, tarfile)`` for each regular file, in archive order.

    One sequential pass; the caller may read the current member with ``tf.extractfile(member)``.
    With ``verify`` the rest of the compressed stream is read to its end after the last member so
    that checksums in the trailer (gzip CRC32, xz CRC64, bzip2 CRC) are checked. Errors are raised
    as they come from :mod:`tarfile` / the decompressors (the caller maps them), except a
    decompression bomb (:class:`~encshield.data.bounded.GuardedReader`): a DatasetCorruptError.
    """
    with open(path, "rb", buffering=1 << 20) as raw:
        stream = open_decompressed(raw, f"archive {path}", path=path)
        with tarfile.open(fileobj=stream, mode="r|") as tf:  # type: ignore[call-overload]
            for member in tf:
                stream.segment(f"member {member.name!r} of archive {path}")
                if not member.isfile():
                    continue
                name = normalise_member(member.name)
                if name is None or _ignored_file(name):
                    continue
                yield member, name, tf
        if verify:
            stream.segment(f"archive {path} (after its last member)")
            while stream.read(1 << 20):
                pass


def _listing_cache_path(container: Container) -> Path:
    key = hashlib.sha256(
        json.dumps([LISTING_VERSION, *container.identity()]).encode()
    ).hexdigest()[:32]
    return paths.cache_dir() / "listings" / f"{container.path.name}-{key}.json"


def _read_cached_listing(container: Container) -> list[tuple[str, int]] | None:
    path = _listing_cache_path(container)
    try:
        data = json.loads(path.read_text())
        if data.get("version") != LISTING_VERSION or data.get("archive") != str(container.path):
            return None
        names, sizes = data["names"], data["sizes"]
        if not isinstance(names, list) or len(names) != len(sizes):
            return None
        return list(zip(names, sizes))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_json_atomic(path: Path, obj: object) -> None:
    """Write JSON to ``path`` atomically (temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(obj)}.tmp")
    try:
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


#: At most this many bytes of members are kept in memory from a listing pass (``retain=True``).
RETAIN_LIMIT = 1 << 30


def _list_archive(container: Container, *, retain: bool = False) -> list[tuple[str, int]]:
    """List the members; with ``retain`` (tar only) also keep their bytes (up to
    :data:`RETAIN_LIMIT`) in ``container.retained`` so that a read right after the listing needs
    no second decompression pass."""
    path = container.path
    items: list[tuple[str, int]] = []
    kept: dict[str, bytes] | None = {} if retain and container.kind == "tar" else None
    total = 0
    try:
        if container.kind == "zip":
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    name = normalise_member(info.filename)
                    if name is not None and not _ignored_file(name):
                        check_announced(
                            f"member {info.filename!r} of archive {path}", info.file_size,
                            info.compress_size, path=path,
                        )
                        items.append((name, info.file_size))
        else:
            for member, name, tf in iter_tar(path, verify=True):
                items.append((name, member.size))
                if kept is not None:
                    total += member.size
                    if total > RETAIN_LIMIT:
                        kept = None
                        continue
                    fh = tf.extractfile(member)  # at most the size in the tar header
                    data = read_capped(fh, member.size) if fh is not None else b""
                    if len(data) != member.size:
                        raise corrupt_error(
                            f"archive {path}", f"member has {len(data)} of {member.size} bytes",
                            path=path, member=name,
                        )
                    kept[name] = data
    except PermissionError as error:
        raise DatasetError(f"cannot read archive {path}: permission denied ({error})") from None
    except CORRUPTION_ERRORS as error:
        raise corrupt_error(f"archive {path}", error, path=path) from None
    items.sort(key=lambda t: t[0])
    container.retained = kept
    return items


def archive_container(
    path: Path, *, listing: bool = True, claimed: bool = True, retain: bool = False
) -> Container:
    """An archive container; with ``listing`` its members are listed (cached, else one pass).

    Without ``listing`` only a cached listing is used (``entries`` stays ``None`` otherwise).
    With ``retain``, a listing pass also keeps the members' bytes (``container.retained``, up to
    :data:`RETAIN_LIMIT`): the first load of a ``.tar.xz`` then decompresses it once, not twice.
    Call ``container.release()`` when done.

    Raises:
        DatasetCorruptError: the archive cannot be listed (truncated, bad compressed data...).
    """
    path = path.resolve()
    kind = archive_kind(path)
    assert kind is not None, path
    st = path.stat()
    container = Container(
        path=path, kind=kind, size=st.st_size, mtime_ns=st.st_mtime_ns, claimed=claimed
    )
    items = _read_cached_listing(container)
    if items is None and listing:
        items = _list_archive(container, retain=retain)
        try:
            write_json_atomic(
                _listing_cache_path(container),
                {
                    "version": LISTING_VERSION,
                    "archive": str(path),
                    "names": [n for n, _ in items],
                    "sizes": [s for _, s in items],
                },
            )
        except OSError:
            pass  # a read-only cache only costs speed
    if items is not None:
        container.entries = [FileEntry(container, name, size) for name, size in items]
    return container
