"""Missing, corrupt and malicious dataset files give clear errors naming the file and the fix."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from encshield import data
from encshield.data.array_unpickler import UnsafePickleError, safe_loads
from encshield.errors import (
    ConfigError,
    DatasetCorruptError,
    DatasetNotFoundError,
    EncshieldError,
)
from tests import datafiles as df


def corrupt_message(excinfo: pytest.ExceptionInfo[DatasetCorruptError], *names: str) -> str:
    message = str(excinfo.value)
    for name in names:
        assert name in message, message
    assert "download" in message or "extract" in message, message
    return message


# --------------------------------------------------------------------------------------- archives


@pytest.mark.parametrize("kind", ["tar.gz", "tar.xz", "tar.bz2", "zip", "tar"])
def test_truncated_archive(tmp_path: Path, kind: str) -> None:
    df.write_cifar10_pickles(tmp_path / "src")
    archive = df.make_archive(tmp_path / "src", tmp_path / f"cifar-10-python.{kind}")
    df.truncate(archive, 0.6)
    with pytest.raises(DatasetCorruptError) as excinfo:
        data.load("cifar10", "train", root=archive, cache=False)
    corrupt_message(excinfo, str(archive))


@pytest.mark.parametrize("kind", ["tar.xz", "tar.gz", "zip"])
def test_flipped_bytes_in_compressed_archive(tmp_path: Path, kind: str) -> None:
    df.write_cifar10_pickles(tmp_path / "src")
    folder = tmp_path / "root" / "cifar10"
    folder.mkdir(parents=True)
    archive = df.make_archive(tmp_path / "src", folder / f"cifar-10-python.{kind}")
    data.info("cifar10", root=tmp_path / "root")  # listing now cached for the intact file
    df.flip_bytes(archive, at=0.5)
    with pytest.raises(DatasetCorruptError) as excinfo:
        data.load("cifar10", "train", root=tmp_path / "root", cache=False)
    corrupt_message(excinfo, str(archive), "encshield data download cifar10")


def test_corrupt_official_archive_quotes_expected_sha256(tmp_path: Path) -> None:
    df.write_cifar10_pickles(tmp_path / "src")
    folder = tmp_path / "cifar10"
    folder.mkdir()
    archive = df.make_archive(tmp_path / "src", folder / "cifar-10-python.tar.gz")
    df.truncate(archive, 0.5)
    with pytest.raises(DatasetCorruptError) as excinfo:
        data.info("cifar10", root=tmp_path)
    corrupt_message(
        excinfo, str(archive), "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
    )


def test_undecodable_image_names_the_member(tmp_path: Path) -> None:
    src = tmp_path / "src"
    df.write_class_tree(src, "train", {"cat": 3}, 3)
    (src / "train" / "cat" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    archive = df.make_archive(src, tmp_path / "cifar10.tar.gz")
    with pytest.raises(DatasetCorruptError) as excinfo:
        data.load("cifar10", "train", root=archive, cache=False)
    corrupt_message(excinfo, "train/cat/2.png", str(archive))


# --------------------------------------------------------------------------------------- pickles


def test_bad_pickle(tmp_path: Path) -> None:
    df.write_cifar10_pickles(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(DatasetCorruptError) as excinfo:
        data.load("cifar10", "train", root=tmp_path, cache=False)
    corrupt_message(excinfo, str(bad))
    assert data.load("cifar10", "test", root=tmp_path, cache=False).images.shape[0] == 3


def test_pickle_label_count_mismatch(tmp_path: Path) -> None:
    df.write_cifar10_pickles(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    obj = pickle.loads(path.read_bytes())
    obj["labels"] = obj["labels"][:-1]
    path.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(DatasetCorruptError, match="count mismatch") as excinfo:
        data.load("cifar10", "test", root=tmp_path, cache=False)
    corrupt_message(excinfo, str(path))


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    df.write_cifar10_pickles(tmp_path / "data")
    batch = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_1"
    payload = {"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": _Evil(f"touch {marker}")}
    batch.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DatasetCorruptError, match="system") as excinfo:
        data.load("cifar10", "train", root=tmp_path / "data", cache=False)
    assert "nothing" in str(excinfo.value) or "without running" in str(excinfo.value)
    assert str(batch) in str(excinfo.value)
    assert not marker.exists()
    # the same payload really would run with the plain unpickler (sanity check of the test)
    pickle.loads(pickle.dumps(_Evil(f"touch {marker}")))
    assert marker.exists()


@pytest.mark.parametrize(
    "target",
    [(eval, ("1+1",)), (subprocess.Popen, (["true"],)), (getattr, ([], "append")),
     (shutil.rmtree, ("/nonexistent",))],
)
def test_safe_loads_refuses_any_other_global(target: tuple[object, tuple[object, ...]]) -> None:
    class Reducer:
        def __reduce__(self) -> tuple[object, tuple[object, ...]]:
            return target

    blob = pickle.dumps(Reducer(), protocol=2)
    with pytest.raises(UnsafePickleError):
        safe_loads(blob)


def test_safe_loads_reads_numpy_arrays_all_protocols() -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        out = safe_loads(pickle.dumps({"data": array, "labels": [1, 2, 3]}, protocol=protocol))
        assert np.array_equal(out["data"], array) and out["labels"] == [1, 2, 3]
    with pytest.raises(pickle.UnpicklingError):
        safe_loads(pickle.dumps(np.array([object()], dtype=object), protocol=2))


# --------------------------------------------------------------------------------- IDX, CSV, counts


def test_idx_wrong_magic(tmp_path: Path) -> None:
    df.write_idx(tmp_path / "mnist", gz=True)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[3] = 0x01
    path.write_bytes(gzip.compress(bytes(raw)))
    for call in (lambda: data.info("mnist", root=tmp_path),
                 lambda: data.load("mnist", "test", root=tmp_path, cache=False)):
        with pytest.raises(DatasetCorruptError, match="magic number") as excinfo:
            call()
        corrupt_message(excinfo, str(path))


def test_idx_truncated_and_count_mismatch(tmp_path: Path) -> None:
    df.write_idx(tmp_path / "mnist", gz=False)
    images = tmp_path / "mnist" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    for call in (lambda: data.load("mnist", "train", root=tmp_path, cache=False),
                 lambda: data.info("mnist", root=tmp_path)):
        with pytest.raises(DatasetCorruptError, match="pixel bytes") as excinfo:
            call()
        corrupt_message(excinfo, str(images))
    images.unlink()
    labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(df.idx_labels(np.zeros(7, dtype=np.uint8)))
    with pytest.raises(DatasetCorruptError, match="count mismatch"):
        data.load("mnist", "test", root=tmp_path, cache=False)
    with pytest.raises(DatasetCorruptError, match="count mismatch"):
        data.info("mnist", root=tmp_path)


def test_idx_bad_gzip(tmp_path: Path) -> None:
    df.write_idx(tmp_path / "mnist", gz=True)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    df.flip_bytes(path, at=0.5, count=32)
    with pytest.raises(DatasetCorruptError) as excinfo:
        data.load("mnist", "test", root=tmp_path, cache=False)
    corrupt_message(excinfo, str(path))


def test_gtsrb_missing_class_csv_and_count_mismatch(tmp_path: Path) -> None:
    df.write_gtsrb(tmp_path)
    csv_path = tmp_path / "GTSRB" / "Final_Training" / "Images" / "00001" / "GT-00001.csv"
    lines = csv_path.read_bytes().splitlines(keepends=True)
    csv_path.write_bytes(b"".join(lines[:-1]))
    with pytest.raises(DatasetCorruptError, match="count mismatch") as excinfo:
        data.load("gtsrb", "train", root=tmp_path, cache=False)
    corrupt_message(excinfo, "GT-00001.csv")
    csv_path.unlink()
    with pytest.raises(DatasetCorruptError, match="GT-00001.csv is missing"):
        data.load("gtsrb", "train", root=tmp_path, cache=False)


def test_stl10_count_mismatch(tmp_path: Path) -> None:
    df.write_stl10(tmp_path)
    y = tmp_path / "stl10_binary" / "train_y.bin"
    y.write_bytes(y.read_bytes()[:-1])
    with pytest.raises(DatasetCorruptError, match="count mismatch"):
        data.info("stl10", root=tmp_path)
    x = tmp_path / "stl10_binary" / "test_X.bin"
    x.write_bytes(x.read_bytes()[:-5])
    with pytest.raises(DatasetCorruptError, match="truncated") as excinfo:
        data.load("stl10", "test", root=tmp_path, cache=False)
    corrupt_message(excinfo, str(x))


def test_svhn_not_a_mat_file(tmp_path: Path) -> None:
    df.write_svhn(tmp_path / "svhn")
    bad = tmp_path / "svhn" / "test_32x32.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 50)
    with pytest.raises(DatasetCorruptError) as excinfo:
        data.load("svhn", "test", root=tmp_path, cache=False)
    corrupt_message(excinfo, str(bad), "cdce80dfb2a2")


def test_tiny_annotation_count_mismatch(tmp_path: Path) -> None:
    df.write_tiny(tmp_path)
    ann = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text("".join(ann.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(DatasetCorruptError, match="count mismatch") as excinfo:
        data.load("tiny_imagenet", "val", root=tmp_path, cache=False)
    corrupt_message(excinfo, str(ann))


# --------------------------------------------------------------------------------------- names


def test_bad_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allowed splits: train, test"):
        data.load("cifar10", "validation", root=tmp_path)
    with pytest.raises(ConfigError, match="allowed splits: train, val"):
        data.load("tiny_imagenet", "test", root=tmp_path)
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet9'.*cifar10"):
        data.load("imagenet9")


def one_line_fix(message: str, name: str) -> str:
    """``message`` is one line that gives the download command once and no fix twice."""
    assert "\n" not in message, message
    assert message.count(f"encshield data download {name}") == 1, message
    assert message.count("http") <= 1 or name in ("gtsrb",), message
    return message


def test_not_found_is_one_line_with_places_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line naming the roots (labelled), the download command once and where files go."""
    monkeypatch.delenv("ENCSHIELD_DATA", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError) as excinfo:
        data.load("cifar10", root=tmp_path / "empty")
    message = one_line_fix(str(excinfo.value), "cifar10")
    assert message.startswith("dataset 'cifar10' (CIFAR-10) not found in ")
    assert f"encshield data download cifar10 --root {tmp_path / 'empty'}`" in message
    assert (f"https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz in "
            f"{tmp_path / 'empty'}/cifar10/") in message
    with pytest.raises(DatasetNotFoundError) as excinfo:
        data.load("gtsrb")
    message = one_line_fix(str(excinfo.value), "gtsrb")
    assert f"{tmp_path / 'xdg' / 'encshield'} (does not exist)" in message
    assert "GTSRB_Final_Test_GT.zip" in message and "`encshield data download gtsrb`" in message
    monkeypatch.setenv("ENCSHIELD_DATA", str(tmp_path / "empty"))
    with pytest.raises(DatasetNotFoundError) as excinfo:
        data.load("mnist")
    message = one_line_fix(str(excinfo.value), "mnist")
    assert f"{tmp_path / 'empty'} ($ENCSHIELD_DATA) or {tmp_path / 'xdg' / 'encshield'}" in message
    assert f"in {tmp_path / 'empty'}/mnist/" in message


