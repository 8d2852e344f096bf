"""What each kind of bench cell does. Runs in a worker process; returns plain data.

* ``attack``: :func:`encshield.workflows.fit_attack` with the surrogate data; the perturbation
  (safetensors + PNG).
* ``finetune``: :func:`encshield.workflows.finetune_encoders`, the shared fine-tuning stage of a
  defense (ZePAD's MPAE encoders, fine-tuned once); the encoder set (safetensors).
* ``model``: :func:`encshield.workflows.fit_defense` on a downstream train split (reusing the
  fine-tuned encoders of its ``finetune`` dependency, if any); the defended classifier.
* ``evaluate``: :func:`encshield.workflows.evaluate_model` on the test split with every
  perturbation of the encoder and the per-sample rows; plus example images (the first
  :data:`EXAMPLES_PER_ROW` samples of every attack row, clean and adversarial) as one PNG with a
  JSON sidecar (class names, labels, predictions, and where each image lies in the PNG), both
  recorded in the cell's artifacts.

Each is "cell params -> workflow -> files": the workflows (:mod:`encshield.workflows`) load,
select and fit; this module only maps parameters and names the files.

Every function takes the cell's ``params``, the results/artifacts of its dependencies, the
artifacts folder, and returns ``(result, artifacts, metric_rows)``; files are written
atomically (the store records them only after the function returns).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from encshield.errors import ConfigError

__all__ = ["EXAMPLES_FORMAT", "EXAMPLES_PER_ROW", "run_cell", "write_examples"]

Output = tuple[dict[str, Any], dict[str, dict[str, str]], list[dict[str, Any]]]

EXAMPLES_PER_ROW = 4
"""Example images kept per attack row by an evaluate cell (params ``examples`` overrides)."""

EXAMPLES_FORMAT = "encshield-examples/1"
"""``format`` of the examples sidecar JSON (read by :mod:`encshield.report.examples`)."""

_GAP, _PAIR_GAP = 2, 10  # pixels between the clean and adversarial image, and between samples


@dataclass(frozen=True)
class _Cell:
    """One cell being run: its ``params``, the stored records of its dependencies (``deps``),
    the artifacts folder ``root``, its id, the data root and the device."""

    params: dict[str, Any]
    deps: list[dict[str, Any]]
    root: Path
    cell_id: str
    data_root: str | None
    device: str

    def data(self, dataset: str, split: str, limit: int | None) -> Any:
        """The :class:`~encshield.workflows.DataSpec` of ``dataset``/``split`` (a seeded subset
        of ``limit`` images when given) with the cell's seed and data root."""
        from encshield.workflows import DataSpec

        return DataSpec(dataset, split, limit=limit, seed=self.params["seed"], root=self.data_root)

    def encoder(self) -> Any:
        """The cell's encoder, verified against the sha256 recorded when the matrix was
        expanded."""
        from encshield.workflows import resolve_encoder

        identity = self.params["encoder"]
        return resolve_encoder(identity["spec"], expected_sha256=identity["sha256"])

    def folder(self, relative: str) -> Path:
        """The artifacts subfolder ``relative``, created if needed."""
        path = self.root / relative
        path.mkdir(parents=True, exist_ok=True)
        return path

    def artifact(self, relative: str) -> dict[str, str]:
        """``{"path", "sha256"}`` of the written artifact ``relative`` (to :attr:`root`)."""
        from encshield.checkpoints import sha256_file

        return {"path": relative, "sha256": sha256_file(self.root / relative)}


