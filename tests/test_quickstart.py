"""``encshield quickstart``: the packaged config, finding or downloading CIFAR-10, end to end."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from encshield.bench import expand, load_bench_config, validate_bench
from encshield.cli import main
from encshield.cli.quickstart_cmd import QUICKSTART_CONFIG, find_or_download_cifar10
from encshield.data.api import DATASETS
from encshield.data.base import Resource
from encshield.errors import DatasetNotFoundError


def test_packaged_config_is_the_documented_job(shared_data: Path) -> None:
    config = load_bench_config(QUICKSTART_CONFIG)
    validate_bench(config)
    assert config.encoders == ["zoo:simclr-cifar10-r18w16"]
    assert {"advencoder", "pap"} <= {a.name for a in config.attacks} and len(config.attacks) >= 3
    assert [d.name for d in config.defenses] == ["none", "standard", "pgd_at", "genaf"]
    assert [d.name for d in config.datasets] == ["cifar10"]
    # the surrogate images are disjoint from the downstream training images
    assert config.surrogate.split == "train[45000:]"
    assert config.datasets[0].train_split == "train[:40000]"  # train[40000:45000]: validation
    assert len(expand(config)) == 3 + 4 + 4
    assert config.workers == 2 and config.threads == 1  # no OpenMP thread waits for a core
    repo_copy = Path(__file__).resolve().parents[1] / "configs" / "bench" / "quickstart.yaml"
    assert repo_copy.read_text() == QUICKSTART_CONFIG.read_text()


def test_split_slices_are_disjoint_and_class_mixed(shared_data: Path) -> None:
    from encshield import data

    surrogate = data.load("cifar10", "train[45000:]")
    assert len(surrogate) == 5000
    assert int(surrogate.labels.bincount().min()) > 400  # the folder copy is sorted by class
    head = data.load("cifar10", "train[:45000]")
    full = data.load("cifar10", "train")
    key = lambda d: {bytes(img.flatten()[:64].numpy()) for img in d.images}  # noqa: E731
    assert len(key(head) & key(surrogate)) <= 5  # (CIFAR-10 has a few near-duplicates)
    assert len(head) + len(surrogate) == len(full)


# ------------------------------------------------------------------------------------------
# finding / downloading CIFAR-10


def _fake_cifar10_archive(path: Path, per_batch: int = 4) -> None:
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, obj: object) -> None:
            blob = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))

        names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
                 b"ship", b"truck"]
        add("batches.meta", {b"label_names": names})
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            add(name, {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                       b"labels": list(rng.integers(0, 10, per_batch).tolist())})


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()


@pytest.fixture()
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ENCSHIELD_DATA and an empty user data folder."""
    monkeypatch.delenv("ENCSHIELD_DATA", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "encshield"


def test_downloads_into_user_folder_when_missing(http_root, no_data: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    base, served = http_root
    archive = served / "cifar-10-python.tar.gz"
    _fake_cifar10_archive(archive)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(DATASETS.get("cifar10"), "resources",
                        (Resource(f"{base}/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
                                  digest),))
    assert find_or_download_cifar10(None) is None
    assert (no_data / "cifar10" / "cifar-10-python.tar.gz").is_file()
    from encshield import data

    assert len(data.load("cifar10", "train")) == 20


def test_failed_download_says_what_to_do(http_root, no_data: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    base, _ = http_root
    monkeypatch.setattr(DATASETS.get("cifar10"), "resources",
                        (Resource(f"{base}/missing.tar.gz", "cifar-10-python.tar.gz", "0" * 64),))
    with pytest.raises(DatasetNotFoundError) as info:
        find_or_download_cifar10(None)
    message = str(info.value)
    assert "download failed" in message and "cifar-10-python.tar.gz" in message
    assert str(no_data / "cifar10") in message and "ENCSHIELD_DATA" in message
    with pytest.raises(DatasetNotFoundError, match="downloads are disabled"):
        find_or_download_cifar10(None, download=False)


def test_missing_under_explicit_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="--data-root"):
        find_or_download_cifar10(tmp_path)


def test_cli_error_exit_code(no_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quickstart", "--no-download"]) == 2
    assert "CIFAR-10 was not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# the verdict after the table (a stored result: no training)


def test_quickstart_prints_the_verdict_after_the_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """With the bench's cells already in the store, `encshield quickstart` prints the table,
    then the verdict computed from it (best BA, best worst-case RA, costs, the collapse
    caveat), and writes it at the top of the report."""
    import encshield.bench
    from encshield.bench.runner import BenchSummary
    from tests.test_report_verdict import build_store

    out = tmp_path / "qs"
    out.mkdir()
    build_store(out / "results.db")
    monkeypatch.setattr("encshield.cli.quickstart_cmd.find_or_download_cifar10",
                        lambda root, download=True: None)
    monkeypatch.setattr(encshield.bench, "run_bench", lambda config, store, **kwargs: BenchSummary(
        store=store, total=12, reused=12, computed=0, seconds=0.0))
    assert main(["quickstart", "--output", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    table = printed.index("| genaf | 47.0 ± 1.4 |")
    verdict = printed.index("## Verdict")
    assert table < verdict < printed.index("12 cells (12 reused, 0 computed)")
    for line in ["- Best BA: none (61.0 ± 1.4 %).",
                 ("- Best worst-case RA under downstream-agnostic attacks on the public encoder "
                  "(worst-case DAE): genaf (33.0 ± 1.4 %)."),
                 ("  - genaf: BA -14.0 points, training 5 min 35 s; robustness: worst-case DAE "
                  "+10.0 points, worst-case all +1.0 points."),
                 "- Caveat: pgd_at collapsed: its BA 10.0 ± 0.7 % is within 2 points of chance"]:
        assert line in printed[verdict:], line
    report = (out / "report" / "report.md").read_text()
    assert report.index("## Verdict") < report.index("| genaf | 47.0 ± 1.4 |")


# ------------------------------------------------------------------------------------------
# end to end (the real command with a shrunken copy of the packaged config)


def test_quickstart_end_to_end(shared_data: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    raw = yaml.safe_load(QUICKSTART_CONFIG.read_text())
    raw["surrogate"]["limit"] = 64
    raw["attacks"] = [{"name": "ssp", "set": {"steps": 3}}, {"name": "pap", "set": {"steps": 3}},
                      {"name": "advencoder", "set": {"epochs": 1, "ngf": 8}}]
    raw["whitebox_limit"] = 32
    raw["defenses"] = [
        "none",
        {"name": "pgd_at", "set": {"epochs": 1, "head_init_epochs": 1, "attack": {"steps": 1}}},
        {"name": "genaf", "set": {"stage1": {"epochs": 1, "head_init_epochs": 1,
                                             "attack": {"steps": 1}},
                                  "probe_size": 32, "ascent_epochs": 1, "stage2_epochs": 1}},
    ]
    raw["datasets"][0].update(limit_train=128, limit_test=64)
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "qs"
    assert main(["quickstart", "--config", str(config), "--output", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "9 cells (0 reused, 9 computed)" in printed
    for name in ("none", "pgd_at", "genaf", "ssp", "pap", "advencoder"):
        assert name in printed
    from encshield.report import load_report, verdict_markdown

    report = load_report(out / "results.db")
    verdict = verdict_markdown(report)
    assert printed.index("| genaf |") < printed.index("## Verdict")  # after the table
    for line in verdict.splitlines():
        assert line in printed, line
    assert "- Best BA: " in verdict and "worst-case DAE" in verdict
    assert "- Each defense against no defense (none: BA " in verdict
    assert verdict.count("points, training ") == 2  # pgd_at and genaf against none
    for example in report.examples:  # the example images of every evaluation, 4 per row
        assert all(len(row.samples) == 4 for row in example.rows)
    assert len(report.examples) == 3
    assert (out / "report" / "report.html").is_file() and (out / "report" / "report.md").is_file()
    assert str(out / "report" / "report.html") in printed
    assert main(["quickstart", "--config", str(config), "--output", str(out),
                 "--no-progress"]) == 0
    assert "9 cells (9 reused, 0 computed)" in capsys.readouterr().out
