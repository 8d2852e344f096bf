"""``encshield zoo list`` and ``encshield zoo get NAME``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("zoo", help="the project's victim encoders")
    commands = parser.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    commands.required = True
    listing = commands.add_parser("list", help="encoders with method, data and accuracy")
    listing.add_argument("--json", action="store_true", help="print the manifest entries as JSON")
    listing.set_defaults(func=run_list)
    get = commands.add_parser("get", help="verify (sha256) and return/copy an encoder file")
    get.add_argument("name")
    get.add_argument("--output", type=Path, default=None, help="copy the file here")
    get.set_defaults(func=run_get)


def run_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from encshield import zoo

    items = zoo.entries()
    if args.json:
        print(json.dumps([item.model_dump() for item in items], indent=2))
        return 0
    table = Table(title="encshield model zoo")
    for column in ("name", "method", "arch", "pre-training data", "metrics", "sha256"):
        table.add_column(column)
    for item in items:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in item.metrics.items())
        method = item.method
        if item.backdoor:
            targets = ", ".join(f"{t['dataset']}:{t['label']}"
                                for t in item.backdoor.get("targets", []))
            method += f" + BadEncoder of {item.backdoor.get('clean')} ({targets})"
        table.add_row(item.name, method, f"{item.arch} w{item.width} {item.image_size}px",
                      item.pretrain_data, metrics, item.sha256[:12])
    Console().print(table)
    return 0


def run_get(args: argparse.Namespace) -> int:
    from encshield import zoo

    path = zoo.get(args.name, args.output)
    print(path)
    return 0
