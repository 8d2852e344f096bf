"""``tune_defense``: choose a defense's settings on validation data, never on a test split.

For every point of a small grid (e.g. head/encoder learning rates, epochs, warm-start or not,
inner-attack steps) the defense is fitted on the training selection and evaluated on a
*validation* selection of the downstream training split (disjoint images, e.g.
``cifar10:train[40000:45000]`` when the model trains on ``train[:40000]``): clean accuracy (BA)
and robust accuracy under a white-box attack (RA, default PGD-10 at 8/255). The no-defense
model (``none``) is fitted and scored the same way as the reference. The criterion, stated in
every record: among the points that keep ``BA >= min_ba_ratio x`` the no-defense BA (a defense
that collapses clean accuracy is no answer), the highest RA wins (ties: higher BA, then the
cheaper fit); when no point qualifies, the highest ``BA + RA`` wins and the record says so.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from encshield.config import merge
from encshield.errors import ConfigError
from encshield.evaluation.evaluate import evaluate_classifier
from encshield.evaluation.specs import parse_whitebox
from encshield.progress import progress as progress_bar
from encshield.provenance import machine_info
from encshield.records import TuneRecord
from encshield.workflows.defense import fit_defense
from encshield.workflows.specs import DataSpec, EncoderSpec, parse_device, resolve_encoder

__all__ = ["CRITERION", "grid_points", "point_overrides", "tune_defense"]

#: How the best point is chosen (also written into every record).
CRITERION = ("max validation RA among points with validation BA >= {ratio} x the no-defense "
             "BA (ties: higher BA, then the shorter fit); if none qualifies: max BA + RA")


def _nested(key: str, value: Any) -> dict[str, Any]:
    """``"attack.steps", 3`` -> ``{"attack": {"steps": 3}}``."""
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, as flat ``{dotted key: value}`` dicts, in the
    order the keys and values were given."""
    if not grid:
        return [{}]
    for key, values in grid.items():
        if not values:
            raise ConfigError(f"grid {key}: give at least one value")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_overrides(base: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """A grid point's full overrides: a deep copy of ``base`` with the point's dotted keys
    merged in (points never share a nested section)."""
    overrides = copy.deepcopy(dict(base))
    for key, value in point.items():
        merge(overrides, _nested(key, value))
    return overrides


def tune_defense(
    name: str,
    encoder: EncoderSpec,
    train: DataSpec,
    val: DataSpec,
    grid: Mapping[str, Sequence[Any]],
    *,
    base: Mapping[str, Any] | None = None,
    attack: str = "pgd:eps=8/255,steps=10",
    val_attack_limit: int | None = None,
    min_ba_ratio: float = 0.7,
    seed: int = 0,
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> TuneRecord:
    """Fit defense ``name`` for every grid point and score it on the validation selection.

    Args:
        name: a registered defense.
        encoder: the public encoder (``zoo:NAME`` or a path).
        train: the training selection (e.g. ``cifar10:train[:40000]``, limit 2000).
        val: the validation selection, disjoint from ``train`` and from any test split.
        grid: dotted config keys -> candidate values (``{"head_lr": [5e-3, 5e-4]}``).
        base: overrides applied to every point before the grid's (nested dict).
        attack: the white-box spec of the validation RA.
        val_attack_limit: attack this many validation images (seeded stratified subset).
        min_ba_ratio: a point qualifies when its validation BA is at least this fraction of the
            no-defense model's.
        seed: seed of every fit and of the attack subset.

    Returns:
        A :class:`~encshield.records.TuneRecord`: every point's overrides, validation BA and
        RA, score and fit time, the criterion and the chosen overrides.
    """
    from encshield.defenses import build_defense

    points = grid_points(grid)
    base = dict(base or {})
    for point in points:  # validate every point before the first (long) fit
        build_defense(name, point_overrides(base, point))
    spec = parse_whitebox(attack)
    dev = parse_device(device)
    resolved = resolve_encoder(encoder)
    size = image_size or resolved.input_size
    val_data = val.select(size)
    def score(overrides: dict[str, Any], defense: str) -> dict[str, Any]:
        classifier, record = fit_defense(defense, resolved, train, seed=seed,
                                         overrides=overrides, image_size=size, device=dev)
        evaluation = evaluate_classifier(
            classifier, val_data.dataset.images, val_data.dataset.labels, whitebox=[spec],
            whitebox_limit=val_attack_limit, subset_seed=seed, device=dev, keep_per_sample=False)
        ba = float(evaluation.metrics["clean"].benign_accuracy or 0.0)
        ra = float(evaluation.metrics[spec.row_name].robust_accuracy or 0.0)
        return {"overrides": overrides, "val_ba": ba, "val_ra": ra, "score": ba + ra,
                "fit_seconds": round(record.time_s, 1), "train": record.data,
                "train_accuracy": record.train_accuracy[-1:], "losses": record.losses}

    started = time.perf_counter()
    with progress_bar(f"tune {name}", len(points) + 1, enabled=progress) as bar:
        baseline = score({}, "none")
        bar(info=f"no defense: BA {baseline['val_ba']:.3f} RA {baseline['val_ra']:.3f}")
        results: list[dict[str, Any]] = []
        for point in points:
            results.append({"point": point, **score(point_overrides(base, point), name)})
            bar(info=f"{point}: BA {results[-1]['val_ba']:.3f} RA {results[-1]['val_ra']:.3f}")
    floor = min_ba_ratio * baseline["val_ba"]
    for result in results:
        result["qualifies"] = result["val_ba"] >= floor
    qualified = [r for r in results if r["qualifies"]]
    if qualified:
        best = max(qualified, key=lambda r: (r["val_ra"], r["val_ba"], -r["fit_seconds"]))
    else:
        best = max(results, key=lambda r: (r["score"], -r["fit_seconds"]))
    return TuneRecord(
        defense=name, encoder=resolved.describe(), train=baseline.pop("train"),
        val=val_data.info, attack=spec.text, grid={k: list(v) for k, v in grid.items()},
        base=base, criterion=CRITERION.format(ratio=min_ba_ratio),
        baseline={k: v for k, v in baseline.items() if k != "overrides"},
        points=[{k: v for k, v in r.items() if k != "train"} for r in results],
        chosen=best["overrides"], chosen_point=best["point"], qualified=bool(qualified),
        seconds=round(time.perf_counter() - started, 1), machine=machine_info(dev))
