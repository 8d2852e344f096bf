"""SSL pre-training throughput against the bare forward+backward of the same encoder.

For a pre-training config, times (a) the trainer's real step (``Pretrainer.train_step``: batch
gather, two augmented views, projector/loss, backward, optimiser, EMA/queue updates) and (b) the
bare cost of the encoder's forward+backward on the same two views (concatenated, a trivial
sum loss). The ratio (a)/(b) is the overhead of everything else; the target is <= 1.25. The
kinds are timed interleaved (``_common.time_interleaved``) so that load on the machine affects
both alike; with other jobs running use ``--threads 1``.

    ENCSHIELD_DATA=../shared/data python benchmarks/pretrain_throughput.py \
        --config configs/pretrain/simclr-cifar10-tiny.yaml --steps 20

Writes ``benchmarks/results/pretrain_throughput_<method>.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import time_interleaved, write
from encshield.config import load_config
from encshield.ssl.augment import make_views
from encshield.ssl.trainer import PretrainConfig, Pretrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each kind")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(PretrainConfig, args.config,
                             [*args.overrides, f"output_dir={tmp}", "knn.every_epochs=0"])
        trainer = Pretrainer(config, progress=False)
        trainer.method.train()
        encoder = trainer.method.encoder
        torch.manual_seed(0)
        views = make_views(trainer.images[: config.batch_size], trainer.augment)
        x = torch.cat(views)
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)

        def bare() -> None:
            encoder.zero_grad(set_to_none=True)
            encoder(x).sum().backward()
            encoder.zero_grad(set_to_none=True)

        def views_only() -> None:
            make_views(trainer.images[: config.batch_size], trainer.augment)

        times, median = time_interleaved(
            {"step": trainer.train_step, "bare": bare, "views": views_only},
            repeats=args.steps, warmup=args.warmup)
        step_s, bare_s, views_s = median["step"], median["bare"], median["views"]
        step_times, bare_times = times["step"], times["bare"]

    images = config.batch_size
    record = {
        "benchmark": "pretrain_throughput",
        "method": config.method,
        "config": str(args.config),
        "encoder": config.encoder.model_dump(),
        "batch_size": images,
        "views": len(views),
        "image_size": int(x.shape[-1]),
        "channels_last": config.channels_last,
        "train_step_seconds_median": step_s,
        "bare_forward_backward_seconds_median": bare_s,
        "augmentation_seconds_median": views_s,
        "train_images_per_second": images / step_s,
        "bare_images_per_second": images / bare_s,
        "overhead_ratio": step_s / bare_s,
        "target_ratio": 1.25,
        "step_seconds": step_times,
        "bare_seconds": bare_times,
    }
    path = write(f"pretrain_throughput_{config.method}", record)
    print(f"{config.method}: step {step_s * 1000:.0f} ms, bare fwd+bwd {bare_s * 1000:.0f} ms, "
          f"views {views_s * 1000:.0f} ms, ratio {step_s / bare_s:.3f} (target <= 1.25) -> {path}")


if __name__ == "__main__":
    main()
