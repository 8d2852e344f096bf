"""CIFAR-10 and CIFAR-100: the official python pickles, or an ImageFolder copy.

Pickle layout (``cifar-10-batches-py/`` / ``cifar-100-python/``): each batch is a dict with
``data`` (N, 3072) uint8 (row-major R, G, B planes of 32x32) and ``labels`` (CIFAR-10) or
``fine_labels`` (CIFAR-100). They are read with a restricted unpickler (no code can run).

ImageFolder copies (``train/<class>/*.jpg``, ``test/<class>/*.jpg``) are mapped to the official
class indices; within a class, files keep their (natural) name order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from encshield.data.array_unpickler import UnsafePickleError, safe_loads
from encshield.data.base import DATASETS, DatasetFormat, Decoded, Layout, Resource, SplitFiles
from encshield.data.files import Container, FileEntry, natural_sorted
from encshield.data.formats.common import (
    by_parent,
    decode_entries,
    entries_of,
    peek_image_size,
    sorted_dirs,
)
from encshield.data.imaging import Size, is_image_name
from encshield.data.reading import read_entries
from encshield.errors import DatasetCorruptError

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

CIFAR100_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)


def _get(obj: dict[Any, Any], key: str) -> Any:
    if key in obj:
        return obj[key]
    return obj.get(key.encode())


class _Cifar(DatasetFormat):
    classes: tuple[str, ...] = ()
    split_files: dict[str, tuple[str, ...]] = {}
    label_key = "labels"
    pickle_folder = ""

    # -- finding -------------------------------------------------------------------------------

    def _is_pickle_dir(self, folder: str, names: dict[str, FileEntry]) -> bool:
        return True

    def _pickle_groups(self, container: Container) -> dict[str, dict[str, FileEntry]]:
        wanted = {n for files in self.split_files.values() for n in files}
        wanted |= {"batches.meta", "meta"}
        return by_parent(container, lambda e: e.name in wanted, f"{self.name}:pickles")

    def _imagefolder(
        self, container: Container, split: str
    ) -> tuple[list[tuple[FileEntry, int]], set[str]]:
        """Images of ``split`` as (entry, official label) in label then natural name order, and
        the names of class folders that are not classes of this dataset (ignored)."""
        key = f"{self.name}:imagefolder"
        memo = container.memo.get(key)
        if memo is None:
            index = {c: i for i, c in enumerate(self.classes)}
            groups: dict[tuple[str, str], list[tuple[FileEntry, int]]] = {}
            unknown: dict[tuple[str, str], set[str]] = {}
            for entry in entries_of(container):
                parts = entry.path.rsplit("/", 3)
                if len(parts) < 3:
                    continue
                prefix = parts[0] if len(parts) == 4 else ""
                split_name, cls, filename = parts[-3], parts[-2], parts[-1]
                if split_name != "train" and split_name != "test":
                    continue
                if not is_image_name(filename):
                    continue
                label = index.get(cls)
                if label is None:
                    unknown.setdefault((prefix, split_name), set()).add(cls)
                    continue
                groups.setdefault((prefix, split_name), []).append((entry, label))
            memo = (groups, unknown)
            container.memo[key] = memo
        groups, unknown = memo  # type: ignore[misc]
        candidates = [(p, items) for (p, s), items in groups.items() if s == split]
        if not candidates:
            return [], set()
        prefix, items = max(candidates, key=lambda t: (len(t[1]), -len(t[0])))
        buckets: dict[int, list[FileEntry]] = {}
        for entry, label in items:
            buckets.setdefault(label, []).append(entry)
        ordered = [
            (entry, label)
            for label in sorted(buckets)
            for entry in natural_sorted(buckets[label], lambda e: e.name)
        ]
        return ordered, unknown.get((prefix, split), set())

    def find(self, containers: Sequence[Container]) -> Layout | None:
        layout = Layout(kind="cifar-python")
        partial: dict[str, str] = {}
        for split, needed in self.split_files.items():
            for container in containers:
                groups = self._pickle_groups(container)
                for folder in sorted_dirs(groups):
                    names = groups[folder]
                    if not self._is_pickle_dir(folder, names):
                        continue
                    if all(n in names for n in needed):
                        layout.splits[split] = SplitFiles(
                            [names[n] for n in needed], data={"folder": folder}
                        )
                        break
                    have = [n for n in needed if n in names]
                    if have and split not in partial:
                        lacking = [n for n in needed if n not in names]
                        partial[split] = (
                            f"{', '.join(lacking)} not found in {container.describe()} "
                            f"(folder {folder or '.'!r})"
                        )
                if split in layout.splits:
                    break
        if layout.splits:
            for split in self.split_files:
                if split not in layout.splits:
                    layout.missing[split] = partial.get(split, f"no {split} batch file found")
            return layout
        layout = Layout(kind="imagefolder")
        for split in self.split_files:
            for container in containers:
                items, ignored = self._imagefolder(container, split)
                if items:
                    layout.splits[split] = SplitFiles(
                        [e for e, _ in items], count=len(items),
                        data={"labels": [label for _, label in items]},
                    )
                    if ignored:
                        layout.notes.append(
                            f"{split}: ignored folders that are not {self.title} classes: "
                            f"{', '.join(sorted(ignored))}"
                        )
                    missing_classes = len(self.classes) - len({label for _, label in items})
                    if missing_classes:
                        layout.notes.append(
                            f"{split}: {missing_classes} of {len(self.classes)} classes have "
                            "no images"
                        )
                    break
            else:
                layout.missing[split] = f"no {split}/<class>/ images found"
        if layout.splits:
            return layout
        if partial:
            return Layout(kind="cifar-python", missing=partial)
        return None

    # -- describing ----------------------------------------------------------------------------

    def count(self, layout: Layout, split: str) -> int | None:
        return layout.splits[split].count  # pickles: decode to know

    def class_names(self, layout: Layout) -> tuple[str, ...]:
        return self.classes

    def image_size(self, layout: Layout) -> tuple[int, int, int]:
        if layout.kind == "imagefolder":
            first = next(iter(layout.splits.values())).entries[0]
            return peek_image_size(layout, first)
        return (3, 32, 32)

    # -- reading -------------------------------------------------------------------------------

    def _unpickle(self, entry: FileEntry, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        try:
            obj = safe_loads(data)
        except UnsafePickleError as error:
            raise DatasetCorruptError(
                f"{entry.display} is not a plain {self.title} data pickle: {error}. It was refused "
                "without running anything; delete it and download the official file again."
            ) from None
        except Exception as error:  # any unpickling failure means a bad file
            raise DatasetCorruptError(
                f"{entry.display} is not a valid {self.title} pickle ({type(error).__name__}: "
                f"{error}); it is truncated or damaged: delete it and download it again."
            ) from None
        if not isinstance(obj, dict):
            raise DatasetCorruptError(
                f"{entry.display} holds a {type(obj).__name__}, not a {self.title} batch dict"
            )
        images = _get(obj, "data")
        labels = _get(obj, self.label_key)
        if (not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2
                or images.shape[1] != 3072):
            shape = getattr(images, "shape", None)
            raise DatasetCorruptError(
                f"{entry.display}: 'data' must be a uint8 array (N, 3072), got "
                f"{type(images).__name__} {shape}; the file is damaged"
            )
        try:
            label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise DatasetCorruptError(
                f"{entry.display}: {self.label_key!r} is not a list of ints"
            ) from None
        if label_array.shape[0] != images.shape[0]:
            raise DatasetCorruptError(
                f"{entry.display}: {images.shape[0]} images but {label_array.shape[0]} labels "
                "(image/label count mismatch); the file is damaged"
            )
        if label_array.size and (label_array.min() < 0 or label_array.max() >= len(self.classes)):
            raise DatasetCorruptError(
                f"{entry.display}: labels outside 0..{len(self.classes) - 1}; the file is damaged"
            )
        return images.reshape(-1, 3, 32, 32), label_array

    def read(self, layout: Layout, split: str, size: Size | None) -> Decoded:
        files = layout.splits[split]
        if layout.kind == "imagefolder":
            images, uniform = decode_entries(
                files.entries, size=size, default_size=None, what=f"{self.title} {split} images"
            )
            labels = np.asarray(files.data["labels"], dtype=np.int64)
            return Decoded(images, labels, self.classes, uniform)
        blobs: dict[FileEntry, bytes] = {}
        read_entries(files.entries, lambda e, data: blobs.__setitem__(e, data))
        parts = [self._unpickle(e, blobs.pop(e)) for e in files.entries]
        images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
        labels = np.concatenate([p[1] for p in parts])
        return Decoded(images, labels, self.classes, True)


class Cifar10(_Cifar):
    name = "cifar10"
    title = "CIFAR-10"
    description = "60,000 32x32 colour images in 10 classes (50,000 train, 10,000 test)"
    homepage = "https://www.cs.toronto.edu/~kriz/cifar.html"
    aliases = ("cifar-10", "cifar_10")
    folder_names = ("cifar10", "cifar-10", "cifar_10", "cifar-10-batches-py", "cifar-10-python")
    archive_pattern = r"cifar[-_ ]?10(?!\d)"
    classes = CIFAR10_CLASSES
    split_files = {
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
    }
    label_key = "labels"
    resources = (
        Resource(
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            filename="cifar-10-python.tar.gz",
            sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            size=170498071,
            md5="c58f30108f718f92721af3b95e74349a",
        ),
    )
    known_files = {
        "CIFAR-10-images.tar.xz": (
            "ee4de3d7485a82602fe0c7f64386db4141a1515771a513ac5dc89b5bf832dff9"
        ),
    }


DATASETS.add(Cifar10.name, Cifar10(), aliases=Cifar10.aliases)


class Cifar100(_Cifar):
    name = "cifar100"
    title = "CIFAR-100"
    description = "60,000 32x32 colour images in 100 fine classes (50,000 train, 10,000 test)"
    homepage = "https://www.cs.toronto.edu/~kriz/cifar.html"
    aliases = ("cifar-100", "cifar_100")
    folder_names = ("cifar100", "cifar-100", "cifar_100", "cifar-100-python")
    archive_pattern = r"cifar[-_ ]?100"
    classes = CIFAR100_CLASSES
    split_files = {"train": ("train",), "test": ("test",)}
    label_key = "fine_labels"
    resources = (
        Resource(
            url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            filename="cifar-100-python.tar.gz",
            sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
            size=169001437,
            md5="eb9058c3a382ffc7106e4002c42a8d85",
        ),
    )

    def _is_pickle_dir(self, folder: str, names: dict[str, FileEntry]) -> bool:
        # "train"/"test" are generic file names: require the meta file or the official folder
        return "meta" in names or "cifar-100" in folder.rsplit("/", 1)[-1].lower()


DATASETS.add(Cifar100.name, Cifar100(), aliases=Cifar100.aliases)
