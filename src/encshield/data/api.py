"""Public entry points: :func:`load`, :func:`info`, :func:`available`, :func:`download`."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encshield import paths
from encshield.data import cache as _cache
from encshield.data import download as _download
from encshield.data.advice import not_found_error, split_missing_error, with_advice
from encshield.data.base import DATASETS, DatasetFormat, DatasetInfo, Decoded, Layout
from encshield.data.dataset import ImageDataset
from encshield.data.files import (
    Container,
    FileEntry,
    archive_container,
    archive_kind,
    dir_container,
    single_file_container,
)
from encshield.data.formats import (  # noqa: F401 - importing a format module registers it
    cifar,
    gtsrb,
    idx,
    imagefolder,
    stl10,
    svhn,
    tiny_imagenet,
)
from encshield.data.imaging import MixedSizesError, Size, normalize_size, resize_images
from encshield.errors import (
    ConfigError,
    DatasetCorruptError,
    DatasetError,
    DatasetNotFoundError,
)

#: Folder depth searched below a data root itself (dataset-named folders are searched fully).
ROOT_WALK_DEPTH = 6


def _all_folder_names() -> set[str]:
    return {n.lower() for _, fmt in DATASETS.items() for n in fmt.folder_names}


def _claimed_by_other(fmt: DatasetFormat, filename: str) -> bool:
    if fmt.claims_name(filename):
        return False
    return any(other is not fmt and other.claims_name(filename) for _, other in DATASETS.items())


def _foreign_folder(fmt: DatasetFormat, root: Path) -> bool:
    """Whether ``root`` is a folder named like another dataset's (never searched for ``fmt``)."""
    own = {n.lower() for n in fmt.folder_names}
    return not fmt.needs_explicit_root and root.name.lower() in (_all_folder_names() - own)


def _receiving_root(fmt: DatasetFormat, root: Path) -> Path:
    """``root``, or, where files cannot be put in it (an archive, a file, another dataset's
    folder), the nearest folder above it that can receive them (for the advice in errors)."""
    path = root
    while path != path.parent and (path.is_file()
                                   or (path.is_dir() and _foreign_folder(fmt, path))):
        path = path.parent
    return path


@dataclass
class Located:
    """A dataset found under one data root (``explicit``: the root was given, not a default)."""

    fmt: DatasetFormat
    root: Path
    layout: Layout
    containers: list[Container]
    explicit: bool = False

    def release(self) -> None:
        """Drop archive bytes kept in memory from listing passes."""
        for container in self.containers:
            container.release()
        for files in self.layout.splits.values():
            for entry in files.entries:
                entry.container.release()


# ---------------------------------------------------------------------------------------------
# Finding files


def _gather(
    fmt: DatasetFormat, root: Path, *, explicit: bool, listing: bool, retain: bool = False
) -> tuple[list[Container], list[str], list[Container]]:
    """Containers that may hold ``fmt`` under ``root``, what was skipped (e.g. ``unreadable
    archive X``), and the archives left unlisted (``listing=False``)."""
    skipped: list[str] = []
    unlisted: list[Container] = []
    if root.is_file():
        if archive_kind(root):
            container = archive_container(root, listing=listing, retain=retain)
            if not container.listed:
                unlisted.append(container)
                return [], skipped, unlisted
            return [container], skipped, unlisted
        return [single_file_container(root)], skipped, unlisted
    if not root.is_dir():
        return [], skipped, unlisted
    if _foreign_folder(fmt, root):
        return [], skipped, unlisted
    own = {n.lower() for n in fmt.folder_names}

    dirs: list[tuple[Container, bool]] = []  # (container, is dataset folder)
    if not fmt.needs_explicit_root:
        try:
            children = sorted(os.scandir(root), key=lambda d: d.name)
        except OSError:
            children = []
        for child in children:
            if child.name.lower() in own and child.is_dir():
                dirs.append((dir_container(Path(child.path)), True))
        prune = _all_folder_names()
        dirs.append((dir_container(root, max_depth=ROOT_WALK_DEPTH, prune_top=prune), False))
    else:
        dirs.append((dir_container(root, max_depth=4), False))

    containers = [c for c, _ in dirs]
    archives: list[Container] = []
    seen: set[str] = set()
    for container, is_dataset_folder in dirs:
        for entry in container.entries or []:
            if not archive_kind(entry.name):
                continue
            path = container.path / entry.path
            if str(path) in seen:
                continue
            depth = entry.path.count("/") + 1
            claimed = is_dataset_folder or fmt.claims_name(entry.name)
            candidate = claimed or (explicit and depth == 1
                                    and not _claimed_by_other(fmt, entry.name))
            if fmt.needs_explicit_root:
                candidate = False  # ImageFolder: a folder tree, or root=<the archive> itself
            if not candidate:
                continue
            seen.add(str(path))
            try:
                archive = archive_container(path, listing=listing, claimed=claimed, retain=retain)
            except DatasetCorruptError:
                if claimed or fmt.needs_explicit_root:
                    raise
                skipped.append(f"unreadable archive {path}")
                continue
            if archive.listed:
                archives.append(archive)
            else:
                unlisted.append(archive)
    return containers + archives, skipped, unlisted


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many small objects (listings of 10^5 files): the
    collections it would trigger cost more than the work itself (0.4 s -> 0.1 s for CIFAR-10)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_LOCATE_MEMO: dict[tuple[Any, ...], Layout | None] = {}


