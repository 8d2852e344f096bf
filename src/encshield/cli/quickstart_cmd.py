"""``encshield quickstart``: the README's main job.

For now (foundation stage) it checks the whole data -> model path on real data: it finds every
registered dataset under the data root, prints its summary, builds the tiny-tier encoder
(ResNet-18, width 16, CIFAR stem) and runs it on a batch of real test images. Later stages turn it
into the full attack/defense/evaluation quickstart.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from encshield.errors import DatasetNotFoundError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="run the main job end to end on the data found under the data root",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder with the datasets (default: $ENCSHIELD_DATA, then the user data folder)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--json", action="store_true", help="print one JSON summary object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from encshield import data, models

    console = Console(quiet=args.json)
    found = data.available(args.data_root)
    if not found:
        where = args.data_root or "$ENCSHIELD_DATA or the user data folder"
        raise DatasetNotFoundError(
            f"no dataset found under {where}. Point --data-root (or ENCSHIELD_DATA) at a folder "
            "holding e.g. cifar10/, or fetch one with `encshield data download cifar10`"
        )

    summary: dict[str, object] = {"datasets": {}}
    table = Table(title="Datasets found")
    for column in ("dataset", "classes", "image size (C, H, W)", "splits"):
        table.add_column(column)
    for name in found:
        start = time.perf_counter()
        info = data.info(name, args.data_root).to_dict()
        info["seconds"] = round(time.perf_counter() - start, 3)
        summary["datasets"][name] = info  # type: ignore[index]
        splits = ", ".join(f"{split} {count:,}" for split, count in info["splits"].items())
        table.add_row(name, str(info["num_classes"]), str(tuple(info["image_size"])), splits)
    console.print(table)

    probe_name = "cifar10" if "cifar10" in found else found[0]
    probe_info = summary["datasets"][probe_name]  # type: ignore[index]
    probe_split = "test" if "test" in probe_info["splits"] else next(iter(probe_info["splits"]))
    dataset = data.load(probe_name, probe_split, root=args.data_root, image_size=32)
    encoder = models.build_encoder(arch="resnet18", width=16, stem="cifar", normalization="cifar10")
    encoder.eval()
    x, _ = next(dataset.batches(args.batch_size))
    with torch.inference_mode():
        encoder(x[:8])  # warm-up
        start = time.perf_counter()
        features = encoder(x)
        seconds = time.perf_counter() - start
    summary["encoder_forward"] = {
        "encoder": "resnet18 width 16, CIFAR stem (random init)",
        "dataset": f"{probe_name}/{probe_split}",
        "input_shape": list(x.shape),
        "feature_shape": list(features.shape),
        "images_per_second": round(x.shape[0] / seconds, 1),
    }
    console.print(
        f"Encoder forward on {x.shape[0]} real {probe_name}/{probe_split} images: "
        f"{tuple(x.shape)} -> features {tuple(features.shape)} "
        f"({x.shape[0] / seconds:,.0f} images/s on {torch.get_num_threads()} CPU threads)"
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0
