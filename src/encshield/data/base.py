"""Building blocks shared by the dataset formats: resources, layouts, decoded splits, info."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encshield.data.files import Container, FileEntry
from encshield.data.imaging import Size
from encshield.errors import DatasetCorruptError
from encshield.registry import Registry


@dataclass(frozen=True)
class Resource:
    """One official file of a dataset.

    Attributes:
        url: where it is downloaded from.
        filename: the name it is stored under in ``<root>/<dataset>/``.
        sha256: expected sha256 (hex), ``None`` where no trustworthy value is published.
        size: expected size in bytes, if known.
        md5: the official md5, used only where no sha256 is known (marked in ``info``).
    """

    url: str
    filename: str
    sha256: str | None
    size: int | None = None
    md5: str | None = None

    @property
    def checksum_text(self) -> str:
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.md5:
            return f"md5 {self.md5} (no published sha256)"
        return "no published checksum"


@dataclass
class SplitFiles:
    """The files a split is read from, as found by a format's :meth:`DatasetFormat.find`.

    Attributes:
        entries: every file read to build the split (also the cache identity).
        count: number of images when known without decoding (from a listing or a header).
        data: format-specific details (roles of files, prefixes, class folders...).
    """

    entries: list[FileEntry]
    count: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Layout:
    """Where a dataset's splits were found inside the containers of one data root."""

    kind: str
    splits: dict[str, SplitFiles] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Decoded:
    """A decoded split: ``images`` uint8 ``(N, 3, H, W)``, ``labels`` int64 ``(N,)``."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    uniform: bool = True


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`encshield.data.info` found out about a dataset without decoding its images.

    Attributes:
        name: registered name.
        title: human name (e.g. ``"CIFAR-10"``).
        description: one line.
        layout: which on-disk layout was found (e.g. ``"cifar-python"``, ``"imagefolder"``).
        root: the data root the files were found under.
        num_classes, class_names: the label space (index = label).
        image_size: ``(C, H, W)`` of the images as stored (C is always 3 after grey -> RGB).
        splits: split name -> number of images, for the splits present.
        missing: split name -> why it is not available (official splits only).
        sources: the files (archives, files, or folders) the splits are read from.
        notes: anything else worth knowing (e.g. resizing applied).
        homepage: where the dataset is published.
    """

    name: str
    title: str
    description: str
    layout: str
    root: str
    num_classes: int
    class_names: tuple[str, ...]
    image_size: tuple[int, int, int]
    splits: dict[str, int]
    missing: dict[str, str]
    sources: tuple[str, ...]
    notes: tuple[str, ...] = ()
    homepage: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with keys name, title, description, layout, root, num_classes,
        class_names, image_size ([C, H, W]), splits, missing, sources, notes, homepage."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "layout": self.layout,
            "root": self.root,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "image_size": list(self.image_size),
            "splits": dict(self.splits),
            "missing": dict(self.missing),
            "sources": list(self.sources),
            "notes": list(self.notes),
            "homepage": self.homepage,
        }


