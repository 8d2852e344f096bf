"""Reading the bytes of dataset files, from folders and archives, within announced sizes.

:func:`read_entries` reads every wanted member of an archive in ONE sequential pass (see
:mod:`encshield.data.files`). A member is never read beyond the size its archive announces (tar
header, zip central directory), and compressed tar streams are read through
:class:`~encshield.data.bounded.GuardedReader`, so a decompression bomb fails early with one
:class:`~encshield.errors.DatasetCorruptError`. ``limit`` reads only the first bytes of each
entry (a header), which costs no more than those bytes for plain files and zip members.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from encshield.data.bounded import (
    CORRUPTION_ERRORS,
    check_announced,
    corrupt_error,
    read_capped,
)
from encshield.data.files import Container, FileEntry, iter_tar, normalise_member
from encshield.errors import DatasetError


@dataclass
class _Position:
    """The archive member being read (named in corruption errors), ``None`` between members."""

    member: str | None = None


class _ConsumerError(Exception):
    """Carries an exception raised by a consumer through the corruption handlers unchanged."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _consume(
    consumer: Callable[[FileEntry, bytes], None], entry: FileEntry, data: bytes
) -> None:
    """Call the consumer; its own non-dataset errors travel wrapped in :class:`_ConsumerError`."""
    try:
        consumer(entry, data)
    except DatasetError:
        raise
    except Exception as error:  # re-raised unchanged by the caller
        raise _ConsumerError(error) from error


@contextmanager
def _archive_errors(path: Path) -> Iterator[_Position]:
    """Read archive ``path`` inside: its errors become one dataset error naming it.

    Dataset errors and a consumer's own errors pass unchanged; a permission error becomes a
    :class:`~encshield.errors.DatasetError`, a corruption error (:data:`CORRUPTION_ERRORS`) a
    :class:`~encshield.errors.DatasetCorruptError` naming the member of the yielded position.
    """
    position = _Position()
    try:
        yield position
    except (DatasetError, _ConsumerError):
        raise
    except PermissionError as error:
        raise DatasetError(f"cannot read archive {path}: permission denied ({error})") from None
    except CORRUPTION_ERRORS as error:
        raise corrupt_error(f"archive {path}", error, path=path, member=position.member) from None


def read_entries(
    entries: Sequence[FileEntry],
    consumer: Callable[[FileEntry, bytes], None],
    *,
    verify: bool = True,
    limit: int | None = None,
) -> None:
    """Read the bytes of every entry and hand them to ``consumer(entry, data)``.

    Entries of one archive are read in a single sequential pass, in archive order (so the consumer
    must not rely on the order of ``entries``). Plain files are read in the given order. With
    ``verify=False`` a tar pass stops as soon as every wanted member was seen (used to peek at a
    header or a small text file); otherwise the whole compressed stream is checked. With
    ``limit`` the consumer gets only the first ``limit`` bytes of each entry.

    Raises:
        DatasetCorruptError: naming the archive (and member) or file that could not be read.
    """
    groups: dict[int, tuple[Container, list[FileEntry]]] = {}
    for entry in entries:
        groups.setdefault(id(entry.container), (entry.container, []))[1].append(entry)
    try:
        _read_groups(list(groups.values()), consumer, verify=verify, limit=limit)
    except _ConsumerError as wrapped:
        raise wrapped.error from None


def _read_groups(
    groups: list[tuple[Container, list[FileEntry]]],
    consumer: Callable[[FileEntry, bytes], None],
    *,
    verify: bool,
    limit: int | None,
) -> None:
    """Read each container's entries: plain files one by one, an archive in one pass."""
    for container, group in groups:
        if container.kind == "dir":
            for entry in group:
                path = container.path / entry.path
                try:
                    with open(path, "rb") as fh:
                        data = fh.read() if limit is None else fh.read(limit)
                except PermissionError as error:
                    raise DatasetError(f"cannot read {path}: permission denied ({error})") from None
                except OSError as error:
                    raise corrupt_error(f"file {path}", error, path=path) from None
                _consume(consumer, entry, data)
        elif container.kind == "zip":
            _read_zip(container, group, consumer, limit=limit)
        else:
            _read_tar(container, group, consumer, verify=verify, limit=limit)


