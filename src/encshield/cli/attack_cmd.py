"""``encshield attack``: fit, inspect and list universal (downstream-agnostic) attacks.

Examples::

    encshield attack list
    encshield attack fit pap --encoder simclr-cifar10.safetensors \\
        --surrogate tiny_imagenet:val --limit 2000 --eps 10/255 --set variant=ugs \\
        --output pap.safetensors --png pap.png
    encshield attack show pap.safetensors --json

``fit`` loads the encoder (any supported checkpoint format), the attacker's surrogate images
(``DATASET[:SPLIT]``, default split ``train``, resized to the encoder's input size unless
``--image-size`` says otherwise; ``--limit N`` keeps a seeded random subset of N images), fits the
attack and writes the perturbation (safetensors + metadata). Classifier-based attacks (``uap``,
``uapgd``) use the checkpoint's surrogate head (e.g. solo-learn's online classifier) when it has
one (unless ``--no-checkpoint-head``), otherwise a linear head trained on the surrogate labels.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

from encshield.errors import ConfigError

__all__ = ["parse_eps", "parse_surrogate", "register"]


def parse_eps(text: str) -> float:
    """``"10/255"`` -> 0.0392...; ``"0.039"`` -> 0.039. Values must lie in (0, 1]."""
    raw = str(text).strip()
    try:
        value = float(Fraction(raw)) if "/" in raw else float(raw)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(
            f"--eps {text!r}: expected a number in (0, 1] or a fraction such as 10/255"
        ) from None
    if not 0 < value <= 1:
        hint = f" (did you mean {raw}/255?)" if value > 1 else ""
        raise ConfigError(
            f"--eps {text!r}: the budget is in pixel units of [0, 1], got {value:g}{hint}"
        )
    return value


def parse_surrogate(text: str) -> tuple[str, str]:
    """``"tiny_imagenet:val"`` -> ``("tiny_imagenet", "val")``; the split defaults to train."""
    name, _, split = str(text).partition(":")
    if not name:
        raise ConfigError(f"--surrogate {text!r}: expected DATASET[:SPLIT], e.g. cifar10:train")
    return name, split or "train"


def _image_size(args: argparse.Namespace, encoder: Any) -> tuple[int, int]:
    if args.image_size is not None:
        if args.image_size < 1:
            raise ConfigError(f"--image-size must be positive, got {args.image_size}")
        return args.image_size, args.image_size
    size = getattr(encoder, "input_size", None)
    if size is None:
        raise ConfigError("the encoder does not record its input size: pass --image-size")
    return int(size[-2]), int(size[-1])


def _cmd_fit(args: argparse.Namespace) -> int:
    import torch

    from encshield import data
    from encshield.attacks import UNIVERSAL_ATTACKS
    from encshield.checkpoints import load_encoder
    from encshield.config import load_config

    attack_cls = UNIVERSAL_ATTACKS.get(args.name)
    config = load_config(attack_cls.Config, args.config, args.overrides)
    attack = attack_cls(config)
    eps = parse_eps(args.eps)
    name, split = parse_surrogate(args.surrogate)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")

    loaded = load_encoder(args.encoder)
    try:
        device = torch.device(args.device)
    except RuntimeError as error:
        raise ConfigError(f"--device {args.device!r}: {error}") from None
    encoder = loaded.encoder.to(device).eval()
    size = _image_size(args, encoder)
    dataset = data.load(name, split, root=args.root, image_size=size)
    images, labels = dataset.images, dataset.labels
    if args.limit is not None and args.limit < len(dataset):
        generator = torch.Generator().manual_seed(args.seed)
        index = torch.randperm(len(dataset), generator=generator)[: args.limit]
        images, labels = images[index].contiguous(), labels[index].contiguous()
    if bool((labels < 0).all()):
        labels = None  # an unlabelled split (e.g. STL-10 unlabeled)
    head = None if args.no_checkpoint_head else loaded.surrogate_head
    if head is not None:
        head = head.to(device)
    description = {
        "dataset": dataset.name,
        "split": split,
        "root": None if args.root is None else str(args.root),
        "limit": args.limit,
        "subset_seed": args.seed if args.limit is not None else None,
        "image_size": list(size),
        "num_images": int(images.shape[0]),
        "num_classes": dataset.num_classes,
    }
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    perturbation = attack.fit(
        encoder,
        images,
        eps=eps,
        seed=args.seed,
        surrogate_labels=labels,
        surrogate_head=head,
        progress=progress,
        data_description=description,
    )
    perturbation.metadata["encoder"]["file"] = str(args.encoder)
    perturbation.metadata["encoder"]["sha256"] = loaded.sha256
    perturbation.metadata["encoder"]["format"] = loaded.format
    digest = perturbation.save(args.output)
    if args.png is not None:
        perturbation.to_png(args.png, scale=args.scale, example=images[:1].float() / 255
                            if images.dtype == torch.uint8 else images[:1])
    summary = perturbation.summary()
    summary["path"] = str(args.output)
    summary["sha256"] = digest
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        meta = perturbation.metadata
        objective = meta.get("objective", {})
        budget = (
            f"eps {perturbation.eps * 255:.4g}/255, L-inf {perturbation.linf() * 255:.4g}/255"
            if perturbation.kind == "additive"
            else f"patch {tuple(perturbation.delta.shape[-2:])} at {perturbation.position}"
        )
        change = ""
        if "before" in objective:
            change = f", objective {objective['before']:.5g} -> {objective['after']:.5g}"
        print(
            f"wrote {args.output} ({meta['attack']}, {budget}, images "
            f"{size[0]}x{size[1]}, {meta['surrogate']['num_images']} surrogate images, "
            f"{meta['fit_seconds']:.1f} s{change}; sha256 {digest})"
        )
        if args.png is not None:
            print(f"wrote {args.png}")
    return 0


def _rows(perturbation: Any, path: Path) -> list[tuple[str, Any]]:
    meta = perturbation.metadata
    size = perturbation.image_size
    objective = meta.get("objective") or {}
    encoder = meta.get("encoder") or {}
    surrogate = meta.get("surrogate") or {}
    rows: list[tuple[str, Any]] = [
        ("path", path),
        ("attack", meta.get("attack", "unknown")),
        ("kind", perturbation.kind),
        ("image_size", "unknown" if size is None else f"{size[0]}x{size[1]}"),
    ]
    if perturbation.kind == "additive":
        rows.append(("eps", f"{perturbation.eps:.6g} ({perturbation.eps * 255:.4g}/255)"))
    else:
        h, w = perturbation.delta.shape[-2:]
        rows.append(("patch", f"{h}x{w} at (top, left) = {perturbation.position}"))
    linf = perturbation.linf()
    rows.append(("linf", f"{linf:.6g} ({linf * 255:.4g}/255)"))
    rows += [
        ("seed", meta.get("seed")),
        ("encoder_sha256", encoder.get("sha256")),
        ("encoder_file", encoder.get("file")),
        ("surrogate", surrogate.get("description", surrogate) or None),
    ]
    if "before" in objective:
        rows.append(("objective", f"{objective['before']:.6g} -> {objective['after']:.6g} "
                                  f"({objective.get('name')}; {objective.get('samples')} images)"))
    rows += [
        ("fit_seconds", meta.get("fit_seconds")),
        ("created", meta.get("created")),
        ("encshield_version", meta.get("encshield_version")),
        ("config", json.dumps(meta.get("config"), sort_keys=True) if meta.get("config") else None),
    ]
    return rows


def _cmd_show(args: argparse.Namespace) -> int:
    from encshield.attacks import Perturbation

    perturbation = Perturbation.load(args.path)
    if args.png is not None:
        perturbation.to_png(args.png, scale=args.scale)
    if args.json:
        summary = perturbation.summary()
        summary["path"] = str(args.path)
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        rows = [(k, v) for k, v in _rows(perturbation, args.path) if v is not None]
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
        if args.png is not None:
            print(f"wrote {args.png}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from encshield.attacks import UNIVERSAL_ATTACKS

    entries = []
    for name, cls in UNIVERSAL_ATTACKS.items():
        entries.append({
            "name": name,
            "kind": cls.kind,
            "paper": cls.paper,
            "objective": cls.objective_name,
            "config": cls.Config().model_dump(mode="json"),
        })
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    for entry in entries:
        print(f"{entry['name']:<17} {entry['kind']:<8} {entry['paper']}")
        settings = ", ".join(f"{k}={v}" for k, v in entry["config"].items())
        print(f"{'':<17} {'':<8} defaults: {settings}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``attack`` command group to the top-level sub-parsers."""
    parser = subparsers.add_parser(
        "attack",
        help="fit, show and list universal (downstream-agnostic) attacks",
        description="Universal attacks fitted on an encoder alone with surrogate data: "
        "random_noise (control), uap, uapgd, ssp, pap, advencoder, advencoder_patch.",
    )
    actions = parser.add_subparsers(dest="attack_command", metavar="ACTION")
    actions.required = True

    fit = actions.add_parser(
        "fit",
        help="fit a universal perturbation on an encoder",
        description="Fit a universal attack on an encoder with the attacker's surrogate data "
        "and write the perturbation (.safetensors with metadata). Config fields: "
        "`encshield attack list`; override them with --set KEY=VALUE.",
    )
    fit.add_argument("name", metavar="NAME", help="attack name (see `encshield attack list`)")
    fit.add_argument("--encoder", required=True, type=Path,
                     help="encoder checkpoint (any supported format)")
    fit.add_argument("--surrogate", required=True, metavar="DATASET[:SPLIT]",
                     help="the attacker's surrogate data, e.g. tiny_imagenet:val (split: train)")
    fit.add_argument("--root", type=Path, default=None, metavar="DIR",
                     help="data root (default: $ENCSHIELD_DATA, then the user data folder)")
    fit.add_argument("--limit", type=int, default=None, metavar="N",
                     help="use a random subset of N surrogate images (seeded by --seed)")
    fit.add_argument("--image-size", type=int, default=None, metavar="S",
                     help="resize the surrogate images to S x S (default: the encoder's input size)")
    fit.add_argument("--eps", default="10/255",
                     help="L-inf budget of additive attacks, e.g. 10/255 or 0.039 (default 10/255)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit.add_argument("--config", type=Path, default=None, help="YAML file of attack settings")
    fit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override an attack setting (repeatable), e.g. --set steps=500")
    fit.add_argument("--no-checkpoint-head", action="store_true",
                     help="uap/uapgd: ignore the checkpoint's surrogate head; train a linear head "
                     "on the surrogate labels instead")
    fit.add_argument("--device", default="cpu", help="torch device (default cpu)")
    fit.add_argument("--output", "-o", required=True, type=Path, metavar="FILE",
                     help="output .safetensors file")
    fit.add_argument("--png", type=Path, default=None, metavar="FILE",
                     help="also render the perturbation (and an example image) as a PNG")
    fit.add_argument("--scale", type=int, default=8, help="PNG upscaling factor (default 8)")
    bar = fit.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show a progress bar (default: when stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false",
                     help="no progress bar")
    fit.add_argument("--json", action="store_true", help="print the result as JSON")
    fit.set_defaults(func=_cmd_fit)

    show = actions.add_parser("show", help="print a perturbation file's metadata and L-inf norm")
    show.add_argument("path", type=Path, metavar="FILE", help="perturbation .safetensors file")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.add_argument("--png", type=Path, default=None, metavar="OUT", help="render it as a PNG")
    show.add_argument("--scale", type=int, default=8, help="PNG upscaling factor (default 8)")
    show.set_defaults(func=_cmd_show)

    listing = actions.add_parser("list", help="the registered universal attacks and defaults")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_cmd_list)
