"""``encshield defend``: fit a registered defense on a downstream train split; list defenses.

Examples::

    encshield defend list
    encshield defend genaf --encoder simclr-cifar10.safetensors --data cifar10 \\
        --set stage1.epochs=20 --set stage1.attack.eps=8/255 --set k=4 \\
        --output genaf-cifar10.safetensors
    encshield evaluate --model genaf-cifar10.safetensors --dataset cifar10 \\
        --whitebox pgd:eps=8/255,steps=10 --output genaf-cifar10-eval.json
    encshield defend zepad --encoder zoo:byol-tinyimagenet-r18w16 --data cifar10 \\
        --output zepad-cifar10.safetensors
    encshield defend zepad --encoder zoo:byol-tinyimagenet-r18w16 --finetune-only \\
        --set finetune_on=cifar10 --output mpae.safetensors
    encshield defend zepad --encoder zoo:byol-tinyimagenet-r18w16 --data gtsrb \\
        --set finetune_on=cifar10 --finetuned mpae.safetensors --output zepad-gtsrb.safetensors

The encoder is a checkpoint file (any supported format) or ``zoo:NAME``; the data
``DATASET[:SPLIT]`` (split default ``train``) is resized to the encoder's input size unless
``--image-size`` says otherwise; ``--limit N`` keeps a seeded class-stratified subset of N images.
The defense's config comes from its defaults, then ``--config FILE.yaml``, then every
``--set KEY=VALUE`` (dotted keys for nested fields, values parsed as YAML, budgets such as
``8/255`` accepted); an invalid field is reported with its name, value and the allowed values.
The defended model is written with :func:`encshield.defenses.save_classifier` (safetensors,
with the defense record in its metadata) and the record as JSON next to it (``MODEL.json``).

ZePAD's persistent robustness: ``--finetune-only`` writes only the fine-tuned MPAE encoders
(once, on ``finetune_on`` or ``--data``); ``--finetuned FILE`` reuses them and trains only the
heads for ``--data`` (the config must ask for the same fine-tuning).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from encshield.config import read_overrides
from encshield.errors import ConfigError

__all__ = ["flatten_config", "register"]


def flatten_config(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``[("a.b", 1)]`` (the keys ``--set`` takes)."""
    out: list[tuple[str, Any]] = []
    for key, value in config.items():
        if isinstance(value, dict):
            out += flatten_config(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _cmd_list(args: argparse.Namespace) -> int:
    from encshield.defenses import DEFENSES

    entries: list[dict[str, Any]] = []
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


def _cmd_finetune(args: argparse.Namespace) -> int:
    from encshield.workflows import DataSpec, finetune_encoders

    missing = [flag for flag, value in (("--encoder", args.encoder), ("--output", args.output))
               if value is None]
    if missing:
        raise ConfigError(f"defend {args.name} --finetune-only: missing {', '.join(missing)}")
    data = (None if args.data is None
            else DataSpec.parse(args.data, limit=args.limit, seed=args.seed, root=args.root))
    result = finetune_encoders(
        args.name, args.encoder, train=data, root=args.root, seed=args.seed,
        overrides=read_overrides(args.config, args.overrides), image_size=args.image_size,
        device=args.device, progress=args.progress, output=args.output)
    used = result.record.get("data") or {}
    print(f"fine-tuned {len(result.encoders)} encoder(s) ({', '.join(result.names)}) on "
          f"{used.get('dataset')}:{used.get('split')} ({used.get('used')} images) in "
          f"{float(result.record.get('time_s', 0.0)):.1f} s")
    print(f"wrote {args.output} (sha256 {result.sha256})")
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from encshield.defenses import DEFENSES
    from encshield.workflows import DataSpec, fit_defense

    DEFENSES.canonical(args.name)
    if args.finetune_only:
        return _cmd_finetune(args)
    missing = [flag for flag, value in (("--encoder", args.encoder), ("--data", args.data),
                                        ("--output", args.output)) if value is None]
    if missing:
        raise ConfigError(f"defend {args.name}: missing {', '.join(missing)}")
    data = DataSpec.parse(args.data, limit=args.limit, seed=args.seed, root=args.root)
    _, record = fit_defense(
        args.name, args.encoder, data, seed=args.seed,
        overrides=read_overrides(args.config, args.overrides), image_size=args.image_size,
        device=args.device, progress=args.progress, output=args.output,
        finetuned=args.finetuned)
    parts = [f"{record.name} on {data.text} ({record.num_train} images at "
             f"{record.data['image_size'][-1]} px)", f"{record.epochs} epochs",
             f"{record.time_s:.1f} s"]
    if record.train_accuracy:
        parts.append(f"clean train acc {100 * record.train_accuracy[-1]:.2f}%")
    print("; ".join(parts))
    if record.summary:
        print(record.summary)
    print(f"wrote {args.output} (sha256 {record.output['sha256']})")
    print(f"wrote {args.output.with_suffix('.json')}")
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
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    parser.add_argument("--output", "-o", type=Path, default=None, metavar="MODEL.safetensors",
                        help="where to write the defended model (the record goes to MODEL.json)")
    parser.add_argument("--finetuned", type=Path, default=None, metavar="ENCODERS.safetensors",
                        help="reuse a shared fine-tuning (zepad: the file of --finetune-only)")
    parser.add_argument("--finetune-only", action="store_true",
                        help="zepad: only fine-tune the MPAE encoders and write them to --output")
    parser.add_argument("--json", action="store_true", help="`defend list`: print JSON")
    parser.set_defaults(func=_run)