def _attack_cell(cell: _Cell) -> Output:
    from encshield.workflows import fit_attack

    params, sur = cell.params, cell.params["surrogate"]
    folder = f"attacks/{cell.cell_id}"
    path = cell.folder(folder)
    perturbation, record = fit_attack(
        params["attack"], cell.encoder(), cell.data(sur["dataset"], sur["split"], sur["limit"]),
        eps=params["eps"], seed=params["seed"], overrides=params["set"],
        image_size=params["image_size"], device=cell.device,
        output=path / f"{params['row']}.safetensors", png=path / f"{params['row']}.png")
    result = {"row": params["row"], "attack": params["attack"], "eps": params["eps"],
              "fit_seconds": round(record.fit_seconds, 2), "surrogate": record.surrogate,
              "encoder_sha256": record.encoder["sha256"]}
    artifacts = {"perturbation": cell.artifact(f"{folder}/{params['row']}.safetensors"),
                 "png": cell.artifact(f"{folder}/{params['row']}.png")}
    return result, artifacts, []


def _finetune_cell(cell: _Cell) -> Output:
    from encshield.workflows import finetune_encoders

    params, ds = cell.params, cell.params["dataset"]
    relative = f"finetuned/{cell.cell_id}.safetensors"
    output = cell.folder("finetuned") / f"{cell.cell_id}.safetensors"
    train = None if ds is None else cell.data(ds["name"], ds["train_split"], ds["limit_train"])
    result = finetune_encoders(params["defense"], cell.encoder(), train=train,
                               root=cell.data_root, seed=params["seed"],
                               overrides=params["set"], image_size=params["image_size"],
                               device=cell.device, output=output)
    summary = {"names": result.names, "key": result.key, "record": result.record,
               "sha256": result.sha256}
    return summary, {"encoders": cell.artifact(relative)}, []


def _model_cell(cell: _Cell) -> Output:
    from encshield.workflows import fit_defense

    params, ds = cell.params, cell.params["dataset"]
    relative = f"models/{cell.cell_id}.safetensors"
    output = cell.folder("models") / f"{cell.cell_id}.safetensors"
    finetuned = [cell.root / d["artifacts"]["encoders"]["path"] for d in cell.deps
                 if "encoders" in d.get("artifacts", {})]
    _, record = fit_defense(params["defense"], cell.encoder(),
                            cell.data(ds["name"], ds["train_split"], ds["limit_train"]),
                            seed=params["seed"], overrides=params["set"],
                            image_size=params["image_size"], device=cell.device, output=output,
                            finetuned=finetuned[0] if finetuned else None)
    output.with_suffix(".json").unlink(missing_ok=True)  # the store holds the record
    return record.to_dict(), {"model": cell.artifact(relative)}, []


def write_examples(kept: dict[str, Any], class_names: list[str], png: Path,
                   sidecar: Path) -> dict[str, Any]:
    """Write example images as one PNG and their JSON sidecar (both atomically).

    ``kept``: ``{row: RowExamples}`` (:func:`encshield.evaluation.evaluate.examples_of`). The
    PNG has one line per attack row (in ``kept``'s order) of ``(clean, adversarial)`` pairs,
    on white. The sidecar (format :data:`EXAMPLES_FORMAT`) holds the class names and, per row and
    sample, the test-set position, label, clean and adversarial predictions and the pixel boxes
    ``[x0, y0, x1, y1]`` of both images in the PNG. Returns the sidecar's content.
    """
    import io

    import numpy as np
    from PIL import Image

    from encshield.provenance import atomic_write, write_json

    rows = [r for r in kept.values() if len(r) > 0]
    height, width = (int(v) for v in rows[0].clean.shape[-2:])
    per_row = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (height + _PAIR_GAP) - _PAIR_GAP,
                      per_row * (2 * width + _GAP + _PAIR_GAP) - _PAIR_GAP, 3), 255, np.uint8)

    def paste(image: Any, x: int, y: int) -> list[int]:
        """Paste a ``(C, H, W)`` uint8 image at ``(x, y)``; return its box."""
        pixels = image.permute(1, 2, 0).numpy()
        canvas[y:y + height, x:x + width] = pixels if pixels.shape[2] == 3 else pixels[:, :, :1]
        return [x, y, x + width, y + height]

    described = []
    for r, row in enumerate(rows):
        y = r * (height + _PAIR_GAP)
        samples = []
        for i in range(len(row)):
            x = i * (2 * width + _GAP + _PAIR_GAP)
            samples.append({
                "index": row.indices[i], "label": row.labels[i], "clean_pred": row.clean_pred[i],
                "adv_pred": row.adv_pred[i], "clean_box": paste(row.clean[i], x, y),
                "adv_box": paste(row.adversarial[i], x + width + _GAP, y)})
        described.append({"row": row.row, "kind": row.kind, "samples": samples})
    buffer = io.BytesIO()
    Image.fromarray(canvas, "RGB").save(buffer, format="PNG")
    atomic_write(png, buffer.getvalue())
    content = {"format": EXAMPLES_FORMAT, "class_names": [str(c) for c in class_names],
               "image_size": [height, width], "rows": described}
    write_json(sidecar, content)
    return content


