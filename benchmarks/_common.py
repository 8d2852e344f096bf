"""Shared helpers of the benchmark scripts: the record header (command, versions, machine)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
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
