"""The in-memory image dataset returned by :func:`encshield.data.load`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from encshield.errors import ConfigError
from encshield.images import to_float

Indices = Sequence[int] | torch.Tensor | np.ndarray | slice | range


def _index_tensor(indices: Indices, n: int) -> torch.Tensor | slice:
    if isinstance(indices, slice):
        return indices
    if isinstance(indices, range):
        return torch.arange(indices.start, indices.stop, indices.step, dtype=torch.long)
    index = torch.as_tensor(
        np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices
    )
    if index.dtype == torch.bool:
        if index.shape != (n,):
            raise ConfigError(f"a boolean mask must have shape ({n},), got {tuple(index.shape)}")
        return index
    if index.numel() and index.is_floating_point():
        raise ConfigError(f"indices must be integers, got dtype {index.dtype}")
    index = index.long().reshape(-1)
    if index.numel() and (int(index.max()) >= n or int(index.min()) < -n):
        raise ConfigError(f"indices out of range for a dataset of {n} images")
    return index


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images and labels of one split, kept as compact uint8.

    Attributes:
        name: registered dataset name (e.g. ``"cifar10"``).
        split: split name (e.g. ``"train"``).
        images: uint8 tensor ``(N, 3, H, W)``, values 0..255 (grey images replicated to 3
            channels). Loaded from the cache it is a copy-on-write memory map: cheap to open,
            pages read on first use.
        labels: int64 tensor ``(N,)``, values in ``0 .. num_classes - 1`` (``-1`` = unlabelled,
            e.g. STL-10 ``unlabeled``).
        class_names: names of the classes; label ``i`` is ``class_names[i]``.

    Convert to the library's pixel contract (float32, NCHW, [0, 1]) with :meth:`to_float` or
    :meth:`batches`; the conversion happens after moving the uint8 data to the device.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8:
            raise ConfigError(
                f"ImageDataset.images must be a uint8 tensor, got "
                f"{getattr(self.images, 'dtype', type(self.images).__name__)}"
            )
        if self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ConfigError(
                f"ImageDataset.images must have shape (N, 3, H, W), got {tuple(self.images.shape)}"
            )
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64:
            raise ConfigError("ImageDataset.labels must be an int64 tensor")
        if self.labels.shape != (self.images.shape[0],):
            raise ConfigError(
                f"ImageDataset has {self.images.shape[0]} images but labels of shape "
                f"{tuple(self.labels.shape)}"
            )
        object.__setattr__(self, "class_names", tuple(self.class_names))

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    @property
    def image_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images (C is 3)."""
        _, c, h, w = self.images.shape
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        c, h, w = self.image_size
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"image_size=({c}, {h}, {w}), num_classes={self.num_classes})"
        )

    def subset(self, indices: Indices) -> ImageDataset:
        """A new dataset with the images/labels at ``indices`` (ints, a bool mask, a slice or a
        range), copied into memory."""
        index = _index_tensor(indices, len(self))
        return ImageDataset(
            name=self.name,
            split=self.split,
            images=self.images[index].contiguous(),
            labels=self.labels[index].contiguous(),
            class_names=self.class_names,
        )

    def to_float(
        self, indices: Indices | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Images as float32 ``(n, 3, H, W)`` in [0, 1] on ``device`` (all, or ``indices``).

        The uint8 data is moved first and converted on the device (4x less to transfer).
        """
        x = self.images if indices is None else self.images[_index_tensor(indices, len(self))]
        return to_float(x, device)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate over ``(x, y)`` batches.

        Yields:
            ``x`` float32 ``(b, 3, H, W)`` in [0, 1] on ``device``; ``y`` int64 ``(b,)`` on
            ``device``. ``b == batch_size`` except possibly for the last batch (dropped with
            ``drop_last``). With ``shuffle`` the order is a ``torch.randperm`` drawn from
            ``generator`` (reproducible with a seeded generator). uint8 -> float happens on the
            device, batched (no per-sample Python loop).
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            if drop_last and stop - start < batch_size:
                break
            if order is None:
                xb, yb = self.images[start:stop], self.labels[start:stop]
            else:
                idx = order[start:stop]
                xb, yb = self.images[idx], self.labels[idx]
            yield to_float(xb, device), (yb if device is None else yb.to(device, non_blocking=True))
