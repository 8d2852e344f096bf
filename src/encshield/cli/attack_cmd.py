"""``encshield attack``: fit, inspect and list universal (downstream-agnostic) attacks.

Examples::

    encshield attack list
    encshield attack fit pap --encoder zoo:simclr-cifar10-r18w16 \\
        --surrogate tiny_imagenet:val --limit 2000 --eps 10/255 --set variant=ugs \\
        --output pap.safetensors --png pap.png
    encshield attack show pap.safetensors --json

``fit`` loads the encoder (any supported checkpoint format), the attacker's surrogate images
(``DATASET[:SPLIT]``, default split ``train``, resized to the encoder's input size unless
``--image-size`` says otherwise; ``--limit N`` keeps a seeded class-stratified subset of N
images, the same images the bench selects), fits the
attack and writes the perturbation (safetensors + metadata). Classifier-based attacks (``uap``,
``uapgd``) use the checkpoint's surrogate head (e.g. solo-learn's online classifier) when it has
one (unless ``--no-checkpoint-head``), otherwise a linear head trained on the surrogate labels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _cmd_fit(args: argparse.Namespace) -> int:
    from encshield.config import read_overrides
    from encshield.workflows import DataSpec, fit_attack

    surrogate = DataSpec.parse(args.surrogate, limit=args.limit, seed=args.seed, root=args.root)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    perturbation, record = fit_attack(
        args.name, args.encoder, surrogate, eps=args.eps, seed=args.seed,
        overrides=read_overrides(args.config, args.overrides), image_size=args.image_size,
        use_checkpoint_head=not args.no_checkpoint_head, device=args.device, progress=progress,
        output=args.output, png=args.png, png_scale=args.scale)
    summary = perturbation.summary()
    summary["path"] = str(args.output)
    summary["sha256"] = record.output["sha256"]
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    budget = (
        f"eps {perturbation.eps * 255:.4g}/255, L-inf {perturbation.linf() * 255:.4g}/255"
        if perturbation.kind == "additive" and perturbation.eps is not None
        else f"patch {tuple(perturbation.delta.shape[-2:])} at {perturbation.position}"
    )
    objective = record.objective
    change = (f", objective {objective['before']:.5g} -> {objective['after']:.5g}"
              if "before" in objective else "")
    size = "x".join(str(v) for v in record.surrogate["image_size"])
    print(f"wrote {args.output} ({record.attack}, {budget}, images {size}, "
          f"{record.surrogate['used']} surrogate images, {record.fit_seconds:.1f} s{change}; "
          f"sha256 {record.output['sha256']})")
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

    entries: list[dict[str, Any]] = []
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
    fit.add_argument("--encoder", required=True, metavar="PATH|zoo:NAME",
                     help="the public encoder: a checkpoint file (any supported format) or "
                     "zoo:NAME")
    fit.add_argument("--surrogate", required=True, metavar="DATASET[:SPLIT]",
                     help="the attacker's surrogate data, e.g. tiny_imagenet:val (split: train)")
    fit.add_argument("--root", type=Path, default=None, metavar="DIR",
                     help="data root (default: $ENCSHIELD_DATA, then the user data folder)")
    fit.add_argument("--limit", type=int, default=None, metavar="N",
                     help="use a seeded class-stratified subset of N surrogate images (seed: "
                     "--seed)")
    fit.add_argument("--image-size", type=int, default=None, metavar="S",
                     help="resize the surrogate images to S x S (default: the encoder's input "
                          "size)")
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
