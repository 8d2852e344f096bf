"""Attacker-side choice of PAP's layer: how far each variant moves the encoder's embedding.

The attacker has the public encoder and its own surrogate images, no downstream data. For the
zoo's SimCLR tiny encoder, fit PAP (L4A, Ban & Dong, NeurIPS 2022) variants and the SSP / noise
references on 2000 Tiny-ImageNet val images at 32 px, and measure the mean cosine distance
between the embeddings of x and x + delta on 2000 *other* Tiny-ImageNet images. No test split
of any downstream dataset is involved.

    ENCSHIELD_DATA=../shared/data python benchmarks/pap_layer_choice.py --threads 1

Writes ``benchmarks/results/pap_layer_choice.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write
from encshield import data, zoo
from encshield.attacks.universal import fit_universal

VARIANTS = {
    "random_noise": ("random_noise", {}),
    "ssp": ("ssp", {}),
    "pap base, stem (relu)": ("pap", {"variant": "base", "layer": "relu"}),
    "pap ugs, stem (relu)": ("pap", {"variant": "ugs", "layer": "relu"}),
    "pap base, layer1": ("pap", {"variant": "base", "layer": "layer1"}),
    "pap fuse, layer1 + stem": (
        "pap", {"variant": "fuse", "layer": "layer1", "fuse_layer": "relu"}
    ),
    "pap ugs, layer1": ("pap", {"variant": "ugs", "layer": "layer1"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="simclr-cifar10-r18w16", help="zoo name")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = zoo.load(args.encoder)
    encoder = loaded.encoder.eval()
    surrogate = data.load("tiny_imagenet", "val", image_size=int(encoder.input_size[-1]))
    order = torch.randperm(len(surrogate), generator=torch.Generator().manual_seed(0))
    fit_images = surrogate.images[order[:2000]]
    held_out = surrogate.images[order[2000:4000]].float() / 255

    with torch.inference_mode():
        clean = encoder(held_out)
    rows = {}
    for label, (attack, overrides) in VARIANTS.items():
        start = time.perf_counter()
        perturbation = fit_universal(attack, encoder, fit_images, seed=0, **overrides)
        seconds = time.perf_counter() - start
        with torch.inference_mode():
            moved = encoder(perturbation.apply(held_out))
        distance = float(1 - F.cosine_similarity(clean, moved).mean())
        rows[label] = {"attack": attack, "overrides": overrides, "eps": perturbation.eps,
                       "embedding_cosine_distance": distance, "fit_seconds": round(seconds, 1)}
        print(f"{label:<26} cosine distance {distance:.4f}  ({seconds:.0f} s)", flush=True)
    write("pap_layer_choice", {"benchmark": "pap_layer_choice", "encoder": args.encoder,
                               "encoder_sha256": loaded.sha256,
                               "fit": "tiny_imagenet/val, 2000 images (seeded permutation)",
                               "held_out": "tiny_imagenet/val, the next 2000 images",
                               "results": rows})


if __name__ == "__main__":
    main()
