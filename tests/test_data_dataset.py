"""ImageDataset API, resizing and the decoded cache."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from encshield import data
from encshield.data import cache as data_cache
from encshield.data.imaging import resize_images
from encshield.errors import ConfigError
from encshield.images import check_images
from tests import datafiles as df


def make_dataset(n: int = 10) -> data.ImageDataset:
    images = (
        torch.arange(n * 3 * 4 * 5, dtype=torch.int64).remainder(256).to(torch.uint8)
        .reshape(n, 3, 4, 5)
    )
    return data.ImageDataset("toy", "train", images, torch.arange(n) % 3, ("a", "b", "c"))


def test_dataset_properties_and_validation() -> None:
    ds = make_dataset()
    assert len(ds) == 10 and ds.num_classes == 3 and ds.image_size == (3, 4, 5)
    assert "n=10" in repr(ds)
    with pytest.raises(ConfigError, match="uint8"):
        data.ImageDataset(
            "x", "train", torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64), ("a",)
        )
    with pytest.raises(ConfigError, match="labels"):
        data.ImageDataset("x", "train", torch.zeros(2, 3, 4, 4, dtype=torch.uint8),
                          torch.zeros(3, dtype=torch.int64), ("a",))
    with pytest.raises(ConfigError, match=r"\(N, 3, H, W\)"):
        data.ImageDataset("x", "train", torch.zeros(2, 1, 4, 4, dtype=torch.uint8),
                          torch.zeros(2, dtype=torch.int64), ("a",))


def test_subset_and_to_float() -> None:
    ds = make_dataset()
    sub = ds.subset([7, 2])
    assert len(sub) == 2 and torch.equal(sub.images[0], ds.images[7])
    assert sub.labels.tolist() == [1, 2]
    assert len(ds.subset(torch.arange(10) < 4)) == 4
    assert len(ds.subset(slice(2, 5))) == 3 and len(ds.subset(range(0, 10, 5))) == 2
    with pytest.raises(ConfigError):
        ds.subset([10])
    x = ds.to_float()
    assert x.dtype == torch.float32 and x.shape == (10, 3, 4, 5)
    check_images(x)
    assert torch.allclose(x * 255, ds.images.float())
    assert torch.equal(ds.to_float([3]), x[3:4])


def test_batches_cover_everything_once() -> None:
    ds = make_dataset(10)
    seen = []
    for xb, yb in ds.batches(4):
        assert xb.dtype == torch.float32 and yb.dtype == torch.int64
        check_images(xb)
        seen.append(xb)
    assert [len(b) for b in seen] == [4, 4, 2]
    assert torch.equal(torch.cat(seen), ds.to_float())
    assert [len(x) for x, _ in ds.batches(4, drop_last=True)] == [4, 4]

    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = [y for _, y in ds.batches(3, shuffle=True, generator=g1)]
    b = [y for _, y in ds.batches(3, shuffle=True, generator=g2)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    xs, ys = zip(
        *ds.batches(3, shuffle=True, generator=torch.Generator().manual_seed(1), device="cpu")
    )
    x_all, y_all = torch.cat(xs), torch.cat(ys)
    assert sorted(y_all.tolist()) == sorted(ds.labels.tolist())
    # every image appears exactly once, with its own label
    as_uint8 = (x_all * 255).round().to(torch.uint8)
    positions = [int(torch.nonzero((ds.images == img).flatten(1).all(1))[0]) for img in as_uint8]
    assert sorted(positions) == list(range(10))
    assert y_all.tolist() == ds.labels[positions].tolist()
    with pytest.raises(ConfigError):
        next(ds.batches(0))


def test_resize_images_bilinear_antialias() -> None:
    x = torch.full((2, 3, 8, 8), 100, dtype=torch.uint8)
    y = resize_images(x, (4, 6))
    assert y.shape == (2, 3, 4, 6) and y.dtype == torch.uint8 and bool((y == 100).all())
    ramp = (
        torch.arange(16, dtype=torch.float32).mul(16).clamp(max=255).to(torch.uint8)
        .repeat(1, 3, 16, 1)
    )
    small = resize_images(ramp, (16, 4))
    assert small[0, 0, 0].tolist() == sorted(small[0, 0, 0].tolist())  # monotone, averaged
    assert resize_images(x, (8, 8)) is x


def test_load_with_image_size_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCSHIELD_CACHE", str(tmp_path / "cache"))
    expected = df.write_cifar10_pickles(tmp_path / "src")
    big = data.load("cifar10", "test", root=tmp_path / "src", image_size=64)
    assert big.image_size == (3, 64, 64)
    ref = resize_images(torch.from_numpy(expected["test"][0]), (64, 64))
    assert torch.equal(big.images, ref)
    rect = data.load("cifar10", "test", root=tmp_path / "src", image_size=(16, 24))
    assert rect.image_size == (3, 16, 24)
    sidecars = sorted((tmp_path / "cache" / "datasets").glob("*.json"))
    sizes = sorted(str(json.loads(p.read_text())["image_size"]) for p in sidecars)
    assert sizes == ["None", "[16, 24]", "[64, 64]"]  # native + both resized versions cached
    with pytest.raises(ConfigError):
        data.load("cifar10", "test", root=tmp_path / "src", image_size=(0, 3))


def test_cache_hit_is_identical_and_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCSHIELD_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "src"
    df.write_class_tree(src, "train", {"airplane": 0, "ship": 8}, 40, ext="png")
    df.write_class_tree(src, "test", {"cat": 3}, 2, ext="png")
    archive = df.make_archive(src, tmp_path / "cifar10.tar.xz", top="CIFAR-10-images")
    first = data.load("cifar10", "train", root=archive)
    stored = list((tmp_path / "cache" / "datasets").glob("*.images.npy"))
    assert len(stored) == 1
    mm = np.load(stored[0], mmap_mode="r")
    assert mm.shape == (80, 3, 32, 32) and mm.dtype == np.uint8
    started = time.perf_counter()
    second = data.load("cifar10", "train", root=archive)
    elapsed = time.perf_counter() - started
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.class_names == first.class_names
    assert elapsed < 0.5, elapsed
    second.images[0, 0, 0, 0] = 7  # the map is copy-on-write: the cache file is not modified
    assert np.array_equal(np.load(stored[0]), first.images.numpy())


def test_corrupted_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCSHIELD_CACHE", str(tmp_path / "cache"))
    expected = df.write_cifar10_pickles(tmp_path / "src")
    root = tmp_path / "src"
    data.load("cifar10", "test", root=root)
    (images_npy,) = (tmp_path / "cache" / "datasets").glob("*.images.npy")
    (sidecar,) = (tmp_path / "cache" / "datasets").glob("*.json")

    # 1. truncated image file
    images_npy.write_bytes(images_npy.read_bytes()[:200])
    ds = data.load("cifar10", "test", root=root)
    assert np.array_equal(ds.images.numpy(), expected["test"][0])
    # 2. a file of the right size but another shape/dtype
    np.save(images_npy, np.zeros(ds.images.numel(), dtype=np.uint8))
    ds = data.load("cifar10", "test", root=root)
    assert np.array_equal(ds.images.numpy(), expected["test"][0])
    # 3. garbage sidecar
    sidecar.write_text("{not json")
    ds = data.load("cifar10", "test", root=root)
    assert np.array_equal(ds.images.numpy(), expected["test"][0])
    assert json.loads(sidecar.read_text())["images"]["shape"] == [3, 3, 32, 32]


def test_cache_key_follows_source_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCSHIELD_CACHE", str(tmp_path / "cache"))
    df.write_idx(tmp_path / "mnist", seed=1)
    a = data.load("mnist", "test", root=tmp_path)
    expected = df.write_idx(tmp_path / "mnist", seed=2)  # new files (size equal, mtime differs)
    b = data.load("mnist", "test", root=tmp_path)
    assert not torch.equal(a.images, b.images)
    assert np.array_equal(b.images.numpy(), expected["test"][0])


def test_cache_disabled_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCSHIELD_CACHE", str(tmp_path / "cache"))
    df.write_idx(tmp_path / "mnist")
    data.load("mnist", "test", root=tmp_path, cache=False)
    assert not list((tmp_path / "cache").glob("datasets/*"))


def test_cache_module_rejects_mismatches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCSHIELD_CACHE", str(tmp_path))
    images = np.ones((2, 3, 4, 4), dtype=np.uint8)
    assert data_cache.write(
        "x", "train", "k1", images, np.array([0, 1]), {"class_names": ["a", "b"]}
    )
    hit = data_cache.read("x", "train", "k1")
    assert hit is not None and hit.images.flags.writeable and hit.meta["class_names"] == ["a", "b"]
    assert data_cache.read("x", "train", "other-key") is None
    img_path, lab_path, side = data_cache.entry_paths("x", "train", "k1")
    np.save(lab_path, np.array([0, 1, 2]))
    assert data_cache.read("x", "train", "k1") is None
