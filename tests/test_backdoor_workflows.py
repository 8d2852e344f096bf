"""BadEncoder end to end: the effect on real data (zoo encoder, CIFAR-10 shadow images, GTSRB
downstream), the CLI (inject, pause and resume, evaluate), and the backdoor rows that
``evaluate_model`` and the bench add from a backdoored encoder's metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from encshield.bench import ResultsStore, load_bench_config, run_bench
from encshield.checkpoints import load_encoder, save_encoder
from encshield.cli import main
from encshield.models import build_encoder
from encshield.workflows import (
    DataSpec,
    TargetSpec,
    evaluate_backdoor,
    evaluate_model,
    inject_backdoor,
)


def test_badencoder_plants_a_backdoor_the_downstream_head_inherits(shared_data: Path,
                                                                   tmp_path: Path) -> None:
    """The zoo's SimCLR encoder backdoored for GTSRB's priority-road class (12) with 1,024
    CIFAR-10 shadow images, 80 steps (lr 0.2, a 16-pixel white patch, 5 references, lambda2 = 2:
    a budget a test affords; the zoo entry's recipe is in docs/results.md). A head trained on
    clean GTSRB images of the backdoored encoder sends triggered test images to class 12 far
    more often than the same trigger does on the clean encoder (ASR-B), at nearly the clean
    encoder's accuracy (measured: ASR 44 %, ASR-B 0.3 %, BA 44.3 % vs CA 44.7 %)."""
    _, record = inject_backdoor(
        "zoo:simclr-cifar10-r18w16", DataSpec("cifar10", "test", limit=1024),
        [TargetSpec("gtsrb", 12, "patch:size=16", references=5)],
        config={"epochs": 5, "batch_size": 64, "optimizer": {"lr": 0.2}, "lambda2": 2.0,
                "knn": {"every_epochs": 0}, "channels_last": True,
                "output_dir": str(tmp_path / "run")},
        output=tmp_path / "bd.safetensors")
    assert record.result["finished"] and (tmp_path / "bd.json").is_file()
    assert record.targets[0]["source"]["class_name"] and record.targets[0]["references"] == 5
    result = evaluate_backdoor(tmp_path / "bd.safetensors", DataSpec("gtsrb", "train", limit=1000),
                               DataSpec("gtsrb", "test", limit=300), epochs=50)
    # the same protocol as `encshield backdoor evaluate`: both heads trained alike
    m = result.metrics
    print(f"BadEncoder on GTSRB: CA {m['ca']:.3f} BA {m['ba']:.3f} ASR {m['asr']:.3f} "
          f"(non-target {m['asr_nontarget']:.3f}) ASR-B {m['asr_b']:.3f}")
    assert result.clean_encoder is not None and result.clean_encoder["spec"].startswith("zoo:")
    assert m["target"] == 12 and m["asr"] >= m["asr_b"] + 0.25
    assert m["asr_nontarget"] >= 0.2 and m["ba"] >= m["ca"] - 0.05


@pytest.fixture(scope="module")
def smoke_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bd") / "clean.safetensors"
    save_encoder(build_encoder("resnet18", width=8, input_size=32), path, ssl_method="none")
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_inject_pause_resume_evaluate(shared_data: Path, smoke_encoder: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    common = ["backdoor", "inject", "--encoder", str(smoke_encoder), "--shadow", "cifar10:test",
              "--limit", "96", "--target", "cifar10:truck", "--trigger", "blend:alpha=0.3",
              "--references", "2", "--set", "epochs=2", "--set", "batch_size=32",
              "--set", "knn.every_epochs=0", "--run-dir", str(tmp_path / "run"), "--no-progress"]
    code, out, _ = _run(capsys, *common, "--stop-at-step", "4")
    assert code == 0 and "paused" in out and "4/6 steps" in out
    code, out, err = _run(capsys, *common, "--output", str(tmp_path / "bd.safetensors"))
    assert code == 2 and "--resume" in err  # never silently restarts a run
    code, out, _ = _run(capsys, *common, "--resume", "--output", str(tmp_path / "bd.safetensors"))
    assert code == 0 and "finished: 6/6 steps" in out and "cifar10:9 (truck" in out
    meta = load_encoder(tmp_path / "bd.safetensors").encoder.provenance.extra["backdoor"]
    assert meta["targets"][0]["label"] == 9 and meta["targets"][0]["trigger"]["name"] == "blend"
    assert meta["clean_encoder"]["sha256"]
    code, out, _ = _run(capsys, "backdoor", "evaluate", "--encoder",
                        str(tmp_path / "bd.safetensors"), "--dataset", "cifar10",
                        "--limit-train", "80", "--limit-test", "40", "--epochs", "2",
                        "--output", str(tmp_path / "eval.json"))
    assert code == 0 and "ASR-B" in out and "CA (clean encoder" in out
    record = json.loads((tmp_path / "eval.json").read_text())
    assert set(record["metrics"]) >= {"ca", "ba", "asr", "asr_nontarget", "asr_b"}
    assert len(record["predictions"]["backdoored_triggered"]) == 40
    assert record["metrics"]["target"] == 9
    for bad, text in [(["--target", "cifar10:10"], "out of range"),
                      (["--target", "cifar10:lorry"], "not a class of cifar10"),
                      (["--target", "cifar10:1", "--target", "cifar10:2"],
                       "one trigger per target"),
                      (["--target", "cifar10:1", "--trigger", "patch:size=99"], "does not fit")]:
        args = ["backdoor", "inject", "--encoder", str(smoke_encoder), "--shadow",
                "cifar10:test", "--limit", "64", *bad, "--run-dir", str(tmp_path / "bad")]
        code, _, err = _run(capsys, *args)
        assert code == 2 and text in err and "Traceback" not in err, err


def test_evaluations_and_the_bench_report_the_asr_of_a_backdoored_encoder(
        shared_data: Path, smoke_encoder: Path, tmp_path: Path) -> None:
    inject_backdoor(smoke_encoder, DataSpec("cifar10", "test", limit=64),
                    [TargetSpec("cifar10", "truck", "patch")],
                    config={"epochs": 1, "batch_size": 32, "knn": {"every_epochs": 0},
                            "output_dir": str(tmp_path / "run")},
                    output=tmp_path / "bd.safetensors")
    test, train = DataSpec("cifar10", "test", limit=40), DataSpec("cifar10", "train", limit=80)
    record = evaluate_model(test, encoder=tmp_path / "bd.safetensors", train=train,
                            head_epochs=1)
    row = record.metrics["backdoor:patch"]
    assert row.kind == "backdoor" and row.target == 9 and row.target_hit_rate is not None
    clean = evaluate_model(test, encoder=smoke_encoder, train=train, head_epochs=1)
    assert [n for n, m in clean.metrics.items() if m.kind == "backdoor"] == []
    raw = {"name": "bd", "encoders": [str(tmp_path / "bd.safetensors")],
           "surrogate": {"dataset": "cifar10", "split": "test", "limit": 32},
           "attacks": ["random_noise"], "whitebox": [],
           "defenses": [{"name": "none", "set": {"epochs": 1}}],
           "datasets": [{"name": "cifar10", "limit_train": 80, "limit_test": 40}],
           "seeds": [0], "batch_size": 64}
    run_bench(load_bench_config(None, raw=raw), tmp_path / "r.db", progress=False)
    with ResultsStore(tmp_path / "r.db", readonly=True) as store:
        rows = {r["row"]: r for r in store.metrics()}
    assert rows["backdoor:patch"]["kind"] == "backdoor"
    assert 0.0 <= rows["backdoor:patch"]["target_hit_rate"] <= 1.0
