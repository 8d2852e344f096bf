"""``evaluate_model``: the DAE protocol on a downstream model -- every attack, one record.

Two sources of the downstream model, one evaluation:

* ``model=``: a defended classifier (a file written by ``encshield defend`` / the bench, or a
  :class:`~encshield.models.Classifier`), evaluated as it is;
* ``encoder=``: the no-defense model of the CGCL protocol, built here: the frozen encoder and a
  head trained on the ``train`` selection (:func:`encshield.downstream.train_head`).

Then :func:`encshield.evaluation.evaluate_classifier` on the ``test`` selection with the universal
perturbations (files or objects), the per-sample attacks and their worst case. Used by
``encshield evaluate`` and by the bench's evaluate cells.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from encshield.errors import ConfigError
from encshield.evaluation.describe import describe_encoder, describe_perturbation
from encshield.evaluation.evaluate import PerturbationLike, evaluate_classifier
from encshield.evaluation.records import EvaluationRecord
from encshield.evaluation.specs import (
    WhiteboxSpec,
    parse_whitebox,
    resolve_attack,
    validate_spec,
)
from encshield.models import Classifier, Encoder
from encshield.workflows.specs import (
    DataSpec,
    EncoderSpec,
    ResolvedEncoder,
    parse_device,
    resolve_encoder,
)

__all__ = ["evaluate_model", "load_perturbations"]


def load_perturbations(
    files: Sequence[str | os.PathLike[str]],
) -> tuple[dict[str, PerturbationLike], dict[str, dict[str, Any]]]:
    """Load perturbation files; row names are the file stems (made unique with ``#2``, ``#3``).

    Returns:
        ``({name: perturbation}, {name: {"path", "sha256", ...description}})``.
    """
    from encshield.attacks.perturbation import Perturbation
    from encshield.checkpoints import sha256_file

    loaded: dict[str, PerturbationLike] = {}
    described: dict[str, dict[str, Any]] = {}
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"perturbation file not found: {path}")
        name, k = path.stem, 2
        while name in loaded:
            name, k = f"{path.stem}#{k}", k + 1
        perturbation = Perturbation.load(path)
        loaded[name] = perturbation
        described[name] = {"path": str(path), "sha256": sha256_file(path),
                           **describe_perturbation(perturbation)}
    return loaded, described


def _stored_model(model: str | os.PathLike[str] | Classifier, device: torch.device
                  ) -> tuple[Classifier, dict[str, Any], dict[str, Any]]:
    """``(classifier, model description, stored defense record)`` of a model file or object."""
    if isinstance(model, nn.Module):
        return model, {"type": type(model).__name__}, {}
    from encshield.checkpoints import sha256_file
    from encshield.defenses.io import load_classifier

    path = Path(model)
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}")
    classifier, meta = load_classifier(path, device=device)
    stored = dict(meta.get("record") or {})
    info = {"path": str(path), "sha256": sha256_file(path), "head": meta.get("head"),
            "code_version": meta.get("code_version"), "record": stored}
    return classifier, info, stored


def _public_encoder(spec: EncoderSpec | None, stored: dict[str, Any]) -> ResolvedEncoder | None:
    """The public encoder for ``on=public`` rows: ``spec``, else the one the stored defense
    record names (when it can still be found)."""
    if spec is not None:
        return resolve_encoder(spec)
    recorded = (stored.get("encoder") or {}) if isinstance(stored, dict) else {}
    text = recorded.get("spec")
    if not text:
        return None
    try:
        return resolve_encoder(text, expected_sha256=recorded.get("sha256") or None)
    except ConfigError:
        return None


def evaluate_model(
    test: DataSpec,
    *,
    model: str | os.PathLike[str] | Classifier | None = None,
    encoder: EncoderSpec | None = None,
    train: DataSpec | None = None,
    head: str = "mlp",
    head_epochs: int = 20,
    perturbations: Sequence[str | os.PathLike[str]] | Mapping[str, PerturbationLike] = (),
    whitebox: Sequence[WhiteboxSpec | str] = (),
    whitebox_limit: int | None = None,
    public_encoder: EncoderSpec | None = None,
    image_size: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    clamp: bool = True,
    device: str | torch.device = "cpu",
    keep_per_sample: bool = True,
    log: Callable[[str], None] | None = None,
    examples: int = 0,
    backdoors: Mapping[str, tuple[Any, int | str]] | None = None,
) -> EvaluationRecord:
    """Evaluate a downstream model on the ``test`` selection under every attack.

    Args:
        test: the test data (split default ``test``; ``limit`` -> a class-stratified subset
            seeded with ``test.seed``).
        model: a defended classifier file or module (exclusive with ``encoder``).
        encoder: build the no-defense model: this frozen encoder + a ``head`` trained
            ``head_epochs`` epochs (seed ``seed``) on ``train`` (default: ``test``'s dataset,
            split ``train``).
        perturbations: universal perturbation files (row names: file stems) or objects by name.
        whitebox: per-sample attack specs (``pgd:eps=8/255,steps=10``), limited to
            ``whitebox_limit`` samples (a seeded class-stratified subset, seed ``seed``) unless a
            spec says otherwise.
        public_encoder: for ``on=public`` encoder attacks (default: ``encoder``, or the encoder
            named in the model file's record).
        image_size: test image size (default: the encoder's input size).
        seed, batch_size, clamp, device, keep_per_sample, log: see
            :func:`~encshield.evaluation.evaluate_classifier`.
        examples: keep the first ``examples`` test samples of every attack row (images, label,
            predictions) on the returned record, read with
            :func:`encshield.evaluation.evaluate.examples_of` (not in its JSON); the class names
            are in ``record.config["dataset"]["class_names"]``.
        backdoors: row name -> ``(trigger, target class)`` for ``backdoor`` rows (ASR);
            ``None``: the targets of this dataset that the public encoder's BadEncoder
            metadata names (none for a clean encoder); ``{}``: no backdoor rows.

    Returns:
        the :class:`~encshield.evaluation.EvaluationRecord`; ``config`` holds the encoder, the
        model file and its stored defense record, the data selections, the head, the
        perturbation files (sha256, metadata) and the specs; ``wall_time_s`` adds the stages.
    """
    if (model is None) == (encoder is None):
        raise ConfigError("give exactly one of model (a defended classifier) or encoder (to "
                          "train the no-defense head)")
    specs = [parse_whitebox(s) if isinstance(s, str) else s for s in whitebox]
    for spec in specs:  # every attack is known and configured right, before any work
        validate_spec(resolve_attack(spec.name), spec)
    dev = parse_device(device)
    timings: dict[str, float] = {}
    started_all = time.perf_counter()
    emit = log or (lambda line: None)

    started = time.perf_counter()
    context: dict[str, Any] = {"protocol": "dae", "seed": seed}
    public: ResolvedEncoder | None
    source: ResolvedEncoder | None  # the public encoder whose BadEncoder metadata names triggers
    if model is not None:
        classifier, model_info, stored = _stored_model(model, dev)
        context["encoder"] = describe_encoder(classifier.encoder)
        context["model"] = model_info
        context["head"] = {"defense": stored.get("name", "unknown"),
                           "loaded_from": model_info.get("path"),
                           **dict(model_info.get("head") or {})}
        public = (_public_encoder(public_encoder, stored)
                  if any(s.kind == "encoder_public" for s in specs) else None)
        source = (public or _public_encoder(public_encoder, stored)) if backdoors is None \
            else None
        size = image_size or int(cast(Encoder, classifier.encoder).input_size[-1])
    else:
        public = source = resolve_encoder(encoder)
        context["encoder"] = public.describe()
        size = image_size or public.input_size
    timings["load_model"] = time.perf_counter() - started

    started = time.perf_counter()
    test_data = test.select(size)
    timings["load_data"] = time.perf_counter() - started
    dataset_info: dict[str, Any] = {
        "name": test.name, "root": test.root, "image_size": size,
        "num_classes": test_data.num_classes,
        "class_names": list(test_data.dataset.class_names), "test": test_data.info,
    }
    emit(f"data: {test.text} {len(test_data.dataset)} images at {size} px "
         f"({timings['load_data']:.1f} s)")

    if model is None:
        assert public is not None
        from encshield.downstream import train_head

        started = time.perf_counter()
        train_spec = train or DataSpec(test.name, "train", root=test.root, seed=seed)
        train_data = train_spec.select(size)
        classifier, training = train_head(
            public.encoder, train_data.dataset.images, train_data.dataset.labels,
            train_data.num_classes, head=head, epochs=head_epochs, seed=seed, device=dev)
        dataset_info["train"] = train_data.info
        context["head"] = {"defense": "none", "name": head, "epochs": head_epochs,
                           "training_record": asdict(training)}
        timings["train_head"] = time.perf_counter() - started
        emit(f"no-defense head trained on {len(train_data.dataset)} images "
             f"({timings['train_head']:.1f} s)")
    else:
        out_dim = (context["model"].get("head") or {}).get("out_dim")
        if out_dim is not None and int(out_dim) != test_data.num_classes:
            raise ConfigError(f"the model has {out_dim} outputs but {test.name} has "
                              f"{test_data.num_classes} classes; evaluate on its downstream "
                              "dataset")
    context["dataset"] = dataset_info

    started = time.perf_counter()
    described: dict[str, dict[str, Any]]
    if isinstance(perturbations, Mapping):
        loaded, described = dict(perturbations), {}
    else:
        loaded, described = load_perturbations(perturbations)
    context["perturbation_files"] = described
    timings["load_perturbations"] = time.perf_counter() - started

    from encshield.workflows.backdoor import backdoor_rows

    triggers = backdoor_rows(None if source is None else source.encoder, test.name,
                             test_data.dataset.class_names, backdoors)
    record = evaluate_classifier(
        classifier, test_data.dataset.images, test_data.dataset.labels,
        perturbations=loaded, whitebox=specs, batch_size=batch_size, clamp=clamp, device=dev,
        whitebox_limit=whitebox_limit, subset_seed=seed, keep_per_sample=keep_per_sample,
        context=context, public_encoder=None if public is None else public.encoder, log=log,
        examples=examples, backdoors=triggers)
    if record.per_sample is not None and test_data.indices is not None:
        record.per_sample.test_indices = test_data.indices.tolist()
    record.wall_time_s = {**{k: round(v, 4) for k, v in timings.items()}, **record.wall_time_s,
                          "total": round(time.perf_counter() - started_all, 4)}
    return record