def _find(fmt: DatasetFormat, containers: list[Container]) -> Layout | None:
    """``fmt.find`` memoised on the identity of the containers' files (cheap repeated loads)."""
    ident: list[Any] = [fmt.name, fmt.version]
    for c in containers:
        if c.kind == "dir":
            ident.append((str(c.path), tuple(e.identity() for e in c.entries or [])))
        else:
            ident.append(c.identity())
    key = tuple(ident)
    if key not in _LOCATE_MEMO:
        if len(_LOCATE_MEMO) > 64:
            _LOCATE_MEMO.clear()
        _LOCATE_MEMO[key] = fmt.find(containers)
    return _LOCATE_MEMO[key]


def locate(name: str, root: str | os.PathLike[str] | None = None, *,
           retain: bool = False) -> Located:
    """Find dataset ``name`` under ``root`` (or the default data roots).

    With ``retain``, archives listed for the first time keep their members in memory for the
    read that follows (see :func:`encshield.data.files.archive_container`); call
    :meth:`Located.release` afterwards.

    Raises:
        DatasetNotFoundError: one line naming the roots searched and how to obtain the files.
        DatasetCorruptError: an archive that belongs to the dataset cannot be read.
    """
    fmt = DATASETS.get(name)
    if fmt.needs_explicit_root and root is None:
        raise DatasetNotFoundError(
            f"dataset {fmt.name!r} needs an explicit root: {fmt.obtain_note}"
        )
    roots = [r.expanduser() for r in paths.data_roots(root)]
    skipped: list[str] = []
    partial: dict[str, str] = {}
    for data_root in roots:
        try:
            with _gc_paused():
                containers, skips, _ = _gather(
                    fmt, data_root, explicit=root is not None, listing=True, retain=retain
                )
                layout = _find(fmt, containers) if containers else None
        except DatasetCorruptError as error:
            raise with_advice(fmt, error) from None
        skipped.extend(skips)
        if layout is not None and layout.splits:
            return Located(fmt, data_root, layout, containers, explicit=root is not None)
        for container in containers:
            container.release()
        if layout is not None:
            for split, why in layout.missing.items():
                partial.setdefault(split, why)
    foreign = frozenset(r for r in roots if r.is_dir() and _foreign_folder(fmt, r))
    raise not_found_error(
        fmt, roots, partial, skipped, explicit=root is not None, foreign=foreign,
        receiving=_receiving_root(fmt, roots[0]) if roots else None,
    )


# ---------------------------------------------------------------------------------------------
# Loading


def _source_identity(entries: Sequence[FileEntry]) -> list[tuple[str, int, int]]:
    return sorted({e.identity() for e in entries})


