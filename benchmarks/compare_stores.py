"""Compare the metrics of two results stores cell row by cell row (a refactor must not move them).

    python benchmarks/compare_stores.py BEFORE.db AFTER.db --output benchmarks/results/X.json

Rows are keyed by (encoder, dataset, defense, seed, row); every metric column must be equal.
Rows present in only one store are listed (e.g. rows a change added). Exit status 1 when a
shared row differs.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

from encshield.provenance import machine_info, now_iso, version_info, write_json

KEY = ("encoder", "dataset", "defense", "seed", "row")
VALUES = ("kind", "num_samples", "benign_accuracy", "robust_accuracy", "fooling_rate",
          "attack_success_rate")


def rows(path: Path) -> dict[tuple[Any, ...], dict[str, Any]]:
    """``{key: {metric: value}}`` of a store, read-only."""
    connection = sqlite3.connect(f"file:{path.absolute()}?mode=ro&immutable=1", uri=True)
    try:
        query = f"SELECT {', '.join(KEY + VALUES)} FROM metrics"
        return {tuple(r[: len(KEY)]): dict(zip(VALUES, r[len(KEY):]))
                for r in connection.execute(query)}
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    a, b = rows(args.before), rows(args.after)
    shared = sorted(set(a) & set(b), key=str)
    differ = [{"key": list(k), "before": a[k], "after": b[k]} for k in shared if a[k] != b[k]]
    result = {
        "command": "python benchmarks/compare_stores.py " + " ".join(sys.argv[1:]),
        "created": now_iso(), "versions": version_info(), "machine": machine_info(),
        "before": str(args.before), "after": str(args.after),
        "shared_rows": len(shared), "identical_rows": len(shared) - len(differ),
        "differing_rows": differ,
        "only_before": [list(k) for k in sorted(set(a) - set(b), key=str)],
        "only_after": [list(k) for k in sorted(set(b) - set(a), key=str)],
    }
    print(f"{len(shared)} shared rows, {len(differ)} differ; {len(result['only_before'])} only "
          f"before, {len(result['only_after'])} only after")
    if args.output is not None:
        write_json(args.output, result)
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
