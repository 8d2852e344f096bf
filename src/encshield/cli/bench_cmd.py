"""``encshield bench``: run a benchmark matrix into a SQLite results store.

Examples::

    encshield bench --config configs/bench/tiny.yaml --output results/tiny.db
    encshield bench --config configs/bench/tiny.yaml --output results/tiny.db --resume
    encshield bench --config configs/bench/tiny.yaml --set seeds=[0,1,2] --check
    encshield report results/tiny.db

The config is validated (attack, defense and dataset names, labels, budgets, splits, seeds,
device, encoder files, data) before any work; ``--check`` runs the same checks, plus a read-only
look at ``--output`` (another program's database, permissions), and runs nothing. ``--resume``
continues an interrupted run: finished cells are reused, never recomputed. A store is locked
while a run writes it: a second run on it stops at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench", help="run a matrix of encoders x attacks x defenses x datasets x seeds",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="bench YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config field (repeatable)")
    parser.add_argument("--output", type=Path, default=None,
                        help="results store (default: results/<name>.db)")
    parser.add_argument("--resume", action="store_true",
                        help="continue a store that already holds finished cells")
    parser.add_argument("--workers", type=int, default=None, help="processes (overrides config)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per worker (overrides config)")
    parser.add_argument("--data-root", type=Path, default=None, help="data root (overrides config)")
    parser.add_argument("--check", action="store_true",
                        help="validate the config and list the cells; run nothing")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from encshield.bench import expand, load_bench_config, run_bench, validate_bench

    overrides = list(args.overrides)
    if args.workers is not None:
        overrides.append(f"workers={args.workers}")
    if args.threads is not None:
        overrides.append(f"threads={args.threads}")
    if args.data_root is not None:
        overrides.append(f"data_root={args.data_root}")
    config = load_bench_config(args.config, overrides)
    output = args.output or Path("results") / f"{config.name}.db"
    if args.check:
        from encshield.bench.store import check_output

        validate_bench(config)
        cells = expand(config)
        kind = check_output(output, resume=args.resume)  # read-only: creates nothing
        kinds = {k: sum(c.kind == k for c in cells) for k in ("attack", "model", "evaluate")}
        counts = ", ".join(f"{v} {k}" for k, v in kinds.items())
        print(f"{config.name}: {len(cells)} cells ({counts})")
        for cell in cells:
            print(f"  {cell.id}  {cell.kind:<8} {cell.title}")
        print(f"output: {output} ({'existing store' if kind == 'store' else 'new store'})")
        return 0
    summary = run_bench(config, output, resume=args.resume, progress=not args.no_progress,
                        log=print if args.no_progress else None)
    print(f"{summary.total} cells: {summary.reused} reused, {summary.computed} computed in "
          f"{summary.seconds:.1f} s -> {summary.store}")
    print(f"report: encshield report {summary.store}")
    return 0
