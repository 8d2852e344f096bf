"""Decompression with bounds: no dataset file may expand beyond what it announces.

Compressed data is only ever decompressed in chunks, up to a limit that the format announces
before any data is read: the dims in an IDX header, the member size in a tar header, ``file_size``
in a zip central directory, the shape of a ``.mat`` variable, the pixel count in an image header.
A stream that is longer or shorter than announced is refused.

An announcement can itself be the bomb (a 1 MB archive whose tar header honestly declares a
1 GB member of zeros), so the expansion ratio is bounded too: once more than
:data:`RATIO_FLOOR` bytes come out of a stream (or are announced), they may be at most
:data:`MAX_RATIO` times the compressed bytes they come from. Real dataset files stay far
below: measured here, the MNIST IDX gzip files expand 4.7x, the CIFAR-10 PNG ``.tar.xz`` (tar
headers included) 5.0x, the GTSRB and Tiny-ImageNet ``.tar.xz`` copies about 2x; deflate at its
best reaches 1032x, xz and bzip2 far more. A bomb therefore fails after about
:data:`RATIO_FLOOR` bytes of output, with one :class:`DatasetCorruptError`.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from encshield.errors import DatasetCorruptError

#: Largest accepted expansion (decompressed bytes / compressed bytes) above :data:`RATIO_FLOOR`.
MAX_RATIO = 200
#: Output below this size is never refused for its ratio (small, very regular files are fine).
RATIO_FLOOR = 32 << 20
#: :data:`RATIO_FLOOR` for decoded images: a 20-megapixel RGB image (60 MB) is always accepted.
IMAGE_FLOOR = 64 << 20
#: Chunk size of bounded reads.
CHUNK = 1 << 20

#: Errors that mean "this compressed stream / archive is damaged".
CORRUPTION_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    lzma.LZMAError,
    EOFError,
    zlib.error,
    zipfile.BadZipFile,
    gzip.BadGzipFile,
    OSError,
    ValueError,
    NotImplementedError,  # zip compression methods we cannot read
)


class Readable(Protocol):
    """Anything with ``read(size)`` returning bytes."""

    def read(self, size: int = ..., /) -> bytes:
        """At most ``size`` bytes; empty at the end of the stream."""
        ...


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def corrupt_error(
    what: str, detail: BaseException | str, *, path: Path | None = None, member: str | None = None
) -> DatasetCorruptError:
    """A one-line :class:`DatasetCorruptError` naming the damaged file (``path`` is kept on the
    error so that callers can add the fix)."""
    reason = detail if isinstance(detail, str) else f"{type(detail).__name__}: {detail}"
    where = f" while reading member {member!r}" if member else ""
    err = DatasetCorruptError(one_line(f"{what} is corrupt or truncated{where} ({reason})."))
    err.path = path  # type: ignore[attr-defined]
    return err


def bomb_error(
    what: str, produced: int, consumed: int, *, path: Path | None = None, announced: bool = False
) -> DatasetCorruptError:
    """The error for a stream that expands more than :data:`MAX_RATIO` times."""
    verb = "announces" if announced else "expands to"
    err = DatasetCorruptError(
        f"{what} {verb} {produced:,} bytes from {consumed:,} compressed bytes, more than "
        f"{MAX_RATIO}x: refused as a decompression bomb."
    )
    err.path = path  # type: ignore[attr-defined]
    return err


def too_expansive(produced: int, consumed: int, floor: int = RATIO_FLOOR) -> bool:
    """Whether ``produced`` bytes from ``consumed`` compressed bytes exceed the allowed ratio
    (never below ``floor`` bytes)."""
    return produced > floor and produced > MAX_RATIO * max(consumed, 1)


def check_announced(
    what: str, announced: int, compressed: int, *, path: Path | None = None,
    floor: int = RATIO_FLOOR,
) -> None:
    """Refuse an announced uncompressed size that is a bomb by itself (before decompressing).

    Raises:
        DatasetCorruptError: ``announced`` exceeds :data:`MAX_RATIO` x ``compressed`` (and
            ``floor``).
    """
    if too_expansive(announced, compressed, floor):
        raise bomb_error(what, announced, compressed, path=path, announced=True)


class GuardedReader:
    """Read-only file object over a decompressed stream that refuses a decompression bomb.

    ``consumed()`` tells how many compressed bytes were read so far (e.g. ``raw.tell``). The
    ratio is checked over the whole stream and over the current *segment* (started with
    :meth:`segment`, e.g. one tar member), so a bomb hidden after real data is caught as well.
    """

    def __init__(
        self, stream: Readable, consumed: Callable[[], int], what: str, *, path: Path | None = None
    ) -> None:
        self._stream = stream
        self._consumed = consumed
        self.what = what
        self.path = path
        self.produced = 0
        self._segment_out = 0
        self._segment_in = 0
        self._segment_what = what

    def segment(self, what: str | None = None) -> None:
        """Start a new segment (its ratio is checked on its own), named ``what`` in errors."""
        self._segment_out = self.produced
        self._segment_in = self._consumed()
        self._segment_what = what or self.what

    def read(self, size: int = -1, /) -> bytes:
        """At most ``size`` bytes (a chunk at a time when ``size`` is negative)."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        data = self._stream.read(size)
        self.produced += len(data)
        if self.produced > RATIO_FLOOR:
            consumed = self._consumed()
            for what, out, inp in (
                (self._segment_what, self.produced - self._segment_out,
                 consumed - self._segment_in),
                (self.what, self.produced, consumed),
            ):
                if too_expansive(out, inp):
                    raise bomb_error(what, out, inp, path=self.path)
        return data


