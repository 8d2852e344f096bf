"""What each kind of bench cell does. Runs in a worker process; returns plain data.

* ``attack``: :func:`encshield.workflows.fit_attack` with the surrogate data; the perturbation
  (safetensors + PNG).
* ``model``: :func:`encshield.workflows.fit_defense` on a downstream train split; the defended
  classifier.
* ``evaluate``: :func:`encshield.workflows.evaluate_model` on the test split with every
  perturbation of the encoder and the per-sample rows.

Each is "cell params -> workflow -> files": the workflows (:mod:`encshield.workflows`) load,
select and fit; this module only maps parameters and names the files.

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


def _artifact(root: Path, relative: str) -> dict[str, str]:
    from encshield.checkpoints import sha256_file

    return {"path": relative, "sha256": sha256_file(root / relative)}


def _encoder(params: dict[str, Any]) -> Any:
    """The cell's encoder, verified against the sha256 recorded when the matrix was expanded."""
    from encshield.workflows import resolve_encoder

    identity = params["encoder"]
    return resolve_encoder(identity["spec"], expected_sha256=identity["sha256"])


def _attack_cell(params: dict[str, Any], deps: list[dict[str, Any]], root: Path,
                 cell_id: str, data_root: str | None, device: str) -> Output:
    from encshield.workflows import DataSpec, fit_attack

    sur = params["surrogate"]
    surrogate = DataSpec(sur["dataset"], sur["split"], limit=sur["limit"], seed=params["seed"],
                         root=data_root)
    folder = f"attacks/{cell_id}"
    (root / folder).mkdir(parents=True, exist_ok=True)
    perturbation, record = fit_attack(
        params["attack"], _encoder(params), surrogate, eps=params["eps"], seed=params["seed"],
        overrides=params["set"], image_size=params["image_size"], device=device,
        output=root / folder / f"{params['row']}.safetensors",
        png=root / folder / f"{params['row']}.png")
    result = {"row": params["row"], "attack": params["attack"], "eps": params["eps"],
              "fit_seconds": round(record.fit_seconds, 2), "surrogate": record.surrogate,
              "encoder_sha256": record.encoder["sha256"]}
    artifacts = {"perturbation": _artifact(root, f"{folder}/{params['row']}.safetensors"),
                 "png": _artifact(root, f"{folder}/{params['row']}.png")}
    return result, artifacts, []


def _model_cell(params: dict[str, Any], deps: list[dict[str, Any]], root: Path,
                cell_id: str, data_root: str | None, device: str) -> Output:
    from encshield.workflows import DataSpec, fit_defense

    ds = params["dataset"]
    data = DataSpec(ds["name"], ds["train_split"], limit=ds["limit_train"], seed=params["seed"],
                    root=data_root)
    relative = f"models/{cell_id}.safetensors"
    (root / "models").mkdir(parents=True, exist_ok=True)
    _, record = fit_defense(params["defense"], _encoder(params), data, seed=params["seed"],
                            overrides=params["set"], image_size=params["image_size"],
                            device=device, output=root / relative)
    (root / relative).with_suffix(".json").unlink(missing_ok=True)  # the store holds the record
    return record.to_dict(), {"model": _artifact(root, relative)}, []


def _evaluate_cell(params: dict[str, Any], deps: list[dict[str, Any]], root: Path,
                   cell_id: str, data_root: str | None, device: str) -> Output:
    from encshield.workflows import DataSpec, evaluate_model

    model, *attacks = deps
    ds = params["dataset"]
    record = evaluate_model(
        DataSpec(ds["name"], ds["test_split"], limit=ds["limit_test"], seed=params["seed"],
                 root=data_root),
        model=root / model["artifacts"]["model"]["path"],
        perturbations=[root / a["artifacts"]["perturbation"]["path"] for a in attacks],
        whitebox=params["whitebox"], whitebox_limit=params["whitebox_limit"] or None,
        public_encoder=model["params"]["encoder"]["spec"], image_size=params["image_size"],
        seed=params["seed"], batch_size=params["batch_size"], device=device,
        keep_per_sample=False)
    universal = {a["result"]["row"]: (a["result"]["attack"], a["result"]["eps"]) for a in attacks}
    mparams = model["params"]
    identity = {"encoder": mparams["encoder"]["spec"], "dataset": ds["name"],
                "defense": mparams["row"], "seed": params["seed"]}
    metrics, rows = [], {}
    for name, m in record.rows():
        attack, eps = universal.get(name, (m.attack, m.eps))
        rows[name] = {"kind": m.kind, "attack": attack, "eps": eps}
        robust = m.benign_accuracy if name == "clean" else m.robust_accuracy
        metrics.append({"cell_id": cell_id, **identity, "row": name, **rows[name],
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
