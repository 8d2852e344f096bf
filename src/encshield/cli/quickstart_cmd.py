"""``encshield quickstart``: the README's main job.

How exposed is a downstream model built on a public encoder, and which defense fixes it at what
cost? With no arguments this takes the zoo's tiny SimCLR encoder (pre-trained on CIFAR-10), fits
three downstream-agnostic attacks (SSP, PAP, AdvEncoder) on CIFAR-10 training images the
downstream model never sees, builds a CIFAR-10 downstream model with no defense, with PGD-AT and
with Gen-AF, evaluates each (BA, RA under every attack and a white-box PGD), prints the table
and the verdict (best BA, best worst-case RA, each defense's cost and gain against no defense,
collapsed defenses; computed from the results) and writes the report (Markdown + HTML). It is
``encshield bench`` with the packaged config ``encshield/bench/quickstart.yaml`` (also
``configs/bench/quickstart.yaml``); a second run reuses every finished cell.

CIFAR-10 is looked for under ``--data-root``, then ``$ENCSHIELD_DATA``, then the user data
folder; where it is missing everywhere it is downloaded there (official URL, sha256-checked).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from encshield.errors import DatasetNotFoundError, EncshieldError

QUICKSTART_CONFIG = Path(__file__).resolve().parents[1] / "bench" / "quickstart.yaml"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "quickstart",
        help="the main job: attack and defend a downstream model of the zoo's SimCLR encoder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder with the datasets (default: $ENCSHIELD_DATA, then the user "
                             "data folder)")
    parser.add_argument("--output", type=Path, default=Path("encshield-quickstart"),
                        help="folder for the results store and the report")
    parser.add_argument("--config", type=Path, default=QUICKSTART_CONFIG,
                        help="bench config (default: the packaged quickstart config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field (repeatable)")
    parser.add_argument("--no-download", action="store_true",
                        help="never download CIFAR-10; stop with instructions instead")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def find_or_download_cifar10(data_root: Path | None, *, download: bool = True) -> Path | None:
    """The data root to use: ``data_root``, else ``None`` (= ``$ENCSHIELD_DATA``, then the user
    data folder) when CIFAR-10 is found there, else the user data folder after downloading it.

    Raises:
        DatasetNotFoundError: not found and the download is disabled or failed; the message
            lists where it looked and exactly what to do.
    """
    from encshield import data, paths
    from encshield.data.base import DATASETS

    if "cifar10" in data.available(data_root):
        return data_root
    looked = [str(p) for p in paths.data_roots(data_root)]
    if data_root is not None:
        raise DatasetNotFoundError(
            f"CIFAR-10 was not found under --data-root {data_root}. Put the official "
            f"cifar-10-python.tar.gz or an ImageFolder copy in {data_root}/cifar10/, or drop "
            f"--data-root to download it")
    target = paths.default_data_root()
    why = "downloads are disabled (--no-download)"
    if download:
        try:
            data.download("cifar10", root=target)
            if "cifar10" in data.available(None):
                return None
            why = f"the download into {target} finished but the files are not readable"
        except EncshieldError as error:
            why = f"the download failed: {error}"
    official = DATASETS.get("cifar10").resources[0]
    raise DatasetNotFoundError(
        f"CIFAR-10 was not found (looked in {', '.join(looked)}) and {why}.\nTo fix it, either:\n"
        f"  * download {official.url} (sha256 {official.sha256}) into "
        f"{target}/cifar10/ and run `encshield quickstart` again, or\n"
        f"  * point ENCSHIELD_DATA (or --data-root) at a folder holding cifar10/ "
        f"(the official pickles or an ImageFolder copy)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from encshield.bench import load_bench_config, run_bench
    from encshield.report import load_report, markdown_tables, verdict_markdown, write_report

    console = Console()
    started = time.perf_counter()
    root = find_or_download_cifar10(args.data_root, download=not args.no_download)
    overrides = list(args.overrides)
    if root is not None:
        overrides.append(f"data_root={root}")
    config = load_bench_config(args.config, overrides)
    store = args.output / "results.db"
    summary = run_bench(config, store, resume=True, progress=not args.no_progress,
                        log=(lambda m: console.print(m)) if args.no_progress else None)
    report = load_report(store)
    paths = write_report(report, output_dir=args.output / "report", formats=("md", "html", "csv",
                                                                              "json"))
    console.print(markdown_tables(report), markup=False, highlight=False, soft_wrap=True)
    console.print(verdict_markdown(report), markup=False, highlight=False, soft_wrap=True)
    console.print(f"{summary.total} cells ({summary.reused} reused, {summary.computed} computed) "
                  f"in {time.perf_counter() - started:.0f} s")
    console.print(f"report: {paths['html']}  (Markdown: {paths['md']})", markup=False,
                  soft_wrap=True)
    return 0