@pytest.mark.parametrize("kind", ["tar", "zip", "file", "other-dataset-folder"])
def test_not_found_in_a_root_that_cannot_hold_files(tmp_path: Path, kind: str) -> None:
    """--root is an archive (or file, or another dataset's folder) without the dataset: the
    advice names a folder next to it, never a path inside it."""
    df.write_idx(tmp_path / "src" / "mnist")
    if kind in ("tar", "zip"):
        root = df.make_archive(tmp_path / "src", tmp_path / f"things.{kind}")
    elif kind == "file":
        root = tmp_path / "src" / "mnist" / "t10k-images-idx3-ubyte.gz"
    else:
        root = tmp_path / "src" / "mnist"
    with pytest.raises(DatasetNotFoundError) as excinfo:
        data.load("cifar10", root=root)
    message = one_line_fix(str(excinfo.value), "cifar10")
    assert str(root) in message
    assert f"{root}/" not in message, message
    folder = tmp_path if kind in ("tar", "zip") else tmp_path / "src"  # never mnist/ for CIFAR-10
    assert f"--root {folder}`" in message and f"{folder}/cifar10/" in message, message


def test_missing_split_is_one_line(tmp_path: Path) -> None:
    """A split missing from a dataset that was found: one line with the reason and the fix."""
    df.write_stl10(tmp_path)
    with pytest.raises(DatasetNotFoundError) as excinfo:
        data.load("stl10", "unlabeled", root=tmp_path, cache=False)
    message = one_line_fix(str(excinfo.value), "stl10")
    assert "split 'unlabeled'" in message and "unlabeled_X.bin not found" in message
    assert "available there: train, test" in message


