"""MNIST and Fashion-MNIST: IDX files, gzip-compressed or not.

``train-images-idx3-ubyte[.gz]`` / ``t10k-images-idx3-ubyte[.gz]``: magic 0x00000803, then
N, rows, cols (big-endian uint32) and N*rows*cols uint8 pixels. ``*-labels-idx1-ubyte[.gz]``:
magic 0x00000801, N, then N uint8 labels. Grey images are replicated to 3 channels.
Both datasets use the same file names: they are told apart by the folder (``mnist/`` vs
``fashion_mnist/``) or archive name they are in.

The header announces the exact size of the file, so :meth:`count` (``info``) checks it without
reading the data: the file size for raw files, the gzip trailer (ISIZE, the uncompressed size
mod 2^32) for ``.gz`` files, with a bounded streaming count where the trailer disagrees. Reading
decompresses at most the announced size (plus one byte, to refuse a longer stream).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from encshield.data.base import DATASETS, DatasetFormat, Decoded, Layout, Resource, SplitFiles
from encshield.data.bounded import check_announced, gunzip_exact
from encshield.data.files import Container, FileEntry
from encshield.data.imaging import Size, grey_to_rgb
from encshield.data.reading import read_entries, read_head, read_one, read_tail
from encshield.errors import DatasetCorruptError

_NAME_RE = re.compile(
    r"^(?P<split>train|t10k)-(?P<kind>images|labels)[-.]idx(?P<dims>[13])-ubyte(?P<gz>\.gz)?$",
    re.IGNORECASE,
)
_SPLIT = {"train": "train", "t10k": "test"}
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def _header_size(magic: int) -> int:
    """Bytes of the header: magic and 3 dims for images, magic and 1 dim for labels."""
    return 16 if magic == IMAGES_MAGIC else 8


def _gzipped(entry: FileEntry) -> bool:
    """Whether the file is gzip-compressed (``.gz``)."""
    return entry.name.lower().endswith(".gz")


def _path(entry: FileEntry) -> Path:
    """The file on disk to delete when ``entry`` is damaged (the archive for a member)."""
    return entry.fs_path or entry.container.path


class _Idx(DatasetFormat):
    classes: tuple[str, ...] = ()

    def _groups(self, container: Container) -> dict[tuple[str, str], dict[str, FileEntry]]:
        key = "idx"
        cached = container.memo.get(key)
        if cached is not None:
            return cached  # type: ignore[return-value]
        groups: dict[tuple[str, str], dict[str, FileEntry]] = {}
        for entry in container.entries or []:
            m = _NAME_RE.match(entry.name)
            if not m or (m["kind"] == "images") != (m["dims"] == "3"):
                continue
            split = _SPLIT[m["split"].lower()]
            slot = groups.setdefault((entry.parent, split), {})
            kind = m["kind"].lower()
            # prefer the uncompressed file when both exist
            if kind not in slot or slot[kind].name.endswith(".gz"):
                slot[kind] = entry
        container.memo[key] = groups
        return groups

    def find(self, containers: Sequence[Container]) -> Layout | None:
        layout = Layout(kind="idx")
        half: dict[str, str] = {}
        for split in self.splits or ():
            for container in containers:
                groups = self._groups(container)
                folders = sorted(
                    (f for f, s in groups if s == split), key=lambda f: (f.count("/"), f)
                )
                for folder in folders:
                    slot = groups[(folder, split)]
                    if "images" in slot and "labels" in slot:
                        layout.splits[split] = SplitFiles([slot["images"], slot["labels"]])
                        break
                    if split not in half:
                        have, lack = (
                            ("images", "labels") if "images" in slot else ("labels", "images")
                        )
                        prefix = "train" if split == "train" else "t10k"
                        dims = 3 if lack == "images" else 1
                        half[split] = (
                            f"{prefix}-{lack}-idx{dims}-ubyte[.gz] not found (the {split} {have} "
                            f"are at {slot[have].display})"
                        )
                if split in layout.splits:
                    break
            else:
                layout.missing[split] = half.get(split, f"no {split} IDX files found")
        if layout.splits:
            return layout
        return Layout(kind="idx", missing=half) if half else None

    def _corrupt(self, entry: FileEntry, detail: str) -> DatasetCorruptError:
        return self.corrupt_file(entry, "IDX file", detail)

    def _header(self, entry: FileEntry, head: bytes, magic: int) -> tuple[int, ...]:
        ndim = 3 if magic == IMAGES_MAGIC else 1
        need = 4 + 4 * ndim
        if len(head) < need:
            raise self._corrupt(entry, f"only {len(head)} bytes, the header needs {need}")
        found = int.from_bytes(head[:4], "big")
        if found != magic:
            raise self._corrupt(entry, f"magic number 0x{found:08x}, expected 0x{magic:08x}")
        return tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))

    def _size_error(
        self, entry: FileEntry, dims: tuple[int, ...], found: int
    ) -> DatasetCorruptError:
        """The error for ``found`` data bytes where the header ``dims`` announce another number."""
        if len(dims) == 3:
            what = "pixel bytes"
            announced = f"{dims[0]:,}x{dims[1]}x{dims[2]} = {math.prod(dims):,}"
        else:
            what, announced = "label bytes", f"{dims[0]:,}"
        return self._corrupt(entry, f"{found:,} {what}, the header announces {announced}")

    def _checked_dims(self, entry: FileEntry, magic: int) -> tuple[int, ...]:
        """The header dims of an IDX file, once its size agrees with them (cheap: no data read)."""
        need = _header_size(magic)
        dims = self._header(entry, read_head(entry, need), magic)
        expected = need + math.prod(dims)
        if not _gzipped(entry):
            if entry.size != expected:
                raise self._size_error(entry, dims, entry.size - need)
            return dims
        check_announced(entry.display, expected, entry.size, path=_path(entry))
        isize = int.from_bytes(read_tail(entry, 4), "little")
        if entry.size < 18 or isize != expected % (1 << 32):
            # a truncated file (or several gzip members): count the bytes to be sure (bounded)
            self._payload(entry, read_one(entry), magic)
        return dims

    def _payload(self, entry: FileEntry, data: bytes, magic: int) -> bytes:
        """The file's bytes (decompressed for gzip), exactly as long as its header announces."""
        need = _header_size(magic)
        if _gzipped(entry):
            return gunzip_exact(
                data, need, lambda head: math.prod(self._header(entry, head, magic)),
                entry.display, path=_path(entry),
            )
        dims = self._header(entry, data[:need], magic)
        if len(data) != need + math.prod(dims):
            raise self._size_error(entry, dims, len(data) - need)
        return data

    def count(self, layout: Layout, split: str) -> int | None:
        files = layout.splits[split]
        if files.count is None:
            images, labels = files.entries
            n, rows, cols = self._checked_dims(images, IMAGES_MAGIC)
            (n_labels,) = self._checked_dims(labels, LABELS_MAGIC)
            if n != n_labels:
                raise self._corrupt(
                    labels, f"{n_labels} labels for {n} images in {images.display} (count mismatch)"
                )
            files.count = n
            layout.shared["image_size"] = (3, rows, cols)
        return files.count

    def class_names(self, layout: Layout) -> tuple[str, ...]:
        return self.classes

    def image_size(self, layout: Layout) -> tuple[int, int, int]:
        if "image_size" not in layout.shared:
            self.count(layout, next(iter(layout.splits)))
        return layout.shared["image_size"]  # type: ignore[no-any-return]

    def read(self, layout: Layout, split: str, size: Size | None) -> Decoded:
        self.count(layout, split)  # sizes checked before any data is read or decompressed
        images_entry, labels_entry = layout.splits[split].entries
        blobs: dict[FileEntry, bytes] = {}
        read_entries([images_entry, labels_entry], lambda e, d: blobs.__setitem__(e, d))
        raw_images = self._payload(images_entry, blobs.pop(images_entry), IMAGES_MAGIC)
        raw_labels = self._payload(labels_entry, blobs.pop(labels_entry), LABELS_MAGIC)
        n, rows, cols = self._header(images_entry, raw_images[:16], IMAGES_MAGIC)
        (n_labels,) = self._header(labels_entry, raw_labels[:8], LABELS_MAGIC)
        if n != n_labels:
            raise self._corrupt(
                labels_entry,
                f"{n_labels} labels for {n} images in {images_entry.display} "
                "(image/label count mismatch)",
            )
        grey = np.frombuffer(raw_images, dtype=np.uint8, offset=16).reshape(n, rows, cols)
        labels = np.frombuffer(raw_labels, dtype=np.uint8, offset=8).astype(np.int64)
        if labels.size and labels.max() >= len(self.classes):
            raise self._corrupt(
                labels_entry, f"label {labels.max()} outside 0..{len(self.classes) - 1}"
            )
        return Decoded(grey_to_rgb(grey), labels, self.classes, True)


