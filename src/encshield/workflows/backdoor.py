"""``inject_backdoor`` and ``evaluate_backdoor``: BadEncoder (Jia, Liu, Gong, IEEE S&P 2022;
docs/methods.md, "BadEncoder") end to end.

The attacker's side: a public clean encoder, unlabelled shadow images (e.g. CIFAR-10 train) and,
per downstream target, a trigger and a few reference images of the target class (taken from a
dataset by class, or given as image files). :func:`inject_backdoor` runs the shared encoder
training loop and writes the backdoored encoder, whose metadata names its clean counterpart, its
targets and triggers. The victim's side: :func:`evaluate_backdoor` trains the downstream heads
and measures CA, BA, ASR, ASR over non-target images and ASR-B. Used by ``encshield backdoor``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from encshield.backdoor import (
    BackdoorTarget,
    BadEncoderConfig,
    BadEncoderTrainer,
    Trigger,
    backdoor_metadata,
    backdoor_metrics,
    backdoor_predictions,
    build_trigger,
)
from encshield.config import resolve
from encshield.errors import ConfigError
from encshield.provenance import machine_info
from encshield.records import BackdoorEvalRecord, BackdoorRecord
from encshield.workflows.specs import DataSpec, EncoderSpec, parse_device, resolve_encoder

__all__ = ["TargetSpec", "backdoor_rows", "evaluate_backdoor", "inject_backdoor",
           "select_references"]


@dataclass(frozen=True)
class TargetSpec:
    """A backdoor target: a class of a downstream dataset and its trigger.

    Attributes:
        dataset: the downstream dataset (``gtsrb``).
        label: the target class, an index or a class name (``12`` or ``"priority road"``).
        trigger: ``NAME:key=value,...`` (``patch``, ``random_patch:seed=3``, ``blend``), a dict
            ``{"name", "config"}`` or a :class:`~encshield.backdoor.Trigger`.
        references: how many reference images of the class to take from ``split``.
        split: where the references come from (never the test split of an evaluation).
        seed: which images of the class are taken.
        files: reference image files instead (PNG, JPEG, PPM ...), resized to the encoder.
        root: the dataset's root (default: ``$ENCSHIELD_DATA``).
    """

    dataset: str
    label: int | str
    trigger: str | dict[str, Any] | Trigger = "patch"
    references: int = 1
    split: str = "train"
    seed: int = 0
    files: tuple[str, ...] = field(default_factory=tuple)
    root: str | None = None

    @classmethod
    def parse(cls, text: str, **fields: Any) -> TargetSpec:
        """``"gtsrb:12"`` or ``"stl10:truck"``: ``DATASET:CLASS``."""
        name, sep, label = str(text).partition(":")
        if not sep or not name.strip() or not label.strip():
            raise ConfigError(f"target {text!r}: expected DATASET:CLASS, e.g. gtsrb:12")
        value: int | str = int(label) if label.strip().isdigit() else label.strip()
        return cls(dataset=name.strip(), label=value, **fields)


def _class_index(label: int | str, names: Sequence[str], where: str) -> int:
    if isinstance(label, int) or str(label).isdigit():
        index = int(label)
        if not 0 <= index < len(names):
            raise ConfigError(f"target class {index} of {where} is out of range: it has "
                              f"{len(names)} classes (0..{len(names) - 1})")
        return index
    lowered = [n.lower() for n in names]
    if str(label).lower() not in lowered:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ConfigError(f"target class {label!r} is not a class of {where}; classes: {shown}")
    return lowered.index(str(label).lower())


def _read_image_files(files: Sequence[str], size: int) -> torch.Tensor:
    from encshield.data.imaging import decode_image, resize_images

    images = []
    for name in files:
        try:
            data = Path(name).read_bytes()
        except OSError as error:
            raise ConfigError(f"reference image {name}: {error.strerror or error}") from None
        array = torch.from_numpy(decode_image(data, name).copy())
        images.append(resize_images(array[None], (size, size))[0])
    return torch.stack(images)


def select_references(spec: TargetSpec, image_size: int
                      ) -> tuple[torch.Tensor, int, dict[str, Any]]:
    """The reference images (uint8 ``(R, 3, S, S)``), the target class index and a description.

    Images of class ``spec.label`` from ``spec.dataset:spec.split`` (``spec.references`` of them,
    drawn with ``spec.seed``), or ``spec.files`` resized to ``image_size``.
    """
    from encshield import data

    if spec.references < 1:
        raise ConfigError(f"target {spec.dataset}:{spec.label}: references must be >= 1")
    dataset = data.load(spec.dataset, spec.split, root=spec.root, image_size=image_size)
    label = _class_index(spec.label, dataset.class_names, f"{spec.dataset}")
    source: dict[str, Any] = {"dataset": dataset.name, "class_name": dataset.class_names[label]}
    if spec.files:
        source["files"] = [str(f) for f in spec.files]
        return _read_image_files(spec.files, image_size), label, source
    members = torch.nonzero(dataset.labels == label).flatten()
    if members.numel() < spec.references:
        raise ConfigError(f"{spec.dataset}:{spec.split} has {members.numel()} images of class "
                          f"{label}, fewer than the {spec.references} references asked for")
    generator = torch.Generator().manual_seed(int(spec.seed))
    chosen = members[torch.randperm(members.numel(), generator=generator)[: spec.references]]
    chosen = chosen.sort().values
    source.update({"split": spec.split, "indices": [int(i) for i in chosen],
                   "seed": spec.seed})
    return dataset.images[chosen].clone(), label, source


def _targets(specs: Sequence[TargetSpec], image_size: int) -> list[BackdoorTarget]:
    if not specs:
        raise ConfigError("BadEncoder needs at least one target (--target DATASET:CLASS)")
    targets = []
    for spec in specs:
        trigger = build_trigger(spec.trigger)
        trigger.mask_and_pattern(3, image_size, image_size)  # fits the images, before any work
        refs, label, source = select_references(spec, image_size)
        targets.append(BackdoorTarget(trigger, refs, label=label, dataset=spec.dataset,
                                      source=source))
    triggers = [t.trigger.to_dict() for t in targets]
    if len({repr(t) for t in triggers}) != len(triggers):
        raise ConfigError("each target needs its own trigger (two targets share one): give one "
                          "--trigger per --target")
    return targets


def inject_backdoor(
    encoder: EncoderSpec,
    shadow: DataSpec,
    targets: Sequence[TargetSpec],
    *,
    config: BadEncoderConfig | dict[str, Any] | None = None,
    output: str | os.PathLike[str] | None = None,
    resume: bool = False,
    stop_at_step: int | None = None,
    progress: bool = False,
) -> tuple[Any, BackdoorRecord]:
    """Backdoor ``encoder`` for ``targets`` with the ``shadow`` images (their labels unused).

    Args:
        encoder: the clean public encoder (``zoo:NAME`` or a checkpoint path); not modified.
        shadow: the attacker's shadow data (class-stratified seeded subset of ``limit``).
        targets: one :class:`TargetSpec` per downstream target (distinct triggers).
        config: a :class:`BadEncoderConfig` or its fields (validated; errors name the field).
        output: copy the backdoored encoder (encshield safetensors) there and write the record
            as ``OUTPUT.json``; the run's own files stay in ``config.output_dir``.
        resume: continue the run in ``config.output_dir`` from its last checkpoint.
        stop_at_step: pause after that many steps (a snapshot; ``resume`` continues).
        progress: show a progress bar.

    Returns:
        The backdoored encoder (eval mode) and its :class:`~encshield.records.BackdoorRecord`.
    """
    from encshield.checkpoints import load_encoder

    cfg = resolve(BadEncoderConfig, config)
    if output is not None and str(output).lower().endswith(".json"):
        raise ConfigError(f"output {output}: the encoder file must not end in .json")
    dev = parse_device(cfg.device)
    resolved = resolve_encoder(encoder)
    size = resolved.input_size
    selected_targets = _targets(targets, size)
    shadow_data = shadow.select(size, labelled=False)
    metadata = backdoor_metadata(resolved.identity(), selected_targets, shadow_data.info, cfg)
    trainer = BadEncoderTrainer(cfg, resolved.encoder, shadow_data.dataset.images,
                                selected_targets, metadata=metadata, knn_dataset=shadow.name,
                                data_root=None if shadow.root is None else str(shadow.root),
                                progress=progress)
    started = time.perf_counter()
    result = trainer.run(resume=resume, stop_at_step=stop_at_step)
    record = BackdoorRecord(
        encoder=resolved.describe(), shadow=shadow_data.info,
        targets=[t.describe() for t in selected_targets],
        config=cfg.model_dump(mode="json"), result=result,
        seconds=time.perf_counter() - started, machine=machine_info(dev))
    path = result["encoder"]
    if output is not None:
        shutil.copyfile(path, output)
        path = str(output)
        record.output = {"path": path, "sha256": result["sha256"]}
        record.save(os.path.splitext(path)[0] + ".json")
    backdoored = load_encoder(path).encoder.eval()
    return backdoored, record


def backdoor_rows(encoder: Any, dataset: str, class_names: Sequence[str],
                  backdoors: Mapping[str, tuple[Any, int | str]] | None = None
                  ) -> dict[str, tuple[Trigger, int]]:
    """The ``backdoor`` rows of an evaluation on ``dataset``: row name -> (trigger, class).

    ``backdoors`` given: those (trigger spec or object, class index or name). ``None``: every
    target of ``dataset`` that ``encoder`` (the public encoder; ``None``: none) carries in its
    BadEncoder metadata, named ``backdoor:<trigger spec>``.
    """
    from encshield.data.base import DATASETS

    if backdoors is not None:
        return {name: (build_trigger(trigger), _class_index(label, class_names, dataset))
                for name, (trigger, label) in backdoors.items()}
    extra = getattr(getattr(encoder, "provenance", None), "extra", None) or {}
    entry = extra.get("backdoor") if isinstance(extra, dict) else None
    rows: dict[str, tuple[Trigger, int]] = {}
    for target in (entry or {}).get("targets") or []:
        name = target.get("dataset")
        if name is None or DATASETS.canonical(str(name)) != DATASETS.canonical(dataset):
            continue
        trigger = build_trigger(target["trigger"])
        rows[f"backdoor:{trigger.spec}"] = (trigger, _class_index(target["label"], class_names,
                                                                  dataset))
    return rows


def _backdoor_entry(resolved: Any) -> dict[str, Any]:
    entry = resolved.encoder.provenance.extra.get("backdoor")
    if not isinstance(entry, dict) or not entry.get("targets"):
        raise ConfigError(f"{resolved.spec or 'the encoder'} carries no backdoor metadata; "
                          "give --target and --trigger")
    return entry


def evaluate_backdoor(
    encoder: EncoderSpec,
    train: DataSpec,
    test: DataSpec,
    *,
    clean: EncoderSpec | None = None,
    target: int | str | None = None,
    trigger: str | dict[str, Any] | Trigger | None = None,
    head: str = "badencoder_mlp",
    epochs: int = 500,
    lr: float = 1e-4,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> BackdoorEvalRecord:
    """CA, BA, ASR, ASR over non-target images and ASR-B on a downstream dataset.

    Both heads (on the clean and on the backdoored encoder's frozen features) are trained the
    same way on ``train`` (BadEncoder's protocol: ``badencoder_mlp``, Adam lr 1e-4, 500 epochs,
    batch 64, no weight decay or decay of the learning rate).

    Args:
        encoder: the backdoored encoder; its metadata gives the clean encoder, the target of
            ``train``'s dataset and its trigger unless ``clean`` / ``target`` / ``trigger`` do.
        train, test: the downstream data (heads trained on ``train``, metrics on ``test``).
        clean: the clean counterpart (default: the one the metadata names; CA and ASR-B are
            ``None`` when there is none).
    """
    from encshield.downstream import train_head

    dev = parse_device(device)
    resolved = resolve_encoder(encoder)
    if target is None or trigger is None:
        entry = _backdoor_entry(resolved)
        mine = [t for t in entry["targets"] if t.get("dataset") in (None, train.name)] \
            or entry["targets"]
        target = mine[0]["label"] if target is None else target
        trigger = mine[0]["trigger"] if trigger is None else trigger
        if clean is None:
            clean = (entry.get("clean_encoder") or {}).get("spec") or None
    chosen_trigger = build_trigger(trigger)
    size = resolved.input_size
    train_data, test_data = train.select(size), test.select(size)
    label = _class_index(target, train_data.dataset.class_names, train.name)
    head_options: dict[str, Any] = {"head": head, "epochs": epochs, "lr": lr, "weight_decay": 0.0,
                                    "gamma": 1.0, "batch_size": batch_size, "seed": seed}
    started = time.perf_counter()
    clean_resolved = None if clean is None else resolve_encoder(clean)
    models = {}
    for name, enc in (("backdoored", resolved), ("clean", clean_resolved)):
        if enc is not None:
            models[name], _ = train_head(enc.encoder.to(dev), train_data.dataset.images,
                                         train_data.dataset.labels, train_data.num_classes,
                                         head=head, epochs=epochs, lr=lr, weight_decay=0.0,
                                         gamma=1.0, batch_size=batch_size, seed=seed, device=dev)
    predictions = {name: backdoor_predictions(model, test_data.dataset.images, chosen_trigger,
                                              device=dev) for name, model in models.items()}
    metrics = backdoor_metrics(test_data.dataset.labels, label, predictions["backdoored"],
                               predictions.get("clean"))
    per_sample = {f"{name}_{kind}": pred.tolist() for name, (c, t) in predictions.items()
                  for kind, pred in (("clean", c), ("triggered", t))}
    return BackdoorEvalRecord(
        encoder=resolved.describe(),
        clean_encoder=None if clean_resolved is None else clean_resolved.describe(),
        trigger=chosen_trigger.to_dict(), train=train_data.info, test=test_data.info,
        head=head_options,
        metrics=metrics.to_dict(), labels=test_data.dataset.labels.tolist(),
        predictions=per_sample, seconds=time.perf_counter() - started,
        machine=machine_info(dev))
