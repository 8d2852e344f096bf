"""The shared SSL pre-training loop: end to end on a small ImageFolder, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from encshield.config import load_config
from encshield.errors import ConfigError
from encshield.ssl.trainer import PretrainConfig, pretrain


def _write_image_folder(root: Path, per_class: int = 24, size: int = 16) -> Path:
    """Two splits of 3 classes of coloured noise images (distinct mean colour per class)."""
    rng = np.random.default_rng(0)
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
    for split, count in (("train", per_class), ("test", per_class // 3)):
        for index, colour in enumerate(colours):
            folder = root / split / f"class{index}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                noise = rng.integers(-40, 40, size=(size, size, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def _config(data_root: Path, output: Path, **overrides: object) -> dict:
    raw = {
        "method": "simclr",
        "method_args": {"proj_hidden_dim": 32, "proj_output_dim": 16},
        "encoder": {"arch": "resnet18", "width": 4, "stem": "cifar", "normalization": "cifar10"},
        "data": {"name": "imagefolder", "root": str(data_root)},
        "optimizer": {"name": "lars", "lr": 0.3, "warmup_epochs": 1},
        "epochs": 3,
        "batch_size": 16,
        "seed": 1,
        "threads": 1,
        "output_dir": str(output),
        "checkpoint_every_steps": 2,
        "log_every_steps": 1,
        "knn": {"every_epochs": 1, "k": [5]},
    }
    raw.update(overrides)
    return raw


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_image_folder(tmp_path_factory.mktemp("folder"))


def test_pretrain_end_to_end_writes_encoder_log_and_result(
    image_folder: Path, tmp_path: Path
) -> None:
    config = PretrainConfig.model_validate(_config(image_folder, tmp_path / "run"))
    result = pretrain(config, progress=False)
    run = tmp_path / "run"
    assert (run / "encoder.safetensors").is_file() and (run / "config.yaml").is_file()
    assert result["steps"] == 3 * (72 // 16)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == result["steps"] and all(np.isfinite(losses))
    knn = [r for r in records if "knn_top1_k5" in r]
    assert [r["epoch"] for r in knn] == [1, 2, 3]
    assert 0.0 <= result["knn_top1_k5"] <= 1.0
    from encshield.checkpoints import load_encoder

    loaded = load_encoder(run / "encoder.safetensors")
    assert loaded.metadata.get("ssl_method", loaded.encoder.provenance.ssl_method) == "simclr"
    with pytest.raises(ConfigError, match="--resume"):
        pretrain(config, progress=False)


def test_bad_config_names_field_value_and_allowed_values(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"method": "simclr", "optimizer": {"name": "adagrad"}}))
    with pytest.raises(ConfigError, match=r"optimizer\.name.*adagrad.*allowed values"):
        load_config(PretrainConfig, path)
    with pytest.raises(ConfigError, match="unknown SSL method 'nope'; allowed values: .*simclr"):
        load_config(PretrainConfig, None, ["method=nope"])
    with pytest.raises(ConfigError, match="epochs"):
        load_config(PretrainConfig, None, ["epochs=-1"])


def _run_cli(config_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "encshield", "pretrain", "--config", str(config_path),
         "--no-progress", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def test_resume_after_kill_9_gives_the_same_weights(image_folder: Path, tmp_path: Path) -> None:
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    configs = {}
    for name, out in (("reference", reference_dir), ("killed", killed_dir)):
        raw = _config(image_folder, out, epochs=4, knn={"every_epochs": 0})
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(raw))
        # Identical configs except output_dir: the state file records the config hash, so keep
        # output_dir out of the comparison by giving both runs their own file.
    reference = _run_cli(configs["reference"])
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()

    process = _run_cli(configs["killed"])
    state = killed_dir / "checkpoint.pt"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if state.exists() and len((killed_dir / "log.jsonl").read_text().splitlines()) >= 7:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "encoder.safetensors").exists()
    step_at_kill = torch.load(state, weights_only=True)["step"]
    assert 0 < step_at_kill < 16

    resumed = _run_cli(configs["killed"], "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    a = load_file(reference_dir / "encoder.safetensors")
    b = load_file(killed_dir / "encoder.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_accepts_a_run_whose_stored_config_is_unchanged(
    image_folder: Path, tmp_path: Path
) -> None:
    """A run started by an older version (other config hash) resumes if its config.yaml, read
    with today's defaults, is the same; a changed config is refused."""
    raw = _config(image_folder, tmp_path / "run", epochs=1, knn={"every_epochs": 0})
    config = PretrainConfig.model_validate(raw)
    pretrain(config, progress=False)
    state_path = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(state_path, weights_only=True)
    state["config_hash"] = "written-by-an-older-version"
    torch.save(state, state_path)
    assert pretrain(config, resume=True, progress=False)["steps"] == 72 // 16
    changed = PretrainConfig.model_validate({**raw, "optimizer": {"name": "lars", "lr": 0.1}})
    with pytest.raises(ConfigError, match="different configuration"):
        pretrain(changed, resume=True, progress=False)


def test_every_shipped_config_validates_and_builds_its_method() -> None:
    from encshield.models import build_encoder
    from encshield.ssl.methods import METHODS

    configs = sorted(Path(__file__).resolve().parents[1].glob("configs/pretrain/**/*.yaml"))
    assert len(configs) >= 15
    for path in configs:
        config = load_config(PretrainConfig, path)
        METHODS.get(config.method).from_args(build_encoder(width=4), config.method_args)


def test_stop_at_step_exports_a_snapshot_and_resumes_to_the_same_weights(image_folder: Path,
                                                                          tmp_path: Path) -> None:
    """``--stop-at-step`` pauses a run on its full schedule and exports a snapshot; ``--resume``
    then ends with the same weights as an uninterrupted run."""
    reference = PretrainConfig.model_validate(
        _config(image_folder, tmp_path / "reference", knn={"every_epochs": 0}))
    paused = PretrainConfig.model_validate(
        _config(image_folder, tmp_path / "paused", knn={"every_epochs": 0}))
    pretrain(reference, progress=False)
    snapshot = pretrain(paused, progress=False, stop_at_step=5)
    run = tmp_path / "paused"
    assert snapshot["finished"] is False and snapshot["steps"] == 5
    assert (run / "encoder-step5.safetensors").is_file() and (run / "snapshot-step5.json").is_file()
    assert not (run / "result.json").exists() and not (run / "encoder.safetensors").exists()
    from encshield.checkpoints import load_encoder

    assert load_encoder(run / "encoder-step5.safetensors").encoder.provenance.extra["step"] == 5
    final = pretrain(paused, resume=True, progress=False)
    assert final["finished"] is True and final["steps"] == 3 * (72 // 16)
    a = load_file(tmp_path / "reference" / "encoder.safetensors")
    b = load_file(run / "encoder.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key
