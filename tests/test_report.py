"""``encshield report``: aggregation, Markdown/CSV/JSON/SVG/HTML output, errors, a real browser.

The store is built with :meth:`ResultsStore.add` from realistic cells: one encoder, one dataset,
two defenses (``none`` and a labelled ``pgd_at``) x two seeds, two universal attacks (``uap`` at
two budgets, ``advencoder`` at one), one white-box row, and real PNG files in the artifacts dir.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from encshield.attacks.perturbation import Perturbation
from encshield.bench.spec import load_bench_config
from encshield.bench.store import METRIC_COLUMNS, CellRecord, ResultsStore
from encshield.cli import main
from encshield.errors import ConfigError
from encshield.report import (
    _perturbation_kind,
    load_report,
    markdown_tables,
    write_report,
)
from encshield.report.aggregate import (
    aggregate,
    budget_series,
    build_tables,
    format_stat,
    summarize,
)
from encshield.report.svg import bar_chart, report_charts

ENCODER = {"spec": "zoo:simclr-cifar10-r18w16", "sha256": "ab" * 32}
WHITEBOX = "pgd:eps=8/255,steps=10"
DATASET = {"name": "cifar10", "train_split": "train", "test_split": "test",
           "limit_train": 500, "limit_test": 200}
CONFIG = {
    "name": "report-test",
    "encoders": [ENCODER["spec"]],
    "attacks": ["uap", "advencoder"],
    "eps": ["4/255", "10/255"],
    "whitebox": [WHITEBOX],
    "defenses": ["none", {"name": "pgd_at", "label": "adv-ft", "set": {"epochs": 2}}],
    "datasets": [DATASET],
    "seeds": [0, 1],
}
# universal rows: (row, attack, eps); advencoder was fitted at one budget only
UNIVERSAL = [("uap@4", "uap", 4 / 255), ("uap@10", "uap", 10 / 255),
             ("advencoder", "advencoder", 10 / 255)]
ROWS = ["clean", "uap@4", "uap@10", "advencoder", WHITEBOX]
# (defense, seed) -> accuracy per row (clean row: BA, the others: RA)
ACCURACY = {
    ("none", 0): [0.80, 0.60, 0.30, 0.40, 0.00],
    ("none", 1): [0.84, 0.64, 0.34, 0.46, 0.02],
    ("adv-ft", 0): [0.70, 0.66, 0.58, 0.62, 0.35],
    ("adv-ft", 1): [0.72, 0.70, 0.60, 0.60, 0.41],
}
FOOLING = {("none", 0): 0.55, ("none", 1): 0.51, ("adv-ft", 0): 0.10, ("adv-ft", 1): 0.14}


def _cell(cell_id: str, kind: str, title: str, params: dict[str, Any], result: dict[str, Any],
          artifacts: dict[str, Any] | None = None, deps: list[str] | None = None,
          wall: float = 10.0) -> CellRecord:
    return CellRecord(
        id=cell_id, kind=kind, title=title, params=params, deps=deps or [],
        config_hash=f"hash-{cell_id}", result=result, artifacts=artifacts or {},
        versions={"encshield": "0.1.0", "torch": "2.13.0", "python": "3.11.2"},
        machine={"platform": "Linux", "cpu": "test-cpu", "cpu_count": 2, "threads": 1},
        device="cpu", wall_time_s=wall, finished="2025-01-01T12:00:00+0000")


def _png(path: Path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (32, 32))
    image.putdata([((x * 8 + seed * 40) % 256, (y * 8) % 256, (x * y + seed * 90) % 256)
                   for y in range(32) for x in range(32)])
    image.save(path)
    return "sha-" + path.name


def _attack_cells(store: ResultsStore) -> list[str]:
    ids = []
    for i, (row, attack, eps) in enumerate(UNIVERSAL):
        cid = f"attack{i:012d}"
        png = f"attacks/{cid}/{row}.png"
        sha = _png(store.artifacts / png, i)
        params = {"encoder": ENCODER, "attack": attack, "set": {}, "eps": eps, "row": row,
                  "surrogate": {"dataset": "tiny_imagenet", "split": "val", "limit": 2000},
                  "seed": 0, "image_size": None}
        result = {"row": row, "attack": attack, "eps": eps, "fit_seconds": 30.0 + i,
                  "surrogate": "tiny_imagenet/val[2000 images] at 32px",
                  "encoder_sha256": ENCODER["sha256"]}
        file = f"attacks/{cid}/{row}.safetensors"
        delta = torch.full((3, 32, 32), eps / 2)
        digest = Perturbation("additive", delta, eps=eps).save(store.artifacts / file)
        artifacts = {"perturbation": {"path": file, "sha256": digest},
                     "png": {"path": png, "sha256": sha}}
        title = f"fit {row} on <simclr> & co" if i == 0 else f"fit {row} on simclr"
        store.add(_cell(cid, "attack", title, params, result, artifacts, wall=30.0 + i))
        ids.append(cid)
    return ids


def _metric_rows(cid: str, defense: str, seed: int) -> list[dict[str, Any]]:
    accuracy = ACCURACY[(defense, seed)]
    rows = []
    for name, acc in zip(ROWS, accuracy, strict=True):
        universal = next((u for u in UNIVERSAL if u[0] == name), None)
        kind = "clean" if name == "clean" else ("universal" if universal else "whitebox")
        rows.append({
            "cell_id": cid, "encoder": ENCODER["spec"], "dataset": "cifar10", "defense": defense,
            "seed": seed, "row": name, "kind": kind,
            "attack": universal[1] if universal else (None if kind == "clean" else "pgd"),
            "eps": universal[2] if universal else (None if kind == "clean" else 8 / 255),
            "num_samples": 200 if kind != "whitebox" else 100,
            "benign_accuracy": accuracy[0], "robust_accuracy": acc,
            "fooling_rate": None if kind == "clean" else FOOLING[(defense, seed)],
            "attack_success_rate": None if kind == "clean" else 1 - acc / accuracy[0]})
    return rows


def _evaluation(store: ResultsStore, attack_ids: list[str], defense: str, seed: int) -> None:
    name = "pgd_at" if defense == "adv-ft" else "none"
    model_id = f"model-{defense}-{seed}"
    store.add(_cell(model_id, "model", f"{defense} on cifar10 seed {seed}", {
        "encoder": ENCODER, "defense": name, "row": defense, "set": {}, "dataset": DATASET,
        "seed": seed, "image_size": None,
    }, {"name": name, "config": {"epochs": 2}, "epochs": 2, "losses": [0.5] * 100,
        "train_accuracy": 0.9, "time_s": 60.0, "seed": seed},
        {"model": {"path": f"models/{model_id}.safetensors", "sha256": "11"}}, wall=60.0))
    cid = f"eval-{defense}-{seed}"
    rows = _metric_rows(cid, defense, seed)
    record = {"metrics": {r["row"]: {"kind": r["kind"], "num_samples": r["num_samples"]}
                          for r in rows}, "per_sample": {"labels": list(range(200))}}
    result = {"encoder": ENCODER["spec"], "defense": defense, "dataset": "cifar10", "seed": seed,
              "rows": {r["row"]: {"kind": r["kind"], "attack": r["attack"], "eps": r["eps"]}
                       for r in rows}, "record": record}
    store.add(_cell(cid, "evaluate", f"evaluate {defense} on cifar10 seed {seed}", {
        "whitebox": [WHITEBOX], "whitebox_limit": 100, "dataset": DATASET, "seed": seed,
        "batch_size": 256, "image_size": None,
    }, result, deps=[model_id, *attack_ids], wall=20.0), rows)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "results.db"
    config = load_bench_config(None, raw=CONFIG).model_dump(mode="json")
    with ResultsStore(path) as store:
        store.set_meta("config", config)
        store.set_meta("created", "2025-01-01T11:00:00+0000")
        attack_ids = _attack_cells(store)
        for defense in ("none", "adv-ft"):
            for seed in (0, 1):
                _evaluation(store, attack_ids, defense, seed)
    return path


@pytest.fixture(scope="module")
def report_dir(db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(db, out)
    return out


# ------------------------------------------------------------------------------ aggregation

def _std(a: float, b: float) -> float:
    mean = (a + b) / 2
    return math.sqrt((a - mean) ** 2 + (b - mean) ** 2)  # sample std, n - 1 = 1


def test_aggregation_matches_hand_computed_statistics(db: Path) -> None:
    data = load_report(db)
    assert len(data.aggregated) == 2 * len(ROWS)
    by_key = {(r.defense, r.row): r for r in data.aggregated}
    for defense in ("none", "adv-ft"):
        for j, row in enumerate(ROWS):
            a, b = ACCURACY[(defense, 0)][j], ACCURACY[(defense, 1)][j]
            stat = by_key[(defense, row)].stat("robust_accuracy")
            assert stat is not None and stat.n == 2
            assert stat.mean == pytest.approx((a + b) / 2)
            assert stat.std == pytest.approx(_std(a, b))
            assert (stat.min, stat.max) == (pytest.approx(min(a, b)), pytest.approx(max(a, b)))
    clean = by_key[("none", "clean")]
    assert clean.seeds == (0, 1) and clean.n_seeds == 2 and clean.kind == "clean"
    assert clean.stat("fooling_rate") is None
    assert clean.stat("benign_accuracy").mean == pytest.approx(0.82)
    assert by_key[("none", WHITEBOX)].num_samples == 100
    fooling = by_key[("adv-ft", "uap@10")].stat("fooling_rate")
    assert fooling.mean == pytest.approx(0.12) and fooling.std == pytest.approx(_std(0.10, 0.14))
    assert format_stat(clean.stat("benign_accuracy")) == "82.0 ± 2.8"


def test_images_know_their_perturbation_kind(db: Path, tmp_path: Path) -> None:
    data = load_report(db)
    assert [(i.row, i.kind, i.eps) for i in data.images] == [
        (row, "additive", pytest.approx(eps)) for row, _, eps in UNIVERSAL]
    patch = Perturbation("patch", torch.rand(3, 8, 8), position=(2, 3),
                         metadata={"image_size": [32, 32]})
    patch.save(tmp_path / "patch.safetensors")
    assert _perturbation_kind(tmp_path / "patch.safetensors") == "patch"
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    assert _perturbation_kind(tmp_path / "junk.safetensors") is None
    assert _perturbation_kind(tmp_path / "missing.safetensors") is None


def test_one_seed_has_no_std_and_shows_the_mean_only() -> None:
    stat = summarize([0.8234])
    assert stat is not None and stat.std is None and stat.n == 1
    assert format_stat(stat) == "82.3"
    assert summarize([None, None]) is None
    assert format_stat(None) == "-"


def test_tables_follow_the_config_order(db: Path) -> None:
    data = load_report(db)
    assert len(data.tables) == 1
    table = data.tables[0]
    assert table.defenses == ["none", "adv-ft"]  # config order, not alphabetical
    assert [c.row for c in table.columns] == ROWS  # clean, universal (config order, eps), wb
    assert list(budget_series(table)) == ["uap"]


def test_order_without_config_puts_kinds_in_report_order() -> None:
    base = {"encoder": "e", "dataset": "d", "defense": "x", "seed": 0, "num_samples": 10,
            "benign_accuracy": 0.5, "robust_accuracy": 0.5, "fooling_rate": None,
            "attack_success_rate": None}
    rows = [dict(base, row=r, kind=k, attack=a, eps=e) for r, k, a, e in [
        ("pgd:eps=8/255,steps=10", "whitebox", "pgd", 0.03),
        ("apgd_ce:eps=8/255,steps=20", "whitebox", "apgd_ce", 0.03),
        ("feature_pgd", "encoder_deployed", "feature_pgd", 0.04),
        ("uap@10", "universal", "uap", 10 / 255), ("uap@4", "universal", "uap", 4 / 255),
        ("clean", "clean", None, None)]]
    table = build_tables(aggregate(rows))[0]
    assert [c.row for c in table.columns] == [
        "clean", "uap@4", "uap@10", "feature_pgd", "apgd_ce:eps=8/255,steps=20",
        "pgd:eps=8/255,steps=10"]
    assert table.get("x", "feature_pgd").stat("robust_accuracy").std is None
    # with a config: white-box rows in its order, matched by attack name when the stored
    # (canonical) spec text differs from the config's spelling
    config = {"whitebox": ["pgd:steps=10,eps=0.0314", "apgd_ce:eps=8/255,steps=20"]}
    table = build_tables(aggregate(rows, config), config)[0]
    assert [c.row for c in table.columns][-2:] == [
        "pgd:eps=8/255,steps=10", "apgd_ce:eps=8/255,steps=20"]


# --------------------------------------------------------------------------------- markdown

def test_markdown_tables(db: Path) -> None:
    text = markdown_tables(db)
    header = f"| defense | BA | uap@4 | uap@10 | advencoder | {WHITEBOX} |"
    assert header in text
    assert "| none | 82.0 ± 2.8 | 62.0 ± 2.8 | 32.0 ± 2.8 | 43.0 ± 4.2 | 1.0 ± 1.4 |" in text
    assert "| adv-ft | 71.0 ± 1.4 | 68.0 ± 2.8 | 59.0 ± 1.4 | 61.0 ± 1.4 | 38.0 ± 4.2 |" in text
    assert "Fooling rate (%)" in text
    assert "| adv-ft | 12.0 ± 2.8 | 12.0 ± 2.8 | 12.0 ± 2.8 | 12.0 ± 2.8 |" in text
    assert text.index("| none |") < text.index("| adv-ft |")


def test_markdown_report_links_copied_images_and_charts(db: Path, report_dir: Path) -> None:
    text = (report_dir / "report.md").read_text()
    assert text.startswith("# encshield bench report: report-test")
    assert "- cells: 11 (3 attack, 4 evaluate, 4 model)" in text
    assert f"sha256 `{ENCODER['sha256']}`" in text
    assert "total wall time: 6 min 53 s" in text  # attacks 30+31+32, 4 x 60, 4 x 20
    images = sorted((report_dir / "images").glob("*.png"))
    charts = sorted((report_dir / "charts").glob("*.svg"))
    assert len(images) == 3 and len(charts) == 2  # bars + RA-against-budget of uap
    for file in (*images, *charts):
        assert f"]({file.parent.name}/{file.name})" in text
    with Image.open(images[0]) as image:
        assert image.size == (32, 32)
    assert "fit uap@4 on &lt;simclr&gt; &amp; co" in text  # no raw HTML from the store


def test_a_missing_image_is_listed_not_fatal(db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    shutil.copyfile(db, copy)
    shutil.copytree(db.with_name("results.artifacts"), tmp_path / "copy.artifacts")
    lost = next((tmp_path / "copy.artifacts").rglob("uap@10.png"))
    lost.unlink()
    written = write_report(copy, tmp_path / "out", formats=["md", "html"])
    assert sorted(written) == ["html", "md"]
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 2
    assert str(lost) in written["md"].read_text()
    page = written["html"].read_text()
    assert page.count("<img ") == 2 and "Missing image files" in page


# ------------------------------------------------------------------------------ CSV and JSON

def test_csv_exports(report_dir: Path) -> None:
    with open(report_dir / "metrics.csv", newline="") as handle:
        raw = list(csv.DictReader(handle))
    assert len(raw) == 4 * len(ROWS) and list(raw[0]) == list(METRIC_COLUMNS)
    clean = next(r for r in raw if r["defense"] == "none" and r["seed"] == "1"
                 and r["row"] == "clean")
    assert float(clean["robust_accuracy"]) == pytest.approx(0.84) and clean["eps"] == ""
    with open(report_dir / "aggregate.csv", newline="") as handle:
        agg = list(csv.DictReader(handle))
    assert [r["row"] for r in agg[: len(ROWS)]] == ROWS
    pgd = next(r for r in agg if r["defense"] == "adv-ft" and r["row"] == WHITEBOX)
    assert float(pgd["robust_accuracy_mean"]) == pytest.approx(0.38)
    assert float(pgd["robust_accuracy_std"]) == pytest.approx(_std(0.35, 0.41))
    assert (pgd["n_seeds"], pgd["seeds"], pgd["kind"]) == ("2", "0 1", "whitebox")


def test_json_export(report_dir: Path) -> None:
    doc = json.loads((report_dir / "report.json").read_text())
    assert doc["name"] == "report-test" and doc["config"]["seeds"] == [0, 1]
    assert len(doc["cells"]) == 11
    cell = next(c for c in doc["cells"] if c["kind"] == "evaluate")
    assert {"id", "kind", "title", "params", "result", "artifacts", "versions", "machine",
            "device", "wall_time_s", "config_hash"} <= set(cell)
    assert "per_sample" not in cell["result"]["record"]  # bulky parts left out
    model = next(c for c in doc["cells"] if c["kind"] == "model")
    assert model["result"]["losses"]["omitted"] == "list of 100 items"
    table = doc["tables"][0]
    assert table["defenses"] == ["none", "adv-ft"]
    assert [c["row"] for c in table["columns"]] == ROWS
    first = table["rows"][0]
    assert (first["defense"], first["row"]) == ("none", "clean")
    assert first["benign_accuracy"]["mean"] == pytest.approx(0.82)


# ---------------------------------------------------------------------------------- SVG/HTML

def test_svg_charts_are_well_formed(db: Path) -> None:
    table = load_report(db).tables[0]
    charts = report_charts([table])
    assert [c.file_name.split("-")[0] for c in charts] == ["bars", "budget"]
    for chart in charts:
        root = ET.fromstring(chart.svg)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    bars = ET.fromstring(bar_chart(table))
    rects = bars.findall(".//{http://www.w3.org/2000/svg}rect")
    # background + 2 defenses x (BA + 4 attacks) bars + 5 legend boxes
    assert len(rects) == 1 + 2 * 5 + 5
    assert "polyline" in charts[1].svg


def test_html_is_self_contained_and_escaped(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == 3
    assert page.count("<details>") == 11 + 1  # every cell + the bench config
    assert page.count("<svg ") == 2
    assert "<script" not in page.lower() and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert "&lt;simclr&gt; &amp; co" in page and "<simclr>" not in page
    assert "82.0 ± 2.8" in page and "hash-eval-none-0" in page


# ----------------------------------------------------------------------------------- errors

def test_a_file_that_is_not_a_store_is_a_config_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("this is not a database " * 100)
    with pytest.raises(ConfigError, match="not a usable SQLite results store"):
        load_report(text)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ConfigError, match="not an encshield results store"):
        write_report(other)
    with pytest.raises(ConfigError, match="does not exist"):
        load_report(tmp_path / "missing.db")


def test_an_empty_store_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    ResultsStore(path).close()
    with pytest.raises(ConfigError, match=r"no evaluation results yet.*encshield bench"):
        write_report(path)
    assert not (tmp_path / "empty.report").exists()


def test_unknown_format_is_a_config_error(db: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="choose from md, html, csv, json"):
        write_report(db, tmp_path, formats=["pdf"])


# -------------------------------------------------------------------------------------- CLI

def test_cli_prints_tables_and_writes_the_default_folder(
        db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy.db"
    shutil.copyfile(db, copy)
    shutil.copytree(db.with_name("results.artifacts"), tmp_path / "copy.artifacts")
    assert main(["report", str(copy), "--formats", "md", "csv"]) == 0
    out = capsys.readouterr().out
    assert "| none | 82.0 ± 2.8 |" in out
    folder = tmp_path / "copy.report"
    assert f"wrote md: {folder / 'report.md'}" in out
    assert sorted(p.name for p in folder.iterdir()) == [
        "aggregate.csv", "charts", "images", "metrics.csv", "report.md"]


def test_cli_error_on_a_non_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.db"
    bad.write_text("hello")
    assert main(["report", str(bad)]) == 2
    assert "encshield: error:" in capsys.readouterr().err


# --------------------------------------------------------------- unusual and hostile stores

def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("encshield: error: ") and err.count("\n") == 1, err
    return err


def _copy(db: Path, folder: Path, name: str = "copy") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(db, folder / f"{name}.db")
    shutil.copytree(db.with_name("results.artifacts"), folder / f"{name}.artifacts")
    return folder / f"{name}.db"


def test_report_reads_without_writing_and_any_file_name(db: Path, tmp_path: Path) -> None:
    """'#', '?' and '%' in a store name are read right, and reporting leaves no -wal/-shm."""
    copy = _copy(db, tmp_path / "store", "a#b?c%20")  # '#', '?', '%' are data, not URI syntax
    before = sorted(p.name for p in copy.parent.iterdir())
    data = load_report(copy)
    assert len(data.images) == 3 and len(data.cells) == 11
    write_report(copy, tmp_path / "out", formats=["md"])
    assert sorted(p.name for p in copy.parent.iterdir()) == before  # no -wal / -shm left


def test_a_damaged_page_is_one_line(db: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A store with damaged pages: one line, exit 2, no report folder."""
    copy = _copy(db, tmp_path)
    raw = bytearray(copy.read_bytes())
    for start in range(4096, len(raw), 4096):  # every page but the schema page
        raw[start:start + 64] = b"\xff" * 64
    copy.write_bytes(raw)
    assert main(["report", str(copy), "--output-dir", str(tmp_path / "out")]) == 2
    assert "is damaged" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_an_unwritable_report_folder_is_one_line(db: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A report file that cannot be written: one line, not a traceback."""
    (tmp_path / "out" / "report.md").mkdir(parents=True)  # where the file must go
    assert main(["report", str(db), "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    assert "report.md is a directory" in _one_line_error(capsys)


@pytest.fixture()
def shared_dir() -> Any:
    """A folder another user may use (pytest's folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="encshield-perm-"))
    folder.chmod(0o777)
    yield folder
    for path in (folder, *folder.rglob("*")):
        if path.is_dir():
            path.chmod(0o777)
    shutil.rmtree(folder)


def _as_other_user(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``encshield ARGS`` as a user without privileges (root ignores file modes)."""
    command = [sys.executable, "-m", "encshield", *args]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv: file permissions cannot be tested")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {**os.environ, "HOME": str(home), "ENCSHIELD_CACHE": str(home / "cache")}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env,
                          check=False)


def test_read_only_folders_and_permission_problems(db: Path, shared_dir: Path) -> None:
    """As an unprivileged user: a store in a read-only folder is reported; denied access says so."""
    copy = _copy(db, shared_dir / "store")
    for path in (copy.parent, *copy.parent.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    copy.parent.chmod(0o555)  # a read-only folder: no -wal or -shm can be made there
    out = shared_dir / "out"
    done = _as_other_user("report", str(copy), "--output-dir", str(out), "-q", home=shared_dir)
    assert done.returncode == 0, done.stderr
    assert (out / "report.md").is_file() and len(list((out / "images").iterdir())) == 3

    refused = _as_other_user("report", str(copy), home=shared_dir)  # default: next to it
    assert refused.returncode == 2 and "permission denied" in refused.stderr, refused.stderr
    out.chmod(0o555)
    refused = _as_other_user("report", str(copy), "-o", str(out), home=shared_dir)
    assert refused.returncode == 2 and "permission denied" in refused.stderr, refused.stderr
    copy.parent.chmod(0o755)
    copy.chmod(0o000)
    refused = _as_other_user("report", str(copy), home=shared_dir)
    assert refused.returncode == 2 and "permission denied" in refused.stderr, refused.stderr
    for result in (done, refused):
        assert "Traceback" not in result.stderr and result.stderr.count("\n") <= 1


def _hostile_store(path: Path, label: str, png: str) -> None:
    """A store whose strings (from an old version or the Python API) are Markdown/HTML."""
    with ResultsStore(path) as store:
        store.set_meta("config", {"name": f"{label} report"})
        params = {"encoder": {"spec": f"zoo:{label}"}, "attack": "uap", "row": label, "eps": 0.04}
        store.add(_cell("attack0", "attack", f"fit {label}", params, {"row": label},
                        {"png": {"path": png, "sha256": "x"}}))
        rows = [dict(r, cell_id="eval0", encoder=f"zoo:{label}", dataset=label, defense=label,
                     row=label if r["row"] == "uap@4" else r["row"])
                for r in _metric_rows("eval0", "none", 0) if r["row"] in ("clean", "uap@4")]
        store.add(_cell("eval0", "evaluate", f"evaluate {label}", {}, {}), rows)


def _bare(text: str) -> str:
    """``text`` without code spans (shown literally) and backslash-escaped characters."""
    return re.sub(r"\\.", "", re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", text))


@pytest.mark.parametrize("label", ["a|b", "# x", "<script>alert(1)</script>", "`x` *y* [z](j:)"])
def test_markdown_escapes_every_string_from_the_store(tmp_path: Path, label: str) -> None:
    """Hostile store strings neither break tables nor inject markup; outside files stay unread."""
    secret = tmp_path / "secret.png"  # outside the store: never read into a report
    _png(secret, 0)
    _hostile_store(tmp_path / "r.db", label, "../../secret.png")
    text = write_report(tmp_path / "r.db", tmp_path / "out", formats=["md"])["md"].read_text()
    assert "<script" not in text and "secret.png" in text.split("Missing image files")[1]
    assert not list((tmp_path / "out" / "images").iterdir())  # listed as missing, not copied
    columns = 0
    for line in text.splitlines():
        if not line.startswith("|"):
            columns = 0  # the next table starts with its header row
            if not line.startswith("!["):  # headings and paragraphs: nothing unescaped
                assert not set(_bare(line.lstrip("#"))) & set("<>`*[]#|"), line
            continue
        cells = re.split(r"(?<!\\)\|", line)[1:-1]  # a table keeps its columns
        columns = columns or len(cells)
        assert len(cells) == columns, line
        assert not any(set(_bare(c)) & set("<>`*[]#") for c in cells), line


# ---------------------------------------------------------------------------------- browser

def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = _chromium()
    if binary is None:
        pytest.skip("no chromium or chromium-browser on PATH (apt-get install chromium)")
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", *args]
    env = dict(os.environ, HOME=str(tmp_path))
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env,
                          check=False)


def test_html_renders_in_a_headless_browser(report_dir: Path, tmp_path: Path) -> None:
    url = (report_dir / "report.html").resolve().as_uri()
    dom = _browser(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert html.count("<table") == 2  # accuracy + fooling rate
    assert "adv-ft" in html and "none" in html
    assert "82.0 ± 2.8" in html and "38.0 ± 4.2" in html
    assert html.count("<img ") == 3 and "data:image/png;base64," in html
    assert html.count("<svg ") == 2

    shot = tmp_path / "page.png"
    result = _browser(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000",
                      "--hide-scrollbars", url)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 10  # text, table borders, bars: not blank


def test_robustbench_entries(report_dir: Path, db: Path) -> None:
    """One JSON per (encoder, defense, dataset) in RobustBench's leaderboard fields, with the
    clean accuracy of the aggregated table (percent strings, two decimals)."""
    from encshield.report import load_report

    data = load_report(db)
    files = sorted((report_dir / "robustbench").glob("*.json"))
    expected = {(t.encoder, d, t.dataset) for t in data.tables for d in t.defenses}
    assert len(files) == len(expected)
    for file in files:
        entry = json.loads(file.read_text())
        assert {"name", "venue", "architecture", "eps", "clean_acc", "reported",
                "autoattack_acc"} <= set(entry)
        table = next(t for t in data.tables
                     if t.encoder == entry["encoder"] and t.dataset == entry["dataset"])
        clean = table.get(entry["defense"], "clean").stat("benign_accuracy")
        assert entry["clean_acc"] == f"{100 * clean.mean:.2f}"
