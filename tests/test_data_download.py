"""Downloads against a local HTTP server: success, checksum mismatch, 404, no re-fetch."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from encshield import data
from encshield.data import DATASETS, Resource
from encshield.errors import ChecksumMismatchError, ConfigError, DownloadError
from tests import datafiles as df


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """(base URL, served folder, list of requested paths)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = type("Handler", (_Handler,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(handler, directory=str(served))
    )
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", served, handler.requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _serve_mnist(served: Path) -> dict[str, str]:
    """Write tiny gzipped IDX files; returns name -> sha256."""
    src = served / "raw"
    expected = df.write_idx(src, gz=True)
    sums = {}
    for path in sorted(src.iterdir()):
        (served / path.name).write_bytes(path.read_bytes())
        sums[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    assert expected
    return sums


def _resources(
    base: str, sums: dict[str, str], *, sizes: bool = True, served: Path | None = None
) -> tuple[Resource, ...]:
    return tuple(
        Resource(
            base + name, name, sha, (served / name).stat().st_size if sizes and served else None
        )
        for name, sha in sums.items()
    )


def test_download_then_load(
    server: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, served, requests = server
    sums = _serve_mnist(served)
    monkeypatch.setattr(DATASETS.get("mnist"), "resources", _resources(base, sums, served=served))
    root = tmp_path / "data"
    target = data.download("mnist", root=root, progress=False)
    assert target == root / "mnist"
    assert sorted(p.name for p in target.iterdir()) == sorted(sums)
    assert not list(target.glob("*.part"))
    ds = data.load("mnist", "test", root=root, cache=False)
    assert ds.images.shape == (3, 3, 28, 28)
    assert len(requests) == 4

    # already present with the right sha256: nothing is fetched again
    data.download("mnist", root=root, progress=False)
    assert len(requests) == 4


def test_checksum_mismatch_keeps_part_file(
    server: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, served, _ = server
    (served / "file.bin").write_bytes(b"payload" * 100)
    bad = Resource(base + "file.bin", "file.bin", "0" * 64)
    monkeypatch.setattr(DATASETS.get("svhn"), "resources", (bad,))
    with pytest.raises(ChecksumMismatchError) as excinfo:
        data.download("svhn", root=tmp_path, progress=False)
    message = str(excinfo.value)
    real = hashlib.sha256(b"payload" * 100).hexdigest()
    assert "0" * 64 in message and real in message and "file.bin.part" in message
    assert (tmp_path / "svhn" / "file.bin.part").exists()
    assert not (tmp_path / "svhn" / "file.bin").exists()


def test_size_mismatch(
    server: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, served, _ = server
    (served / "f.bin").write_bytes(b"x" * 10)
    monkeypatch.setattr(
        DATASETS.get("svhn"), "resources",
        (Resource(base + "f.bin", "f.bin", hashlib.sha256(b"x" * 10).hexdigest(), size=11),),
    )
    with pytest.raises(ChecksumMismatchError, match="expected 11"):
        data.download("svhn", root=tmp_path, progress=False)


def test_md5_only_resource(
    server: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, served, requests = server
    (served / "g.zip").write_bytes(b"zip bytes")
    good = Resource(base + "g.zip", "g.zip", None, md5=hashlib.md5(b"zip bytes").hexdigest())
    monkeypatch.setattr(DATASETS.get("gtsrb"), "resources", (good,))
    data.download("gtsrb", root=tmp_path, progress=False)
    assert (tmp_path / "gtsrb" / "g.zip").read_bytes() == b"zip bytes"
    bad = Resource(base + "g.zip", "g2.zip", None, md5="f" * 32)
    monkeypatch.setattr(DATASETS.get("gtsrb"), "resources", (bad,))
    with pytest.raises(ChecksumMismatchError, match="md5 mismatch"):
        data.download("gtsrb", root=tmp_path, progress=False)


def test_http_404(
    server: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _, _ = server
    missing = Resource(base + "nope.tar.gz", "nope.tar.gz", "0" * 64)
    monkeypatch.setattr(DATASETS.get("stl10"), "resources", (missing,))
    with pytest.raises(DownloadError) as excinfo:
        data.download("stl10", root=tmp_path, progress=False)
    message = str(excinfo.value)
    assert "404" in message and base + "nope.tar.gz" in message
    assert str(tmp_path / "stl10" / "nope.tar.gz") in message  # where to put a manual download
    assert not (tmp_path / "stl10" / "nope.tar.gz.part").exists()


def test_unreachable_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        DATASETS.get("stl10"), "resources",
        (Resource("http://127.0.0.1:9/x.bin", "x.bin", "0" * 64),),
    )
    with pytest.raises(DownloadError, match="manually"):
        data.download("stl10", root=tmp_path, progress=False)


def test_existing_wrong_file_is_replaced(
    server: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, served, requests = server
    body = gzip.compress(b"abc")
    (served / "a.gz").write_bytes(body)
    monkeypatch.setattr(
        DATASETS.get("fashion_mnist"), "resources",
        (Resource(base + "a.gz", "a.gz", hashlib.sha256(body).hexdigest(), len(body)),),
    )
    (tmp_path / "fashion_mnist").mkdir()
    (tmp_path / "fashion_mnist" / "a.gz").write_bytes(b"old broken copy")
    data.download("fashion_mnist", root=tmp_path, progress=False)
    assert (tmp_path / "fashion_mnist" / "a.gz").read_bytes() == body and len(requests) == 1


def test_cli_download(
    server: tuple[str, Path, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base, served, _ = server
    sums = _serve_mnist(served)
    monkeypatch.setattr(DATASETS.get("mnist"), "resources", _resources(base, sums, served=served))
    code, out, err = df.run_cli(["data", "download", "mnist", "--root", str(tmp_path)], capsys)
    assert code == 0, err
    assert str(tmp_path / "mnist") in out
    code, out, err = df.run_cli(
        ["data", "download", "imagefolder", "--root", str(tmp_path)], capsys
    )
    assert code == 2 and "cannot be downloaded" in err


def test_every_resource_is_well_formed() -> None:
    for name, fmt in DATASETS.items():
        for r in fmt.resources:
            assert r.url.startswith(("http://", "https://")), (name, r)
            assert r.url.endswith(r.filename), (name, r)
            assert r.sha256 or r.md5, (name, r)
            if r.sha256:
                assert len(r.sha256) == 64 and int(r.sha256, 16) >= 0
            if r.md5:
                assert len(r.md5) == 32 and int(r.md5, 16) >= 0
        if name != "imagefolder":
            assert fmt.resources, name
    with pytest.raises(ConfigError):
        data.download("imagefolder")


@pytest.mark.realdata
def test_shared_mnist_files_match_declared_sha256(shared_data: Path) -> None:
    """The official gzips in shared/data have the sha256 the mnist resources declare."""
    from encshield.data.download import verify_file

    resources = {r.filename: r for r in DATASETS.get("mnist").resources}
    found = list((shared_data / "mnist").glob("*.gz"))
    assert found
    for path in found:
        assert verify_file(path, resources[path.name]), path
