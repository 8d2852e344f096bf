"""Downloading official dataset files (urllib only), verified by sha256 (md5 where none is known).

A file is streamed to ``<name>.part`` next to its destination while its checksum is computed,
verified, then renamed into place. A file already present with the right checksum is not fetched
again. On a checksum mismatch the download is kept as ``<name>.part`` for inspection and
:class:`~encshield.errors.ChecksumMismatchError` is raised; the next download overwrites it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path

from encshield.data.base import Resource
from encshield.errors import ChecksumMismatchError, DownloadError

_CHUNK = 1 << 20
USER_AGENT = "encshield-data-downloader/1 (python urllib)"


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _algorithm(resource: Resource) -> tuple[str, str | None]:
    if resource.sha256:
        return "sha256", resource.sha256.lower()
    if resource.md5:
        return "md5", resource.md5.lower()
    return "sha256", None


def verify_file(path: Path, resource: Resource) -> bool:
    """Whether ``path`` has the resource's checksum (and size, when known)."""
    if resource.size is not None and path.stat().st_size != resource.size:
        return False
    algorithm, expected = _algorithm(resource)
    return expected is None or file_digest(path, algorithm) == expected


def _progress_printer(label: str, total: int | None, enabled: bool) -> Callable[[int], None]:
    if not enabled:
        return lambda _done: None
    state = {"last": -1}

    def show(done: int) -> None:
        if total:
            pct = int(100 * done / total)
            if pct != state["last"]:
                state["last"] = pct
                print(f"\r  {label}: {pct:3d}% of {total / 1e6:.1f} MB", end="", file=sys.stderr,
                      flush=True)
        else:
            mb = done // 10_000_000
            if mb != state["last"]:
                state["last"] = mb
                print(f"\r  {label}: {done / 1e6:.0f} MB", end="", file=sys.stderr, flush=True)

    return show


def fetch(resource: Resource, dest: Path, *, progress: bool = True, timeout: float = 60.0) -> bool:
    """Make sure ``dest`` holds ``resource``; returns True if it was downloaded, False if an
    existing file already had the right checksum.

    Raises:
        DownloadError: network/HTTP failure (names the URL and where to put a manual download).
        ChecksumMismatchError: the downloaded bytes have the wrong size or checksum.
    """
    algorithm, expected = _algorithm(resource)
    if dest.exists():
        if verify_file(dest, resource):
            if progress:
                print(f"  {dest.name}: already present, {algorithm} verified", file=sys.stderr)
            return False
        if progress:
            print(f"  {dest.name}: present but its checksum differs; downloading it again",
                  file=sys.stderr)
    part = dest.with_name(dest.name + ".part")
    manual = (
        f"download {resource.url} manually (e.g. with a browser) and save it as {dest}; "
        "then run the same command again (it verifies the file)"
    )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        out = open(part, "wb")  # closed below
    except OSError as error:
        raise DownloadError(
            f"cannot write {part} ({error.strerror or error}); choose a writable data root with "
            "--root DIR (or download(..., root=DIR))"
        ) from None
    request = urllib.request.Request(resource.url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.new(algorithm)
    done = 0
    try:
        with out, urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = resource.size or (int(length) if length and length.isdigit() else None)
            show = _progress_printer(dest.name, total, progress)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                show(done)
        if progress:
            print(file=sys.stderr)
    except urllib.error.HTTPError as error:
        error.close()
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download {resource.url}: HTTP {error.code} {error.reason}. The server may "
            f"have moved the file; {manual}."
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, HTTPException, OSError) as error:
        part.unlink(missing_ok=True)
        reason = getattr(error, "reason", None) or error
        raise DownloadError(
            f"could not download {resource.url}: {reason}. Check the network connection (or "
            f"proxy settings); or {manual}."
        ) from None
    if resource.size is not None and done != resource.size:
        raise ChecksumMismatchError(
            f"{resource.url}: downloaded {done} bytes, expected {resource.size}. The partial "
            f"download was kept as {part}; delete it and try again, or {manual}."
        )
    got = digest.hexdigest()
    if expected is not None and got != expected:
        raise ChecksumMismatchError(
            f"{resource.url}: {algorithm} mismatch: expected {expected}, got {got}. The download "
            f"was kept as {part} (not used); delete it and try again, or {manual}."
        )
    os.replace(part, dest)
    return True