def open_decompressed(fh: BinaryIO, what: str, *, path: Path | None = None) -> GuardedReader:
    """``fh`` wrapped in the decompressor its magic bytes call for (gzip, xz, bzip2, or none),
    guarded by :class:`GuardedReader` (``fh`` must have ``peek`` and ``tell``)."""
    head = fh.peek(6)[:6] if hasattr(fh, "peek") else b""
    stream: Readable
    if head[:2] == b"\x1f\x8b":
        stream = gzip.GzipFile(fileobj=fh, mode="rb")
    elif head[:6] == b"\xfd7zXZ\x00":
        stream = lzma.LZMAFile(fh, mode="rb")
    elif head[:3] == b"BZh":
        stream = bz2.BZ2File(fh, mode="rb")
    else:
        stream = fh
    if stream is not fh:
        stream = io.BufferedReader(stream, buffer_size=CHUNK)  # type: ignore[type-var]
    return GuardedReader(stream, fh.tell, what, path=path)


def inflated_size(
    fh: Readable, nbytes: int, what: str, *, wbits: int = zlib.MAX_WBITS, path: Path | None = None
) -> int:
    """Bytes that the next ``nbytes`` compressed bytes of ``fh`` (a zlib stream) decompress to,
    counted in chunks (nothing is kept) and refused as a bomb beyond :data:`MAX_RATIO`.

    Raises:
        DatasetCorruptError: a decompression bomb.
        zlib.error: bad compressed data.
    """
    inflater = zlib.decompressobj(wbits)
    consumed = produced = 0
    while consumed < nbytes:
        chunk = fh.read(min(CHUNK, nbytes - consumed))
        if not chunk:
            break
        consumed += len(chunk)
        while chunk:
            produced += len(inflater.decompress(chunk, CHUNK))
            chunk = inflater.unconsumed_tail
            if too_expansive(produced, consumed):
                raise bomb_error(what, produced, consumed, path=path)
    return produced


def read_capped(stream: Readable, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of ``stream``, read in chunks: a result longer than ``limit``
    means the stream is longer than announced (nothing more is read).

    Memory grows with what was actually read (a bomb fails before a large allocation), and the
    result is not copied at the end (``BytesIO.getvalue`` hands over its buffer).
    """
    out = io.BytesIO()
    while (done := out.tell()) <= limit:
        piece = stream.read(min(CHUNK, limit + 1 - done))
        if not piece:
            break
        out.write(piece)
    return out.getvalue()


def gunzip_exact(
    data: bytes, header_size: int, body_size: Callable[[bytes], int], what: str,
    *, path: Path | None = None,
) -> bytes:
    """Decompress gzip ``data`` whose first ``header_size`` bytes announce the rest.

    ``body_size(header)`` returns the number of bytes announced after the header (it validates
    the header and raises on a bad one). Never more than the announced size plus one byte is
    decompressed; the gzip CRC is checked.

    Raises:
        DatasetCorruptError: bad gzip data, a stream longer or shorter than announced, or an
            announcement that is a bomb by itself.
    """
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            out = read_capped(stream, header_size - 1)
            body = body_size(out)
            total = header_size + body
            check_announced(what, total, len(data), path=path)
            if len(out) == header_size:
                stream.seek(0)  # cheap: rewinds to the start of the compressed data
                out = read_capped(stream, total)
    except (OSError, EOFError, zlib.error) as error:
        raise corrupt_error(
            what, f"bad gzip data: {type(error).__name__}: {error}", path=path
        ) from None
    if len(out) > total:
        raise corrupt_error(
            what, f"more data than the {body:,} bytes its header announces", path=path
        )
    if len(out) < total:
        raise corrupt_error(
            what,
            f"only {len(out) - header_size:,} of the {body:,} data bytes its header announces",
            path=path,
        )
    return out
