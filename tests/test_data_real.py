"""The real datasets under $ENCSHIELD_DATA (skipped where absent). Each is decoded at most once."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from encshield import data
from encshield.errors import DatasetCorruptError
from tests import datafiles as df

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def cifar10_test(shared_data: Path) -> tuple[data.ImageDataset, float]:
    started = time.perf_counter()
    ds = data.load("cifar10", "test", root=shared_data)
    return ds, time.perf_counter() - started


def test_info_cifar10(shared_data: Path) -> None:
    info = data.info("cifar10", root=shared_data)
    assert info.splits == {"train": 50_000, "test": 10_000}
    assert info.num_classes == 10
    assert info.class_names[0] == "airplane" and info.class_names[9] == "truck"
    assert info.image_size == (3, 32, 32)
    assert any(s.endswith("CIFAR-10-images.tar.xz") for s in info.sources)


def test_info_gtsrb(shared_data: Path) -> None:
    info = data.info("gtsrb", root=shared_data)
    assert info.splits == {"train": 39_209, "test": 12_630}
    assert info.num_classes == 43 and info.image_size == (3, 32, 32)


def test_info_mnist_only_test(shared_data: Path) -> None:
    info = data.info("mnist", root=shared_data)
    assert info.splits == {"test": 10_000}
    assert "train" in info.missing
    assert info.image_size == (3, 28, 28)


def test_info_tiny_imagenet(shared_data: Path) -> None:
    """The train-subset archive and the val archive side by side form one dataset."""
    info = data.info("tiny_imagenet", root=shared_data)
    assert info.splits == {"train": 40_000, "val": 10_000} and not info.missing
    assert any("200 per class" in note for note in info.notes)
    assert info.num_classes == 200 and len(set(info.class_names)) == 200
    assert "goldfish" in info.class_names


def test_available(shared_data: Path) -> None:
    assert set(data.available(shared_data)) == {"cifar10", "gtsrb", "mnist", "tiny_imagenet"}


def test_cli_info_json(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = df.run_cli(
        ["data", "info", "cifar10", "--root", str(shared_data), "--json"], capsys
    )
    assert code == 0, err
    info = json.loads(out)
    assert info["splits"] == {"train": 50_000, "test": 10_000}
    assert info["num_classes"] == 10 and info["image_size"] == [3, 32, 32]
    assert info["name"] == "cifar10" and len(info["class_names"]) == 10


def test_load_cifar10_test_and_cache_hit(
    shared_data: Path, cifar10_test: tuple[data.ImageDataset, float]
) -> None:
    ds, _first = cifar10_test
    assert ds.images.shape == (10_000, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.labels.bincount(), torch.full((10,), 1000))
    assert 90 < float(ds.images[:500].float().mean()) < 160
    started = time.perf_counter()
    again = data.load("cifar10", "test", root=shared_data)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, elapsed
    assert torch.equal(again.images, ds.images) and torch.equal(again.labels, ds.labels)
    x, y = next(again.batches(256, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (256, 3, 32, 32) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_load_mnist_test(shared_data: Path) -> None:
    ds = data.load("mnist", "test", root=shared_data)
    assert ds.images.shape == (10_000, 3, 28, 28)
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])
    assert ds.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first digits


def test_load_tiny_imagenet_val(shared_data: Path) -> None:
    ds = data.load("tiny_imagenet", "val", root=shared_data)
    assert ds.images.shape == (10_000, 3, 64, 64) and ds.num_classes == 200
    assert torch.equal(ds.labels.bincount(minlength=200), torch.full((200,), 50))
    grey = ((ds.images[:, 0] == ds.images[:, 1]).flatten(1).all(1)
            & (ds.images[:, 1] == ds.images[:, 2]).flatten(1).all(1))
    assert int(grey.sum()) >= 168  # the grey JPEGs were replicated to 3 channels


def test_load_gtsrb_test(shared_data: Path) -> None:
    ds = data.load("gtsrb", "test", root=shared_data)
    assert ds.images.shape == (12_630, 3, 32, 32)
    assert int(ds.labels.min()) == 0 and int(ds.labels.max()) == 42
    assert ds.labels[:3].tolist() == [16, 1, 38]  # first rows of GT-final_test.csv


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupted_copy_of_real_archive(
    shared_data: Path, tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "root" / "tiny-imagenet"
    folder.mkdir(parents=True)
    copy = folder / "tiny-imagenet-200_val.tar.xz"
    shutil.copy(shared_data / "tiny-imagenet" / "tiny-imagenet-200_val.tar.xz", copy)
    if damage == "truncate":
        df.truncate(copy, 0.3)
    else:
        df.flip_bytes(copy, at=0.3, count=16)
    with pytest.raises(DatasetCorruptError) as excinfo:
        data.load("tiny_imagenet", "val", root=tmp_path / "root", cache=False)
    message = str(excinfo.value)
    assert str(copy) in message
    # the expected sha256
    assert "6dba0567f5dbad77abcb37baa2de680dc6175aa3266ea5a8294742e18aae4a14" in message
    code, out, err = df.run_cli(
        ["data", "info", "tiny_imagenet", "--root", str(tmp_path / "root")], capsys
    )
    assert code == 2 and "Traceback" not in err and str(copy) in err
