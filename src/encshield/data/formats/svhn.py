"""SVHN cropped digits: ``{train,test,extra}_32x32.mat`` (MATLAB v5, read with scipy).

``X`` is (32, 32, 3, N) uint8, ``y`` is (N, 1) with 10 meaning the digit 0.

:meth:`Svhn.count` (``info``) reads only the variable headers, so it also walks the file's
top-level data elements (8-byte tags with their byte counts) to check that the file really holds
every byte they announce, and refuses variables that announce far more bytes than the file has
(a compressed ``.mat`` bomb) before scipy decompresses them.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encshield.data.base import DATASETS, DatasetFormat, Decoded, Layout, Resource, SplitFiles
from encshield.data.bounded import inflated_size
from encshield.data.files import Container, FileEntry
from encshield.data.imaging import Size
from encshield.data.reading import read_one
from encshield.errors import DatasetCorruptError

SVHN_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
_BASE = "http://ufldl.stanford.edu/housenumbers/"


_MI_COMPRESSED = 15  # MAT v5 data type of a zlib-compressed element


def _mat_source(entry: FileEntry) -> Any:
    path = entry.fs_path
    return str(path) if path is not None else io.BytesIO(read_one(entry, verify=True))


def _mat_extent(source: Any, what: str, path: Path) -> tuple[int, int] | None:
    """``(bytes the top-level data elements of a MAT v5 file announce, file size)``; ``None`` for
    other MAT versions (left to scipy). Reads only the 8-byte tags (seeks over the data), except
    that compressed elements are decompressed once, counting (scipy would hold them whole even
    to list the variables): a decompression bomb is refused here."""
    with open(source, "rb") if isinstance(source, str) else contextlib.nullcontext(source) as fh:
        fh.seek(0)
        header = fh.read(128)
        size = fh.seek(0, io.SEEK_END)
        if len(header) < 128 or header[124:126] not in (b"\x00\x01", b"\x01\x00"):
            return None
        order = {b"IM": "little", b"MI": "big"}.get(header[126:128])
        if order is None:
            return None
        end = 128
        while end < size:
            fh.seek(end)
            tag = fh.read(8)
            if len(tag) < 8:
                break
            first = int.from_bytes(tag[:4], order)  # type: ignore[arg-type]
            if first >> 16:  # small data element: its data sits in the tag
                end += 8
                continue
            nbytes = int.from_bytes(tag[4:], order)  # type: ignore[arg-type]
            if first == _MI_COMPRESSED and end + 8 + nbytes <= size:
                inflated_size(fh, nbytes, what, path=path)
            end += 8 + nbytes
    return end, size


class Svhn(DatasetFormat):
    name = "svhn"
    title = "SVHN"
    description = (
        "Street View House Numbers, cropped 32x32 digits: 73,257 train, 26,032 test, "
        "531,131 extra"
    )
    homepage = "http://ufldl.stanford.edu/housenumbers/"
    splits = ("train", "test", "extra")
    folder_names = ("svhn",)
    archive_pattern = r"svhn|_32x32\.mat$"
    resources = (
        Resource(_BASE + "train_32x32.mat", "train_32x32.mat",
                 "435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8", 182040794,
                 "e26dedcc434d2e4c54c9b2d4a06d8373"),
        Resource(_BASE + "test_32x32.mat", "test_32x32.mat",
                 "cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b", 64275384,
                 "eb5a983be6a315427106f1b164d9cef3"),
        Resource(_BASE + "extra_32x32.mat", "extra_32x32.mat",
                 "a133a4beb38a00fcdda90c9489e0c04f900b660ce8a316a5e854838379a71eb3", 1329278602),
    )

    def find(self, containers: Sequence[Container]) -> Layout | None:
        layout = Layout(kind="svhn-mat")
        for split in self.splits or ():
            filename = f"{split}_32x32.mat"
            for container in containers:
                matches = [e for e in container.entries or [] if e.name == filename]
                if matches:
                    entry = min(matches, key=lambda e: (e.path.count("/"), e.path))
                    layout.splits[split] = SplitFiles([entry])
                    break
            else:
                layout.missing[split] = f"{filename} not found"
        return layout if layout.splits else None

    def _corrupt(self, entry: FileEntry, detail: str) -> DatasetCorruptError:
        return self.corrupt_file(entry, "SVHN .mat file", detail)

    def count(self, layout: Layout, split: str) -> int | None:
        entry = layout.splits[split].entries[0]
        if layout.splits[split].count is None:
            layout.splits[split].count = self._checked_count(entry)
        return layout.splits[split].count

    def _checked_count(self, entry: FileEntry) -> int:
        """The number of images, once the file holds every byte its variables announce."""
        import scipy.io

        source = _mat_source(entry)
        try:
            extent = _mat_extent(source, entry.display, entry.fs_path or entry.container.path)
            if extent is not None and extent[0] > extent[1]:
                raise self._corrupt(
                    entry, f"its data elements need {extent[0]:,} bytes, the file has {extent[1]:,}"
                )
            if not isinstance(source, str):
                source.seek(0)
            variables = {name: shape for name, shape, _ in scipy.io.whosmat(source)}
        except DatasetCorruptError:
            raise
        except Exception as error:  # scipy raises many kinds on bad files
            raise self._corrupt(entry, f"{type(error).__name__}: {error}") from None
        shape, labels = variables.get("X"), variables.get("y")
        if shape is None or len(shape) != 4:
            raise self._corrupt(entry, f"no 4-d variable X (found {sorted(variables)})")
        if labels is None or math.prod(labels) != shape[3]:
            n_labels = math.prod(labels) if labels is not None else 0
            raise self._corrupt(entry, f"{shape[3]} images but {n_labels} labels (count mismatch)")
        return int(shape[3])

    def class_names(self, layout: Layout) -> tuple[str, ...]:
        return SVHN_CLASSES

    def image_size(self, layout: Layout) -> tuple[int, int, int]:
        return (3, 32, 32)

    def read(self, layout: Layout, split: str, size: Size | None) -> Decoded:
        import scipy.io

        self.count(layout, split)  # sizes checked before scipy decompresses or allocates
        entry = layout.splits[split].entries[0]
        try:
            mat = scipy.io.loadmat(_mat_source(entry), variable_names=["X", "y"])
        except DatasetCorruptError:
            raise
        except Exception as error:  # scipy raises many kinds on bad files
            raise self._corrupt(entry, f"{type(error).__name__}: {error}") from None
        x, y = mat.get("X"), mat.get("y")
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[2] != 3:
            raise self._corrupt(entry, f"X must be (H, W, 3, N), got {getattr(x, 'shape', None)}")
        if not isinstance(y, np.ndarray) or y.size != x.shape[3]:
            raise self._corrupt(
                entry, f"{x.shape[3]} images but {getattr(y, 'size', 0)} labels (count mismatch)"
            )
        labels = y.reshape(-1).astype(np.int64)
        labels[labels == 10] = 0
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise self._corrupt(entry, f"labels outside 0..10 ({labels.min()}..{labels.max()})")
        images = np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8, copy=False)
        return Decoded(images, labels, SVHN_CLASSES, True)


DATASETS.add(Svhn.name, Svhn(), aliases=Svhn.aliases)