def _key(located: Located, split: str, size: Size | None) -> str:
    files = located.layout.splits[split]
    return _cache.cache_key(
        {
            "format": located.fmt.name,
            "format_version": located.fmt.version,
            "layout": located.layout.kind,
            "split": split,
            "size": list(size) if size else None,
            "sources": _source_identity(files.entries),
        }
    )


def _dataset(fmt: DatasetFormat, split: str, images: np.ndarray, labels: np.ndarray,
             names: Sequence[str]) -> ImageDataset:
    return ImageDataset(
        name=fmt.name,
        split=split,
        images=torch.from_numpy(images),
        labels=torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
        class_names=tuple(names),
    )


def _decode(located: Located, split: str, size: Size | None) -> Decoded:
    try:
        decoded = located.fmt.read(located.layout, split, size)
    except DatasetCorruptError as error:
        raise with_advice(located.fmt, error) from None
    if decoded.images.ndim != 4 or decoded.images.shape[1] != 3 or decoded.images.dtype != np.uint8:
        raise DatasetError(f"internal error: {located.fmt.name} decoded "
                           f"{decoded.images.shape} {decoded.images.dtype}")
    return decoded


def _load_located(located: Located, split: str, size: Size | None,
                  use_cache: bool) -> tuple[ImageDataset, bool]:
    """The split as an ImageDataset and whether all source images had one size."""
    fmt = located.fmt
    key = _key(located, split, size)
    if use_cache:
        hit = _cache.read(fmt.name, split, key)
        if hit is not None:
            ds = _dataset(fmt, split, hit.images, hit.labels, hit.meta.get("class_names", ()))
            return ds, bool(hit.meta.get("uniform_source_size", True))
    started = time.perf_counter()
    if size is None:
        decoded = _decode(located, split, None)
        images, labels = decoded.images, decoded.labels
        names, uniform = decoded.class_names, decoded.uniform
    else:
        try:
            native, uniform = _load_located(located, split, None, use_cache)
        except MixedSizesError:
            native, uniform = None, False
        if native is not None and uniform and tuple(native.images.shape[2:]) == size:
            return native, uniform
        if native is not None and uniform:
            images = resize_images(native.images, size).numpy()
            labels, names = native.labels.numpy(), native.class_names
        else:  # varied source sizes (official GTSRB): resize from the originals, not the 32x32
            decoded = _decode(located, split, size)
            images, labels, names = decoded.images, decoded.labels, decoded.class_names
        if tuple(images.shape[2:]) != size:
            images = resize_images(torch.from_numpy(images), size).numpy()
    if use_cache:
        _cache.write(
            fmt.name,
            split,
            key,
            images,
            labels,
            {
                "class_names": list(names),
                "uniform_source_size": bool(uniform),
                "format": fmt.name,
                "format_version": fmt.version,
                "layout": located.layout.kind,
                "image_size": list(size) if size else None,
                "sources": [list(s) for s in
                            _source_identity(located.layout.splits[split].entries)][:64],
                "decode_seconds": round(time.perf_counter() - started, 3),
            },
        )
    return _dataset(fmt, split, np.ascontiguousarray(images), labels, names), bool(uniform)


def _split_or_raise(located: Located, split: str) -> None:
    layout = located.layout
    if split in layout.splits:
        return
    fmt = located.fmt
    if fmt.splits is None:
        raise ConfigError(
            f"unknown split {split!r} for {fmt.name} at {located.root}; allowed splits: "
            f"{', '.join(sorted(layout.splits))}"
        )
    why = layout.missing.get(split, "its files were not found")
    raise split_missing_error(
        fmt, located.root, split, why, list(layout.splits), explicit=located.explicit,
        receiving=_receiving_root(fmt, located.root),
    )