class DatasetFormat:
    """One registered dataset format (subclass per dataset and register an instance).

    Class attributes describe the dataset; methods find it among containers and read splits.
    """

    name: str = ""
    title: str = ""
    description: str = ""
    homepage: str = ""
    #: Official split names (``None`` for formats whose splits are the folders found).
    splits: tuple[str, ...] | None = ("train", "test")
    #: Registry aliases (``load("cifar-10")``).
    aliases: tuple[str, ...] = ()
    #: Folder names (lower case) under a data root that hold this dataset.
    folder_names: tuple[str, ...] = ()
    #: Regex (searched, case-insensitive) on archive/file names that belong to this dataset.
    archive_pattern: str | None = None
    #: Official download resources.
    resources: tuple[Resource, ...] = ()
    #: Other known files (e.g. re-packaged copies) -> sha256, quoted in corruption messages.
    known_files: dict[str, str] = {}
    #: Bump when decoding changes; invalidates caches.
    version: int = 1
    #: Formats without a fixed identity (generic ImageFolder) need ``root=``.
    needs_explicit_root: bool = False
    #: Extra text for how-to-obtain messages.
    obtain_note: str = ""

    # -- description -------------------------------------------------------------------------

    def claims_name(self, filename: str) -> bool:
        """Whether an archive/file named ``filename`` looks like it belongs to this dataset."""
        if not self.archive_pattern:
            return False
        return re.search(self.archive_pattern, filename, flags=re.IGNORECASE) is not None

    def how_to_obtain(self, target: str | None = None, command: str | None = None) -> str:
        """One line: the download ``command`` (default ``encshield data download NAME``) and the
        official files to put in ``target`` by hand (default ``<data root>/NAME/``)."""
        where = target or f"<data root>/{self.name}/"
        parts: list[str] = []
        if self.resources:
            parts.append(f"get it with `{command or f'encshield data download {self.name}'}`")
            parts.append(f"or put {self._official_files()} in {where}")
        elif self.homepage:
            parts.append(f"get it from {self.homepage} and put the files in {where}")
        if self.obtain_note:
            parts.append(self.obtain_note)
        return ", ".join(parts)

    def _official_files(self) -> str:
        """The official download(s): one URL, or the file names and their common base URL."""
        urls = [r.url for r in self.resources]
        if len(urls) == 1:
            return urls[0]
        bases = {url.rsplit("/", 1)[0] + "/" for url in urls}
        names = [r.filename for r in self.resources]
        listed = ", ".join(names[:-1]) + f" and {names[-1]}"
        if len(bases) == 1:
            return f"{listed} from {bases.pop()}"
        return ", ".join(urls[:-1]) + f" and {urls[-1]}"

    def expected_checksum(self, filename: str) -> str | None:
        for resource in self.resources:
            if resource.filename == filename:
                return resource.checksum_text
        sha = self.known_files.get(filename)
        return f"sha256 {sha}" if sha else None

    def corrupt_file(self, entry: FileEntry, kind: str, detail: str) -> DatasetCorruptError:
        """The error for an official file of this dataset that cannot be read.

        Names the file, what it should be (``kind``, e.g. ``"IDX file"``), the ``detail`` of the
        damage, its expected checksum where known and the command that downloads it again.
        """
        sha = self.expected_checksum(entry.name)
        hint = f" (expected {sha})" if sha else ""
        return DatasetCorruptError(
            f"{entry.display} is not a valid {kind} ({detail}); it is truncated or damaged: "
            f"delete it and download it again{hint}: encshield data download {self.name}"
        )

    def check_split_name(self, split: str) -> None:
        from encshield.errors import ConfigError

        if self.splits is not None and split not in self.splits:
            raise ConfigError(
                f"unknown split {split!r} for dataset {self.name!r}; allowed splits: "
                f"{', '.join(self.splits)}"
            )

    # -- to implement ------------------------------------------------------------------------

    def find(self, containers: Sequence[Container]) -> Layout | None:
        """Locate the splits among ``containers`` (priority order); ``None`` if nothing found."""
        raise NotImplementedError

    def count(self, layout: Layout, split: str) -> int | None:
        """Number of images of ``split`` without decoding images; ``None`` = decode to know."""
        return layout.splits[split].count

    def class_names(self, layout: Layout) -> tuple[str, ...]:
        """The label space (may read small metadata files)."""
        raise NotImplementedError

    def image_size(self, layout: Layout) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images as loaded without ``image_size``."""
        raise NotImplementedError

    def read(self, layout: Layout, split: str, size: Size | None) -> Decoded:
        """Decode ``split``: images uint8 ``(N, 3, H, W)`` (resized to ``size`` if given)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<dataset format {self.name!r}>"


#: Registered dataset formats (name -> :class:`DatasetFormat` instance); each format module adds
#: its instance right after the class definition.
DATASETS: Registry[DatasetFormat] = Registry("dataset")
