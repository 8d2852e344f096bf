"""``encshield evaluate``: the DAE protocol on one encoder and one downstream dataset.

Trains the no-defense downstream model (frozen encoder + head, CGCL protocol) on the train split,
evaluates it on the test split under the given universal perturbations and white-box attacks,
prints a table and writes the JSON record. Examples::

    encshield evaluate --encoder simclr-cifar10.safetensors --dataset cifar10 \\
        --perturbation uap.safetensors ssp.safetensors \\
        --whitebox pgd:eps=8/255,steps=10 --whitebox feature_pgd:eps=10/255,steps=10 \\
        --whitebox-limit 500 --output result.json
    encshield evaluate --encoder zoo:NAME --dataset cifar10 --limit-test 1000 \\
        --no-clamp --output cgcl-compat.json
    encshield evaluate --model defended.safetensors --dataset cifar10 \\
        --whitebox pgd:eps=8/255,steps=10 --output defended.json

``--model`` evaluates an already defended classifier (written by ``encshield defend``) on the
test split instead (no head training; --head, --head-epochs, --train-split and --limit-train do
not apply); the record's config holds the model file's sha256 and its stored defense record.

Rates are fractions over each row's samples, per sample. ASR = attack success rate (flipped among
the initially correct); fooling rate = AdvEncoder/ZePAD's "ASR"; error rate = PAP's "ASR".
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from encshield.errors import ConfigError

__all__ = ["add_attack_arguments", "print_record", "register", "run"]


def _whitebox_spec(text: str) -> Any:
    from encshield.evaluation.specs import parse_whitebox

    try:
        return parse_whitebox(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def add_attack_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every evaluation of a classifier (perturbations, white-box, test set)."""
    group = parser.add_argument_group("attacks")
    group.add_argument("--perturbation", action="extend", nargs="+", default=[], metavar="FILE",
                       help="universal perturbation file(s) (Perturbation.save); repeatable")
    group.add_argument("--whitebox", action="append", type=_whitebox_spec, default=[],
                       metavar="SPEC",
                       help="per-sample attack NAME:eps=8/255[,steps=10,limit=N,seed=S,KEY=V]; "
                       "NAME in pgd, pgd_l2, apgd_ce, apgd_dlr, apgd_t, fgsm ... (on the "
                       "classifier) or feature_pgd (on the deployed encoder; on=public: on the "
                       "public encoder, transferred); repeatable")
    group.add_argument("--public-encoder", default=None, metavar="PATH|zoo:NAME",
                       help="the public pre-trained encoder for on=public encoder attacks "
                       "(default: the --encoder, or the one the model file's record names)")
    group.add_argument("--whitebox-limit", type=_non_negative, default=None, metavar="N",
                       help="evaluate per-sample attacks on a fixed, seeded, class-stratified "
                       "subset of N test images (default: all)")
    group.add_argument("--no-clamp", action="store_true",
                       help="compatibility: do not clamp x + delta to [0, 1] (the CGCL code's "
                       "unclamped evaluation); default clamps")
    group.add_argument("--batch-size", type=int, default=256, help="images per batch (default 256)")
    group.add_argument("--device", default="cpu", help="torch device (default cpu)")
    group.add_argument("--no-per-sample", action="store_true",
                       help="leave the per-sample predictions out of the JSON record")


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` command to the top-level sub-parsers."""
    from encshield.models import HEADS

    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a downstream model under universal and white-box attacks (DAE protocol)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--encoder", metavar="PATH|zoo:NAME",
                        help="victim encoder: a checkpoint file (any supported format) or zoo:NAME")
    source.add_argument("--model", type=Path, metavar="MODEL.safetensors",
                        help="an already defended classifier (encshield defend); no head training")
    parser.add_argument("--dataset", required=True, help="downstream dataset name (e.g. cifar10)")
    parser.add_argument("--root", type=Path, default=None,
                        help="dataset folder (default: $ENCSHIELD_DATA, then the user data folder)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="resize images to this size (default: the encoder's input size)")
    parser.add_argument("--train-split", default="train", help="split the head is trained on")
    parser.add_argument("--test-split", default="test", help="split the model is evaluated on")
    parser.add_argument("--head", default="mlp", choices=HEADS.names(),
                        help="downstream head (default mlp: the Gen-AF/ZePAD 3-layer MLP)")
    parser.add_argument("--head-epochs", type=_non_negative, default=20,
                        help="head training epochs (default 20)")
    parser.add_argument("--limit-train", type=_non_negative, default=None, metavar="N",
                        help="train the head on a seeded class-stratified subset of N images")
    parser.add_argument("--limit-test", type=_non_negative, default=None, metavar="N",
                        help="evaluate on a seeded class-stratified subset of N test images")
    parser.add_argument("--seed", type=int, default=0, help="seed of head training and subsets")
    add_attack_arguments(parser)
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="RESULT.json",
                        help="where to write the JSON record")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the table")
    parser.set_defaults(func=run)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def print_record(record: Any, *, console: Any = None, title: str | None = None) -> None:
    """Print the record's rows as a rich table (attack | n | BA | RA | fooling rate | ASR |
    error rate)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=title or "Evaluation (%, per sample)", box=box.SIMPLE_HEAD)
    table.add_column("attack", overflow="fold")
    table.add_column("kind", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    for column in ("BA", "RA", "fooling rate", "ASR", "error rate"):
        table.add_column(column, justify="right")
    for name, row in record.rows():
        table.add_row(name, row.kind, str(row.num_samples), _percent(row.benign_accuracy),
                      _percent(row.robust_accuracy), _percent(row.fooling_rate),
                      _percent(row.attack_success_rate), _percent(row.error_rate))
    console.print(table)
    detection = getattr(record, "detection", None)
    if detection and detection.get("rows"):
        settings = detection.get("detector") or {}
        found = Table(title=(f"DAE detection (%, clean + adversarial mix; flag when the "
                             f"{settings.get('statistic', '?')} {settings.get('confidence', '?')}"
                             f" MPAE-BMP confidence gap > {settings.get('threshold', '?')})"),
                      box=box.SIMPLE_HEAD)
        for column in ("attack", "accuracy", "TPR", "FPR", "AUROC", "TPR@5%FPR"):
            found.add_column(column, justify="left" if column == "attack" else "right")
        for name, row in detection["rows"].items():
            found.add_row(name, *(_percent(row.get(k)) for k in
                                  ("accuracy", "tpr", "fpr", "auroc", "tpr_at_fpr")))
        console.print(found)
    cost = getattr(record, "cost", None)
    if cost:
        console.print(f"inference: {cost['inference_ms_per_image']:.3f} ms/image "
                      f"({cost['branches']} branch(es), {cost['num_parameters']:,} parameters)")


def run(args: argparse.Namespace) -> int:
    """Handler of ``encshield evaluate``: :func:`encshield.workflows.evaluate_model`."""
    from rich.console import Console

    from encshield.workflows import DataSpec, evaluate_model

    console = Console()
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    log = None if args.quiet else (lambda line: console.print(f"[dim]{line}[/dim]"))
    test = DataSpec(args.dataset, args.test_split, limit=args.limit_test or None, seed=args.seed,
                    root=args.root)
    train = None
    if args.encoder is not None:
        train = DataSpec(args.dataset, args.train_split, limit=args.limit_train or None,
                         seed=args.seed, root=args.root)
    record = evaluate_model(
        test, model=args.model, encoder=args.encoder, train=train, head=args.head,
        head_epochs=args.head_epochs, perturbations=args.perturbation, whitebox=args.whitebox,
        whitebox_limit=args.whitebox_limit, public_encoder=args.public_encoder,
        image_size=args.image_size, seed=args.seed, batch_size=args.batch_size,
        clamp=not args.no_clamp, device=args.device, keep_per_sample=not args.no_per_sample,
        log=log)
    ds = record.config["dataset"]
    head = (f"model {args.model.name} ({record.config['head']['defense']})"
            if args.model is not None else f"head {args.head}")
    title = (f"{ds['name']} {ds['test']['split']} ({ds['test']['used']} images), {head}, "
             f"{'clamped' if not args.no_clamp else 'UNCLAMPED'} (%, per sample)")
    print_record(record, console=console, title=title)
    path = record.save(args.output, include_per_sample=not args.no_per_sample)
    console.print(f"wrote {path} (config hash {record.config_hash}, "
                  f"{record.wall_time_s.get('total', 0.0):.1f} s)")
    return 0
