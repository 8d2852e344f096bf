"""``encshield bench``: config validation before any work, the results store, resume after
SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from encshield.bench import ResultsStore, expand, load_bench_config, run_bench, validate_bench
from encshield.checkpoints import save_encoder
from encshield.cli import main
from encshield.errors import ConfigError
from encshield.models import build_encoder


@pytest.fixture(scope="module")
def smoke_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bench-encoder") / "smoke.safetensors"
    save_encoder(build_encoder("resnet18", width=4, input_size=32), path, ssl_method="none",
                 pretrain_data="random")
    return path


def _raw(encoder: Path, **changes) -> dict:
    raw = {
        "name": "smoke",
        "encoders": [str(encoder)],
        "surrogate": {"dataset": "cifar10", "split": "test", "limit": 64},
        "attacks": ["random_noise", {"name": "ssp", "set": {"steps": 3, "objective_samples": 32}}],
        "whitebox": ["pgd:eps=8/255,steps=2"],
        "whitebox_limit": 32,
        "defenses": [{"name": "none", "set": {"epochs": 2}},
                     {"name": "pgd_at", "set": {"epochs": 1, "head_init_epochs": 1,
                                                "batch_size": 64, "attack": {"steps": 1}}}],
        "datasets": [{"name": "cifar10", "limit_train": 128, "limit_test": 64}],
        "seeds": [0, 1],
        "batch_size": 64,
    }
    raw.update(changes)
    return raw


def test_expand_content_addressed(smoke_encoder: Path, shared_data: Path) -> None:
    config = load_bench_config(None, raw=_raw(smoke_encoder))
    cells = expand(config)
    kinds = [c.kind for c in cells]
    assert kinds.count("attack") == 2 and kinds.count("model") == 4 and kinds.count("evaluate") == 4
    assert len({c.id for c in cells}) == len(cells)
    # evaluations come after their dependencies; ids depend on every setting
    seen = set()
    for cell in cells:
        assert all(d in seen for d in cell.deps)
        seen.add(cell.id)
    changed = expand(
        load_bench_config(None, raw=_raw(smoke_encoder), overrides=["whitebox_limit=16"])
    )
    assert ({c.id for c in changed if c.kind != "evaluate"}
            == {c.id for c in cells if c.kind != "evaluate"})
    assert not {c.id for c in changed if c.kind == "evaluate"} & {c.id for c in cells}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"attacks": ["uap", "nope"]},
         ["attacks[1].name", "'nope'", "allowed values", "advencoder"]),
        ({"eps": [-0.1]}, ["eps", "-0.1", "(0, 1]"]),
        ({"defenses": ["pgd_at", "fortify"]},
         ["defenses[1].name", "'fortify'", "allowed values", "trades"]),
        ({"defenses": [{"name": "pgd_at", "set": {"epochs": -1}}]}, ["defenses[0].set", "epochs"]),
        ({"datasets": ["cifar11"]}, ["datasets[0].name", "'cifar11'", "allowed values", "gtsrb"]),
        ({"whitebox": ["pgd:steps=3"]}, ["whitebox[0]", "eps is required"]),
        ({"encoders": ["missing.safetensors"]}, ["encoders[0]", "missing.safetensors"]),
        ({"seeds": [0, 0]}, ["seeds", "duplicates"]),
        ({"workers": 0}, ["workers"]),
    ],
)
def test_bad_config_fails_before_any_work(smoke_encoder: Path, shared_data: Path, tmp_path: Path,
                                          change: dict, expected: list[str]) -> None:
    db = tmp_path / "r.db"
    with pytest.raises(ConfigError) as info:
        run_bench(load_bench_config(None, raw=_raw(smoke_encoder, **change)), db, progress=False)
    for text in expected:
        assert text in str(info.value), str(info.value)
    assert not db.exists()


def test_missing_dataset_names_field_and_fix(smoke_encoder: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    config = load_bench_config(None, raw=_raw(smoke_encoder, data_root=str(empty)))
    with pytest.raises(ConfigError) as info:
        validate_bench(config)
    message = str(info.value)
    assert "surrogate.dataset" in message and "'cifar10'" in message and "download" in message


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "encshield", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kwargs)


def _snapshot(db: Path) -> tuple[list[tuple], list[tuple]]:
    """Cells (without results: wall times and timestamps legitimately differ) and metrics."""
    with sqlite3.connect(db) as con:
        cells = sorted(con.execute("SELECT id, kind, params, deps FROM cells"))
        metrics = sorted(con.execute("SELECT * FROM metrics"))
    return cells, metrics


def test_sigkill_then_resume_equals_uninterrupted(smoke_encoder: Path, shared_data: Path,
                                                   tmp_path: Path) -> None:
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump(_raw(smoke_encoder, workers=2)))
    full, killed = tmp_path / "full.db", tmp_path / "killed.db"

    proc = _cli("bench", "--config", str(config), "--output", str(full), "--no-progress")
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    assert "10 cells: 0 reused, 10 computed" in out

    proc = _cli("bench", "--config", str(config), "--output", str(killed), "--no-progress")
    deadline = time.time() + 600
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        if killed.exists():
            try:
                with sqlite3.connect(killed) as con:
                    stored = con.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
            if stored >= 3:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the bench finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(killed) as con:
        partial = con.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    assert 3 <= partial < 10

    again = _cli("bench", "--config", str(config), "--output", str(killed), "--no-progress")
    out, _ = again.communicate(timeout=60)
    assert again.returncode != 0 and "--resume" in out  # never silently appends

    resumed = _cli("bench", "--config", str(config), "--output", str(killed), "--resume",
                   "--no-progress")
    out, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out
    assert f"10 cells: {partial} reused, {10 - partial} computed" in out

    assert _snapshot(killed) == _snapshot(full)
    with ResultsStore(killed, readonly=True) as store:
        rows = store.metrics()
        assert len(rows) == len({(r["cell_id"], r["row"]) for r in rows}) == 4 * 6
        assert {r["defense"] for r in rows} == {"none", "pgd_at"}
        assert {r["row"] for r in rows} == {"clean", "random_noise", "ssp", "pgd:eps=8/255,steps=2",
                                            "worst-case DAE", "worst-case all"}
        for row in rows:
            assert 0.0 <= row["robust_accuracy"] <= 1.0


def test_missing_artifact_is_recomputed(smoke_encoder: Path, shared_data: Path,
                                        tmp_path: Path) -> None:
    raw = _raw(smoke_encoder, attacks=["random_noise"], whitebox=[], seeds=[0],
               defenses=[{"name": "none", "set": {"epochs": 1}}])
    config = load_bench_config(None, raw=raw)
    db = tmp_path / "r.db"
    first = run_bench(config, db, progress=False)
    assert (first.total, first.computed) == (3, 3)
    with ResultsStore(db, readonly=True) as store:
        before = store.metrics()
        model = next(store.cells("model"))
    (store.artifacts / model.artifacts["model"]["path"]).unlink()
    second = run_bench(config, db, resume=True, progress=False)
    assert (second.reused, second.computed) == (2, 1)
    with ResultsStore(db, readonly=True) as store:
        assert store.metrics() == before
        assert len(store) == 3


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[1] / "configs" / "bench").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_shipped_bench_configs_validate(path: Path) -> None:
    config = load_bench_config(path)
    validate_bench(config, check_files=False)
    assert expand(config, {spec: {"spec": spec, "sha256": "0" * 64} for spec in config.encoders})


# ------------------------------------------------------------------- hostile configs and stores

def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("encshield: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def _write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(("change", "field"), [
    ({"attacks": [{"name": "random_noise", "label": "../../../victim"}]}, "attacks.0.label"),
    ({"attacks": [{"name": "random_noise", "label": "ATTACKER_ABS/victim"}]}, "attacks.0.label"),
    ({"defenses": [{"name": "none", "label": "../../victim"}]}, "defenses.0.label"),
    ({"name": "../../victim"}, "name"),
    ({"name": ".."}, "name"),
])
def test_names_from_a_config_are_never_paths(
        smoke_encoder: Path, shared_data: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], change: dict, field: str) -> None:
    """Path-like names/labels: --check and the run refuse them, the victim file is unchanged."""
    victim = tmp_path / "victim.safetensors"  # what '../../../victim' reached from attacks/<id>/
    victim.write_bytes(b"an encoder that must survive")
    change = yaml.safe_load(yaml.safe_dump(change).replace("ATTACKER_ABS", str(tmp_path)))
    config = _write_config(tmp_path / "bench.yaml", _raw(smoke_encoder, **change))
    db = tmp_path / "out" / "r.db"
    assert main(["bench", "--config", str(config), "--output", str(db), "--check"]) == 2
    assert f"{field}: " in _one_line_error(capsys)
    assert main(["bench", "--config", str(config), "--output", str(db), "--no-progress"]) == 2
    assert "names and labels become file names" in _one_line_error(capsys)
    assert victim.read_bytes() == b"an encoder that must survive"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.yaml", "victim.safetensors"]


@pytest.mark.parametrize(("change", "expected"), [
    ({"datasets": [{"name": "cifar10", "train_split": "train[abc]"}]},
     "datasets[0].train_split: split 'train[abc]': expected NAME or NAME[START:STOP]"),
    ({"datasets": [{"name": "cifar10", "test_split": "tset"}]},
     "datasets[0].test_split: unknown split 'tset'"),
    ({"surrogate": {"dataset": "cifar10", "split": "test[100:50]"}}, "surrogate.split"),
    ({"device": "gpu"}, "device: 'gpu' is not allowed; allowed values: cpu, cuda"),
    ({"seeds": [0, 2**64]}, "seeds: seed 18446744073709551616 is out of range"),
    ({"attack_seed": 2**63}, "attack_seed"),
    ({"defenses": [{"name": "none", "set": {"epochs": 1, "lr": float("inf")}}]},
     "defenses[0].set.lr: inf is not a finite number"),
    ({"eps": [0.04, 0.0400000001]}, "eps: budgets"),
    ({"whitebox": ["pgd:eps=8/255,steps=2", "pgd:eps=8/255,steps=2"]}, "attack rows"),
    ({"attacks": [{"name": "random_noise", "label": "clean"}]}, "attack rows ['clean'] repeat"),
    ({"datasets": ["cifar10", "cifar-10"]}, "datasets: 'cifar10' is listed twice"),
])
def test_check_refuses_what_the_run_would_refuse_after_work(
        smoke_encoder: Path, shared_data: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], change: dict, expected: str) -> None:
    """--check (and the run, before any work) refuse what used to fail only after work."""
    config = _write_config(tmp_path / "bench.yaml", _raw(smoke_encoder, **change))
    assert main(["bench", "--config", str(config), "--output", str(tmp_path / "r.db"),
                 "--check"]) == 2
    err = _one_line_error(capsys)
    assert expected in err, err
    with pytest.raises(ConfigError):
        run_bench(load_bench_config(config), tmp_path / "r.db", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.yaml"]


def _foreign_sqlite(path: Path, wal: bool) -> Path:
    con = sqlite3.connect(path)
    if wal:
        con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
    con.execute("INSERT INTO contacts VALUES ('ada', '123')")
    con.commit()
    con.close()
    return path


@pytest.mark.parametrize("kind", ["sqlite", "sqlite-wal", "text"])
def test_another_programs_file_is_refused_before_any_write(
        smoke_encoder: Path, shared_data: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], kind: str) -> None:
    """Another program's file as --output stays byte-identical, with nothing created next to it."""
    folder = tmp_path / "theirs"
    folder.mkdir()
    target = folder / "app.db"
    if kind == "text":
        target.write_text("not a database\n" * 100)
    else:
        _foreign_sqlite(target, wal=kind == "sqlite-wal")
    before = target.read_bytes()
    config = _write_config(tmp_path / "bench.yaml", _raw(smoke_encoder))
    expected = "not a SQLite database" if kind == "text" else "not an encshield results store"
    for extra in (["--check"], ["--no-progress"], ["--resume", "--no-progress"]):
        assert main(["bench", "--config", str(config), "--output", str(target), *extra]) == 2
        assert expected in _one_line_error(capsys)
    assert target.read_bytes() == before  # byte-identical: no WAL switch, no tables, no cells
    assert [p.name for p in folder.iterdir()] == ["app.db"]  # no -wal, -shm, .artifacts


