"""``encshield pretrain`` and ``encshield evaluate-encoder``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from encshield.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="self-supervised pre-training of an encoder (resumable)",
        description="Pre-train an encoder with an SSL method. The YAML config is validated; "
        "--set overrides any field, e.g. --set optimizer.lr=0.3 --set epochs=10.",
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML run configuration")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in output_dir from its last checkpoint")
    parser.add_argument("--stop-at-step", type=int, default=None, metavar="N",
                        help="pause after N optimiser steps (full-run schedule), export the "
                             "encoder as a snapshot; --resume continues")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_pretrain)

    parser = subparsers.add_parser(
        "evaluate-encoder",
        help="kNN and linear-probe accuracy of an encoder on a dataset",
    )
    parser.add_argument("--encoder", required=True, type=Path, help="checkpoint (any supported format)")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--root", type=Path, default=None, help="data root")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize images (default: the encoder's input size)")
    parser.add_argument("--k", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--linear-epochs", type=int, default=100, help="0 skips the linear probe")
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    parser.set_defaults(func=run_evaluate_encoder)


def run_pretrain(args: argparse.Namespace) -> int:
    from encshield.config import load_config
    from encshield.ssl.trainer import PretrainConfig, pretrain

    config = load_config(PretrainConfig, args.config, args.overrides)
    if args.stop_at_step is not None and args.stop_at_step < 1:
        raise ConfigError(f"--stop-at-step must be >= 1, got {args.stop_at_step}")
    result = pretrain(config, resume=args.resume, progress=not args.no_progress,
                      stop_at_step=args.stop_at_step)
    print(json.dumps(result, indent=2))
    return 0


def run_evaluate_encoder(args: argparse.Namespace) -> int:
    import time

    import torch

    from encshield import __version__, data
    from encshield.checkpoints import load_encoder
    from encshield.evaluation import knn_accuracy, linear_probe

    loaded = load_encoder(args.encoder)
    encoder = loaded.encoder.eval()
    size = args.image_size or int(encoder.input_size[-1])
    train = data.load(args.dataset, args.train_split, root=args.root, image_size=size)
    test = data.load(args.dataset, args.test_split, root=args.root, image_size=size)
    train_images, train_labels = train.images[: args.limit_train], train.labels[: args.limit_train]
    start = time.perf_counter()
    result: dict[str, object] = {
        "encoder": str(args.encoder),
        "sha256": loaded.sha256,
        "dataset": args.dataset,
        "train_split": args.train_split,
        "test_split": args.test_split,
        "image_size": size,
        "num_train": int(train_images.shape[0]),
        "num_test": len(test),
        "knn_temperature": args.temperature,
    }
    knn = knn_accuracy(encoder, train_images, train_labels, test.images, test.labels,
                       ks=args.k, temperature=args.temperature)
    result.update({f"knn_top1_k{k}": acc for k, acc in knn.items()})
    if args.linear_epochs > 0:
        probe = linear_probe(encoder, train_images, train_labels, test.images, test.labels,
                             epochs=args.linear_epochs, seed=args.seed)
        result.update(linear_train_top1=probe.train_accuracy, linear_test_top1=probe.test_accuracy,
                      linear_epochs=probe.epochs)
    result.update(command="encshield " + " ".join(sys.argv[1:]),
                  seconds=round(time.perf_counter() - start, 1), encshield=__version__,
                  torch=torch.__version__, threads=torch.get_num_threads())
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    print(text)
    return 0
