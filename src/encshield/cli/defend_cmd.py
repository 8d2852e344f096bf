"""``encshield defend``: fit a registered defense on a downstream train split; list defenses.

Examples::

    encshield defend list
    encshield defend genaf --encoder simclr-cifar10.safetensors --data cifar10 \\
        --set stage1.epochs=20 --set stage1.attack.eps=8/255 --set k=4 \\
        --output genaf-cifar10.safetensors
    encshield evaluate --model genaf-cifar10.safetensors --dataset cifar10 \\
        --whitebox pgd:eps=8/255,steps=10 --output genaf-cifar10-eval.json

The encoder is a checkpoint file (any supported format) or ``zoo:NAME``; the data
``DATASET[:SPLIT]`` (split default ``train``) is resized to the encoder's input size unless
``--image-size`` says otherwise; ``--limit N`` keeps a seeded class-stratified subset of N images.
The defense's config comes from its defaults, then ``--config FILE.yaml``, then every
``--set KEY=VALUE`` (dotted keys for nested fields, values parsed as YAML, budgets such as
``8/255`` accepted); an invalid field is reported with its name, value and the allowed values.
The defended model is written with :func:`encshield.defenses.save_classifier` (safetensors,
with the defense record in its metadata) and the record as JSON next to it (``MODEL.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from encshield.config import parse_fractions
from encshield.errors import ConfigError

__all__ = ["flatten_config", "parse_data", "parse_fractions", "register"]

def parse_data(text: str) -> tuple[str, str]:
    """``"cifar10:train"`` -> ``("cifar10", "train")``; the split defaults to ``train``."""
    name, _, split = str(text).partition(":")
    if not name:
        raise ConfigError(f"--data {text!r}: expected DATASET[:SPLIT], e.g. cifar10:train")
    return name, split or "train"


def flatten_config(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``[("a.b", 1)]`` (the keys ``--set`` takes)."""
    out: list[tuple[str, Any]] = []
    for key, value in config.items():
        if isinstance(value, dict):
            out += flatten_config(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _raw_config(path: Path | None, overrides: list[str]) -> dict[str, Any]:
    from encshield.config import apply_overrides, read_yaml

    raw = read_yaml(path) if path is not None else {}
    return parse_fractions(apply_overrides(raw, overrides))


def _cmd_list(args: argparse.Namespace) -> int:
    from encshield.defenses import DEFENSES

    entries = []
    for name, cls in DEFENSES.items():
        doc = (cls.__doc__ or "").strip().splitlines()
        entries.append({"name": name, "summary": doc[0] if doc else "",
                        "config": cls.Config().model_dump(mode="json")})
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    for entry in entries:
        print(f"{entry['name']:<14} {entry['summary']}")
        settings = ", ".join(f"{k}={v}" for k, v in flatten_config(entry["config"]))
        print(f"{'':<14} defaults: {settings}")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    import torch

    from encshield import data
    from encshield.defenses import build_defense, save_classifier
    from encshield.evaluation.protocol import _resolve_encoder, select_subset

    missing = [flag for flag, value in (("--encoder", args.encoder), ("--data", args.data),
                                        ("--output", args.output)) if value is None]
    if missing:
        raise ConfigError(f"defend {args.name}: missing {', '.join(missing)}")
    output: Path = args.output
    if output.suffix.lower() == ".json":
        raise ConfigError(f"--output {output}: the model file must not end in .json (the record "
                          "is written next to it as MODEL.json)")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    # validate the configuration before loading anything large
    defense = build_defense(args.name, _raw_config(args.config, args.overrides))
    name, split = parse_data(args.data)
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        raise ConfigError(f"--device {args.device!r}: {error}") from None

    encoder, encoder_info = _resolve_encoder(args.encoder)
    encoder_info["source"] = str(args.encoder)
    if args.image_size is not None:
        if args.image_size < 1:
            raise ConfigError(f"--image-size must be positive, got {args.image_size}")
        size = args.image_size
    else:
        input_size = getattr(encoder, "input_size", None)
        if input_size is None:
            raise ConfigError("the encoder does not record its input size: pass --image-size")
        size = int(input_size[-1])
    train = data.load(name, split, root=args.root, image_size=size)
    if bool((train.labels < 0).any()):
        raise ConfigError(f"{name}:{split} has unlabelled images; a defense needs labels")
    available = len(train)
    index = select_subset(train.labels, args.limit, seed=args.seed, mode="stratified")
    if index is not None:
        train = train.subset(index)
    data_info = {"dataset": name, "split": split,
                 "root": None if args.root is None else str(args.root), "image_size": size,
                 "available": available, "used": len(train), "limit": args.limit,
                 "num_classes": train.num_classes}

    result = defense.fit(encoder, train, train.num_classes, seed=args.seed, device=device,
                         progress=args.progress)
    record = {**result.record, "encoder": encoder_info, "data": data_info}
    output.parent.mkdir(parents=True, exist_ok=True)
    digest = save_classifier(result.classifier, output, record)
    record["model"] = {"path": str(output), "sha256": digest}
    record_path = output.with_suffix(".json")
    record_path.write_text(json.dumps(record, indent=2, default=str) + "\n")

    accuracy = record.get("train_accuracy") or []
    parts = [f"{defense.name} on {name}:{split} ({len(train)} images at {size} px)",
             f"{record.get('epochs')} epochs", f"{record.get('time_s', 0.0):.1f} s"]
    if accuracy:
        parts.append(f"clean train acc {100 * accuracy[-1]:.2f}%")
    print("; ".join(parts))
    if record.get("chosen_layers"):
        print(f"stage 2 fine-tuned {len(record['chosen_layers'])} of "
              f"{record.get('num_candidates')} layers: {', '.join(record['chosen_layers'])}")
    print(f"wrote {output} (sha256 {digest})")
    print(f"wrote {record_path}")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.name == "list":
        return _cmd_list(args)
    return _cmd_fit(args)


def register(subparsers: Any) -> None:
    """Add the ``defend`` command to the top-level sub-parsers."""
    parser = subparsers.add_parser(
        "defend",
        help="fit a defense (e.g. genaf) and write the defended model; `defend list`",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", metavar="NAME",
                        help="defense name (see `encshield defend list`), or `list`")
    parser.add_argument("--encoder", default=None, metavar="PATH|zoo:NAME",
                        help="pre-trained encoder: a checkpoint file or zoo:NAME")
    parser.add_argument("--data", default=None, metavar="DATASET[:SPLIT]",
                        help="downstream training data (split default: train)")
    parser.add_argument("--root", type=Path, default=None, metavar="DIR",
                        help="dataset folder (default: $ENCSHIELD_DATA, then the user data folder)")
    parser.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="resize images to N px (default: the encoder's input size)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="train on a seeded class-stratified subset of N images")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE.yaml",
                        help="defense config (YAML mapping of fields)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config field, e.g. --set stage1.attack.eps=8/255; "
                        "repeatable")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--progress", action="store_true", help="print one line per epoch")
    parser.add_argument("--output", "-o", type=Path, default=None, metavar="MODEL.safetensors",
                        help="where to write the defended model (the record goes to MODEL.json)")
    parser.add_argument("--json", action="store_true", help="`defend list`: print JSON")
    parser.set_defaults(func=_run)
