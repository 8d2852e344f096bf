"""The DAE table: every universal attack against the no-defense downstream model.

1. Fit every registered universal attack (eps 10/255) on the victim encoder with surrogate data
   that is disjoint from the downstream data (default: Tiny-ImageNet val at the encoder's size).
2. For each downstream dataset: train the no-defense head (frozen encoder + MLP, CGCL protocol)
   on its train split, then evaluate BA and RA on its test split under every perturbation, the
   per-sample encoder-only feature PGD (10/255) and white-box PGD (8/255) on the classifier.
3. Write the perturbations (+ PNG), one JSON record per dataset, and a Markdown table.

    ENCSHIELD_DATA=../shared/data python benchmarks/dae_table.py \
        --encoder zoo:simclr-cifar10-r18w16 --datasets cifar10 gtsrb \
        --output-dir benchmarks/results/dae_table
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import header  # noqa: E402

from encshield import data, zoo  # noqa: E402
from encshield.attacks.universal import UNIVERSAL_ATTACKS, fit_universal  # noqa: E402
from encshield.checkpoints import load_encoder  # noqa: E402
from encshield.evaluation.protocol import run_dae_protocol  # noqa: E402


def _load(spec: str):
    loaded = zoo.load(spec[4:]) if spec.startswith("zoo:") else load_encoder(spec)
    return loaded


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", required=True, help="zoo:NAME or a checkpoint file")
    parser.add_argument("--surrogate", default="tiny_imagenet:val", help="DATASET[:SPLIT]")
    parser.add_argument("--surrogate-limit", type=int, default=5000)
    parser.add_argument("--datasets", nargs="+", default=["cifar10", "gtsrb"])
    parser.add_argument("--attacks", nargs="*", default=None, help="default: all registered")
    parser.add_argument("--whitebox-limit", type=int, default=500)
    parser.add_argument("--root", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks/results/dae_table"))
    args = parser.parse_args()
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)

    loaded = _load(args.encoder)
    encoder = loaded.encoder.eval()
    size = int(encoder.input_size[-1])
    name, _, split = args.surrogate.partition(":")
    surrogate = data.load(name, split or "train", root=args.root, image_size=size)
    images = surrogate.images[: args.surrogate_limit]
    labels = surrogate.labels[: args.surrogate_limit]
    description = f"{name}/{split or 'train'}[:{images.shape[0]}] at {size}px"

    files, fit_seconds = [], {}
    for attack in args.attacks or UNIVERSAL_ATTACKS.names():
        start = time.perf_counter()
        perturbation = fit_universal(attack, encoder, images, surrogate_labels=labels,
                                     surrogate_head=loaded.surrogate_head, seed=args.seed,
                                     data_description=description)
        fit_seconds[attack] = round(time.perf_counter() - start, 1)
        path = out / f"{attack}.safetensors"
        perturbation.save(path)
        perturbation.to_png(out / f"{attack}.png")
        files.append(path)
        print(f"fitted {attack} in {fit_seconds[attack]} s", flush=True)

    whitebox = [f"feature_pgd:eps=10/255,steps=20,limit={args.whitebox_limit}",
                f"pgd:eps=8/255,steps=10,limit={args.whitebox_limit}"]
    tables = []
    for dataset in args.datasets:
        record = run_dae_protocol(loaded, dataset, root=args.root, image_size=size,
                                  perturbation_files=files, whitebox=whitebox, seed=args.seed,
                                  keep_per_sample=False, log=lambda m: print(m, flush=True))
        record.save(out / f"{dataset}.json", include_per_sample=False)
        rows = ["| attack | kind | samples | BA | RA | fooling rate | ASR |", "|---|---|---|---|---|---|---|"]
        for row, metrics in record.rows():
            ra = metrics.robust_accuracy if row != "clean" else metrics.benign_accuracy
            rows.append(f"| {row} | {metrics.kind} | {metrics.num_samples} | "
                        f"{_pct(metrics.benign_accuracy)} | {_pct(ra)} | "
                        f"{_pct(metrics.fooling_rate)} | {_pct(metrics.attack_success_rate)} |")
        tables.append(f"### {dataset}\n\n" + "\n".join(rows) + "\n")

    meta = header()
    (out / "summary.json").write_text(json.dumps({**meta, "encoder": args.encoder,
                                                  "encoder_sha256": loaded.sha256,
                                                  "surrogate": description,
                                                  "fit_seconds": fit_seconds}, indent=2) + "\n")
    (out / "table.md").write_text(
        f"Encoder `{args.encoder}` (sha256 {loaded.sha256[:12]}), surrogate {description}, "
        f"eps 10/255 (PGD 8/255), torch threads {torch.get_num_threads()}.\n\n" + "\n".join(tables))
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
