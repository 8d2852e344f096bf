"""``encshield report RESULTS.db``: tables, charts and exports of a bench results store.

Prints the result tables and the verdict (Markdown) and writes, into ``--output-dir`` (default
``RESULTS.report/`` next to the store)::

    report.md      verdict, tables, charts, perturbation and example images (linked:
                   charts/*.svg, images/*.png)
    report.html    the same as one self-contained page (inline SVG, base64 images, no scripts),
                   with every cell's exact configuration
    metrics.csv    the raw metric rows (one per evaluation and attack row)
    aggregate.csv  mean, sample std, min, max over seeds per encoder/dataset/defense/row
    report.json    config, cells, aggregated tables and the verdict

Examples::

    encshield report results.db
    encshield report results.db --output-dir paper/ --formats html csv
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``report`` command to the top-level sub-parsers."""
    from encshield.report import FORMATS

    parser = subparsers.add_parser(
        "report",
        help="tables, charts and CSV/JSON exports of an `encshield bench` results store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("store", type=Path, metavar="RESULTS.db", help="the bench results store")
    parser.add_argument("--output-dir", "-o", type=Path, default=None, metavar="DIR",
                        help="where to write the report (default: RESULTS.report/ next to it)")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS),
                        metavar="FORMAT",
                        help=f"formats to write, any of {' '.join(FORMATS)} (default: all)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="print only the paths written, not the tables and the verdict")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``encshield report``."""
    from encshield.report import load_report, markdown_tables, verdict_markdown, write_report

    data = load_report(args.store)
    if not args.quiet:
        print(markdown_tables(data))
        print(verdict_markdown(data))
    written = write_report(data, args.output_dir, formats=args.formats)
    for name, path in written.items():
        print(f"wrote {name}: {path}")
    return 0
