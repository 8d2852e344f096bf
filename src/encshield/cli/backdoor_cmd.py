"""``encshield backdoor``: inject a BadEncoder backdoor, evaluate it downstream, list triggers.

Examples::

    encshield backdoor inject --encoder zoo:simclr-cifar10-r18w16 --shadow cifar10:train \\
        --limit 10000 --target gtsrb:12 --trigger patch --set epochs=20 \\
        --output badencoder-gtsrb.safetensors
    encshield backdoor evaluate --encoder badencoder-gtsrb.safetensors --dataset gtsrb \\
        --limit-train 5000 --limit-test 2000
    encshield backdoor triggers

``inject`` trains a copy of the clean encoder with BadEncoder's losses (Jia, Liu, Gong, IEEE S&P
2022) on the shadow images; each ``--target DATASET:CLASS`` gets the ``--trigger`` of the same
position (one trigger for one target) and ``--references N`` images of the class from the
dataset's train split (or ``--reference-file`` images). The run lives in ``--run-dir``
(checkpoints, ``log.jsonl`` with the kNN monitor); ``--resume`` continues it after an
interruption. ``evaluate`` reads the target, the trigger and the clean encoder from the
backdoored encoder's metadata and prints CA, BA, ASR, ASR over non-target images and ASR-B with
trained downstream heads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _progress(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


def _cmd_inject(args: argparse.Namespace) -> int:
    from encshield.config import read_overrides
    from encshield.errors import ConfigError
    from encshield.workflows import DataSpec, TargetSpec, inject_backdoor

    triggers = args.triggers or ["patch"]
    if len(triggers) != len(args.targets):
        raise ConfigError(f"{len(args.targets)} --target but {len(triggers)} --trigger: give one "
                          "trigger per target (or none: the white patch for a single target)")
    if args.reference_files and len(args.targets) != 1:
        raise ConfigError("--reference-file needs a single --target")
    targets = [TargetSpec.parse(text, trigger=trigger, references=args.references,
                                seed=args.seed, files=tuple(args.reference_files or ()),
                                root=None if args.root is None else str(args.root))
               for text, trigger in zip(args.targets, triggers)]
    shadow = DataSpec.parse(args.shadow, limit=args.limit, seed=args.seed, root=args.root)
    overrides = read_overrides(args.config, args.overrides)
    if args.run_dir is not None:
        overrides["output_dir"] = str(args.run_dir)
    if args.device is not None:
        overrides["device"] = args.device
    _, record = inject_backdoor(args.encoder, shadow, targets, config=overrides,
                                output=args.output, resume=args.resume,
                                stop_at_step=args.stop_at_step, progress=_progress(args))
    if args.json:
        print(json.dumps(record.to_dict(), indent=2, sort_keys=True))
        return 0
    result = record.result
    knn = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if k.startswith("knn_top1"))
    state = "finished" if result["finished"] else "paused (continue with --resume)"
    names = ", ".join(f"{t['dataset']}:{t['label']} ({t['source'].get('class_name')}, "
                      f"trigger {t['trigger']['name']})" for t in record.targets)
    print(f"{state}: {result['steps']}/{result['total_steps']} steps, targets {names}; "
          f"{record.seconds:.0f} s{'; ' + knn if knn else ''}")
    print(f"wrote {args.output or result['encoder']} (sha256 {result['sha256']})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from encshield.workflows import DataSpec, evaluate_backdoor

    train = DataSpec.parse(args.dataset, default_split=args.train_split, limit=args.limit_train,
                           seed=args.seed, root=args.root)
    test = DataSpec(train.name, args.test_split, limit=args.limit_test, seed=args.seed,
                    root=train.root)
    record = evaluate_backdoor(args.encoder, train, test, clean=args.clean, target=args.target,
                               trigger=args.trigger, head=args.head, epochs=args.epochs,
                               lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                               device=args.device)
    if args.output is not None:
        record.save(args.output)
    if args.json:
        print(json.dumps(record.metrics, indent=2, sort_keys=True))
        return 0
    m = record.metrics

    def pct(value: Any) -> str:
        return "n/a" if value is None else f"{100 * value:.2f} %"

    print(f"{train.name} target class {m['target']}, trigger {record.trigger['name']}, "
          f"{m['num_test']} test images; heads: {args.head}, {args.epochs} epochs")
    for name, key in (("CA (clean encoder, clean images)", "ca"),
                      ("BA (backdoored encoder, clean images)", "ba"),
                      ("ASR (all triggered images -> target)", "asr"),
                      ("ASR over non-target images", "asr_nontarget"),
                      ("ASR-B (trigger on the clean encoder)", "asr_b")):
        print(f"  {name:<40} {pct(m[key])}")
    if args.output is not None:
        print(f"wrote {args.output}")
    return 0


def _cmd_triggers(args: argparse.Namespace) -> int:
    from encshield.backdoor import TRIGGERS

    entries: list[dict[str, Any]] = [
        {"name": name, "doc": (cls.__doc__ or "").strip().splitlines()[0],
         "config": cls.Config().model_dump(mode="json")} for name, cls in TRIGGERS.items()]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    for entry in entries:
        settings = ", ".join(f"{k}={v}" for k, v in entry["config"].items())
        print(f"{entry['name']:<13} {entry['doc']}\n{'':<13} defaults: {settings}")
    return 0


def _bar(parser: argparse.ArgumentParser) -> None:
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show a progress bar (default: when stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false",
                     help="no progress bar")


def register(subparsers: Any) -> None:
    """Add the ``backdoor`` command group to the top-level sub-parsers."""
    parser = subparsers.add_parser(
        "backdoor", help="inject a BadEncoder backdoor into an encoder and evaluate it",
        description="BadEncoder (Jia, Liu, Gong, IEEE S&P 2022): a backdoored public encoder "
        "makes every downstream classifier built on it obey a trigger.")
    actions = parser.add_subparsers(dest="backdoor_command", metavar="ACTION")
    actions.required = True

    inject = actions.add_parser(
        "inject", help="backdoor a copy of an encoder (BadEncoder)",
        description="Backdoor a copy of a clean encoder for one or more downstream targets. "
        "Config fields (epochs, batch_size, optimizer.lr, lambda1, lambda2, knn ...) via "
        "--config/--set; defaults are the paper's (SGD lr 0.001, 200 epochs, batch 256).")
    inject.add_argument("--encoder", required=True, metavar="PATH|zoo:NAME",
                        help="the clean public encoder")
    inject.add_argument("--shadow", required=True, metavar="DATASET[:SPLIT]",
                        help="the attacker's unlabelled shadow data, e.g. cifar10:train")
    inject.add_argument("--limit", type=int, default=None, metavar="N",
                        help="use a seeded class-stratified subset of N shadow images")
    inject.add_argument("--target", dest="targets", action="append", required=True,
                        metavar="DATASET:CLASS",
                        help="a downstream target class (index or name), e.g. gtsrb:12; "
                        "repeatable")
    inject.add_argument("--trigger", dest="triggers", action="append", default=[],
                        metavar="SPEC", help="the trigger of the target at the same position, "
                        "e.g. patch, patch:size=6,position=top-left, random_patch:seed=1, "
                        "blend:alpha=0.2 (see `encshield backdoor triggers`; default patch)")
    inject.add_argument("--references", type=int, default=1, metavar="N",
                        help="reference images of each target class, taken from the dataset's "
                        "train split (default 1, as the paper)")
    inject.add_argument("--reference-file", dest="reference_files", action="append",
                        default=[], metavar="IMAGE", help="a reference image file instead "
                        "(repeatable; single target)")
    inject.add_argument("--root", type=Path, default=None, metavar="DIR",
                        help="data root (default: $ENCSHIELD_DATA, then the user data folder)")
    inject.add_argument("--seed", type=int, default=0, help="seed of the data selections")
    inject.add_argument("--config", type=Path, default=None, help="YAML file of run settings")
    inject.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a run setting (repeatable)")
    inject.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                        help="the run's folder (checkpoints, log; default runs/badencoder)")
    inject.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir from its last checkpoint")
    inject.add_argument("--stop-at-step", type=int, default=None, metavar="N",
                        help="pause after N steps and export a snapshot (--resume continues)")
    inject.add_argument("--device", default=None, help="torch device (default cpu)")
    inject.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                        help="copy the backdoored encoder there (record: FILE.json)")
    _bar(inject)
    inject.add_argument("--json", action="store_true", help="print the record as JSON")
    inject.set_defaults(func=_cmd_inject)

    evaluate = actions.add_parser(
        "evaluate", help="CA, BA, ASR and ASR-B with trained downstream heads",
        description="Train a downstream head on the clean and on the backdoored encoder's "
        "frozen features and measure CA, BA, ASR (all test images), ASR over non-target images "
        "and ASR-B. Target, trigger and clean encoder come from the backdoored encoder's "
        "metadata unless given.")
    evaluate.add_argument("--encoder", required=True, metavar="PATH|zoo:NAME",
                          help="the backdoored encoder")
    evaluate.add_argument("--dataset", required=True, metavar="DATASET[:SPLIT]",
                          help="the downstream dataset (split of the heads' training data; "
                          "default train)")
    evaluate.add_argument("--train-split", default="train", help=argparse.SUPPRESS)
    evaluate.add_argument("--test-split", default="test", help="test split (default test)")
    evaluate.add_argument("--limit-train", type=int, default=None, metavar="N")
    evaluate.add_argument("--limit-test", type=int, default=None, metavar="N")
    evaluate.add_argument("--clean", default=None, metavar="PATH|zoo:NAME",
                          help="the clean encoder (default: the one the metadata names)")
    evaluate.add_argument("--target", default=None, metavar="CLASS",
                          help="target class (default: from the metadata)")
    evaluate.add_argument("--trigger", default=None, metavar="SPEC",
                          help="trigger (default: from the metadata)")
    evaluate.add_argument("--head", default="badencoder_mlp", help="head (default "
                          "badencoder_mlp, the paper's)")
    evaluate.add_argument("--epochs", type=int, default=500, help="head epochs (default 500)")
    evaluate.add_argument("--lr", type=float, default=1e-4, help="head lr (default 1e-4)")
    evaluate.add_argument("--batch-size", type=int, default=64, help="head batch (default 64)")
    evaluate.add_argument("--root", type=Path, default=None, metavar="DIR")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--output", "-o", type=Path, default=None, metavar="FILE",
                          help="write the record (JSON, with per-sample predictions)")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.set_defaults(func=_cmd_evaluate)

    triggers = actions.add_parser("triggers", help="the registered triggers and defaults")
    triggers.add_argument("--json", action="store_true", help="print JSON")
    triggers.set_defaults(func=_cmd_triggers)
