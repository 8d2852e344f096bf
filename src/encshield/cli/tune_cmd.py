"""``encshield tune``: choose a defense's settings on validation data (never a test split).

Example (the quickstart's PGD-AT settings)::

    encshield tune pgd_at --encoder zoo:simclr-cifar10-r18w16 \\
        --data "cifar10:train[:40000]" --limit 2000 --val "cifar10:train[40000:45000]" \\
        --val-limit 1000 --grid head_lr=5e-3,5e-4 --grid epochs=2,5 \\
        --set attack.steps=5 --output tune-pgd_at.json

Every grid point (``--grid KEY=V1,V2``, dotted keys, values parsed as YAML) is fitted on the
training selection and scored on the validation selection: clean accuracy (BA) + robust accuracy
under ``--attack`` (default PGD-10 at 8/255), next to the no-defense model on the same data. The
highest RA among the points keeping ``BA >= --min-ba-ratio`` x the no-defense BA wins. The
table, the criterion and the chosen settings (as ``--set`` options) are printed; the JSON record
holds every point.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from encshield.errors import ConfigError

__all__ = ["parse_grid", "register"]


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["head_lr=5e-3,5e-4", "epochs=2,5"]`` -> ``{"head_lr": [0.005, 0.0005], ...}``."""
    from encshield.config import parse_fractions, parse_value

    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or not text.strip():
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. "
                              "--grid head_lr=5e-3,5e-4")
        values = [parse_fractions(parse_value(v.strip(), f"--grid {key}"))
                  for v in text.split(",")]
        grid[key.strip()] = values
    return grid


def _flat(overrides: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in overrides.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={value}")
    return out


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from encshield.config import read_overrides
    from encshield.workflows import DataSpec, tune_defense

    train = DataSpec.parse(args.data, limit=args.limit, seed=args.seed, root=args.root)
    val = DataSpec.parse(args.val, limit=args.val_limit, seed=args.seed, root=args.root)
    record = tune_defense(
        args.name, args.encoder, train, val, parse_grid(args.grid),
        base=read_overrides(args.config, args.overrides), attack=args.attack,
        val_attack_limit=args.val_attack_limit, min_ba_ratio=args.min_ba_ratio, seed=args.seed,
        image_size=args.image_size,
        device=args.device, progress=not args.no_progress)
    console = Console()
    table = Table(title=f"{args.name}: validation on {val.text} ({record.val['used']} images)")
    for column in ("point", "val BA", f"val RA ({record.attack})", "BA floor met", "fit s"):
        table.add_column(column, justify="left" if column == "point" else "right")
    base = record.baseline
    table.add_row("no defense (reference)", f"{100 * base['val_ba']:.1f}",
                  f"{100 * base['val_ra']:.1f}", "-", f"{base['fit_seconds']:.0f}")
    for point in record.points:
        mark = " *" if point["point"] == record.chosen_point else ""
        table.add_row(", ".join(f"{k}={v}" for k, v in point["point"].items()) + mark,
                      f"{100 * point['val_ba']:.1f}", f"{100 * point['val_ra']:.1f}",
                      "yes" if point["qualifies"] else "no", f"{point['fit_seconds']:.0f}")
    console.print(table)
    console.print(f"criterion: {record.criterion}")
    if not record.qualified:
        console.print("no point kept the BA floor: widen the grid (more steps, lower lrs)")
    console.print("chosen: " + " ".join(f"--set {s}" for s in _flat(record.chosen)))
    if args.output is not None:
        record.save(args.output)
        console.print(f"wrote {args.output}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``tune`` command to the top-level sub-parsers."""
    parser = subparsers.add_parser(
        "tune", help="choose a defense's settings on validation data (a small grid)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", metavar="DEFENSE", help="a defense (see `encshield defend list`)")
    parser.add_argument("--encoder", required=True, metavar="PATH|zoo:NAME")
    parser.add_argument("--data", required=True, metavar="DATASET[:SPLIT]",
                        help="training data, e.g. cifar10:train[:40000]")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="train on a seeded class-stratified subset of N images")
    parser.add_argument("--val", required=True, metavar="DATASET[:SPLIT]",
                        help="validation data, disjoint from --data and from the test split, "
                        "e.g. cifar10:train[40000:45000]")
    parser.add_argument("--val-limit", type=int, default=None, metavar="N")
    parser.add_argument("--val-attack-limit", type=int, default=None, metavar="N",
                        help="attack only N validation images (seeded class-stratified subset)")
    parser.add_argument("--min-ba-ratio", type=float, default=0.7, metavar="R",
                        help="a point qualifies with validation BA >= R x the no-defense BA "
                        "(default 0.7)")
    parser.add_argument("--attack", default="pgd:eps=8/255,steps=10", metavar="SPEC",
                        help="white-box spec of the validation RA (default pgd:eps=8/255,steps=10)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a grid dimension (repeatable), e.g. --grid head_lr=5e-3,5e-4")
    parser.add_argument("--config", type=Path, default=None, help="base settings (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a base setting of every point (repeatable)")
    parser.add_argument("--root", type=Path, default=None, help="data root")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--output", "-o", type=Path, default=None, metavar="TUNE.json")
    parser.set_defaults(func=run)