def test_a_second_writer_stops_at_once(smoke_encoder: Path, shared_data: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A second writer on a locked store stops at once with one line; close() releases the lock."""
    db = tmp_path / "r.db"
    config = _write_config(tmp_path / "bench.yaml", _raw(smoke_encoder))
    with ResultsStore(db) as first:  # another run holds the store
        with pytest.raises(ConfigError, match=r"in use by another encshield run \(pid \d+"):
            ResultsStore(db)
        started = time.perf_counter()
        assert main(["bench", "--config", str(config), "--output", str(db), "--resume",
                     "--no-progress"]) == 2
        assert "in use by another encshield run" in _one_line_error(capsys)
        assert time.perf_counter() - started < 30  # refused before computing anything
        assert len(first) == 0
    with ResultsStore(db) as again:  # released by close (and by the kernel if the run dies)
        assert len(again) == 0


def test_stores_carry_an_id_and_legacy_stores_still_open(tmp_path: Path) -> None:
    """New stores carry the application id; stores written before it still open."""
    from encshield.bench.store import APPLICATION_ID, SCHEMA_VERSION

    with ResultsStore(tmp_path / "new.db"):
        pass
    with sqlite3.connect(tmp_path / "new.db") as con:
        assert con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    legacy = tmp_path / "legacy.db"  # as written before stores carried an application id
    con = sqlite3.connect(legacy)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE cells (id TEXT PRIMARY KEY, kind TEXT, title TEXT, params TEXT, deps TEXT,
            config_hash TEXT, result TEXT, artifacts TEXT, versions TEXT, machine TEXT,
            device TEXT, wall_time_s REAL, finished TEXT);
        CREATE TABLE metrics (cell_id TEXT, row TEXT);
        INSERT INTO meta VALUES ('created', '"2025-01-01"');""")
    con.close()
    with ResultsStore(legacy) as store:
        assert store.meta("created") == "2025-01-01"
    with ResultsStore(legacy, readonly=True) as store:
        assert store.meta("created") == "2025-01-01"


