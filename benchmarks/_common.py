"""Shared helpers of the benchmark scripts: the record header (command, versions, machine)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
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


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by the per-step benchmarks on the tiny-tier classifier."""
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each kind")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")


def tiny_classifier(args: argparse.Namespace, head: str = "mlp", classes: int = 10):
    """Apply ``--threads``; return ``(device, model, x, y)``: ResNet-18 at ``--width`` + ``head``
    (random weights, seed 0) on ``--device`` and a random batch of ``--batch-size`` images."""
    from encshield.models import Classifier, build_encoder, build_head

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    encoder = build_encoder("resnet18", width=args.width, input_size=args.image_size)
    model = Classifier(encoder, build_head(head, encoder.feature_dim, classes)).to(device)
    x = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, classes, (args.batch_size,), device=device)
    return device, model, x, y
