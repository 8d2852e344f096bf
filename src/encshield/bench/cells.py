"""What each kind of bench cell does. Runs in a worker process; returns plain data.

* ``attack``: fit one universal attack on the encoder with the surrogate data and save the
  perturbation (safetensors + PNG).
* ``model``: fit one defense on a downstream train split and save the defended classifier.
* ``evaluate``: :func:`encshield.evaluation.protocol.run_model_protocol` on the test split with
  every perturbation of the encoder and the white-box rows.

Every function takes the cell's ``params``, the results/artifacts of its dependencies, the
artifacts folder, and returns ``(result, artifacts, metric_rows)``; files are written
atomically (the store records them only after the function returns).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from encshield.errors import ConfigError

__all__ = ["run_cell"]

Output = tuple[dict[str, Any], dict[str, dict[str, str]], list[dict[str, Any]]]


def _load_encoder(identity: dict[str, str]) -> Any:
    from encshield import zoo
    from encshield.checkpoints import load_encoder

    spec = identity["spec"]
    if spec.startswith("zoo:"):
        loaded = zoo.load(spec[4:])
    else:
        loaded = load_encoder(spec, expected_sha256=identity["sha256"])
    return loaded


def _size(params: dict[str, Any], encoder: Any) -> int:
    return int(params.get("image_size") or encoder.input_size[-1])


def _artifact(root: Path, relative: str) -> dict[str, str]:
    from encshield.checkpoints import sha256_file

    return {"path": relative, "sha256": sha256_file(root / relative)}


def _attack_cell(params: dict[str, Any], deps: list[dict[str, Any]], root: Path,
                 cell_id: str, data_root: str | None, device: str) -> Output:
    import time

    from encshield import data
    from encshield.attacks.universal import fit_universal
    from encshield.evaluation.protocol import select_subset

    loaded = _load_encoder(params["encoder"])
    encoder = loaded.encoder.to(device).eval()
    size = _size(params, encoder)
    sur = params["surrogate"]
    dataset = data.load(sur["dataset"], sur["split"], root=data_root, image_size=size)
    idx = select_subset(dataset.labels, sur["limit"], seed=params["seed"], mode="stratified")
    if idx is not None:
        dataset = dataset.subset(idx)
    description = f"{sur['dataset']}/{sur['split']}[{len(dataset)} images] at {size}px"
    start = time.perf_counter()
    perturbation = fit_universal(
        params["attack"], encoder, dataset.images, surrogate_labels=dataset.labels,
        surrogate_head=loaded.surrogate_head, seed=params["seed"], eps=params["eps"],
        data_description=description, **params["set"])
    seconds = time.perf_counter() - start
    folder = f"attacks/{cell_id}"
    (root / folder).mkdir(parents=True, exist_ok=True)
    perturbation.save(root / folder / f"{params['row']}.safetensors")
    perturbation.to_png(root / folder / f"{params['row']}.png")
    result = {"row": params["row"], "attack": params["attack"], "eps": params["eps"],
              "fit_seconds": round(seconds, 2), "surrogate": description,
              "encoder_sha256": loaded.sha256}
    artifacts = {"perturbation": _artifact(root, f"{folder}/{params['row']}.safetensors"),
                 "png": _artifact(root, f"{folder}/{params['row']}.png")}
    return result, artifacts, []


def _model_cell(params: dict[str, Any], deps: list[dict[str, Any]], root: Path,
                cell_id: str, data_root: str | None, device: str) -> Output:
    from encshield import data
    from encshield.defenses import build_defense, save_classifier
    from encshield.evaluation.protocol import select_subset

    loaded = _load_encoder(params["encoder"])
    encoder = loaded.encoder
    size = _size(params, encoder)
    ds = params["dataset"]
    train = data.load(ds["name"], ds["train_split"], root=data_root, image_size=size)
    num_classes = len(train.class_names)
    idx = select_subset(train.labels, ds["limit_train"], seed=params["seed"], mode="stratified")
    if idx is not None:
        train = train.subset(idx)
    defense = build_defense(params["defense"], params["set"])
    fitted = defense.fit(encoder, train, num_classes, seed=params["seed"], device=device)
    record = {**fitted.record, "num_train": len(train), "num_classes": num_classes,
              "encoder_sha256": loaded.sha256}
    relative = f"models/{cell_id}.safetensors"
    (root / "models").mkdir(parents=True, exist_ok=True)
    save_classifier(fitted.classifier.to("cpu"), root / relative, record)
    return record, {"model": _artifact(root, relative)}, []


def _evaluate_cell(params: dict[str, Any], deps: list[dict[str, Any]], root: Path,
                   cell_id: str, data_root: str | None, device: str) -> Output:
    from encshield.evaluation.protocol import parse_whitebox, run_model_protocol

    model, *attacks = deps
    files = [root / a["artifacts"]["perturbation"]["path"] for a in attacks]
    ds = params["dataset"]
    record = run_model_protocol(
        str(root / model["artifacts"]["model"]["path"]), ds["name"], root=data_root,
        image_size=params["image_size"], perturbation_files=files,
        whitebox=params["whitebox"], limit_test=ds["limit_test"], seed=params["seed"],
        batch_size=params["batch_size"], device=device,
        whitebox_limit=params["whitebox_limit"] or None, test_split=ds["test_split"],
        keep_per_sample=False)
    rows: dict[str, dict[str, Any]] = {"clean": {"kind": "clean", "attack": None, "eps": None}}
    for a in attacks:
        rows[a["result"]["row"]] = {"kind": "universal", "attack": a["result"]["attack"],
                                    "eps": a["result"]["eps"]}
    for text in params["whitebox"]:
        spec = parse_whitebox(text)
        rows[spec.row_name] = {"kind": "encoder" if spec.is_encoder_attack else "whitebox",
                               "attack": spec.name, "eps": spec.eps}
    mparams = model["params"]
    encoder = mparams["encoder"]["spec"]
    identity = {"encoder": encoder, "dataset": ds["name"], "defense": mparams["row"],
                "seed": params["seed"]}
    metrics = []
    for name, m in record.rows():
        info = rows.get(name, {"kind": m.kind, "attack": None, "eps": None})
        robust = m.benign_accuracy if name == "clean" else m.robust_accuracy
        metrics.append({"cell_id": cell_id, **identity, "row": name, "kind": m.kind,
                        "attack": info["attack"], "eps": info["eps"],
                        "num_samples": m.num_samples, "benign_accuracy": m.benign_accuracy,
                        "robust_accuracy": robust, "fooling_rate": m.fooling_rate,
                        "attack_success_rate": m.attack_success_rate})
    result = {**identity, "rows": rows, "record": record.to_dict(include_per_sample=False)}
    return result, {}, metrics


_RUNNERS = {"attack": _attack_cell, "model": _model_cell, "evaluate": _evaluate_cell}


def run_cell(kind: str, params: dict[str, Any], deps: list[dict[str, Any]], artifacts_root: str,
             cell_id: str, data_root: str | None = None, device: str = "cpu",
             threads: int | None = None) -> Output:
    """Run one cell; ``deps`` are the stored records (``params``, ``result``, ``artifacts``) of
    its dependencies in order. Deterministic for the cell's seed on a given device."""
    if kind not in _RUNNERS:
        raise ConfigError(f"unknown cell kind {kind!r}; allowed values: {', '.join(_RUNNERS)}")
    if threads:
        torch.set_num_threads(threads)
    if data_root is not None:
        os.environ["ENCSHIELD_DATA"] = data_root
    torch.manual_seed(0)
    return _RUNNERS[kind](params, deps, Path(artifacts_root), cell_id, data_root, device)
