"""GTSRB, the official layout.

Train: ``GTSRB/Final_Training/Images/000NN/*.ppm`` with ``GT-000NN.csv`` in each class folder.
Test: ``GTSRB/Final_Test/Images/*.ppm`` with ``GT-final_test.csv`` (``;``-separated, column
``ClassId``) — either at ``GTSRB/Final_Test/`` or, as in the official ``GTSRB_Final_Test_GT.zip``,
at the top level of its own archive. The train and test parts may be separate archives.

Images of the official release vary in size (15x15 .. 250x250); they are resized (bilinear,
antialiased) to 32x32 unless ``image_size`` is given. The copy under ``shared/data`` is already
32x32, so it is kept as is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np

from encshield.data.base import DATASETS, DatasetFormat, Decoded, Layout, Resource, SplitFiles
from encshield.data.files import Container, FileEntry
from encshield.data.formats.common import (
    parse_csv,
    parse_int,
    peek_image_size,
    read_images_and_files,
    sort_entries,
)
from encshield.data.imaging import Size, stack_images
from encshield.errors import DatasetCorruptError

GTSRB_CLASSES: tuple[str, ...] = (
    "Speed limit (20km/h)",
    "Speed limit (30km/h)",
    "Speed limit (50km/h)",
    "Speed limit (60km/h)",
    "Speed limit (70km/h)",
    "Speed limit (80km/h)",
    "End of speed limit (80km/h)",
    "Speed limit (100km/h)",
    "Speed limit (120km/h)",
    "No passing",
    "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection",
    "Priority road",
    "Yield",
    "Stop",
    "No vehicles",
    "Vehicles over 3.5 metric tons prohibited",
    "No entry",
    "General caution",
    "Dangerous curve to the left",
    "Dangerous curve to the right",
    "Double curve",
    "Bumpy road",
    "Slippery road",
    "Road narrows on the right",
    "Road work",
    "Traffic signals",
    "Pedestrians",
    "Children crossing",
    "Bicycles crossing",
    "Beware of ice/snow",
    "Wild animals crossing",
    "End of all speed and passing limits",
    "Turn right ahead",
    "Turn left ahead",
    "Ahead only",
    "Go straight or right",
    "Go straight or left",
    "Keep right",
    "Keep left",
    "Roundabout mandatory",
    "End of no passing",
    "End of no passing by vehicles over 3.5 metric tons",
)

DEFAULT_SIZE: Size = (32, 32)
_BASE = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
_TRAIN_RE = re.compile(
    r"^(?P<prefix>(?:.*/)?)Final_Training/Images/(?P<cls>\d{5})/(?P<file>[^/]+)$"
)
_TEST_RE = re.compile(
    r"^(?P<prefix>(?:.*/)?)Final_Test/Images/(?P<file>[^/]+\.ppm)$", re.IGNORECASE
)
_GT_NAME = "gt-final_test.csv"


class _ClassImages(TypedDict):
    ppm: list[FileEntry]


class _ClassFolder(_ClassImages, total=False):
    """One class folder of the training set: its images and (normally) its annotation file."""

    csv: FileEntry


class Gtsrb(DatasetFormat):
    name = "gtsrb"
    title = "GTSRB"
    description = "German Traffic Sign Recognition Benchmark: 43 classes, 39,209 train, 12,630 test"
    homepage = "https://benchmark.ini.rub.de/gtsrb_dataset.html"
    folder_names = ("gtsrb",)
    archive_pattern = r"gtsrb"
    resources = (
        Resource(_BASE + "GTSRB_Final_Training_Images.zip", "GTSRB_Final_Training_Images.zip",
                 None, md5="f33fd80ac59bff73c82d25ab499e03a3"),
        Resource(_BASE + "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_Images.zip",
                 None, md5="c7e4e6327067d32654124b0fe9e82185"),
        Resource(_BASE + "GTSRB_Final_Test_GT.zip", "GTSRB_Final_Test_GT.zip",
                 None, md5="fe31e9c9270bbcd7b84b7f21a9d9d9e5"),
    )
    known_files = {
        "GTSRB_Final_Training.tar.xz": (
            "d6817073d58ea8fd89b86b473e60ab2bc84f0628a05dcca58beef6b2f5bec8d5"
        ),
        "GTSRB_Final_Test.tar.xz": (
            "7db2ae7f2ebca6e4473ae8182a5aae1a5d0300c8094251ba6904fcddcfded0d8"
        ),
    }
    version = 1

    # -- finding -------------------------------------------------------------------------------

    def _train(self, container: Container) -> dict[str, Any] | None:
        """``{"prefix": str, "folders": {class: {"ppm": [entries], "csv": entry}}}``."""
        groups: dict[str, dict[str, _ClassFolder]] = {}
        for entry in container.entries or []:
            m = _TRAIN_RE.match(entry.path)
            if not m:
                continue
            folder = groups.setdefault(m["prefix"], {}).setdefault(m["cls"], {"ppm": []})
            name = m["file"]
            if name.lower().endswith(".ppm"):
                folder["ppm"].append(entry)
            elif name.lower() == f"gt-{m['cls']}.csv":
                folder["csv"] = entry
        candidates = [(p, f) for p, f in groups.items() if any(c["ppm"] for c in f.values())]
        if not candidates:
            return None
        prefix, folders = min(candidates, key=lambda t: (len(t[0]), t[0]))
        return {"prefix": prefix, "folders": dict(sorted(folders.items()))}

    def _test_images(self, container: Container) -> tuple[str, list[FileEntry]] | None:
        groups: dict[str, list[FileEntry]] = {}
        for entry in container.entries or []:
            m = _TEST_RE.match(entry.path)
            if m:
                groups.setdefault(m["prefix"], []).append(entry)
        if not groups:
            return None
        prefix = min(groups, key=lambda p: (len(p), p))
        return prefix, sort_entries(groups[prefix])

    def find(self, containers: Sequence[Container]) -> Layout | None:
        layout = Layout(kind="gtsrb-official")
        for container in containers:
            train = self._train(container)
            if train is None:
                continue
            folders: dict[str, _ClassFolder] = train["folders"]
            entries: list[FileEntry] = []
            for folder in folders.values():
                entries.extend(folder["ppm"])
                if "csv" in folder:
                    entries.append(folder["csv"])
            count = sum(len(f["ppm"]) for f in folders.values())
            layout.splits["train"] = SplitFiles(entries, count=count, data=train)
            break
        else:
            layout.missing["train"] = "no Final_Training/Images/000NN/*.ppm found"
        test = None
        for container in containers:
            test = self._test_images(container)
            if test is not None:
                test_container = container
                break
        gt_candidates: list[FileEntry] = []
        for container in containers:
            gt_candidates.extend(e for e in container.entries or [] if e.name.lower() == _GT_NAME)
        if test is not None:
            prefix, images = test
            # prefer the GT file next to the images, then any other
            gt_candidates.sort(
                key=lambda e: (e.container is not test_container, e.path.count("/"), e.path)
            )
            gt = gt_candidates[0] if gt_candidates else None
            entries = list(images) + ([gt] if gt else [])
            layout.splits["test"] = SplitFiles(
                entries, count=len(images), data={"images": images, "gt": gt}
            )
            if gt is None:
                layout.notes.append(
                    "test labels (GT-final_test.csv from GTSRB_Final_Test_GT.zip) are missing"
                )
        else:
            layout.missing["test"] = "no Final_Test/Images/*.ppm found"
        return layout if layout.splits else None

    # -- describing ----------------------------------------------------------------------------

    def class_names(self, layout: Layout) -> tuple[str, ...]:
        return GTSRB_CLASSES

    def image_size(self, layout: Layout) -> tuple[int, int, int]:
        split = next(iter(layout.splits.values()))
        first = next(e for e in split.entries if e.name.lower().endswith(".ppm"))
        size = peek_image_size(layout, first)
        if size[1:] != DEFAULT_SIZE:
            note = (
                f"images vary in size (first is {size[2]}x{size[1]}); load() resizes them to "
                f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]} unless image_size is given"
            )
            if note not in layout.notes:
                layout.notes.append(note)
            return (3, *DEFAULT_SIZE)
        return size

    # -- reading -------------------------------------------------------------------------------

    def _corrupt(self, what: str, detail: str) -> DatasetCorruptError:
        return DatasetCorruptError(
            f"{what}: {detail}. The GTSRB files are incomplete or damaged: delete them and "
            f"download/extract them again (encshield data download gtsrb)."
        )

    def _rows(self, entry: FileEntry, blobs: dict[FileEntry, bytes]) -> list[dict[str, str]]:
        return parse_csv(blobs[entry], entry.display, required=("Filename", "ClassId"))

    def read(self, layout: Layout, split: str, size: Size | None) -> Decoded:
        files = layout.splits[split]
        order: list[int] = []  # positions in `images` in annotation order
        labels: list[int] = []
        if split == "train":
            folders = files.data["folders"]
            lacking = [cls for cls, f in folders.items() if "csv" not in f]
            if lacking:
                raise self._corrupt(
                    f"class folder Final_Training/Images/{lacking[0]} in "
                    f"{files.entries[0].container.describe()}",
                    f"its annotation file GT-{lacking[0]}.csv is missing",
                )
            images = [e for f in folders.values() for e in sort_entries(f["ppm"])]
            csvs = [f["csv"] for f in folders.values()]
            arrays, blobs = read_images_and_files(images, csvs)
            position = {(e.parent, e.name): i for i, e in enumerate(images)}
            for cls, folder in folders.items():
                csv_entry = folder["csv"]
                rows = self._rows(csv_entry, blobs)
                if len(rows) != len(folder["ppm"]):
                    raise self._corrupt(
                        csv_entry.display,
                        f"{len(rows)} rows but {len(folder['ppm'])} images in the folder "
                        "(image/label count mismatch)",
                    )
                for row in rows:
                    i = position.get((csv_entry.parent, row["Filename"]))
                    if i is None:
                        raise self._corrupt(
                            csv_entry.display, f"lists {row['Filename']!r}, which is missing"
                        )
                    label = parse_int(row["ClassId"], csv_entry.display)
                    if label != int(cls):
                        raise self._corrupt(
                            csv_entry.display, f"ClassId {label} in the folder of class {int(cls)}"
                        )
                    order.append(i)
                    labels.append(label)
        else:
            gt: FileEntry | None = files.data["gt"]
            images = files.data["images"]
            if gt is None:
                raise self._corrupt(
                    f"the GTSRB test images in {images[0].container.describe()}",
                    "the labels file GT-final_test.csv is missing (it comes in "
                    f"GTSRB_Final_Test_GT.zip: {_BASE}GTSRB_Final_Test_GT.zip; put it next to the "
                    "test images archive/folder)",
                )
            arrays, blobs = read_images_and_files(images, [gt])
            rows = self._rows(gt, blobs)
            by_name = {e.name: i for i, e in enumerate(images)}
            if len(rows) != len(images):
                raise self._corrupt(
                    gt.display,
                    f"{len(rows)} rows but {len(images)} test images (image/label count mismatch)",
                )
            for row in rows:
                i = by_name.get(row["Filename"])
                if i is None:
                    raise self._corrupt(gt.display, f"lists {row['Filename']!r}, which is missing")
                order.append(i)
                labels.append(parse_int(row["ClassId"], gt.display))
        if len(set(order)) != len(order):
            raise self._corrupt(f"GTSRB {split} annotations", "an image is listed twice")
        label_array = np.asarray(labels, dtype=np.int64)
        if label_array.size and (label_array.min() < 0 or label_array.max() >= len(GTSRB_CLASSES)):
            raise self._corrupt(f"GTSRB {split} annotations", "ClassId outside 0..42")
        pixels, uniform = stack_images(
            [arrays[i] for i in order], size=size, default_size=DEFAULT_SIZE,
            what=f"GTSRB {split} images",
        )
        return Decoded(pixels, label_array, GTSRB_CLASSES, uniform)


DATASETS.add(Gtsrb.name, Gtsrb(), aliases=Gtsrb.aliases)
