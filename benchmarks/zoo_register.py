"""Add a finished pre-training run to the model zoo, with its measured quality.

    ENCSHIELD_DATA=../shared/data python benchmarks/zoo_register.py runs/simclr-cifar10-tiny \\
        --name simclr-cifar10-r18w16 --config configs/pretrain/simclr-cifar10-tiny.yaml

1. copies ``RUN/encoder.safetensors`` to ``src/encshield/zoo/weights/NAME.safetensors``;
2. measures it with :func:`encshield.workflows.evaluate_encoder` on CIFAR-10 (weighted kNN
   k = 20, 200 with memory bank cifar10/train, and a 100-epoch linear probe; test split
   cifar10/test) -> ``benchmarks/results/encoder_eval_NAME.json``;
3. writes the run's result plus its training time (summed from the throughput of every window
   of ``log.jsonl``, so pauses between sessions do not count) to
   ``benchmarks/results/zoo_NAME_pretrain.json``;
4. adds or replaces the entry ``NAME`` of ``src/encshield/zoo/manifest.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from encshield.checkpoints import load_encoder, sha256_file
from encshield.config import read_yaml
from encshield.provenance import now_iso, write_json
from encshield.workflows import DataSpec, evaluate_encoder

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "src" / "encshield" / "zoo"
RESULTS = ROOT / "benchmarks" / "results"


def training_seconds(log: Path, batch_size: int) -> float:
    """Seconds of training: each logged window (the steps since the previous record) took
    ``steps * batch_size / images_per_s`` seconds."""
    total = 0.0
    previous = 0
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if "images_per_s" in record and record["images_per_s"] > 0:
            steps = int(record["step"]) - previous
            previous = int(record["step"])
            total += steps * batch_size / float(record["images_per_s"])
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder (with result.json)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--config", required=True, type=Path, help="the recipe (YAML)")
    parser.add_argument("--notes", default="")
    parser.add_argument("--trained", default="", help="date, machine and threads, in words")
    args = parser.parse_args(argv)

    result = json.loads((args.run / "result.json").read_text())
    config = read_yaml(args.config)
    weights = ZOO / "weights" / f"{args.name}.safetensors"
    shutil.copyfile(args.run / "encoder.safetensors", weights)
    loaded = load_encoder(weights)

    record = evaluate_encoder(weights, DataSpec("cifar10", "train"), DataSpec("cifar10", "test"))
    record.details["command"] = ("python benchmarks/zoo_register.py " + " ".join(sys.argv[1:]))
    record.save(RESULTS / f"encoder_eval_{args.name}.json")

    seconds = training_seconds(args.run / "log.jsonl", int(config["batch_size"]))
    pretrain = {**result, "training_seconds": round(seconds, 1), "recipe": str(args.config),
                "registered": now_iso()}
    write_json(RESULTS / f"zoo_{args.name}_pretrain.json", pretrain)

    manifest_path = ZOO / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry: dict[str, Any] = {
        "name": args.name,
        "file": f"weights/{args.name}.safetensors",
        "url": None,
        "sha256": sha256_file(weights),
        "size_bytes": weights.stat().st_size,
        "arch": config["encoder"]["arch"],
        "width": int(config["encoder"]["width"]),
        "stem": config["encoder"]["stem"],
        "normalization": config["encoder"]["normalization"],
        "method": config["method"],
        "pretrain_data": f"{config['data']['name']}/{config['data']['split']}"
                         + (f" ({config['data']['image_size']} px)"
                            if config["data"].get("image_size") else ""),
        "image_size": int(config["data"].get("image_size") or 32),
        "feature_dim": int(loaded.encoder.feature_dim),
        "metrics": {"knn_top1_k20": round(record.knn["k20"], 4),
                    "knn_top1_k200": round(record.knn["k200"], 4),
                    "linear_top1": round(float(record.linear["test_top1"]), 4)},
        "evaluation": ("cifar10/test: weighted kNN (T=0.07, memory bank cifar10/train) and a "
                       "100-epoch linear probe on frozen features: encshield evaluate-encoder "
                       f"--encoder zoo:{args.name} --dataset cifar10 "
                       f"(benchmarks/results/encoder_eval_{args.name}.json)"),
        "command": f"encshield pretrain --config {args.config}",
        "trained": (args.trained or "2-core CPU") + f"; {seconds / 3600:.1f} h of training "
                   f"({result['steps']} steps, {result['epochs']} epochs)",
        "notes": args.notes,
    }
    encoders = [e for e in manifest["encoders"] if e["name"] != args.name]
    encoders.append(entry)
    manifest["encoders"] = encoders
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
