"""``encshield data list / info`` on files written by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from encshield import data
from tests import datafiles as df


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    df.write_cifar10_pickles(tmp_path / "cifar10")
    df.write_idx(tmp_path / "mnist", splits=("test",))
    df.write_gtsrb(tmp_path / "gtsrb")
    return tmp_path


def test_available_is_cheap_and_right(root: Path) -> None:
    assert data.available(root) == ["cifar10", "gtsrb", "mnist"]
    rows = {r["name"]: r for r in data.status(root)}
    assert rows["cifar10"]["found"] and not rows["svhn"]["found"]
    assert rows["imagefolder"]["found"] is False


def test_available_counts_unlisted_archives_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENCSHIELD_CACHE", str(tmp_path / "cache"))
    df.write_tiny(tmp_path / "src")
    (tmp_path / "root" / "tiny-imagenet").mkdir(parents=True)
    df.make_archive(tmp_path / "src", tmp_path / "root" / "tiny-imagenet" / "whatever.tar.xz")
    assert data.available(tmp_path / "root") == ["tiny_imagenet"]
    assert not (tmp_path / "cache" / "listings").exists()  # nothing was decompressed


def test_cli_list(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = df.run_cli(["data", "list", "--root", str(root), "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    found = {r["name"] for r in rows if r["found"]}
    assert found == {"cifar10", "gtsrb", "mnist"}
    assert {r["name"] for r in rows} == set(data.DATASETS.names())
    code, out, err = df.run_cli(["data", "list", "--root", str(root)], capsys)
    assert code == 0 and "cifar10" in out and "yes" in out


def test_cli_info_json_and_table(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = df.run_cli(["data", "info", "gtsrb", "--root", str(root), "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["name"] == "gtsrb" and info["num_classes"] == 43
    assert info["splits"] == {"train": 6, "test": 4}
    assert info["image_size"] == [3, 32, 32]
    assert len(info["class_names"]) == 43 and info["sources"]
    code, out, err = df.run_cli(["data", "info", "mnist", "--root", str(root)], capsys)
    assert code == 0, err
    assert "test" in out and "missing" in out and "MNIST" in out


def test_dataset_registry_describes_each_format() -> None:
    for name, fmt in data.DATASETS.items():
        assert fmt.name == name and fmt.title and fmt.description
        assert fmt.how_to_obtain()
        if fmt.splits is not None:
            assert "train" in fmt.splits
    assert data.DATASETS.get("tiny-imagenet").name == "tiny_imagenet"
    assert data.DATASETS.get("CIFAR-10").name == "cifar10"
