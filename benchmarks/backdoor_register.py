"""Add a finished BadEncoder run to the model zoo, with its measured CA / BA / ASR / ASR-B.

    ENCSHIELD_DATA=../shared/data python benchmarks/backdoor_register.py runs/badencoder-gtsrb \\
        --name simclr-cifar10-r18w16-badencoder-gtsrb --clean simclr-cifar10-r18w16 \\
        --command "encshield backdoor inject ..."

1. copies ``RUN/encoder.safetensors`` to ``src/encshield/zoo/weights/NAME.safetensors``;
2. measures it on each target's dataset with :func:`encshield.workflows.evaluate_backdoor`
   (BadEncoder's protocol: ``badencoder_mlp`` heads, Adam lr 1e-4, 500 epochs, batch 64, on the
   whole train split; CA, BA, ASR, ASR over non-target images, ASR-B on the whole test split)
   -> ``benchmarks/results/backdoor_eval_NAME_DATASET.json``;
3. adds or replaces the manifest entry ``NAME`` (method and data of the clean entry, the metrics,
   the clean counterpart, targets and triggers, the injection's command and training time).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from encshield import zoo
from encshield.checkpoints import load_encoder, sha256_file
from encshield.config import read_yaml
from encshield.workflows import DataSpec, evaluate_backdoor
from zoo_register import RESULTS, ZOO, training_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished BadEncoder run folder")
    parser.add_argument("--name", required=True)
    parser.add_argument("--clean", required=True, help="the clean counterpart's zoo name")
    parser.add_argument("--command", required=True, help="the injection command, for the record")
    parser.add_argument("--epochs", type=int, default=500, help="head epochs (paper: 500)")
    parser.add_argument("--trained", default="", help="date, machine and threads, in words")
    parser.add_argument("--notes", default="")
    args = parser.parse_args(argv)

    result = json.loads((args.run / "result.json").read_text())
    config = read_yaml(args.run / "config.yaml")
    weights = ZOO / "weights" / f"{args.name}.safetensors"
    shutil.copyfile(args.run / "encoder.safetensors", weights)
    encoder = load_encoder(weights).encoder
    backdoor = encoder.provenance.extra["backdoor"]
    clean = zoo.entry(args.clean)

    metrics: dict[str, float] = {}
    for target in backdoor["targets"]:
        name = target["dataset"]
        record = evaluate_backdoor(weights, DataSpec(name, "train"), DataSpec(name, "test"),
                                   clean=f"zoo:{args.clean}", epochs=args.epochs)
        record.details["command"] = ("python benchmarks/backdoor_register.py "
                                     + " ".join(sys.argv[1:]))
        record.save(RESULTS / f"backdoor_eval_{args.name}_{name}.json")
        for key in ("ca", "ba", "asr", "asr_nontarget", "asr_b"):
            metrics[f"{name}_{key}"] = round(float(record.metrics[key]), 4)
        print(name, {k: v for k, v in metrics.items() if k.startswith(name)})

    seconds = training_seconds(args.run / "log.jsonl", int(config["batch_size"]))
    manifest_path = ZOO / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry: dict[str, Any] = {
        **{k: v for k, v in clean.model_dump().items()
           if k in ("arch", "width", "stem", "normalization", "method", "pretrain_data",
                    "image_size", "feature_dim")},
        "name": args.name, "file": f"weights/{args.name}.safetensors", "url": None,
        "sha256": sha256_file(weights), "size_bytes": weights.stat().st_size,
        "metrics": metrics,
        "evaluation": (f"per target dataset: heads ({args.epochs} epochs, badencoder_mlp) on the "
                       "whole train split of the clean and the backdoored encoder, CA / BA / "
                       "ASR (all triggered test images) / ASR over non-target images / ASR-B on "
                       "the whole test split: encshield backdoor evaluate --encoder "
                       f"zoo:{args.name} --dataset DATASET (benchmarks/results/"
                       f"backdoor_eval_{args.name}_DATASET.json)"),
        "command": args.command,
        "trained": (args.trained or "2-core CPU") + f"; {seconds / 3600:.2f} h of injection "
                   f"({result['steps']} steps, {result['epochs']} epochs)",
        "notes": args.notes,
        "backdoor": {"clean": args.clean, "attack": "badencoder",
                     "targets": [{"dataset": t["dataset"], "label": t["label"],
                                  "class_name": t["source"].get("class_name"),
                                  "trigger": t["trigger"], "references": t["references"]}
                                 for t in backdoor["targets"]],
                     "shadow": {k: backdoor["shadow"].get(k)
                                for k in ("dataset", "split", "limit", "used", "seed")}},
    }
    manifest["encoders"] = [e for e in manifest["encoders"] if e["name"] != args.name] + [entry]
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
