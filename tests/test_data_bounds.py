"""Readers deliver what they promise: ``info`` sees a truncated file, decompression is bounded.

Bombs are small files built in ``tmp_path`` that expand to 128 MiB or more; each must fail with
one DatasetCorruptError before it costs memory (peak of traced allocations < 100 MB, while
decompressing the bomb whole would need more than 128 MB).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from encshield import data
from encshield.errors import DatasetCorruptError
from tests import datafiles as df

BOMB = 128 << 20
PEAK = 100_000_000


def corrupt(call: object, *names: str) -> str:
    """Run ``call``; it must raise a one-line DatasetCorruptError naming ``names`` and a fix."""
    with pytest.raises(DatasetCorruptError) as excinfo:
        call()  # type: ignore[operator]
    message = str(excinfo.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, message
    assert "download" in message, message
    return message


def info_and_load(name: str, split: str, root: Path) -> list[object]:
    """``data.info`` and ``data.load`` (uncached) of the dataset, as calls."""
    return [
        lambda: data.info(name, root=root),
        lambda: data.load(name, split, root=root, cache=False),
    ]


# --------------------------------------------------------------------------------------- info


@pytest.mark.parametrize("how", ["raw", "gz-recompressed", "gz-cut", "tar-raw", "zip-gz"])
def test_info_reports_a_truncated_idx_file(tmp_path: Path, how: str) -> None:
    """The header of t10k-images announces 3 images; the file holds fewer bytes: ``info`` (which
    reads only headers) must refuse it like ``load`` does, naming the file."""
    gz = how.startswith("gz") or how == "zip-gz"
    folder = tmp_path / ("src" if how.startswith(("tar", "zip")) else "") / "mnist"
    df.write_idx(folder, gz=gz)
    name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
    path = folder / name
    if how == "gz-recompressed":  # a valid gzip stream of a truncated file
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    else:  # the file cut short (for gzip: the trailer and some data are missing)
        path.write_bytes(path.read_bytes()[:-100])
    root = path.parent.parent
    if how == "tar-raw":
        root = df.make_archive(tmp_path / "src", tmp_path / "mnist.tar")
    elif how == "zip-gz":
        root = df.make_archive(tmp_path / "src", tmp_path / "mnist.zip")
    shown = str(path) if root == path.parent.parent else f"mnist/{name}"
    for call in info_and_load("mnist", "test", root):
        corrupt(call, shown)


def test_info_accepts_a_gzip_file_of_several_members(tmp_path: Path) -> None:
    """gzip's trailer then gives only the last member's size: the count must confirm, not refuse."""
    expected = df.write_idx(tmp_path / "mnist", gz=True)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    assert data.info("mnist", root=tmp_path).splits == {"train": 5, "test": 3}
    loaded = data.load("mnist", "test", root=tmp_path, cache=False)
    assert np.array_equal(loaded.images.numpy(), expected["test"][0])


@pytest.mark.parametrize("cut", [10, 100, 5000])
def test_info_reports_a_truncated_svhn_file(tmp_path: Path, cut: int) -> None:
    """``whosmat`` reads variable headers only; ``info`` must also see that the data is missing."""
    df.write_svhn(tmp_path / "svhn")
    path = tmp_path / "svhn" / "test_32x32.mat"
    path.write_bytes(path.read_bytes()[:-cut])
    for call in info_and_load("svhn", "test", tmp_path):
        corrupt(call, str(path))


def test_info_reports_an_svhn_label_count_mismatch(tmp_path: Path) -> None:
    """4 images, 3 labels: ``info`` (variable headers only) must see the mismatch too."""
    import scipy.io

    df.write_svhn(tmp_path / "svhn")
    path = tmp_path / "svhn" / "test_32x32.mat"
    scipy.io.savemat(
        path, {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((3, 1), np.uint8)}
    )
    for call in info_and_load("svhn", "test", tmp_path):
        assert "count mismatch" in corrupt(call, str(path))


def test_compressed_svhn_file_still_loads(tmp_path: Path) -> None:
    """The element walk of ``info`` accepts compressed (small, honest) variables."""
    import scipy.io

    (tmp_path / "svhn").mkdir()
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    y = np.array([[10], [1], [2], [3]], np.uint8)
    scipy.io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": y}, do_compression=True)
    assert data.info("svhn", root=tmp_path).splits == {"test": 4}
    loaded = data.load("svhn", "test", root=tmp_path, cache=False)
    assert np.array_equal(loaded.images.numpy(), x.transpose(3, 2, 0, 1))
    assert loaded.labels.tolist() == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------- bombs


def idx_header(n: int) -> bytes:
    """The 16-byte header of an IDX images file announcing ``n`` 28x28 images."""
    return df.idx_images(np.zeros((n, 28, 28), np.uint8))[:16]


@pytest.mark.parametrize("kind", ["zeros", "longer-than-header", "header-announces-bomb"])
def test_gzip_idx_bomb(tmp_path: Path, kind: str) -> None:
    """A 130 KB ``.gz`` that expands to 128 MiB: pure zeros (bad magic), a valid header for 3
    images followed by the zeros, or a header that announces the 128 MiB itself."""
    df.write_idx(tmp_path / "mnist", gz=True, splits=("test",))
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    if kind == "zeros":
        path.write_bytes(df.gzip_zeros(BOMB))
    elif kind == "longer-than-header":
        path.write_bytes(gzip.compress(idx_header(3) + bytes(3 * 784)) + df.gzip_zeros(BOMB))
    else:
        n = BOMB // 784
        path.write_bytes(gzip.compress(idx_header(n)) + df.gzip_zeros(n * 784))
        (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(df.idx_labels(np.zeros(n, np.uint8)))
        )
    assert path.stat().st_size < 200_000
    for call in info_and_load("mnist", "test", tmp_path):
        with df.peak_memory() as peak:
            corrupt(call, str(path))
        assert peak[0] < PEAK, f"{kind}: peak {peak[0] / 1e6:.0f} MB"


@pytest.mark.parametrize("where", ["member", "after-the-end"])
def test_tar_gz_bomb(tmp_path: Path, where: str) -> None:
    """A CIFAR-10 ``.tar.gz`` of 130 KB: a ``test_batch`` member whose tar header honestly
    announces 128 MiB of zeros, or 128 MiB of zeros after the end of the archive."""
    members = {f"cifar-10-batches-py/data_batch_{i}": b"x" for i in range(1, 6)}
    if where == "after-the-end":
        members["cifar-10-batches-py/test_batch"] = b"x"
    archive = df.tar_gz_bomb(
        tmp_path / "cifar-10-python.tar.gz", members,
        bomb="cifar-10-batches-py/test_batch" if where == "member" else None, size=BOMB,
    )
    assert archive.stat().st_size < 200_000
    for call in info_and_load("cifar10", "test", archive):
        with df.peak_memory() as peak:
            assert "decompression bomb" in corrupt(call, str(archive))
        assert peak[0] < PEAK, f"peak {peak[0] / 1e6:.0f} MB"


def test_zip_bomb(tmp_path: Path) -> None:
    """A zip member whose central directory announces 128 MiB from 130 KB is refused unread."""
    members = {f"cifar-10-batches-py/data_batch_{i}": b"x" for i in range(1, 6)}
    archive = df.zip_bomb(
        tmp_path / "cifar-10-python.zip", members, bomb="cifar-10-batches-py/test_batch", size=BOMB
    )
    for call in info_and_load("cifar10", "test", archive):
        with df.peak_memory() as peak:
            assert "decompression bomb" in corrupt(call, str(archive))
        assert peak[0] < PEAK, f"peak {peak[0] / 1e6:.0f} MB"


def test_svhn_compressed_mat_bomb(tmp_path: Path) -> None:
    """A compressed ``.mat`` whose X expands to 61 MB from 60 KB: refused before scipy (which
    holds a compressed variable whole even to list it) decompresses it."""
    import scipy.io

    (tmp_path / "svhn").mkdir()
    n = 20_000
    path = tmp_path / "svhn" / "test_32x32.mat"
    scipy.io.savemat(
        path, {"X": np.zeros((32, 32, 3, n), np.uint8), "y": np.ones((n, 1), np.uint8)},
        do_compression=True,
    )
    for call in info_and_load("svhn", "test", tmp_path):
        with df.peak_memory() as peak:
            assert "decompression bomb" in corrupt(call, str(path))
        assert peak[0] < 50_000_000, f"peak {peak[0] / 1e6:.0f} MB"


def test_image_bomb(tmp_path: Path) -> None:
    """An 8 KB PNG announcing 8000x8000 pixels (192 MB as RGB) is refused before decoding."""
    df.write_class_tree(tmp_path / "cifar10", "train", {"cat": 3}, 2)
    buffer = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buffer, format="PNG")
    bomb = tmp_path / "cifar10" / "train" / "cat" / "3.png"
    bomb.write_bytes(buffer.getvalue())
    with df.peak_memory() as peak:
        assert "decompression bomb" in corrupt(
            lambda: data.load("cifar10", "train", root=tmp_path, cache=False), str(bomb)
        )
    assert peak[0] < PEAK, f"peak {peak[0] / 1e6:.0f} MB"


def test_large_member_is_read_without_a_copy(tmp_path: Path) -> None:
    """Bounded reading costs no more than the member itself (no chunk list joined at the end)."""
    import os
    import tarfile

    from encshield.data.files import archive_container
    from encshield.data.reading import read_one

    payload = os.urandom(48 << 20)
    archive = tmp_path / "big.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("stl10_binary/unlabeled_X.bin")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    container = archive_container(archive)
    with df.peak_memory() as peak:
        assert read_one(container.entries[0]) == payload
    assert peak[0] < 1.3 * len(payload), (
        f"peak {peak[0] / 1e6:.0f} MB for {len(payload) / 1e6:.0f} MB"
    )
