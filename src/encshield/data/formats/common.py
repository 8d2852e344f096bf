"""Helpers shared by the format readers."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from encshield.data.base import Layout
from encshield.data.files import Container, FileEntry, natural_sorted
from encshield.data.imaging import ImageCollector, Size, peek_size, stack_images
from encshield.data.reading import read_entries, read_one
from encshield.errors import DatasetCorruptError


def entries_of(container: Container) -> list[FileEntry]:
    return container.entries or []


def by_parent(
    container: Container, keep: Callable[[FileEntry], bool], memo_key: str
) -> dict[str, dict[str, FileEntry]]:
    """``{parent folder: {file name: entry}}`` for the entries ``keep`` accepts (memoised)."""
    cached = container.memo.get(memo_key)
    if cached is not None:
        return cached  # type: ignore[return-value]
    groups: dict[str, dict[str, FileEntry]] = {}
    for entry in entries_of(container):
        if keep(entry):
            groups.setdefault(entry.parent, {})[entry.name] = entry
    container.memo[memo_key] = groups
    return groups


def sorted_dirs(dirs: Iterable[str]) -> list[str]:
    """Folders ordered shallowest first, then by name."""
    return sorted(dirs, key=lambda d: (d.count("/") + (1 if d else 0), d))


def join(prefix: str, *parts: str) -> str:
    return "/".join(p for p in (prefix.rstrip("/"), *parts) if p)


def decode_entries(
    entries: Sequence[FileEntry], *, size: Size | None, default_size: Size | None, what: str
) -> tuple[np.ndarray, bool]:
    """Decode image entries (one pass per archive) and stack them in the order of ``entries``."""
    index = {entry: i for i, entry in enumerate(entries)}
    collector = ImageCollector(len(entries))
    try:
        read_entries(entries, lambda e, data: collector.add(index[e], data, e.display))
        arrays = collector.finish()
    finally:
        collector.close()
    return stack_images(arrays, size=size, default_size=default_size, what=what)


def read_images_and_files(
    images: Sequence[FileEntry], others: Sequence[FileEntry]
) -> tuple[list[np.ndarray], dict[FileEntry, bytes]]:
    """Decode ``images`` and read the bytes of ``others`` (annotations) in the same pass(es).

    Returns the decoded ``(3, H, W)`` arrays in the order of ``images`` and the other files' bytes.
    """
    index = {entry: i for i, entry in enumerate(images)}
    blobs: dict[FileEntry, bytes] = {}

    def consume(entry: FileEntry, data: bytes) -> None:
        i = index.get(entry)
        if i is None:
            blobs[entry] = data
        else:
            collector.add(i, data, entry.display)

    collector = ImageCollector(len(images))
    try:
        read_entries([*images, *others], consume)
        arrays = collector.finish()
    finally:
        collector.close()
    return arrays, blobs


def peek_image_size(layout: Layout, entry: FileEntry) -> tuple[int, int, int]:
    """``(3, H, W)`` of one image entry, read from its header (memoised on the layout)."""
    key = f"peek:{id(entry.container)}:{entry.path}"
    if key not in layout.shared:
        h, w = peek_size(read_one(entry), entry.display)
        layout.shared[key] = (3, h, w)
    return layout.shared[key]  # type: ignore[no-any-return]


def parse_csv(
    data: bytes, what: str, *, delimiter: str = ";", required: Sequence[str]
) -> list[dict[str, str]]:
    """Rows of a delimited text file with a header; raises DatasetCorruptError naming ``what``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin1")
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DatasetCorruptError(
            f"{what} is empty; delete it and extract/download it again"
        ) from None
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetCorruptError(
            f"{what} has no column(s) {', '.join(missing)} (header: {';'.join(header)}); it is "
            "damaged or not the expected file: delete it and extract/download it again"
        )
    rows = []
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < len(header):
            raise DatasetCorruptError(f"{what} has a short row {row!r}; the file is truncated")
        rows.append({h: c.strip() for h, c in zip(header, row)})
    return rows


def parse_int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetCorruptError(f"{what}: {value!r} is not an integer") from None


def sort_entries(entries: Iterable[FileEntry]) -> list[FileEntry]:
    """Entries in natural order of their file names."""
    return natural_sorted(entries, lambda e: e.name)
