"""``encshield data``: list, describe and download datasets.

* ``encshield data list [--root DIR] [--json]``: registered datasets and whether they are found.
* ``encshield data info NAME [--root DIR] [--json]``: splits, counts, classes, image size, files.
* ``encshield data download NAME [--root DIR]``: fetch and verify the official files.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table


def register(subparsers: Any) -> None:
    """Add the ``data`` command group to the top-level sub-parsers."""
    parser = subparsers.add_parser(
        "data",
        help="list, describe and download datasets",
        description="List, describe and download the image datasets encshield can read.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True

    p_list = actions.add_parser(
        "list", help="registered datasets and whether their files are found"
    )
    p_list.add_argument("--root", metavar="DIR",
                        help="data root to search (default: $ENCSHIELD_DATA, then the user data "
                             "folder)")
    p_list.add_argument("--json", action="store_true", help="print a JSON list")
    p_list.set_defaults(func=_cmd_list)

    p_info = actions.add_parser(
        "info", help="splits, counts, classes, image size and files of a dataset"
    )
    p_info.add_argument("name", metavar="NAME", help="dataset name (see `encshield data list`)")
    p_info.add_argument("--root", metavar="DIR", help="data root, dataset folder or archive")
    p_info.add_argument("--json", action="store_true", help="print one JSON object")
    p_info.set_defaults(func=_cmd_info)

    p_dl = actions.add_parser(
        "download", help="download and verify the official files of a dataset"
    )
    p_dl.add_argument("name", metavar="NAME", help="dataset name")
    p_dl.add_argument("--root", metavar="DIR",
                      help="data root; files go to DIR/NAME/ (default: first data root)")
    p_dl.add_argument("--quiet", action="store_true", help="no progress output")
    p_dl.set_defaults(func=_cmd_download)


def _console() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def _cmd_list(args: argparse.Namespace) -> int:
    from encshield.data import status

    rows = status(args.root)
    if args.json:
        _print_json(rows)
        return 0
    table = Table(title="encshield datasets")
    table.add_column("name", no_wrap=True)
    table.add_column("found", no_wrap=True)
    table.add_column("splits")
    table.add_column("where", overflow="fold")
    for row in rows:
        table.add_row(
            row["name"],
            "yes" if row["found"] else "no",
            ", ".join(row["splits"]) or "(folders)",
            row["where"] or "-",
        )
    console = _console()
    console.print(table)
    missing = [r["name"] for r in rows if not r["found"] and r["downloadable"]]
    if missing:
        console.print(
            f"not found: {', '.join(missing)}; get one with `encshield data download NAME` "
            "or see `encshield data info NAME`"
        )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from encshield.data import info

    result = info(args.name, root=args.root)
    data = result.to_dict()
    if args.json:
        _print_json(data)
        return 0
    console = _console()
    c, h, w = data["image_size"]
    console.print(f"[bold]{data['title']}[/bold] ({data['name']}): {data['description']}")
    console.print(f"layout: {data['layout']}   root: {data['root']}")
    console.print(f"image size: {c}x{h}x{w}   classes: {data['num_classes']}")
    table = Table(show_header=True)
    table.add_column("split")
    table.add_column("images", justify="right")
    table.add_column("status")
    for split, count in data["splits"].items():
        table.add_row(split, f"{count:,}", "ok")
    for split, why in data["missing"].items():
        table.add_row(split, "-", f"missing: {why}")
    console.print(table)
    names = data["class_names"]
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    console.print(f"classes: {shown}")
    console.print("files:")
    for source in data["sources"]:
        console.print(f"  {source}")
    for note in data["notes"]:
        console.print(f"note: {note}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from encshield.data import download

    target = download(args.name, root=args.root, progress=not args.quiet)
    print(f"{args.name}: files are in {target}")
    return 0