def load(
    name: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    image_size: int | tuple[int, int] | None = None,
    cache: bool = True,
) -> ImageDataset:
    """Load a split of a registered dataset as uint8 tensors.

    Args:
        name: a name registered in :data:`DATASETS` (or an alias, e.g. ``"tiny-imagenet"``).
        split: an official split name of the dataset (``"train"``, ``"test"``, ``"val"``...),
            optionally sliced: ``"train[:45000]"`` / ``"train[45000:]"`` are images
            ``0..44999`` / ``45000..`` of the split **in a fixed pseudo-random order** (seed 0, the
            same for every call), so slices are class-mixed even where the files are sorted by
            class, and disjoint slices hold disjoint images (e.g. an attacker's surrogate set
            apart from the downstream training images).
        root: a data root: the folder holding the files, a folder with a sub-folder named like
            the dataset, or an archive. Default: ``$ENCSHIELD_DATA``, then the user data folder.
        image_size: ``s`` or ``(H, W)`` to resize every image (bilinear with antialias, batched
            in torch, rounded back to uint8); the resized split is cached too.
        cache: read/write the decoded cache under ``paths.cache_dir()/datasets``.

    Returns:
        An :class:`ImageDataset`: ``images`` uint8 ``(N, 3, H, W)`` in 0..255 (grey replicated
        to 3 channels), ``labels`` int64 ``(N,)``, ``class_names``.

    Raises:
        ConfigError: unknown dataset or split name, bad ``image_size``.
        DatasetNotFoundError: files not found (one line: the roots searched and how to get them).
        DatasetCorruptError: a file is truncated/damaged (names it and what to do).
    """
    if "+" in split:
        parts = [load(name, part, root, image_size, cache) for part in split.split("+")]
        if len({p.image_size for p in parts}) > 1:
            raise ConfigError(
                f"{name} split {split!r}: the parts have different image sizes "
                f"({', '.join(str(p.image_size) for p in parts)}); give image_size to combine them"
            )
        return ImageDataset(
            name=parts[0].name, split=split,
            images=torch.cat([p.images for p in parts]),
            labels=torch.cat([p.labels for p in parts]),
            class_names=parts[0].class_names,
        )
    fmt = DATASETS.get(name)
    split, window = parse_split(split)
    fmt.check_split_name(split)
    size = normalize_size(image_size)
    located = locate(fmt.name, root, retain=True)
    try:
        _split_or_raise(located, split)
        dataset, _ = _load_located(located, split, size, cache)
    finally:
        located.release()
    if window is not None:
        start, stop, _ = window.indices(len(dataset))
        if stop <= start:
            raise ConfigError(f"{name} split {split}[{window.start}:{window.stop}] is empty "
                              f"(the split has {len(dataset)} images)")
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
        dataset = dataset.subset(order[start:stop].sort().values)
    return dataset


_SLICE = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*(?:\[\s*(-?\d*)\s*:\s*(-?\d*)\s*\])?\s*$")


def parse_split(text: str) -> tuple[str, slice | None]:
    """``"train[:45000]"`` -> ``("train", slice(None, 45000))``; ``"test"`` -> ``("test", None)``.

    Raises:
        ConfigError: not ``NAME`` or ``NAME[START:STOP]`` (integers, either may be omitted).
    """
    match = _SLICE.match(str(text))
    if match is None:
        raise ConfigError(f"split {text!r}: expected NAME or NAME[START:STOP], e.g. train[:45000]")
    name, start, stop = match.groups()
    if start is None:
        return name, None
    return name, slice(int(start) if start else None, int(stop) if stop else None)


# ---------------------------------------------------------------------------------------------
# Describing


def _count(located: Located, split: str) -> int:
    fmt = located.fmt
    try:
        n = fmt.count(located.layout, split)
    except DatasetCorruptError as error:
        raise with_advice(fmt, error) from None
    if n is not None:
        return n
    hit = _cache.read(fmt.name, split, _key(located, split, None))
    if hit is not None:
        return int(hit.images.shape[0])
    dataset, _ = _load_located(located, split, None, True)  # e.g. CIFAR pickles: cheap to decode
    return len(dataset)


def _sources(located: Located) -> list[str]:
    out: set[str] = set()
    for files in located.layout.splits.values():
        plain = [e for e in files.entries if e.container.kind == "dir"]
        for entry in files.entries:
            if entry.container.kind != "dir":
                out.add(str(entry.container.path))
        if len(plain) <= 8:
            out.update(str(e.container.path / e.path) for e in plain)
        else:
            parents = {e.container.path / e.parent for e in plain}
            common = Path(os.path.commonpath([str(p) for p in parents]))
            out.add(f"{common}/ ({len(plain)} files)")
    return sorted(out)


