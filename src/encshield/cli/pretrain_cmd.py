"""``encshield pretrain`` and ``encshield evaluate-encoder``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from encshield.errors import ConfigError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    parser.add_argument("--encoder", required=True, metavar="PATH|zoo:NAME",
                        help="a checkpoint (any supported format) or zoo:NAME")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--root", type=Path, default=None, help="data root")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize images (default: the encoder's input size)")
    parser.add_argument("--k", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--linear-epochs", type=int, default=100, help="0 skips the linear probe")
    parser.add_argument("--limit-train", type=int, default=None, metavar="N",
                        help="a seeded class-stratified subset of N training images")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
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
    from encshield.workflows import DataSpec, evaluate_encoder

    train = DataSpec(args.dataset, args.train_split, limit=args.limit_train, seed=args.seed,
                     root=args.root)
    test = DataSpec(args.dataset, args.test_split, root=args.root)
    record = evaluate_encoder(args.encoder, train, test, ks=args.k, temperature=args.temperature,
                              linear_epochs=args.linear_epochs, image_size=args.image_size,
                              seed=args.seed, device=args.device)
    record.details["command"] = "encshield " + " ".join(sys.argv[1:])
    if args.output:
        record.save(args.output)
    print(json.dumps(record.to_dict(), indent=2))
    return 0
