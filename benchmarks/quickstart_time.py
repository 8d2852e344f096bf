"""Wall time of ``encshield quickstart`` on a fresh output folder, idle and beside a busy process.

    ENCSHIELD_DATA=../shared/data python benchmarks/quickstart_time.py \\
        --output benchmarks/results/quickstart_time.json

Runs the quickstart (the packaged config, a new store each time, nothing reused) once on an idle
machine and once while one other CPU-bound process (a Python busy loop) runs beside it, the
situation in which two-thread OpenMP collapses. Writes both wall times, the cell times from the
store, the thread/worker settings the bench chose, versions and machine.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from encshield.provenance import machine_info, now_iso, version_info, write_json

BUSY = "while True: pass"


def _run(root: Path, busy: bool) -> dict[str, Any]:
    out = root / ("busy" if busy else "idle")
    competitor = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "encshield", "quickstart", "--output",
                               str(out), "--no-progress"], capture_output=True, text=True,
                              check=False)
        seconds = time.perf_counter() - started
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    if done.returncode != 0:
        mode = "busy" if busy else "idle"
        raise SystemExit(f"quickstart failed ({mode}):\n{done.stderr[-3000:]}")
    store = next(out.glob("*.db"))
    connection = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    cells = [{"kind": k, "title": t, "wall_time_s": w, "machine_threads": m}
             for k, t, w, m in connection.execute(
                 "SELECT kind, title, wall_time_s, json_extract(machine, '$.threads') FROM cells")]
    connection.close()
    return {"wall_time_s": round(seconds, 1), "competitor": busy, "cells": cells,
            "stdout_tail": done.stdout[-2500:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--only", choices=("idle", "busy"), default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="encshield-qs-") as tmp:
        runs = {mode: _run(Path(tmp), mode == "busy") for mode in ("idle", "busy")
                if args.only in (None, mode)}
    write_json(args.output, {
        "command": "python benchmarks/quickstart_time.py " + " ".join(sys.argv[1:]),
        "created": now_iso(), "versions": version_info(), "machine": machine_info(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "runs": runs})
    for mode, run in runs.items():
        print(f"{mode}: {run['wall_time_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
