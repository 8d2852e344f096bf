"""Datasets: find, decode, cache and download image classification datasets.

Everything here returns compact uint8 data; convert to the library's pixel contract (float32,
NCHW, [0, 1]) with :meth:`ImageDataset.to_float` / :meth:`ImageDataset.batches`.

* :func:`load` ``(name, split="train", root=None, image_size=None, cache=True) -> ImageDataset``
  with ``images`` uint8 ``(N, 3, H, W)`` (0..255, grey replicated to 3 channels) and ``labels``
  int64 ``(N,)``.
* :func:`info` ``(name, root=None) -> DatasetInfo`` (counts, classes, image size, source files).
* :func:`available` ``(root=None) -> list[str]`` (cheap: locating files only).
* :func:`download` ``(name, root=None, *, progress=True) -> Path`` (official files, verified).
* :data:`DATASETS`: the registry of formats (official splits, description, how to obtain,
  download resources).

Supported: cifar10, cifar100 (python pickles or ImageFolder copies), stl10 (binary), svhn
(.mat), gtsrb (official layout), mnist / fashion_mnist (IDX, gzipped or not), tiny_imagenet,
imagefolder (generic, explicit root) — from folders or straight from .tar/.tar.gz/.tgz/.tar.xz/
.tar.bz2/.zip archives.
"""

from encshield.data.api import available, download, info, load, locate, status
from encshield.data.base import DATASETS, DatasetFormat, DatasetInfo, Resource
from encshield.data.dataset import ImageDataset
from encshield.data.imaging import resize_images

__all__ = [
    "DATASETS",
    "DatasetFormat",
    "DatasetInfo",
    "ImageDataset",
    "Resource",
    "available",
    "download",
    "info",
    "load",
    "locate",
    "resize_images",
    "status",
]
