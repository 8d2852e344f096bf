"""Every dataset format, read from files written in the official formats: from a folder and from
each archive kind (with and without a top folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from encshield import data
from encshield.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError
from tests import datafiles as df

ARCHIVES = ["tar", "tar.gz", "tgz", "tar.xz", "tar.bz2", "zip"]


def assert_split(
    ds: data.ImageDataset, expected: tuple[np.ndarray, np.ndarray], *, name: str, split: str
) -> None:
    images, labels = expected
    assert ds.name == name and ds.split == split
    assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
    assert tuple(ds.images.shape) == images.shape
    assert np.array_equal(ds.images.numpy(), images)
    assert np.array_equal(ds.labels.numpy(), labels)


def where(
    tmp_path: Path, src: Path, kind: str, *, dataset_folder: str | None, top: str | None = None
) -> Path:
    """Return a root for ``src`` packaged as ``kind`` ("dir" or an archive suffix).

    With ``dataset_folder`` the files/archive go below ``root/<dataset_folder>/`` and the data root
    is returned; otherwise the folder (or archive path) itself is returned.
    """
    if kind == "dir":
        if dataset_folder is None:
            return src
        root = tmp_path / "droot"
        shutil.copytree(src, root / dataset_folder)
        return root
    holder = tmp_path / "aroot" / (dataset_folder or "")
    holder.mkdir(parents=True, exist_ok=True)
    archive = df.make_archive(src, holder / f"packed.{kind}", top=top)
    return tmp_path / "aroot" if dataset_folder else archive


# --------------------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("kind", ["dir", *ARCHIVES])
def test_cifar10_pickles(tmp_path: Path, kind: str) -> None:
    expected = df.write_cifar10_pickles(tmp_path / "src", bytes_keys=kind == "tar")
    root = where(tmp_path, tmp_path / "src", kind, dataset_folder=None)
    for split in ("train", "test"):
        ds = data.load("cifar10", split, root=root, cache=False)
        assert_split(ds, expected[split], name="cifar10", split=split)
        assert ds.class_names == df.CIFAR10_CLASSES
    assert len(data.load("cifar10", "train", root=root, cache=False)) == 15


def test_cifar10_archive_in_dataset_folder_with_top_folder(tmp_path: Path) -> None:
    expected = df.write_cifar10_pickles(tmp_path / "src", folder="batches")
    root = where(tmp_path, tmp_path / "src", "tar.gz", dataset_folder="cifar-10", top="wrapper")
    ds = data.load("cifar-10", "test", root=root, cache=False)
    assert_split(ds, expected["test"], name="cifar10", split="test")
    assert data.available(root) == ["cifar10"]


@pytest.mark.parametrize("kind", ["dir", *ARCHIVES])
def test_cifar10_imagefolder_copy(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "src"
    # folder names in a shuffled order; labels are the official indices; natural file order
    classes = {"truck": 9, "airplane": 0, "cat": 3}
    names = ["1", "2", "10"]
    train = df.write_class_tree(src, "train", classes, 3, names=names, ext="jpg")
    test = df.write_class_tree(
        src, "test", {"ship": 8, "bird": 2}, 2, names=names, ext="png", seed=9
    )
    root = where(tmp_path, src, kind, dataset_folder="cifar10",
                 top="CIFAR-10-images" if kind == "zip" else None)
    info = data.info("cifar10", root=root)
    assert info.layout == "imagefolder"
    assert info.splits == {"train": 9, "test": 4}
    assert info.image_size == (3, 32, 32)
    assert_split(data.load("cifar10", "train", root=root, cache=False), train,
                 name="cifar10", split="train")
    assert_split(data.load("cifar10", "test", root=root, cache=False), test,
                 name="cifar10", split="test")


@pytest.mark.parametrize("kind", ["dir", *ARCHIVES])
def test_cifar100_pickles(tmp_path: Path, kind: str) -> None:
    expected = df.write_cifar100_pickles(tmp_path / "src")
    root = where(tmp_path, tmp_path / "src", kind, dataset_folder="cifar100")
    for split in ("train", "test"):
        ds = data.load("cifar100", split, root=root, cache=False)
        assert_split(ds, expected[split], name="cifar100", split=split)
    assert ds.num_classes == 100 and ds.class_names[0] == "apple" and ds.class_names[-1] == "worm"
    info = data.info("cifar100", root=root)
    assert info.splits == {"train": 6, "test": 4}


# --------------------------------------------------------------------------------------- STL-10


@pytest.mark.parametrize("kind", ["dir", *ARCHIVES])
def test_stl10(tmp_path: Path, kind: str) -> None:
    expected = df.write_stl10(tmp_path / "src", n_unlabeled=2 if kind == "dir" else 0)
    root = where(tmp_path, tmp_path / "src", kind, dataset_folder=None,
                 top="wrap" if kind == "tgz" else None)
    info = data.info("stl10", root=root)
    assert info.image_size == (3, 96, 96)
    for split in expected:
        ds = data.load("stl10", split, root=root, cache=False)
        assert_split(ds, expected[split], name="stl10", split=split)
    if kind == "dir":
        assert info.splits == {"train": 4, "test": 3, "unlabeled": 2}
        assert (data.load("stl10", "unlabeled", root=root, cache=False).labels == -1).all()
    else:
        assert info.splits == {"train": 4, "test": 3}
        assert "unlabeled" in info.missing
        with pytest.raises(DatasetNotFoundError, match="unlabeled"):
            data.load("stl10", "unlabeled", root=root, cache=False)


def test_stl10_layout_is_column_major(tmp_path: Path) -> None:
    """A pixel written at (c, x=5, y=2) in the column-major file ends up at row 2, column 5."""
    out = tmp_path / "stl10_binary"
    out.mkdir()
    raw = np.zeros((1, 3, 96, 96), dtype=np.uint8)  # file order: (N, C, W, H)
    raw[0, 1, 5, 2] = 200
    (out / "train_X.bin").write_bytes(raw.tobytes())
    (out / "train_y.bin").write_bytes(bytes([3]))
    ds = data.load("stl10", "train", root=tmp_path, cache=False)
    assert int(ds.images[0, 1, 2, 5]) == 200 and int(ds.images.sum()) == 200
    assert ds.labels.tolist() == [2]


# --------------------------------------------------------------------------------------- SVHN


@pytest.mark.parametrize("kind", ["dir", *ARCHIVES])
def test_svhn(tmp_path: Path, kind: str) -> None:
    expected = df.write_svhn(tmp_path / "src", splits={"train": 5, "test": 3, "extra": 2})
    root = where(tmp_path, tmp_path / "src", kind, dataset_folder="svhn")
    info = data.info("svhn", root=root)
    assert info.splits == {"train": 5, "test": 3, "extra": 2}
    for split in expected:
        ds = data.load("svhn", split, root=root, cache=False)
        assert_split(ds, expected[split], name="svhn", split=split)
    assert int(ds.labels.min()) >= 0 and int(ds.labels.max()) <= 9
    if kind == "dir":  # root may also be the data file itself
        single = data.load("svhn", "test", root=tmp_path / "src" / "test_32x32.mat", cache=False)
        assert_split(single, expected["test"], name="svhn", split="test")


# --------------------------------------------------------------------------------------- GTSRB


@pytest.mark.parametrize("kind", ["dir", *ARCHIVES])
def test_gtsrb_official_layout(tmp_path: Path, kind: str) -> None:
    expected = df.write_gtsrb(tmp_path / "src")
    root = where(tmp_path, tmp_path / "src", kind, dataset_folder="gtsrb",
                 top="x" if kind == "zip" else None)
    info = data.info("gtsrb", root=root)
    assert info.splits == {"train": 6, "test": 4}
    assert info.num_classes == 43
    assert info.class_names[0] == "Speed limit (20km/h)"
    assert info.class_names[42] == "End of no passing by vehicles over 3.5 metric tons"
    assert info.image_size == (3, 32, 32)
    for split in ("train", "test"):
        assert_split(data.load("gtsrb", split, root=root, cache=False), expected[split],
                     name="gtsrb", split=split)


def test_gtsrb_separate_archives_like_the_official_zips(tmp_path: Path) -> None:
    """Training zip, test-images zip and the GT zip whose CSV sits at the top level."""
    train_src, test_src, gt_src = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    expected = df.write_gtsrb(tmp_path / "all", gt_at="top")
    shutil.copytree(
        tmp_path / "all" / "GTSRB" / "Final_Training", train_src / "GTSRB" / "Final_Training"
    )
    shutil.copytree(tmp_path / "all" / "GTSRB" / "Final_Test", test_src / "GTSRB" / "Final_Test")
    gt_src.mkdir()
    shutil.copy(tmp_path / "all" / "GT-final_test.csv", gt_src / "GT-final_test.csv")
    root = tmp_path / "root" / "gtsrb"
    root.mkdir(parents=True)
    df.make_archive(train_src, root / "GTSRB_Final_Training_Images.zip")
    df.make_archive(test_src, root / "GTSRB_Final_Test_Images.zip")
    df.make_archive(gt_src, root / "GTSRB_Final_Test_GT.zip")
    for split in ("train", "test"):
        assert_split(data.load("gtsrb", split, root=tmp_path / "root", cache=False),
                     expected[split], name="gtsrb", split=split)
    assert data.info("gtsrb", root=root).splits == {"train": 6, "test": 4}


def test_gtsrb_varied_sizes_are_resized_to_32(tmp_path: Path) -> None:
    df.write_gtsrb(tmp_path, sizes=[(30, 31), (45, 40), (32, 32)])
    ds = data.load("gtsrb", "train", root=tmp_path, cache=False)
    assert ds.image_size == (3, 32, 32) and len(ds) == 6
    big = data.load("gtsrb", "test", root=tmp_path, image_size=48, cache=False)
    assert big.image_size == (3, 48, 48)
    info = data.info("gtsrb", root=tmp_path)
    assert info.image_size == (3, 32, 32)
    assert any("vary in size" in n for n in info.notes)


def test_gtsrb_test_labels_missing(tmp_path: Path) -> None:
    df.write_gtsrb(tmp_path, gt_at="none")
    assert data.info("gtsrb", root=tmp_path).splits["test"] == 4
    with pytest.raises(DatasetCorruptError, match="GT-final_test.csv"):
        data.load("gtsrb", "test", root=tmp_path, cache=False)


# --------------------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("kind", ["dir", *ARCHIVES])
def test_mnist_idx(tmp_path: Path, kind: str, gz: bool) -> None:
    expected = df.write_idx(tmp_path / "src", gz=gz)
    root = where(tmp_path, tmp_path / "src", kind, dataset_folder="mnist",
                 top="raw" if kind == "tar" else None)
    for split in ("train", "test"):
        ds = data.load("mnist", split, root=root, cache=False)
        assert_split(ds, expected[split], name="mnist", split=split)
        # grey -> 3 identical channels
        assert torch.equal(ds.images[:, 0], ds.images[:, 1])
        assert torch.equal(ds.images[:, 1], ds.images[:, 2])
    assert data.info("mnist", root=root).image_size == (3, 28, 28)


def test_mnist_half_present_train_split(tmp_path: Path) -> None:
    """Only the test split and the train labels (as in shared/data): info lists just test."""
    df.write_idx(tmp_path / "root" / "mnist", splits=("test",))
    df.write_idx(tmp_path / "other", splits=("train",))
    shutil.copy(tmp_path / "other" / "train-labels-idx1-ubyte.gz", tmp_path / "root" / "mnist")
    info = data.info("mnist", root=tmp_path / "root")
    assert info.splits == {"test": 3}
    assert "train-images" in info.missing["train"]
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte"):
        data.load("mnist", "train", root=tmp_path / "root", cache=False)


def test_fashion_mnist_told_apart_by_folder(tmp_path: Path) -> None:
    mnist = df.write_idx(tmp_path / "mnist", seed=1)
    fashion = df.write_idx(tmp_path / "fashion-mnist", seed=2)
    assert_split(data.load("mnist", "test", root=tmp_path, cache=False), mnist["test"],
                 name="mnist", split="test")
    ds = data.load("fashion_mnist", "test", root=tmp_path, cache=False)
    assert_split(ds, fashion["test"], name="fashion_mnist", split="test")
    assert ds.class_names[9] == "Ankle boot"
    # pointing the root at the mnist folder does not make it Fashion-MNIST
    with pytest.raises(DatasetNotFoundError):
        data.load("fashion_mnist", "test", root=tmp_path / "mnist", cache=False)


# ------------------------------------------------------------------------------------ Tiny-ImageNet


@pytest.mark.parametrize("kind", ["dir", *ARCHIVES])
def test_tiny_imagenet(tmp_path: Path, kind: str) -> None:
    expected = df.write_tiny(tmp_path / "src")
    root = where(tmp_path, tmp_path / "src", kind, dataset_folder=None)
    info = data.info("tiny-imagenet", root=root)
    assert info.splits == {"train": 6, "val": 5}
    assert info.class_names == ("goldfish", "European fire salamander", "bullfrog")
    for split in ("train", "val"):
        ds = data.load("tiny_imagenet", split, root=root, cache=False)
        assert_split(ds, expected[split], name="tiny_imagenet", split=split)
    grey = ds.images[1]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_tiny_imagenet_val_only_without_wnids(tmp_path: Path) -> None:
    expected = df.write_tiny(tmp_path / "src", with_wnids=False, with_train=False, n_val=6)
    archive = df.make_archive(tmp_path / "src", tmp_path / "tiny-imagenet-200_val.tar.xz")
    info = data.info("tiny_imagenet", root=archive)
    assert info.splits == {"val": 6} and "train" in info.missing
    assert info.num_classes == 3
    assert_split(data.load("tiny_imagenet", "val", root=archive, cache=False), expected["val"],
                 name="tiny_imagenet", split="val")


@pytest.mark.parametrize(
    "train_kind,val_kind", [("tar.xz", "tar.xz"), ("zip", "tar.gz"), ("dir", "tar.xz")]
)
def test_tiny_imagenet_splits_across_archives(
    tmp_path: Path, train_kind: str, val_kind: str
) -> None:
    """A train archive (with wnids.txt) beside a val archive (with words.txt), as users keep
    ImageNet-style archives: both splits are found, labelled by the same class order; a train
    folder with fewer than the official 500 images per class is accepted and its count noted."""
    expected = df.write_tiny(tmp_path / "src", n_train=3)
    base = tmp_path / "src" / "tiny-imagenet-200"
    parts = {"train": tmp_path / "train-part", "val": tmp_path / "val-part"}
    for split, moved in (("train", ("train", "wnids.txt")), ("val", ("val", "words.txt"))):
        for name in moved:
            shutil.move(str(base / name), str(parts[split] / "tiny-imagenet-200" / name))
    root = tmp_path / "root" / "tiny-imagenet"
    root.mkdir(parents=True)
    for split, kind in (("train", train_kind), ("val", val_kind)):
        if kind == "dir":
            shutil.copytree(parts[split], root, dirs_exist_ok=True)
        else:
            df.make_archive(parts[split], root / f"tiny-imagenet-200_{split}.{kind}")
    info = data.info("tiny_imagenet", root=tmp_path / "root")
    assert info.splits == {"train": 9, "val": 5} and not info.missing
    assert info.class_names == ("goldfish", "European fire salamander", "bullfrog")
    assert any("3 per class" in note and "500" in note for note in info.notes)
    for split in ("train", "val"):
        ds = data.load("tiny_imagenet", split, root=tmp_path / "root", cache=False)
        assert_split(ds, expected[split], name="tiny_imagenet", split=split)


def test_splits_joined_with_plus(tmp_path: Path) -> None:
    """``"train+val"`` concatenates the splits in that order (each part may be sliced)."""
    expected = df.write_tiny(tmp_path)
    both = data.load("tiny_imagenet", "train+val", root=tmp_path, cache=False)
    assert both.split == "train+val" and len(both) == 6 + 5
    assert np.array_equal(
        both.images.numpy(), np.concatenate([expected["train"][0], expected["val"][0]])
    )
    assert np.array_equal(
        both.labels.numpy(), np.concatenate([expected["train"][1], expected["val"][1]])
    )
    assert len(data.load("tiny_imagenet", "train[:2]+val", root=tmp_path, cache=False)) == 2 + 5


def test_tiny_imagenet_real_jpeg_grey(tmp_path: Path) -> None:
    """A real greyscale JPEG decodes to 3 identical channels."""
    df.write_tiny(tmp_path, n_val=2, grey_val=())
    grey = np.full((64, 64), 77, dtype=np.uint8)
    (tmp_path / "tiny-imagenet-200" / "val" / "images" / "val_0.JPEG").write_bytes(
        df.encode(grey, "JPEG")
    )
    ds = data.load("tiny_imagenet", "val", root=tmp_path, cache=False)
    assert ds.images.shape == (2, 3, 64, 64)
    assert torch.equal(ds.images[0, 0], ds.images[0, 2])
    assert abs(float(ds.images[0].float().mean()) - 77) < 2


# -------------------------------------------------------------------------------------- ImageFolder


@pytest.mark.parametrize("kind", ["dir", *ARCHIVES])
def test_generic_imagefolder(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "src"
    train = df.write_class_tree(
        src, "train", {"b_cls": 1, "a_cls": 0, "c_cls": 2}, 2, size=(20, 24)
    )
    val = df.write_class_tree(src, "val", {"c_cls": 2}, 3, size=(20, 24), seed=11)
    (src / "README.txt").write_text("not an image")
    root = src if kind == "dir" else df.make_archive(src, tmp_path / f"mine.{kind}", top="mine")
    info = data.info("imagefolder", root=root)
    assert info.class_names == ("a_cls", "b_cls", "c_cls")
    assert info.splits == {"train": 6, "val": 3}
    assert info.image_size == (3, 20, 24)
    assert_split(data.load("imagefolder", "train", root=root, cache=False), train,
                 name="imagefolder", split="train")
    assert_split(data.load("imagefolder", "val", root=root, cache=False), val,
                 name="imagefolder", split="val")
    with pytest.raises(ConfigError, match="allowed splits: train, val"):
        data.load("imagefolder", "test", root=root, cache=False)


def test_imagefolder_needs_root_and_same_sizes(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="explicit root"):
        data.load("imagefolder", "train")
    df.write_class_tree(tmp_path, "train", {"a": 0}, 1, size=(10, 10))
    df.write_class_tree(tmp_path, "train", {"b": 1}, 1, size=(12, 10), seed=3)
    with pytest.raises(ConfigError, match="different sizes"):
        data.load("imagefolder", "train", root=tmp_path, cache=False)
    ds = data.load("imagefolder", "train", root=tmp_path, image_size=(8, 9), cache=False)
    assert ds.image_size == (3, 8, 9)