def test_incomplete_pickles_are_reported(tmp_path: Path) -> None:
    df.write_cifar10_pickles(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    info = data.info("cifar10", root=tmp_path)
    assert info.splits == {"test": 3} and "data_batch_4" in info.missing["train"]
    with pytest.raises(DatasetNotFoundError, match="data_batch_4"):
        data.load("cifar10", "train", root=tmp_path, cache=False)


# --------------------------------------------------------------------------------------- CLI


def test_cli_errors_exit_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df.write_cifar10_pickles(tmp_path / "src")
    archive = df.make_archive(tmp_path / "src", tmp_path / "cifar-10-python.tar.xz")
    df.flip_bytes(archive)
    code, out, err = df.run_cli(["data", "info", "cifar10", "--root", str(archive)], capsys)
    assert code == 2 and "Traceback" not in err and str(archive) in err and "corrupt" in err
    code, out, err = df.run_cli(
        ["data", "info", "cifar10", "--root", str(tmp_path / "nothing-here")], capsys
    )
    assert code == 2 and "Traceback" not in err and "not found" in err
    code, out, err = df.run_cli(["data", "info", "nosuchset"], capsys)
    assert code == 2 and "Traceback" not in err and "allowed values" in err


def _cli_case(tmp_path: Path, case: str) -> tuple[str, Path]:
    """(dataset, --root) for each hostile input of ``test_cli_data_errors_are_one_line``."""
    bomb = 128 << 20
    members = {f"cifar-10-batches-py/data_batch_{i}": b"x" for i in range(1, 6)}
    if case.startswith("truncated-idx"):
        gz = case.endswith("gz")
        df.write_idx(tmp_path / "mnist", gz=gz)
        path = tmp_path / "mnist" / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
        path.write_bytes(path.read_bytes()[:-100])
        return "mnist", tmp_path
    if case == "gzip-bomb":
        df.write_idx(tmp_path / "mnist", gz=True)
        (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(df.gzip_zeros(bomb))
        return "mnist", tmp_path
    if case == "tar.gz-bomb":
        archive = tmp_path / "cifar-10-python.tar.gz"
        return "cifar10", df.tar_gz_bomb(
            archive, members, bomb="cifar-10-batches-py/test_batch", size=bomb
        )
    if case == "zip-bomb":
        archive = tmp_path / "cifar-10-python.zip"
        return "cifar10", df.zip_bomb(
            archive, members, bomb="cifar-10-batches-py/test_batch", size=bomb
        )
    df.write_idx(tmp_path / "src" / "mnist")  # an archive root without the dataset
    return "cifar10", df.make_archive(tmp_path / "src", tmp_path / "other.tar.gz")


@pytest.mark.parametrize(
    "case",
    ["truncated-idx", "truncated-idx-gz", "gzip-bomb", "tar.gz-bomb", "zip-bomb", "archive-root"],
)
def test_cli_data_errors_are_one_line(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``encshield data info`` exits 2 with one line (no traceback); ``data.load`` raises the
    same one-line error."""
    name, root = _cli_case(tmp_path, case)
    code, out, err = df.run_cli(["data", "info", name, "--root", str(root)], capsys)
    assert code == 2 and out == "", err
    assert err.startswith("encshield: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and str(root) in err
    with pytest.raises(EncshieldError) as excinfo:
        data.load(name, "test", root=root, cache=False)
    assert "\n" not in str(excinfo.value) and str(root) in str(excinfo.value)
    assert f"encshield: error: {excinfo.value}\n" == err
