"""PGD-10 (L-inf) throughput against the bare forward+backward passes of the same model.

For a tiny-tier classifier (ResNet-18 at width 16 + the MLP head, 32 px; random weights, eval
mode) and one batch, times

(a) the attack: ``pgd(model, x, y, eps=8/255, steps=10)`` with its defaults (random start,
    ``keep_best="misclassified"``, 1 restart). Its work is 10 forward+backward passes w.r.t. the
    input (each also yields the loss and the prediction of its iterate) plus 1 forward that
    scores the last iterate, plus the elementwise updates (step, projection, best-point
    bookkeeping);
(b) the bare cost of exactly the same passes: 10 x (forward, cross-entropy, ``autograd.grad``
    w.r.t. the input) + 1 forward under ``no_grad``, with nothing else. ``ratio = (a) / (b)``
    measures the attack's overhead; the target is <= 1.15;
(c) for reference, 11 forward+backward passes (the cost if the final scoring forward were a full
    step); ``ratio_vs_11_fwd_bwd = (a) / (c)`` is flattering and reported only for comparison.

Attack and bare runs are interleaved and the medians reported, so that load on the machine
affects both alike. With other jobs running use ``--threads 1`` (intra-op threads spin-wait on
a busy machine and the timings become meaningless).

    python benchmarks/pgd_throughput.py --batch-size 256 --repeats 5 --threads 1

Writes ``benchmarks/results/pgd_throughput.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_model_arguments, time_interleaved, tiny_classifier, write
from encshield.attacks.whitebox import pgd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    device, model, x, y = tiny_classifier(args)
    model.eval()
    eps, steps = 8 / 255, args.steps

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def attack() -> None:
        pgd(model, x, y, eps=eps, steps=steps, seed=0)

    def passes(backward_passes: int, forward_passes: int) -> None:
        for _ in range(backward_passes):
            leaf = x.detach().requires_grad_(True)
            loss = F.cross_entropy(model(leaf), y, reduction="none")
            torch.autograd.grad(loss.sum(), leaf)
        with torch.no_grad():
            for _ in range(forward_passes):
                model(x)

    def bare() -> None:
        passes(steps, 1)

    def bare_full() -> None:
        passes(steps + 1, 0)

    times, median = time_interleaved({"attack": attack, "bare": bare, "bare_full": bare_full},
                                     repeats=args.repeats, warmup=args.warmup, sync=sync)
    assert all(p.grad is None for p in model.parameters())

    record = {
        "benchmark": "pgd_throughput",
        "model": {"encoder": "resnet18", "width": args.width, "head": "mlp", "classes": 10,
                  "image_size": args.image_size, "weights": "random", "mode": "eval"},
        "attack": {"name": "pgd", "norm": "linf", "eps": eps, "steps": steps,
                   "random_start": True, "restarts": 1, "keep_best": "misclassified"},
        "batch_size": args.batch_size,
        "device": str(device),
        "attack_passes": {"forward_backward": steps, "forward_only": 1},
        "bare_passes": {"forward_backward": steps, "forward_only": 1},
        "bare_full_passes": {"forward_backward": steps + 1, "forward_only": 0},
        "attack_seconds_median": median["attack"],
        "bare_seconds_median": median["bare"],
        "bare_full_seconds_median": median["bare_full"],
        "ratio": median["attack"] / median["bare"],
        "ratio_vs_11_fwd_bwd": median["attack"] / median["bare_full"],
        "target_ratio": 1.15,
        "images_per_second_attack": args.batch_size / median["attack"],
        "seconds": times,
        "note": "bare = the attack's exact pass count (steps fwd+bwd w.r.t. the input + 1 "
                "forward); bare_full = steps+1 fwd+bwd. Runs interleaved; medians.",
    }
    path = write("pgd_throughput", record)
    print(f"PGD-{steps} batch {args.batch_size}: attack {median['attack']:.3f} s, bare "
          f"({steps} fwd+bwd + 1 fwd) {median['bare']:.3f} s, ratio {record['ratio']:.3f} "
          f"(target <= 1.15); vs {steps + 1} fwd+bwd {median['bare_full']:.3f} s, ratio "
          f"{record['ratio_vs_11_fwd_bwd']:.3f} -> {path}")


if __name__ == "__main__":
    main()