def _read_zip(
    container: Container,
    group: list[FileEntry],
    consumer: Callable[[FileEntry, bytes], None],
    *,
    limit: int | None,
) -> None:
    """Read members of a zip, each refused first if its announced size is a bomb."""
    path = container.path
    with _archive_errors(path) as position, zipfile.ZipFile(path) as zf:
        names = {}
        for info in zf.infolist():
            norm = normalise_member(info.filename)
            if norm is not None:
                names[norm] = info
        for entry in group:
            position.member = entry.path
            found = names.get(entry.path)
            if found is None:
                raise corrupt_error(
                    f"archive {path}", "member missing (the archive changed?)",
                    path=path, member=entry.path,
                )
            check_announced(
                f"member {found.filename!r} of archive {path}", found.file_size,
                found.compress_size, path=path,
            )
            with zf.open(found) as fh:  # never more than the announced file_size
                data = fh.read() if limit is None else fh.read(limit)
            position.member = None
            _consume(consumer, entry, data)


def _read_tar(
    container: Container,
    group: list[FileEntry],
    consumer: Callable[[FileEntry, bytes], None],
    *,
    verify: bool,
    limit: int | None,
) -> None:
    """Read members of a tar in one guarded pass (or from the bytes kept by its listing)."""
    path = container.path
    wanted = {e.path: e for e in group}
    retained = container.retained
    if retained is not None and all(name in retained for name in wanted):
        for name, entry in wanted.items():  # bytes kept (and verified) by the listing pass
            data = retained[name]
            _consume(consumer, entry, data if limit is None else data[:limit])
        return
    seen: set[str] = set()
    with _archive_errors(path) as position:
        iterator = iter_tar(path, verify=verify)
        for member, name, tf in iterator:
            wanted_entry = wanted.get(name)
            if wanted_entry is None or name in seen:
                continue
            position.member = name
            fh = tf.extractfile(member)  # reads at most member.size (the tar header's size)
            size = member.size if limit is None else min(limit, member.size)
            data = read_capped(fh, size)[:size] if fh is not None else b""
            if len(data) != size:
                raise corrupt_error(
                    f"archive {path}", f"member has {len(data)} of {member.size} bytes",
                    path=path, member=name,
                )
            position.member = None
            seen.add(name)
            _consume(consumer, wanted_entry, data)
            if not verify and len(seen) == len(wanted):
                iterator.close()
                break
    missing = [n for n in wanted if n not in seen]
    if missing:
        raise corrupt_error(
            f"archive {path}",
            f"{len(missing)} member(s) listed earlier are missing, e.g. {missing[0]!r} "
            "(the archive changed while reading?)",
            path=path,
        )


def read_one(entry: FileEntry, *, verify: bool = False) -> bytes:
    """The bytes of a single entry (a partial pass for tar archives unless ``verify``)."""
    out: list[bytes] = []
    read_entries([entry], lambda _e, data: out.append(data), verify=verify)
    return out[0]


def read_head(entry: FileEntry, nbytes: int) -> bytes:
    """The first ``nbytes`` of an entry (gzip-decompressed if ``.gz``).

    Cheap for plain files and for members that are not gzip files (only the head is read, in a
    partial pass for tar archives); a ``.gz`` member is read whole (its compressed size).
    """
    gz = entry.path.lower().endswith(".gz")
    if entry.container.kind == "dir":
        path = entry.container.path / entry.path
        try:
            with open(path, "rb") as fh:
                if gz:
                    with gzip.GzipFile(fileobj=fh) as stream:
                        return stream.read(nbytes)
                return fh.read(nbytes)
        except CORRUPTION_ERRORS as error:
            raise corrupt_error(f"file {path}", error, path=path) from None
    if not gz:
        out: list[bytes] = []
        read_entries([entry], lambda _e, data: out.append(data), verify=False, limit=nbytes)
        return out[0]
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(read_one(entry))) as stream:
            return stream.read(nbytes)
    except CORRUPTION_ERRORS as error:
        raise corrupt_error(entry.display, error, path=entry.container.path) from None


def read_tail(entry: FileEntry, nbytes: int) -> bytes:
    """The last ``nbytes`` of an entry as stored (not decompressed); cheap for plain files, the
    whole member for archive members."""
    if entry.container.kind != "dir":
        return read_one(entry)[-nbytes:]
    path = entry.container.path / entry.path
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, io.SEEK_END) - nbytes))
            return fh.read(nbytes)
    except CORRUPTION_ERRORS as error:
        raise corrupt_error(f"file {path}", error, path=path) from None
