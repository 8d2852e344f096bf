"""Generic ImageFolder: ``<root>/<split>/<class>/<image>`` (needs an explicit ``root``).

Splits are the sub-folders found; class order is the sorted union of the class folder names over
all splits (so label indices agree between splits); within a class, files keep their natural name
order. Images must share one size unless ``image_size`` is given. ``root`` may also be an archive
(optionally wrapping everything in one top folder).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from encshield.data.base import DATASETS, DatasetFormat, Decoded, Layout, SplitFiles
from encshield.data.files import Container, FileEntry
from encshield.data.formats.common import decode_entries, peek_image_size, sort_entries
from encshield.data.imaging import Size, is_image_name


class ImageFolder(DatasetFormat):
    name = "imagefolder"
    title = "ImageFolder"
    description = "any <root>/<split>/<class>/<image> tree (jpg, png, ppm, bmp, webp, ...)"
    homepage = ""
    splits = None  # the folders found
    aliases = ("image_folder", "image-folder")
    needs_explicit_root = True
    obtain_note = (
        "pass the folder (or archive) holding <split>/<class>/<image> files: "
        "load('imagefolder', split, root=PATH) or --root PATH"
    )

    def find(self, containers: Sequence[Container]) -> Layout | None:
        for container in containers:
            by_prefix: dict[str, list[FileEntry]] = {}
            for entry in container.entries or []:
                parts = entry.path.split("/")
                if len(parts) < 3 or not is_image_name(entry.name):
                    continue
                if container.kind == "dir" and len(parts) != 3:
                    continue  # folders: exactly <split>/<class>/<image> below the root
                by_prefix.setdefault("/".join(parts[:-3]), []).append(entry)
            if not by_prefix:
                continue
            prefix = min(
                by_prefix, key=lambda p: (p.count("/") + (1 if p else 0), -len(by_prefix[p]), p)
            )
            items = by_prefix[prefix]
            classes = sorted({e.path.split("/")[-2] for e in items})
            index = {c: i for i, c in enumerate(classes)}
            splits: dict[str, list[FileEntry]] = {}
            for entry in items:
                splits.setdefault(entry.path.split("/")[-3], []).append(entry)
            layout = Layout(
                kind="imagefolder", shared={"classes": tuple(classes), "prefix": prefix}
            )
            for split in sorted(splits):
                buckets: dict[int, list[FileEntry]] = {}
                for entry in splits[split]:
                    buckets.setdefault(index[entry.path.split("/")[-2]], []).append(entry)
                ordered = [e for label in sorted(buckets) for e in sort_entries(buckets[label])]
                labels = [index[e.path.split("/")[-2]] for e in ordered]
                layout.splits[split] = SplitFiles(
                    ordered, count=len(ordered), data={"labels": labels}
                )
            return layout
        return None

    def class_names(self, layout: Layout) -> tuple[str, ...]:
        return layout.shared["classes"]  # type: ignore[no-any-return]

    def image_size(self, layout: Layout) -> tuple[int, int, int]:
        return peek_image_size(layout, next(iter(layout.splits.values())).entries[0])

    def read(self, layout: Layout, split: str, size: Size | None) -> Decoded:
        files = layout.splits[split]
        images, uniform = decode_entries(
            files.entries, size=size, default_size=None, what=f"ImageFolder {split} images"
        )
        labels = np.asarray(files.data["labels"], dtype=np.int64)
        return Decoded(images, labels, self.class_names(layout), uniform)


DATASETS.add(ImageFolder.name, ImageFolder(), aliases=ImageFolder.aliases)