_MNIST_BASE = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
#: The four official files of an IDX dataset, in the order of :func:`_idx_resources`' checksums.
_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _idx_resources(base: str, *checksums: tuple[str, int]) -> tuple[Resource, ...]:
    """The resources of the four :data:`_IDX_FILES` at ``base``: ``checksums`` holds their
    ``(sha256, size in bytes)``, in the same order."""
    if len(checksums) != len(_IDX_FILES):
        raise ValueError(f"expected {len(_IDX_FILES)} checksums, got {len(checksums)}")
    return tuple(Resource(base + name, name, sha256, size)
                 for name, (sha256, size) in zip(_IDX_FILES, checksums))


class Mnist(_Idx):
    name = "mnist"
    title = "MNIST"
    description = "28x28 grey handwritten digits: 60,000 train, 10,000 test"
    homepage = "https://yann.lecun.com/exdb/mnist/"
    folder_names = ("mnist",)
    archive_pattern = r"(?<!fashion)(?<!fashion[-_])mnist"
    classes = tuple(str(d) for d in range(10))
    resources = _idx_resources(
        _MNIST_BASE,
        ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
        ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
    )


DATASETS.add(Mnist.name, Mnist(), aliases=Mnist.aliases)


class FashionMnist(_Idx):
    name = "fashion_mnist"
    title = "Fashion-MNIST"
    description = "28x28 grey Zalando article images, 10 classes: 60,000 train, 10,000 test"
    homepage = "https://github.com/zalandoresearch/fashion-mnist"
    aliases = ("fashion-mnist", "fashionmnist")
    folder_names = ("fashion_mnist", "fashion-mnist", "fashionmnist")
    archive_pattern = r"fashion[-_]?mnist"
    classes = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )
    resources = _idx_resources(
        _FASHION_BASE,
        ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
        ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
        ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
        ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
    )


DATASETS.add(FashionMnist.name, FashionMnist(), aliases=FashionMnist.aliases)
