"""Cost of one adversarial fine-tuning step in float32 and with bf16 autocast + channels-last.

    python benchmarks/amp_step.py --threads 1 --batch-size 64 --steps 3 --repeats 5

One ``FinetuningDefense.train_step`` of PGD-AT (inner PGD of ``--steps`` steps, the training
forward and backward, both Adam steps) on the tiny-tier classifier (ResNet-18 width 16 + MLP
head, random weights), for each precision setting, interleaved; medians and the ratio to
float32. Writes ``benchmarks/results/amp_step.json``.
"""

from __future__ import annotations

import argparse

import torch

from _common import add_model_arguments, time_interleaved, tiny_classifier, write
from encshield.defenses import build_defense
from encshield.models.modules import set_channels_last

SETTINGS = {"float32": (False, False), "float32+channels_last": (False, True),
            "bf16+channels_last": (True, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--steps", type=int, default=3, help="inner PGD steps")
    args = parser.parse_args()
    device, model, x, y = tiny_classifier(args)
    optimizers = {"all": torch.optim.Adam(model.parameters(), lr=1e-4)}
    kinds = {}
    for name, (amp, channels_last) in SETTINGS.items():
        defense = build_defense("pgd_at", amp=amp, channels_last=channels_last,
                                attack={"steps": args.steps, "step_size": 2.7 / 255})

        def step(defense=defense, channels_last=channels_last) -> None:  # noqa: ANN001
            set_channels_last(model, channels_last)
            defense.train_step(model, x, y, optimizers)

        kinds[name] = step
    times, median = time_interleaved(kinds, repeats=args.repeats, warmup=args.warmup)
    ratios = {k: median[k] / median["float32"] for k in median}
    path = write("amp_step", {"batch_size": args.batch_size, "inner_steps": args.steps,
                              "seconds": times, "median_s": median, "ratio_to_float32": ratios})
    for k in median:
        print(f"{k}: {median[k]:.3f} s (x{ratios[k]:.2f})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