def test_stored_json_is_strict(tmp_path: Path) -> None:
    """Non-finite numbers are stored as null: every JSON column parses as standard JSON."""
    from encshield.bench.store import CellRecord

    with ResultsStore(tmp_path / "r.db") as store:
        store.add(CellRecord("c1", "model", "t", {"lr": 0.1}, [], "h",
                             {"losses": [1.0, float("nan"), float("inf")], "acc": float("-inf")},
                             {}, {}, {}, "cpu", 1.0, "now"))
        store.set_meta("note", {"x": float("nan")})
    with sqlite3.connect(tmp_path / "r.db") as con:
        texts = [*con.execute("SELECT params, result FROM cells").fetchone(),
                 con.execute("SELECT value FROM meta WHERE key = 'note'").fetchone()[0]]

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    decoded = [json.loads(text, parse_constant=refuse) for text in texts]
    assert decoded[1] == {"losses": [1.0, None, None], "acc": None} and decoded[2] == {"x": None}


def test_an_unusable_output_path_is_one_line(smoke_encoder: Path, shared_data: Path,
                                             tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """An --output under a file: one line for --check and the run, nothing created."""
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder should be")
    config = _write_config(tmp_path / "bench.yaml", _raw(smoke_encoder))
    for extra in (["--check"], ["--no-progress"]):
        assert main(["bench", "--config", str(config), "--output",
                     str(blocker / "sub" / "r.db"), *extra]) == 2
        assert str(blocker) in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.yaml", "file"]


def test_evaluate_cell_writes_example_images(smoke_encoder: Path, shared_data: Path,
                                             tmp_path: Path) -> None:
    """The evaluate cell keeps 4 example images per attack row (no extra attack run): a PNG and
    a JSON sidecar in its artifacts, whose images are the test images and whose labels and
    predictions are the evaluation's per-sample ones."""
    import numpy as np
    from PIL import Image

    from encshield.bench.cells import EXAMPLES_FORMAT, EXAMPLES_PER_ROW
    from encshield.workflows import DataSpec, evaluate_model

    raw = _raw(smoke_encoder, attacks=["random_noise"], whitebox=["pgd:eps=8/255,steps=1"],
               whitebox_limit=8, seeds=[0], defenses=[{"name": "none", "set": {"epochs": 1}}])
    db = tmp_path / "r.db"
    run_bench(load_bench_config(None, raw=raw), db, progress=False)
    with ResultsStore(db, readonly=True) as store:
        cell = next(store.cells("evaluate"))
        model = store.get(cell.deps[0])
        attack = store.get(cell.deps[1])
        png = store.artifact_path(cell.artifacts["examples_png"]["path"])
        sidecar = json.loads(store.artifact_path(cell.artifacts["examples"]["path"]).read_text())
        artifacts = store.artifacts
    assert sidecar["format"] == EXAMPLES_FORMAT and len(sidecar["class_names"]) == 10
    assert [r["row"] for r in sidecar["rows"]] == ["random_noise", "pgd:eps=8/255,steps=1"]
    assert "examples" not in json.dumps(cell.result)  # the stored result stays small

    test = DataSpec("cifar10", "test", limit=64, seed=0)
    record = evaluate_model(  # the cell's evaluation again, with per-sample predictions
        test, model=artifacts / model.artifacts["model"]["path"],
        perturbations=[artifacts / attack.artifacts["perturbation"]["path"]],
        whitebox=["pgd:eps=8/255,steps=1"], whitebox_limit=8,
        public_encoder=model.params["encoder"]["spec"], seed=0, batch_size=64)
    per = record.per_sample
    images = test.select(32).dataset.images
    with Image.open(png) as opened:
        picture = np.asarray(opened.convert("RGB"))
    budgets = {"random_noise": attack.result["eps"], "pgd:eps=8/255,steps=1": 8 / 255}
    for row in sidecar["rows"]:
        name = row["row"]
        positions = per.indices.get(name, list(range(len(per.labels))))[:EXAMPLES_PER_ROW]
        samples = row["samples"]
        assert [s["index"] for s in samples] == positions
        assert [s["label"] for s in samples] == [per.labels[i] for i in positions]
        assert [s["clean_pred"] for s in samples] == [per.clean_pred[i] for i in positions]
        assert [s["adv_pred"] for s in samples] == per.adv_pred[name][:EXAMPLES_PER_ROW]
        for s in samples:
            x0, y0, x1, y1 = s["clean_box"]
            clean = images[s["index"]].permute(1, 2, 0).numpy()
            assert np.array_equal(picture[y0:y1, x0:x1], clean)
            x0, y0, x1, y1 = s["adv_box"]
            adv = picture[y0:y1, x0:x1].astype(int)
            assert 0 < np.abs(adv - clean.astype(int)).max() <= 255 * budgets[name] + 1


def test_a_dataset_may_have_its_own_seeds() -> None:
    """``datasets[i].seeds`` replaces the config's seeds for that dataset only (3 seeds on
    CIFAR-10, 1 on GTSRB); without it the cells (and their ids) are as before."""
    from encshield.bench.spec import expand, load_bench_config

    identity = {"zoo:simclr-cifar10-r18w16": {"spec": "zoo:simclr-cifar10-r18w16", "sha256": "x"}}
    raw = {"encoders": ["zoo:simclr-cifar10-r18w16"], "defenses": ["none"], "seeds": [0, 1, 2],
           "datasets": [{"name": "cifar10"}, {"name": "gtsrb", "seeds": [0]}]}
    cells = expand(load_bench_config(None, raw=raw), identity)
    models = [(c.params["dataset"]["name"], c.params["seed"]) for c in cells if c.kind == "model"]
    assert models == [("cifar10", 0), ("cifar10", 1), ("cifar10", 2), ("gtsrb", 0)]
    plain = expand(load_bench_config(None, raw={**raw, "datasets": [{"name": "cifar10"}]}),
                   identity)
    assert {c.id for c in plain} <= {c.id for c in cells}


def test_an_in_process_cell_restores_the_callers_data_root(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One worker runs cells in the calling process: the cell's data root holds while it runs
    and the caller's ``$ENCSHIELD_DATA`` is back afterwards (a leak made later tests of the
    same process look for real datasets in another test's temporary folder)."""
    from encshield.bench import cells

    seen: list[str | None] = []
    monkeypatch.setitem(cells._RUNNERS, "attack",
                        lambda cell: seen.append(os.environ.get("ENCSHIELD_DATA")) or ({}, {}, []))
    monkeypatch.setenv("ENCSHIELD_DATA", "/the/callers/root")
    cells.run_cell("attack", {}, [], str(tmp_path), "id", data_root=str(tmp_path))
    assert seen == [str(tmp_path)] and os.environ["ENCSHIELD_DATA"] == "/the/callers/root"
    monkeypatch.delenv("ENCSHIELD_DATA")
    cells.run_cell("attack", {}, [], str(tmp_path), "id", data_root=str(tmp_path))
    assert "ENCSHIELD_DATA" not in os.environ
