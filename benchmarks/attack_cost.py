"""Cost of fitting each universal attack: seconds and encoder passes.

Fits every registered universal attack (default configs, eps 10/255) on N surrogate images and
counts the encoder's forward passes (calls and images) and, among them, those run with autograd
(each is followed by one backward pass). The encoder is a zoo entry, a checkpoint file or, by
default, a randomly initialised tiny-tier encoder (ResNet-18, width 16, 32 px).

    ENCSHIELD_DATA=../shared/data python benchmarks/attack_cost.py \
        --encoder zoo:simclr-cifar10-r18w16 --surrogate tiny_imagenet:val --limit 2000

Writes ``benchmarks/results/attack_cost.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write
from encshield import data, models, zoo
from encshield.attacks.universal import UNIVERSAL_ATTACKS, fit_universal
from encshield.checkpoints import load_encoder


class PassCounter:
    """Counts the encoder's forward calls/images, and those recorded for a backward pass.

    The hook sits on the first convolution, which every full or partial pass (an attack that
    taps an early layer stops the forward there) goes through."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.calls = self.images = self.grad_calls = self.grad_images = 0
        first = next(m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d))
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


def _encoder(spec: str | None):
    if spec is None:
        torch.manual_seed(0)
        return models.build_encoder("resnet18", width=16, stem="cifar"), "random init resnet18 w16"
    if spec.startswith("zoo:"):
        return zoo.load(spec[4:]).encoder, spec
    return load_encoder(spec).encoder, spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default=None,
                        help="zoo:NAME or a checkpoint (default: random)")
    parser.add_argument("--surrogate", default="tiny_imagenet:val", help="DATASET[:SPLIT]")
    parser.add_argument("--root", default=None)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--attacks", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    encoder, description = _encoder(args.encoder)
    encoder.eval()
    name, _, split = args.surrogate.partition(":")
    size = int(encoder.input_size[-1])
    surrogate = data.load(name, split or "train", root=args.root, image_size=size)
    images, labels = surrogate.images[: args.limit], surrogate.labels[: args.limit]
    rows = {}
    for attack in args.attacks or UNIVERSAL_ATTACKS.names():
        counter = PassCounter(encoder)
        start = time.perf_counter()
        perturbation = fit_universal(attack, encoder, images, surrogate_labels=labels, seed=0)
        seconds = time.perf_counter() - start
        rows[attack] = {"seconds": round(seconds, 2), **counter.close(),
                        "objective": perturbation.metadata.get("objective")}
        print(f"{attack:18s} {seconds:8.1f} s  {rows[attack]}", flush=True)
    path = write("attack_cost", {
        "benchmark": "attack_cost", "encoder": description, "surrogate": args.surrogate,
        "num_surrogate_images": int(images.shape[0]), "image_size": size, "eps": 10 / 255,
        "attacks": rows,
    })
    print(f"-> {path}")


if __name__ == "__main__":
    main()
