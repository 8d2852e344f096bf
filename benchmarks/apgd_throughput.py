"""APGD-CE throughput: encshield's ``apgd`` against torchattacks' ``APGD`` on the same model and
inputs.

The model is a zoo encoder (default ``zoo:simclr-cifar10-r18w16``) with a linear head trained on
its frozen features of ``--head-images`` CIFAR-10 training images; the inputs are ``--images``
(256) CIFAR-10 test images (both drawn at random with seed 0: the stored splits are sorted by
class). Both attacks run L-inf 8/255 APGD with the
cross-entropy, ``--steps`` (20) iterations, 1 restart, seed 0, in the same process, interleaved
in a rotating order (``benchmarks/_common.time_interleaved``) so that load on the machine affects
both alike; medians of ``--repeats`` runs after ``--warmup`` untimed rounds.
``ratio = encshield / torchattacks`` (target <= 1.0).

Both attacks skip the samples the model misclassifies on the clean input (one forward without
gradient). For the rest torchattacks evaluates ``steps + 1`` iterates with a gradient;
encshield evaluates ``steps`` with a gradient and scores the last iterate with a forward only.
The script counts the passes (calls and images through the first convolution, and those
recorded for a backward pass) of one run of each and records them with the robust accuracies.

    ENCSHIELD_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/apgd_throughput.py \
        --threads 1 --repeats 3

Writes ``benchmarks/results/apgd_throughput.json``. torchattacks is a test-only dependency
(``pip install --no-deps torchattacks==3.5.1``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import time_interleaved, write
from encshield import data, zoo
from encshield.attacks.whitebox import apgd
from encshield.downstream import train_head


class PassCounter:
    """Counts forward calls/images through the first convolution and those with autograd."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = self.images = self.grad_calls = self.grad_images = 0
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        self._handle = first.register_forward_hook(self._hook)

    def _hook(self, _module, inputs, output) -> None:
        n = int(inputs[0].shape[0])
        self.calls += 1
        self.images += n
        if torch.is_grad_enabled() and isinstance(output, torch.Tensor) and output.requires_grad:
            self.grad_calls += 1
            self.grad_images += n

    def close(self) -> dict[str, int]:
        self._handle.remove()
        return {"forward_calls": self.calls, "forward_images": self.images,
                "backward_calls": self.grad_calls, "backward_images": self.grad_images}


def _profile(fn) -> list[dict[str, object]]:
    """cProfile one call of ``fn``: the 12 functions with the largest own time."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(fn)
    stats = pstats.Stats(profiler)
    rows = []
    for (file, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}({name})", "calls": calls,
                     "own_s": round(own, 3), "cumulative_s": round(cumulative, 3)})
    return sorted(rows, key=lambda r: -r["own_s"])[:12]


def _source() -> dict[str, str | None]:
    """Where the benchmarked encshield comes from (its folder and that checkout's commit)."""
    import subprocess

    import encshield

    folder = Path(encshield.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"path": str(folder), "git_commit": commit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="zoo:simclr-cifar10-r18w16")
    parser.add_argument("--root", default=None, help="datasets folder (default $ENCSHIELD_DATA)")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--head-images", type=int, default=5000)
    parser.add_argument("--head-epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="apgd_throughput", help="results file name")
    parser.add_argument("--profile", action="store_true",
                        help="also record a cProfile summary (top functions) of one run of each")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import torchattacks  # test-only reference

    if not args.encoder.startswith("zoo:"):
        raise SystemExit("--encoder must be zoo:NAME")
    encoder = zoo.load(args.encoder[4:]).encoder.eval()
    size = int(encoder.input_size[-1])
    train = data.load("cifar10", "train", root=args.root, image_size=size)
    test = data.load("cifar10", "test", root=args.root, image_size=size)
    generator = torch.Generator().manual_seed(0)
    chosen = torch.randperm(len(train.labels), generator=generator)[: args.head_images]
    start = time.perf_counter()
    model, _ = train_head(encoder, train.images[chosen], train.labels[chosen], 10, head="linear",
                          epochs=args.head_epochs, seed=0)
    head_seconds = time.perf_counter() - start
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    chosen = torch.randperm(len(test.labels), generator=generator)[: args.images]
    x = test.images[chosen].float().div(255)
    y = test.labels[chosen].long()
    eps, steps = 8 / 255, args.steps

    def ours() -> torch.Tensor:
        return apgd(model, x, y, eps=eps, steps=steps, restarts=1, objective="ce", seed=0)

    reference = torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1,
                                  loss="ce", seed=0)

    def theirs() -> torch.Tensor:
        return reference(x, y)

    def accuracy(images: torch.Tensor) -> float:
        with torch.no_grad():
            return float((model(images).argmax(1) == y).float().mean())

    passes, robust = {}, {}
    for name, fn in (("encshield", ours), ("torchattacks", theirs)):
        counter = PassCounter(model)
        x_adv = fn()
        passes[name] = counter.close()
        robust[name] = accuracy(x_adv)
    profiles = {name: _profile(fn) for name, fn in (("encshield", ours), ("torchattacks", theirs))
                } if args.profile else None
    times, median = time_interleaved({"encshield": ours, "torchattacks": theirs},
                                     repeats=args.repeats, warmup=args.warmup)
    ratio = median["encshield"] / median["torchattacks"]
    record = {
        "benchmark": "apgd_throughput",
        "model": {"encoder": args.encoder, "head": "linear", "head_train_images": args.head_images,
                  "head_epochs": args.head_epochs, "head_seconds": round(head_seconds, 1),
                  "image_size": size, "mode": "eval"},
        "inputs": {"dataset": "cifar10", "split": "test", "images": int(x.shape[0])},
        "attack": {"name": "apgd_ce", "norm": "linf", "eps": eps, "steps": steps, "restarts": 1,
                   "seed": 0},
        "versions_reference": {"torchattacks": getattr(torchattacks, "__version__", "unknown")},
        "encshield_source": _source(),
        "clean_accuracy": accuracy(x),
        "robust_accuracy": robust,
        "passes": passes,
        "profile": profiles,
        "seconds": times,
        "median_seconds": median,
        "ratio": ratio,
        "target_ratio": 1.0,
        "note": "ratio = median encshield / median torchattacks; runs interleaved in a rotating "
                "order after warm-up; passes counted on one run of each at the first conv.",
    }
    path = write(args.name, record)
    print(f"APGD-CE-{steps} on {x.shape[0]} images, {args.threads} thread(s): encshield "
          f"{median['encshield']:.2f} s, torchattacks {median['torchattacks']:.2f} s, ratio "
          f"{ratio:.3f} (target <= 1.0); robust accuracy {robust}; passes {passes} -> {path}")


if __name__ == "__main__":
    main()
