"""``encshield encoder``: inspect, convert and build encoder checkpoints.

Examples::

    encshield encoder inspect simclr-cifar10-ep=999.ckpt --json
    encshield encoder convert simclr-cifar10-ep=999.ckpt simclr-cifar10.safetensors \\
        --ssl-method simclr --pretrain-data cifar10
    encshield encoder build --arch resnet18 --width 16 --stem cifar --normalization cifar10 \\
        tiny.safetensors
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from encshield.models import ARCHITECTURES, NORMALIZATIONS, STEMS

__all__ = ["register"]


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        default="auto",
        help="checkpoint format: auto (default), encshield, solo-learn, badencoder, torchvision",
    )
    parser.add_argument("--sha256", dest="expected_sha256", default=None,
                        help="refuse the file unless its sha256 equals this")
    parser.add_argument("--arch", default=None,
                        help=f"architecture ({', '.join(ARCHITECTURES.names())}); "
                        "default: inferred")
    parser.add_argument("--width", type=int, default=None,
                        help="channels of the first stage (1..512); default: inferred")
    parser.add_argument("--stem", default=None,
                        help=f"stem preset ({', '.join(STEMS.names())}); "
                        "default: from conv1's kernel")
    parser.add_argument("--normalization", default=None,
                        help=f"normalisation preset ({', '.join(NORMALIZATIONS.names())}); "
                        "default: per format")
    parser.add_argument("--input-size", type=int, default=None,
                        help="nominal input size in pixels; default: per stem / stored")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("format", "expected_sha256", "arch", "width", "stem", "normalization", "input_size")
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    for key in ("ssl_method", "pretrain_data"):
        if getattr(args, key, None) is not None:
            out[key] = getattr(args, key)
    return out


def _print_summary(info: dict[str, Any]) -> None:
    norm = info.get("normalization") or {}
    rows = [
        ("path", info.get("path")),
        ("format", info.get("format")),
        ("sha256", info.get("sha256")),
        ("architecture", info.get("architecture")),
        ("width", info.get("width")),
        ("stem", info.get("stem")),
        ("feature_dim", info.get("feature_dim")),
        ("num_parameters", f"{info.get('num_parameters', 0):,}"),
        ("normalization", f"{norm.get('name')} mean={norm.get('mean')} std={norm.get('std')}"),
        ("input_size", info.get("input_size")),
        ("ssl_method", info.get("ssl_method") or "unknown"),
        ("pretrain_data", info.get("pretrain_data") or "unknown"),
        ("skipped_keys",
         f"{info.get('skipped_keys')} {info.get('skipped_key_groups') or ''}".rstrip()),
        ("surrogate_head", f"{info.get('surrogate_head_classes')} classes"
         if info.get("has_surrogate_head") else "none"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from encshield.checkpoints import inspect_checkpoint

    info = inspect_checkpoint(args.path, **_overrides(args))
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        _print_summary(info)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from encshield.checkpoints import convert_checkpoint, inspect_checkpoint

    digest = convert_checkpoint(
        args.src,
        args.dst,
        include_surrogate_head=not args.no_surrogate_head,
        config_hash=args.config_hash,
        **_overrides(args),
    )
    if args.json:
        info = inspect_checkpoint(args.dst)
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        print(f"wrote {args.dst} (sha256 {digest})")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    import torch

    from encshield.checkpoints import (
        check_output_path,
        inspect_checkpoint,
        save_encoder,
    )
    from encshield.models import build_encoder, check_width

    # refuse a bad output path or width before allocating anything
    check_output_path(args.out)
    width = check_width(args.width, "--width")
    torch.manual_seed(args.seed)
    encoder = build_encoder(
        args.arch,
        width,
        args.stem,
        args.normalization,
        args.input_size,
        zero_init_residual=args.zero_init_residual,
        ssl_method=args.ssl_method,
        pretrain_data=args.pretrain_data,
        extra={"random_init_seed": args.seed},
    )
    digest = save_encoder(encoder, args.out)
    if args.json:
        print(json.dumps(inspect_checkpoint(args.out), indent=2, sort_keys=True))
    else:
        print(
            f"wrote {args.out} ({encoder.provenance.arch}, width {width}, stem {args.stem}, "
            f"feature_dim {encoder.feature_dim}, seed {args.seed}; sha256 {digest})"
        )
    return 0


def register(subparsers: Any) -> None:
    """Add the ``encoder`` command group to the top-level sub-parsers."""
    parser = subparsers.add_parser(
        "encoder",
        help="inspect, convert and build encoder checkpoints",
        description="Inspect, convert (to encshield safetensors) and build encoder checkpoints. "
        "Pickled files are read with torch.load(weights_only=True) only; files that would run "
        "code are refused.",
    )
    actions = parser.add_subparsers(dest="encoder_command", metavar="ACTION")
    actions.required = True

    inspect = actions.add_parser("inspect", help="summarise a checkpoint (any supported format)")
    inspect.add_argument("path", help="checkpoint file")
    _add_overrides(inspect)
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(func=_cmd_inspect)

    convert = actions.add_parser("convert", help="convert a checkpoint to encshield safetensors")
    convert.add_argument("src", metavar="IN", help="input checkpoint")
    convert.add_argument("dst", metavar="OUT", help="output .safetensors file")
    _add_overrides(convert)
    convert.add_argument("--ssl-method", default=None, help="record the SSL method")
    convert.add_argument("--pretrain-data", default=None, help="record the pre-training data")
    convert.add_argument("--config-hash", default=None, help="record a training-config hash")
    convert.add_argument("--no-surrogate-head", action="store_true",
                         help="do not store the surrogate (online linear) head")
    convert.add_argument("--json", action="store_true", help="print the result as JSON")
    convert.set_defaults(func=_cmd_convert)

    build = actions.add_parser("build", help="write a randomly initialised encoder")
    build.add_argument("out", metavar="OUT", help="output .safetensors file")
    build.add_argument("--arch", default="resnet18",
                       help=f"architecture ({', '.join(ARCHITECTURES.names())}); default resnet18")
    build.add_argument("--width", type=int, default=64,
                       help="channels of the first stage, 1..512 (64)")
    build.add_argument("--stem", default="cifar",
                       help=f"stem preset ({', '.join(STEMS.names())}); default cifar")
    build.add_argument("--normalization", default="cifar10",
                       help=f"normalisation preset ({', '.join(NORMALIZATIONS.names())}); "
                       "default cifar10")
    build.add_argument("--input-size", type=int, default=32, help="nominal input size (32)")
    build.add_argument("--seed", type=int, default=0, help="random seed of the initialisation (0)")
    build.add_argument("--zero-init-residual", action="store_true",
                       help="zero-init the last BN of each residual block")
    build.add_argument("--ssl-method", default=None, help="record an SSL method")
    build.add_argument("--pretrain-data", default=None, help="record pre-training data")
    build.add_argument("--json", action="store_true", help="print the result as JSON")
    build.set_defaults(func=_cmd_build)
