"""Tiny-ImageNet-200 (``tiny-imagenet-200/``).

``train/<wnid>/images/*.JPEG``; ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``
(tab-separated, column 2 = wnid); ``wnids.txt`` lists the 200 classes and ``words.txt`` names them.

Class order is the *sorted* list of wnids (from ``wnids.txt`` when present, else from the train
folders, else from the val annotations), so a val-only copy and a full copy give the same label
indices. Class names are the first synonym of each wnid in ``words.txt`` (the wnid itself when
``words.txt`` is absent). The unlabelled ``test`` split is not offered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from encshield.data.base import DATASETS, DatasetFormat, Decoded, Layout, Resource, SplitFiles
from encshield.data.files import Container, FileEntry
from encshield.data.formats.common import read_images_and_files, sort_entries
from encshield.data.imaging import Size, is_image_name, stack_images
from encshield.data.reading import read_entries
from encshield.errors import DatasetCorruptError

_TRAIN_RE = re.compile(r"^(?P<prefix>(?:.*/)?)train/(?P<wnid>[^/]+)/images/(?P<file>[^/]+)$")
_VAL_RE = re.compile(r"^(?P<prefix>(?:.*/)?)val/images/(?P<file>[^/]+)$")
_META = ("wnids.txt", "words.txt", "val_annotations.txt")


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin1")


class TinyImageNet(DatasetFormat):
    name = "tiny_imagenet"
    title = "Tiny-ImageNet-200"
    description = "64x64 colour images of 200 ImageNet classes: 100,000 train, 10,000 val"
    homepage = "http://cs231n.stanford.edu/"
    splits = ("train", "val")
    aliases = ("tiny-imagenet", "tinyimagenet", "tiny-imagenet-200")
    folder_names = ("tiny_imagenet", "tiny-imagenet", "tinyimagenet", "tiny-imagenet-200")
    archive_pattern = r"tiny[-_]?imagenet"
    resources = (
        Resource(
            url="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            filename="tiny-imagenet-200.zip",
            sha256="6198c8ae015e2b3e007c7841da39ec069199b9aa3bfa943a462022fe5e43c821",
            size=248100043,
            md5="90528d7ca1a48142e341f4ef8d21d0de",
        ),
    )
    known_files = {
        "tiny-imagenet-200_val.tar.xz": (
            "6dba0567f5dbad77abcb37baa2de680dc6175aa3266ea5a8294742e18aae4a14"
        ),
        "tiny-imagenet-200_train-200-per-class.tar.xz": (
            "5b33f1d29fb0833d42cf09d9eec94e873e11cf2376895466b845dbec97ee60da"
        ),
    }

    # -- finding -------------------------------------------------------------------------------

    def _scan(self, container: Container) -> dict[str, dict[str, Any]]:
        """prefix -> {"train": {wnid: [entries]}, "val": [entries], "<meta name>": entry}."""
        cached = container.memo.get("tiny")
        if cached is not None:
            return cached  # type: ignore[return-value]
        found: dict[str, dict[str, Any]] = {}
        for entry in container.entries or []:
            m = _TRAIN_RE.match(entry.path)
            if m and is_image_name(entry.name):
                train = found.setdefault(m["prefix"], {}).setdefault("train", {})
                train.setdefault(m["wnid"], []).append(entry)
                continue
            m = _VAL_RE.match(entry.path)
            if m and is_image_name(entry.name):
                found.setdefault(m["prefix"], {}).setdefault("val", []).append(entry)
                continue
            if entry.name in ("wnids.txt", "words.txt"):
                prefix = entry.path[: -len(entry.name)]
                found.setdefault(prefix, {})[entry.name] = entry
            elif entry.name == "val_annotations.txt" and entry.parent.rsplit("/", 1)[-1] == "val":
                prefix = entry.path[: -len("val/val_annotations.txt")]
                found.setdefault(prefix, {})[entry.name] = entry
        container.memo["tiny"] = found
        return found

    def find(self, containers: Sequence[Container]) -> Layout | None:
        """Each split from the first container (priority order) that holds it, so a train archive
        and a val archive side by side (or a train folder beside a val archive) form one dataset.

        ``val_annotations.txt`` comes from the val images' own folder; ``wnids.txt`` and
        ``words.txt`` from the same place as a split where possible, else from any container.
        """
        layout = Layout(kind="tiny-imagenet")
        scans = [(c, self._scan(c)) for c in containers]
        homes: list[dict[str, Any]] = []  # the scanned prefixes the splits come from
        for split in ("train", "val"):
            for _, scanned in scans:
                prefixes = [p for p, v in scanned.items() if split in v]
                if not prefixes:
                    continue
                found = scanned[min(prefixes, key=lambda p: (len(p), p))]
                homes.append(found)
                if split == "train":
                    layout.splits["train"] = self._train_split(found["train"], layout)
                else:
                    images = sort_entries(found["val"])
                    ann = found.get("val_annotations.txt")
                    layout.shared["val_annotations.txt"] = ann
                    layout.splits["val"] = SplitFiles(
                        images + ([ann] if ann else []),
                        count=len(images),
                        data={"images": images},
                    )
                    if ann is None:
                        layout.notes.append("val/val_annotations.txt (val labels) is missing")
                break
            else:
                where = "train/<wnid>/images/" if split == "train" else "val/images/"
                layout.missing[split] = f"no {where} found"
        if not layout.splits:
            return None
        everywhere = [v for _, scanned in scans for v in scanned.values()]
        for name in ("wnids.txt", "words.txt"):
            entry = next((h[name] for h in [*homes, *everywhere] if name in h), None)
            if entry is not None:
                layout.shared[name] = entry
                for files in layout.splits.values():  # class order/names depend on it: cache key
                    files.entries.append(entry)
        if layout.shared.get("val_annotations.txt") is None:
            layout.shared.pop("val_annotations.txt", None)
        return layout

    @staticmethod
    def _train_split(train: dict[str, list[FileEntry]], layout: Layout) -> SplitFiles:
        """The train images class by class; a copy with fewer than the official 500 images per
        class (e.g. a subset) is accepted and its per-class count noted."""
        images = [e for wnid in sorted(train) for e in sort_entries(train[wnid])]
        per_class = sorted({len(v) for v in train.values()})
        if per_class != [500]:
            counts = f"{per_class[0]}" if len(per_class) == 1 else f"{per_class[0]}-{per_class[-1]}"
            layout.notes.append(
                f"train: {len(images)} images in {len(train)} class folders, {counts} per class "
                "(the official split has 500 per class)"
            )
        return SplitFiles(
            list(images), count=len(images), data={"images": images, "wnids": sorted(train)}
        )

    # -- metadata ------------------------------------------------------------------------------

    def _read_meta(self, layout: Layout) -> None:
        """Read wnids.txt, words.txt and val_annotations.txt (small) once; one pass per archive."""
        if "meta_read" in layout.shared:
            return
        wanted = [layout.shared[n] for n in _META if n in layout.shared]
        blobs: dict[FileEntry, bytes] = {}
        read_entries(wanted, lambda e, d: blobs.__setitem__(e, d), verify=False)
        for entry, data in blobs.items():
            layout.shared[f"text:{entry.name}"] = _text(data)
        layout.shared["meta_read"] = True

    def _annotations(self, layout: Layout) -> list[tuple[str, str]]:
        self._read_meta(layout)
        text = layout.shared.get("text:val_annotations.txt")
        ann: FileEntry = layout.shared["val_annotations.txt"]
        rows = []
        for lineno, line in enumerate((text or "").splitlines(), 1):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 2:
                raise DatasetCorruptError(
                    f"{ann.display} line {lineno}: expected tab-separated 'file<TAB>wnid...', got "
                    f"{line[:60]!r}; the file is damaged: extract/download it again"
                )
            rows.append((cols[0].strip(), cols[1].strip()))
        return rows

    def _wnids(self, layout: Layout) -> list[str]:
        if "wnids" in layout.shared:
            return layout.shared["wnids"]  # type: ignore[no-any-return]
        self._read_meta(layout)
        listed = layout.shared.get("text:wnids.txt")
        if listed:
            wnids = sorted({w.strip() for w in str(listed).split() if w.strip()})
        elif "train" in layout.splits:
            wnids = list(layout.splits["train"].data["wnids"])
        elif "val_annotations.txt" in layout.shared:
            wnids = sorted({w for _, w in self._annotations(layout)})
        else:
            where = next(iter(layout.splits.values())).entries[0].container.describe()
            raise DatasetCorruptError(
                f"Tiny-ImageNet in {where}: neither wnids.txt, "
                "train folders nor val/val_annotations.txt found, so the classes are unknown"
            )
        layout.shared["wnids"] = wnids
        return wnids

    def class_names(self, layout: Layout) -> tuple[str, ...]:
        wnids = self._wnids(layout)
        words_text = layout.shared.get("text:words.txt")
        if not words_text:
            return tuple(wnids)
        words: dict[str, str] = {}
        for line in str(words_text).splitlines():
            if "\t" in line:
                wnid, names = line.split("\t", 1)
                words[wnid.strip()] = names.strip()
        first = [words.get(w, w).split(",")[0].strip() or w for w in wnids]
        if len(set(first)) == len(first):
            return tuple(first)
        return tuple(words.get(w, w) for w in wnids)

    def image_size(self, layout: Layout) -> tuple[int, int, int]:
        return (3, 64, 64)

    # -- reading -------------------------------------------------------------------------------

    def read(self, layout: Layout, split: str, size: Size | None) -> Decoded:
        files = layout.splits[split]
        images_list: list[FileEntry] = files.data["images"]
        ann: FileEntry | None = layout.shared.get("val_annotations.txt")
        if split == "val" and ann is None:
            raise DatasetCorruptError(
                f"Tiny-ImageNet val images in {images_list[0].container.describe()} have no "
                "val/val_annotations.txt (the labels); extract/download tiny-imagenet-200.zip again"
            )
        # the (small) metadata files that sit in the images' archives come in the same pass; those
        # in other archives (e.g. wnids.txt in a train archive when reading val) in a short one
        meta = [] if "meta_read" in layout.shared else [
            layout.shared[n] for n in _META if n in layout.shared
        ]
        homes = {id(e.container) for e in images_list}
        arrays, blobs = read_images_and_files(
            images_list, [e for e in meta if id(e.container) in homes]
        )
        elsewhere = [e for e in meta if id(e.container) not in homes]
        read_entries(elsewhere, lambda e, d: blobs.__setitem__(e, d), verify=False)
        if meta:
            for entry, data in blobs.items():
                layout.shared[f"text:{entry.name}"] = _text(data)
            layout.shared["meta_read"] = True
        wnids = self._wnids(layout)
        index = {w: i for i, w in enumerate(wnids)}
        names = self.class_names(layout)
        if split == "train":
            labels = []
            for entry in images_list:
                wnid = entry.path.split("/")[-3]
                if wnid not in index:
                    raise DatasetCorruptError(
                        f"{entry.display}: class folder {wnid!r} is not in wnids.txt; the copy is "
                        "inconsistent: extract/download tiny-imagenet-200.zip again"
                    )
                labels.append(index[wnid])
            images, uniform = stack_images(
                arrays, size=size, default_size=None, what="Tiny-ImageNet train images"
            )
            return Decoded(images, np.asarray(labels, dtype=np.int64), names, uniform)
        assert ann is not None
        rows = self._annotations(layout)
        position = {e.name: i for i, e in enumerate(images_list)}
        if len(rows) != len(images_list):
            raise DatasetCorruptError(
                f"{ann.display} has {len(rows)} rows but val/images holds {len(images_list)} "
                "images (image/label count mismatch); extract/download tiny-imagenet-200.zip again"
            )
        order, labels = [], []
        for filename, wnid in rows:
            i = position.get(filename)
            if i is None:
                raise DatasetCorruptError(f"{ann.display} lists {filename!r}, which is missing")
            if wnid not in index:
                raise DatasetCorruptError(f"{ann.display}: {filename} has unknown class {wnid!r}")
            order.append(i)
            labels.append(index[wnid])
        if len(set(order)) != len(order):
            raise DatasetCorruptError(f"{ann.display} lists an image twice")
        images, uniform = stack_images(
            [arrays[i] for i in order], size=size, default_size=None,
            what="Tiny-ImageNet val images",
        )
        return Decoded(images, np.asarray(labels, dtype=np.int64), names, uniform)


DATASETS.add(TinyImageNet.name, TinyImageNet(), aliases=TinyImageNet.aliases)
