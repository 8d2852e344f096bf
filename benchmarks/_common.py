"""Shared helpers of the benchmark scripts: the record header (command, versions, machine)."""

from __future__ import annotations

import json
import statistics
import os
import platform
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

from encshield import __version__

RESULTS = Path(__file__).resolve().parent / "results"


def header() -> dict[str, Any]:
    """Command line, versions and machine of this benchmark run."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"encshield": __version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "machine": {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }


def write(name: str, record: dict[str, Any]) -> Path:
    """Write ``record`` (with the header first) to ``benchmarks/results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**header(), **record}, indent=2) + "\n")
    return path


def time_interleaved(kinds: dict[str, Callable[[], None]], *, repeats: int, warmup: int = 1,
                     sync: Callable[[], None] = lambda: None) -> tuple[dict[str, list[float]],
                                                                      dict[str, float]]:
    """Time each callable ``repeats`` times, interleaved in a rotating order (so that load on the
    machine affects every kind alike and no kind always follows another), after ``warmup``
    untimed rounds. ``sync`` waits for the device (e.g. ``torch.cuda.synchronize``).

    Returns:
        ``(times, medians)``: seconds per run and their median, per kind.
    """
    for _ in range(warmup):
        for fn in kinds.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in kinds}
    names = list(kinds)
    for i in range(repeats):
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            start = time.perf_counter()
            kinds[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return times, {k: statistics.median(v) for k, v in times.items()}