def info(name: str, root: str | os.PathLike[str] | None = None) -> DatasetInfo:
    """Describe a dataset without decoding its images (except where counting needs it, e.g. the
    CIFAR pickles, which are then cached).

    Returns:
        :class:`DatasetInfo`; ``to_dict()`` gives name, num_classes, class_names, image_size
        ([C, H, W] as stored), splits (split -> number of images, present splits only), missing
        (split -> why), sources (files read) and more.

    Raises:
        DatasetNotFoundError, DatasetCorruptError: as :func:`load`.
    """
    located = locate(name, root, retain=True)
    fmt = located.fmt
    try:
        splits = {split: _count(located, split) for split in located.layout.splits}
        try:
            class_names = fmt.class_names(located.layout)
            image_size = fmt.image_size(located.layout)
        except DatasetCorruptError as error:
            raise with_advice(fmt, error) from None
    finally:
        located.release()
    return DatasetInfo(
        name=fmt.name,
        title=fmt.title,
        description=fmt.description,
        layout=located.layout.kind,
        root=str(located.root),
        num_classes=len(class_names),
        class_names=tuple(class_names),
        image_size=tuple(int(v) for v in image_size),  # type: ignore[arg-type]
        splits=splits,
        missing=dict(located.layout.missing),
        sources=tuple(_sources(located)),
        notes=tuple(located.layout.notes),
        homepage=fmt.homepage,
    )


def _quick_status(fmt: DatasetFormat, root: str | os.PathLike[str] | None) -> tuple[bool, str]:
    """(found, where) using only folder walks and cached archive listings (no decompression)."""
    if fmt.needs_explicit_root and root is None:
        return False, "needs --root"
    for data_root in paths.data_roots(root):
        data_root = data_root.expanduser()
        try:
            with _gc_paused():
                containers, _, unlisted = _gather(fmt, data_root, explicit=root is not None,
                                                  listing=False)
                layout = _find(fmt, containers) if containers else None
        except DatasetError:
            continue
        if layout is not None and layout.splits:
            return True, str(data_root)
        claimed = [c for c in unlisted if c.claimed]
        if claimed:
            return True, str(claimed[0].path)
    return False, ""


def available(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Registered dataset names whose files can be found (cheap: no decoding, no decompression).

    Archives not inspected before count as found when they sit in the dataset's folder or carry
    its name (their content is checked by :func:`info` / :func:`load`).
    """
    return [name for name, fmt in DATASETS.items() if _quick_status(fmt, root)[0]]


def status(root: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """One dict per registered dataset: name, title, description, splits, found, where."""
    rows = []
    for name, fmt in DATASETS.items():
        found, where = _quick_status(fmt, root)
        rows.append(
            {
                "name": name,
                "title": fmt.title,
                "description": fmt.description,
                "splits": list(fmt.splits) if fmt.splits else [],
                "found": found,
                "where": where,
                "downloadable": bool(fmt.resources),
            }
        )
    return rows


def download(name: str, root: str | os.PathLike[str] | None = None, *,
             progress: bool = True) -> Path:
    """Download the official files of ``name`` into ``<root>/<name>/`` and verify them.

    ``root`` defaults to the first of :func:`encshield.paths.data_roots`. Files already present
    with the right checksum are not fetched again.

    Returns:
        The folder holding the files.

    Raises:
        ConfigError: the dataset has no download resources (the message says how to get it).
        DownloadError: a network/HTTP failure (names the URL and where to put a manual download).
        ChecksumMismatchError: a downloaded file has the wrong checksum.
    """
    fmt = DATASETS.get(name)
    if not fmt.resources:
        raise ConfigError(
            f"dataset {fmt.name!r} cannot be downloaded automatically: {fmt.how_to_obtain()}"
        )
    base = Path(root).expanduser() if root is not None else paths.data_roots()[0]
    target = base / fmt.name
    for resource in fmt.resources:
        if progress:
            print(f"{fmt.title}: {resource.filename} <- {resource.url}", file=sys.stderr)
        _download.fetch(resource, target / resource.filename, progress=progress)
    return target
