"""The workflow layer: encoder and dataset specs, and one subset rule for the CLI and the bench.

Smoke tier: a seeded width-4 encoder saved to a file and a small ImageFolder tree written here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from encshield.attacks import Perturbation
from encshield.bench.cells import run_cell
from encshield.checkpoints import save_encoder, sha256_file
from encshield.cli import main
from encshield.errors import ConfigError
from encshield.evaluation import select_subset
from encshield.workflows import DataSpec, encoder_identity, resolve_encoder
from tests.synthetic import encoder


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("workflows")
    save_encoder(encoder(), base / "encoder.safetensors", ssl_method="random", pretrain_data="none")
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 12)):
        for i in range(n):
            folder = base / "data" / split / f"class{i % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return {"base": base, "encoder": base / "encoder.safetensors", "data": base / "data"}


def test_data_spec_selects_a_seeded_stratified_subset(files: dict[str, Path]) -> None:
    spec = DataSpec("imagefolder", "train", limit=9, seed=4, root=files["data"])
    selected = spec.select()
    assert len(selected.dataset) == 9 and selected.num_classes == 3
    assert torch.bincount(selected.dataset.labels).tolist() == [3, 3, 3]
    full = DataSpec("imagefolder", "train", root=files["data"]).select()
    expected = select_subset(full.dataset.labels, 9, seed=4)
    assert torch.equal(selected.indices, expected)
    assert (selected.info["subset"]["indices_sha256"]
            == spec.select().info["subset"]["indices_sha256"])
    assert DataSpec.parse("cifar10:train[:45000]").split == "train[:45000]"
    for bad in (dict(name="nope"), dict(name="cifar10", split="train[abc]"),
                dict(name="cifar10", limit=0)):
        with pytest.raises(ConfigError):
            DataSpec(**bad)  # type: ignore[arg-type]


def test_encoder_specs(files: dict[str, Path]) -> None:
    resolved = resolve_encoder(str(files["encoder"]))
    assert resolved.sha256 == sha256_file(files["encoder"]) and resolved.input_size == 16
    assert encoder_identity(str(files["encoder"]))["sha256"] == resolved.sha256
    zoo = resolve_encoder("zoo:simclr-cifar10-r18w16")
    assert zoo.spec == "zoo:simclr-cifar10-r18w16"
    assert zoo.describe()["zoo"] == "simclr-cifar10-r18w16"
    for bad in ("zoo:nope", str(files["base"] / "missing.safetensors")):
        with pytest.raises(ConfigError):
            resolve_encoder(bad)


def test_cli_and_bench_pick_the_same_images(files: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """``attack fit --limit N --seed S`` and a bench attack cell with the same surrogate spec,
    limit and seed fit on the same images (the same subset digest and the same perturbation)."""
    out = files["base"] / "cli.safetensors"
    assert main(["attack", "fit", "random_noise", "--encoder", str(files["encoder"]),
                 "--surrogate", "imagefolder:train", "--root", str(files["data"]),
                 "--limit", "9", "--seed", "5", "--output", str(out)]) == 0
    capsys.readouterr()
    cli = Perturbation.load(out).metadata["surrogate"]["description"]
    params = {"encoder": encoder_identity(str(files["encoder"])), "attack": "random_noise",
              "set": {}, "eps": 10 / 255, "row": "noise", "seed": 5, "image_size": None,
              "surrogate": {"dataset": "imagefolder", "split": "train", "limit": 9}}
    root = files["base"] / "artifacts"
    result, artifacts, _ = run_cell("attack", params, [], str(root), "cell",
                                    data_root=str(files["data"]))
    bench = result["surrogate"]
    assert cli["subset"]["indices_sha256"] == bench["subset"]["indices_sha256"]
    assert cli["used"] == bench["used"] == 9
    bench_delta = Perturbation.load(root / artifacts["perturbation"]["path"]).delta
    assert torch.equal(Perturbation.load(out).delta, bench_delta)


def test_every_job_takes_a_zoo_encoder(capsys: pytest.CaptureFixture[str]) -> None:
    """``attack fit``, ``defend``, ``evaluate`` and ``evaluate-encoder`` accept zoo:NAME (here
    refused for an unknown name, with the list of known ones, before any data is read)."""
    for argv in (["attack", "fit", "random_noise", "--encoder", "zoo:nope", "--surrogate",
                  "cifar10", "--output", "x.safetensors"],
                 ["defend", "none", "--encoder", "zoo:nope", "--data", "cifar10", "--output",
                  "x.safetensors"],
                 ["evaluate", "--encoder", "zoo:nope", "--dataset", "cifar10", "--output",
                  "x.json"],
                 ["evaluate-encoder", "--encoder", "zoo:nope", "--dataset", "cifar10"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "unknown zoo encoder 'nope'" in err and "simclr-cifar10-r18w16" in err, argv


def test_tune_chooses_on_validation_data(files: dict[str, Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``encshield tune``: every grid point is fitted on the training slice and scored on the
    disjoint validation slice (BA + RA under the attack); the chosen point is the best score."""
    from encshield.records import TuneRecord

    out = files["base"] / "tune.json"
    assert main(["tune", "pgd_at", "--encoder", str(files["encoder"]), "--data",
                 "imagefolder:train[:20]", "--val", "imagefolder:train[20:30]", "--root",
                 str(files["data"]), "--grid", "head_lr=5e-3,5e-4", "--set", "epochs=1",
                 "--set", "head_init_epochs=1", "--set", "batch_size=8", "--set",
                 "attack.steps=1", "--attack", "pgd:eps=4/255,steps=2", "--no-progress",
                 "--output", str(out)]) == 0
    assert "chosen: --set" in capsys.readouterr().out
    record = TuneRecord.load(out)
    assert [p["point"] for p in record.points] == [{"head_lr": 5e-3}, {"head_lr": 5e-4}]
    assert record.train["used"] == 20 and record.val["used"] == 10
    qualified = [p for p in record.points if p["qualifies"]]
    best = (max(qualified, key=lambda p: (p["val_ra"], p["val_ba"])) if qualified
            else max(record.points, key=lambda p: p["score"]))
    assert record.chosen_point == best["point"] and record.chosen["epochs"] == 1
    assert record.qualified == bool(qualified) and 0 <= record.baseline["val_ba"] <= 1
    for point in record.points:
        assert point["score"] == pytest.approx(point["val_ba"] + point["val_ra"])
        assert point["qualifies"] == (point["val_ba"] >= 0.7 * record.baseline["val_ba"])
        assert 0 <= point["val_ra"] <= 1 and 0 <= point["val_ba"] <= 1
    assert main(["tune", "pgd_at", "--encoder", str(files["encoder"]), "--data", "imagefolder",
                 "--val", "imagefolder", "--root", str(files["data"]), "--grid",
                 "nope=1,2"]) == 2  # refused before any fit


def test_grid_points_do_not_share_nested_overrides() -> None:
    """Each point's overrides are its own (a nested base section is copied, not shared)."""
    from encshield.workflows.tune import grid_points, point_overrides

    base = {"stage1": {"epochs": 1, "attack": {"steps": 3}}}
    built = [point_overrides(base, p) for p in grid_points({"stage1.epochs": [4, 10]})]
    assert [b["stage1"]["epochs"] for b in built] == [4, 10]
    assert base["stage1"]["epochs"] == 1 and built[0]["stage1"]["attack"] == {"steps": 3}
    assert built[0]["stage1"] is not built[1]["stage1"]