def _evaluate_cell(cell: _Cell) -> Output:
    from encshield.evaluation.evaluate import examples_of
    from encshield.workflows import evaluate_model

    params, root, cell_id, device = cell.params, cell.root, cell.cell_id, cell.device
    model, *attacks = cell.deps
    ds = params["dataset"]
    record = evaluate_model(
        cell.data(ds["name"], ds["test_split"], ds["limit_test"]),
        model=root / model["artifacts"]["model"]["path"],
        perturbations=[root / a["artifacts"]["perturbation"]["path"] for a in attacks],
        whitebox=params["whitebox"], whitebox_limit=params["whitebox_limit"] or None,
        public_encoder=model["params"]["encoder"]["spec"], image_size=params["image_size"],
        seed=params["seed"], batch_size=params["batch_size"], device=device,
        keep_per_sample=False, examples=int(params.get("examples", EXAMPLES_PER_ROW)))
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
                        "attack_success_rate": m.attack_success_rate,
                        "target_hit_rate": m.target_hit_rate})
    result = {**identity, "rows": rows, "record": record.to_dict(include_per_sample=False)}
    artifacts: dict[str, dict[str, str]] = {}
    kept = examples_of(record)
    if any(len(r) for r in kept.values()):
        cell.folder("examples")
        png, sidecar = f"examples/{cell_id}.png", f"examples/{cell_id}.json"
        class_names = record.config.get("dataset", {}).get("class_names") or []
        write_examples(kept, class_names, root / png, root / sidecar)
        artifacts = {"examples_png": cell.artifact(png), "examples": cell.artifact(sidecar)}
    return result, artifacts, metrics


_RUNNERS = {"attack": _attack_cell, "finetune": _finetune_cell, "model": _model_cell,
            "evaluate": _evaluate_cell}


def run_cell(kind: str, params: dict[str, Any], deps: list[dict[str, Any]], artifacts_root: str,
             cell_id: str, data_root: str | None = None, device: str = "cpu",
             threads: int | None = None) -> Output:
    """Run one cell; ``deps`` are the stored records (``params``, ``result``, ``artifacts``) of
    its dependencies in order. Deterministic for the cell's seed on a given device."""
    if kind not in _RUNNERS:
        raise ConfigError(f"unknown cell kind {kind!r}; allowed values: {', '.join(_RUNNERS)}")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    with _data_root_env(data_root):
        return _RUNNERS[kind](_Cell(params, deps, Path(artifacts_root), cell_id, data_root,
                                    device))


@contextlib.contextmanager
def _data_root_env(data_root: str | None) -> Iterator[None]:
    """``$ENCSHIELD_DATA`` = ``data_root`` while one cell runs (loaders deep in the workflows
    read it), restored afterwards: an in-process cell (one worker) must not change the data root
    of the program that called the bench."""
    if data_root is None:
        yield
        return
    before = os.environ.get("ENCSHIELD_DATA")
    os.environ["ENCSHIELD_DATA"] = data_root
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("ENCSHIELD_DATA", None)
        else:
            os.environ["ENCSHIELD_DATA"] = before
