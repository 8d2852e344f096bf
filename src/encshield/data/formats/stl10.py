"""STL-10 binary files (``stl10_binary/``).

``{train,test,unlabeled}_X.bin``: uint8, N x 3 x 96 x 96 stored column-major (so H and W are
transposed relative to C order); ``{train,test}_y.bin``: uint8 labels 1..10 (-> 0..9);
``class_names.txt``: one name per line. ``unlabeled`` is offered only when present (labels -1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from encshield.data.base import DATASETS, DatasetFormat, Decoded, Layout, Resource, SplitFiles
from encshield.data.files import Container, FileEntry
from encshield.data.formats.common import by_parent, sorted_dirs
from encshield.data.imaging import Size
from encshield.data.reading import read_entries
from encshield.errors import DatasetCorruptError

STL10_CLASSES: tuple[str, ...] = (
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
)
_IMAGE_BYTES = 3 * 96 * 96
_FILES = {
    "train": ("train_X.bin", "train_y.bin"),
    "test": ("test_X.bin", "test_y.bin"),
    "unlabeled": ("unlabeled_X.bin",),
}


class Stl10(DatasetFormat):
    name = "stl10"
    title = "STL-10"
    description = "96x96 colour images, 10 classes: 5,000 train, 8,000 test, 100,000 unlabeled"
    homepage = "https://cs.stanford.edu/~acoates/stl10/"
    splits = ("train", "test", "unlabeled")
    aliases = ("stl-10", "stl_10")
    folder_names = ("stl10", "stl-10", "stl_10", "stl10_binary")
    archive_pattern = r"stl[-_]?10"
    resources = (
        Resource(
            url="http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
            filename="stl10_binary.tar.gz",
            sha256="f31fd99273a1acb8609c8db427cebb1de3f71de77758cdc0e22956e1289b9866",
            size=2640397119,
        ),
    )

    def _groups(self, container: Container) -> dict[str, dict[str, FileEntry]]:
        wanted = {n for files in _FILES.values() for n in files} | {"class_names.txt"}
        return by_parent(container, lambda e: e.name in wanted, "stl10")

    def find(self, containers: Sequence[Container]) -> Layout | None:
        layout = Layout(kind="stl10-binary")
        for split, needed in _FILES.items():
            for container in containers:
                groups = self._groups(container)
                for folder in sorted_dirs(groups):
                    names = groups[folder]
                    if all(n in names for n in needed):
                        x = names[needed[0]]
                        count = x.size // _IMAGE_BYTES if x.size % _IMAGE_BYTES == 0 else None
                        files = [names[n] for n in needed]
                        if "class_names.txt" in names:
                            files.append(names["class_names.txt"])
                        layout.splits[split] = SplitFiles(files, count=count)
                        break
                if split in layout.splits:
                    break
            else:
                layout.missing[split] = f"{' and '.join(needed)} not found"
        return layout if layout.splits else None

    def count(self, layout: Layout, split: str) -> int | None:
        files = layout.splits[split]
        x = files.entries[0]
        if x.size % _IMAGE_BYTES:
            raise DatasetCorruptError(
                f"{x.display} has {x.size} bytes, not a multiple of {_IMAGE_BYTES} (3x96x96); "
                "it is truncated: delete it and download stl10_binary.tar.gz again"
            )
        n = x.size // _IMAGE_BYTES
        if split != "unlabeled" and files.entries[1].size != n:
            y = files.entries[1]
            raise DatasetCorruptError(
                f"{y.display} holds {y.size} labels but {x.display} holds {n} images "
                "(image/label count mismatch); delete them and download stl10_binary.tar.gz again"
            )
        return n

    def class_names(self, layout: Layout) -> tuple[str, ...]:
        return STL10_CLASSES

    def image_size(self, layout: Layout) -> tuple[int, int, int]:
        return (3, 96, 96)

    def read(self, layout: Layout, split: str, size: Size | None) -> Decoded:
        files = layout.splits[split]
        n = self.count(layout, split)
        assert n is not None
        blobs: dict[str, bytes | np.ndarray] = {}
        to_read = []
        for entry in files.entries:
            path = entry.fs_path
            if path is not None and entry.name.endswith("_X.bin"):
                blobs[entry.name] = np.memmap(path, dtype=np.uint8, mode="r")  # no 2.7 GB copy
            else:
                to_read.append(entry)
        read_entries(to_read, lambda e, data: blobs.__setitem__(e.name, data))
        x_entry = files.entries[0]
        raw = np.frombuffer(blobs[x_entry.name], dtype=np.uint8)
        if raw.size != n * _IMAGE_BYTES:
            raise DatasetCorruptError(
                f"{x_entry.display} changed size while reading; read it again"
            )
        images = np.ascontiguousarray(raw.reshape(n, 3, 96, 96).transpose(0, 1, 3, 2))
        if split == "unlabeled":
            labels = np.full(n, -1, dtype=np.int64)
        else:
            y_entry = files.entries[1]
            labels = np.frombuffer(blobs[y_entry.name], dtype=np.uint8).astype(np.int64)
            if labels.size != n:
                raise DatasetCorruptError(
                    f"{y_entry.display}: {labels.size} labels for {n} images (count mismatch)"
                )
            if labels.size and (labels.min() < 1 or labels.max() > 10):
                raise DatasetCorruptError(
                    f"{y_entry.display}: labels must be 1..10, found {labels.min()}..{labels.max()}"
                )
            labels -= 1
        names = STL10_CLASSES
        if "class_names.txt" in blobs:
            raw_names = bytes(blobs["class_names.txt"]).decode("utf-8", "replace").split()
            if len(raw_names) == 10:
                names = tuple(raw_names)
        return Decoded(images, labels, names, True)


DATASETS.add(Stl10.name, Stl10(), aliases=Stl10.aliases)
