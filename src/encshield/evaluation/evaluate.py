"""Evaluate any classifier on a test set under every attack: one :class:`EvaluationRecord`.

Rows, in this order (the row name is the key of ``record.metrics``; its *kind* says the threat
model, see :mod:`encshield.evaluation.specs`):

1. ``clean``: BA over all test samples (one batched pass under ``torch.inference_mode``).
2. ``universal``: one per universal perturbation, predictions on ``perturbation.apply(x)`` for
   all test samples (fitted on the public encoder: the downstream-agnostic threat model).
3. ``encoder_public`` / ``encoder_deployed``: per-sample encoder attacks (``feature_pgd``)
   crafted on the public encoder (transferred) or on the deployed model's encoder (adaptive),
   classified by the classifier.
4. ``whitebox``: per-sample attacks on the classifier itself.
   ``backdoor``: one per (trigger, target class): predictions on the triggered test images; its
   ``target_hit_rate`` is BadEncoder's ASR (a trigger planted in the public encoder). Not part
   of the worst-case groups (another threat model).
5. ``worst_case``: per sample, correct only if correct under every row of a group, on the
   samples all those rows share: ``worst-case DAE`` (universal + ``encoder_public`` rows) and
   ``worst-case all`` (every attack row), when a group has two or more rows (``all`` only when
   it differs from ``DAE``).

Per-sample rows (3-4) run with autograd, outside inference mode, batch ``b`` seeded with
``seed + b``, on a fixed subset of ``spec.limit`` (or ``whitebox_limit``) test samples chosen by
:func:`~encshield.evaluation.subsets.select_subset`; their ``benign_accuracy`` is measured on that
subset. Every metric comes from :func:`encshield.evaluation.metrics.summarize` (per sample).

With ``examples=k`` every attack row (2-4) also keeps its first ``k`` samples (the first ``k`` of
its subset for subset rows) as :class:`RowExamples`: clean and adversarial images (uint8), label
and both predictions, taken from the adversarial inputs the row computed anyway (no extra attack
run). They travel on the record object (:func:`examples_of`), never inside its JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from encshield.errors import ConfigError
from encshield.evaluation.describe import (
    describe_callable,
    describe_classifier,
    describe_encoder,
    describe_perturbation,
)
from encshield.evaluation.detection import DEFAULT_SWEEP, DetectionCollector, detector_of
from encshield.evaluation.metrics import summarize, target_hit_rate
from encshield.evaluation.predict import inputs_unchecked, predict, predict_under_attack
from encshield.evaluation.records import (
    AttackMetrics,
    EvaluationRecord,
    PerSampleRecord,
    config_digest,
)
from encshield.evaluation.specs import (
    AttackFn,
    WhiteboxSpec,
    attack_kwargs,
    parse_whitebox,
    resolve_attack,
    validate_spec,
)
from encshield.evaluation.subsets import SUBSET_MODES, select_subset, subset_info
from encshield.provenance import machine_info, now_iso, to_jsonable, version_info

__all__ = ["EXAMPLES_ATTRIBUTE", "EncoderAttackFn", "PerturbationLike", "RowExamples",
           "TriggerLike", "WORST_CASE_ROWS", "evaluate_classifier", "examples_of"]

#: Name of the attribute of an :class:`EvaluationRecord` holding its example images (set by
#: :func:`evaluate_classifier`; absent on records read back from JSON).
EXAMPLES_ATTRIBUTE = "examples"

#: Names of the per-sample worst-case rows: row name -> the row kinds it combines.
WORST_CASE_ROWS: dict[str, tuple[str, ...]] = {
    "worst-case DAE": ("universal", "encoder_public"),
    "worst-case all": ("universal", "encoder_public", "encoder_deployed", "whitebox"),
}


class PerturbationLike(Protocol):
    """What the evaluation needs of an :class:`encshield.attacks.Perturbation`."""

    def apply(self, x: torch.Tensor, *, clamp: bool = True) -> torch.Tensor:
        """Images ``(N, C, H, W)`` in [0, 1] -> perturbed images (in [0, 1] when clamped)."""
        ...


#: ``fn(encoder, x) -> x_adv``: a configured per-sample attack on the encoder alone.
EncoderAttackFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RowExamples:
    """Example images of one attack row: its first ``k`` samples (of its subset, for rows on a
    subset of the test set), for a picture of what the attack did.

    Attributes:
        row, kind: the row's name and kind (see :mod:`encshield.evaluation.specs`).
        indices: positions of the samples in the evaluated test set (into
            ``record.per_sample.labels``).
        clean: the test images, uint8 ``(k, C, H, W)``.
        adversarial: the inputs the row classified, rounded to 8 bits, uint8 ``(k, C, H, W)``
            (clamped to [0, 1] first: the CGCL code's unclamped inputs leave it).
        labels: true classes; ``clean_pred`` / ``adv_pred``: the row's predictions on the clean
            and the adversarial inputs (those of ``record.per_sample``; the adversarial one is
            made on the unrounded input).
    """

    row: str
    kind: str
    indices: list[int]
    clean: torch.Tensor
    adversarial: torch.Tensor
    labels: list[int]
    clean_pred: list[int]
    adv_pred: list[int]

    def __len__(self) -> int:
        """Number of samples kept."""
        return len(self.indices)


def examples_of(record: EvaluationRecord) -> dict[str, RowExamples]:
    """``{row: RowExamples}`` kept by ``evaluate_classifier(..., examples=k)`` (rows in record
    order); ``{}`` for a record evaluated without examples or read back from JSON."""
    kept = getattr(record, EXAMPLES_ATTRIBUTE, None)
    return dict(kept) if isinstance(kept, dict) else {}


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images (uint8, or float in [0, 1]) -> uint8 on the CPU (floats clamped and rounded)."""
    images = images.detach()
    if images.dtype == torch.uint8:
        return images.cpu()
    return images.float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()


class _Capture:
    """The first ``k`` adversarial images of a row, kept batch after batch (uint8, CPU)."""

    def __init__(self, k: int) -> None:
        """Keep up to ``k`` images."""
        self.k = k
        self.parts: list[torch.Tensor] = []
        self.count = 0

    def keep(self, x_adv: torch.Tensor) -> None:
        """Keep the first images of a batch while fewer than ``k`` are kept."""
        need = self.k - self.count
        if need > 0 and isinstance(x_adv, torch.Tensor) and x_adv.dim() == 4:
            part = _to_uint8(x_adv[:need])
            self.parts.append(part)
            self.count += int(part.shape[0])

    def images(self) -> torch.Tensor:
        """The kept images, uint8 ``(n, C, H, W)``."""
        return torch.cat(self.parts) if self.parts else torch.empty(0, dtype=torch.uint8)


@dataclass
class _Rows:
    """The state of one evaluation: clean predictions, finished rows, timings, per-sample data."""

    classifier: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    device: torch.device | str
    subset_mode: str
    subset_seed: int
    emit: Callable[[str], None]
    clean_pred: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    metrics: dict[str, AttackMetrics] = field(default_factory=dict)
    predictions: dict[str, tuple[torch.Tensor | None, torch.Tensor]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    per_sample: PerSampleRecord | None = None
    examples: int = 0
    kept: dict[str, RowExamples] = field(default_factory=dict)
    detection: DetectionCollector | None = None

    def observe(self, name: str, x_adv: torch.Tensor) -> None:
        """Offer a batch of row ``name``'s adversarial inputs to the detector (if any)."""
        if self.detection is not None:
            self.detection.observe(name, x_adv)

    def subset(self, limit: int | None) -> tuple[torch.Tensor | None, dict[str, Any] | None]:
        idx = select_subset(self.labels, limit, seed=self.subset_seed, mode=self.subset_mode)
        if idx is None:
            return None, None
        return idx, subset_info(self.labels, idx, int(limit or 0), self.subset_seed,
                                self.subset_mode)

    def add(self, name: str, kind: str, adv_pred: torch.Tensor, idx: torch.Tensor | None,
            max_linf: float | None, subset: dict[str, Any] | None, seconds: float, *,
            attack: str | None = None, eps: float | None = None) -> None:
        """Record one attack row (metrics per sample over its samples)."""
        sub_clean = self.clean_pred if idx is None else self.clean_pred[idx]
        sub_labels = self.labels if idx is None else self.labels[idx]
        summary = summarize(sub_clean, adv_pred, sub_labels)
        self.metrics[name] = AttackMetrics.from_summary(kind, int(adv_pred.numel()), summary,
                                                        max_linf=max_linf, subset=subset,
                                                        attack=attack, eps=eps)
        self.predictions[name] = (idx, adv_pred)
        self.timings[name] = seconds
        if self.per_sample is not None:
            self.per_sample.adv_pred[name] = adv_pred.tolist()
            if idx is not None:
                self.per_sample.indices[name] = idx.tolist()
        self.emit(f"{name}: RA {summary['robust_accuracy']:.4f}, fooling rate "
                  f"{summary['fooling_rate']:.4f} on {adv_pred.numel()} samples ({seconds:.1f} s)")

    def keep_examples(self, name: str, kind: str, idx: torch.Tensor | None,
                      capture: _Capture) -> None:
        """Keep the captured first samples of row ``name`` (after :meth:`add`) with their
        labels and predictions."""
        if self.examples < 1:
            return
        k = min(capture.count, int(self.labels.shape[0] if idx is None else idx.numel()))
        positions = (torch.arange(int(self.labels.shape[0])) if idx is None else idx)[:k]
        _, adv_pred = self.predictions[name]
        self.kept[name] = RowExamples(
            row=name, kind=kind, indices=positions.tolist(),
            clean=_to_uint8(self.images[positions.to(self.images.device)]),
            adversarial=capture.images()[:k], labels=self.labels[positions].tolist(),
            clean_pred=self.clean_pred[positions].tolist(), adv_pred=adv_pred[:k].tolist())


def _clean_row(rows: _Rows) -> None:
    started = time.perf_counter()
    rows.clean_pred, _ = predict(rows.classifier, rows.images, batch_size=rows.batch_size,
                                 device=rows.device)
    seconds = time.perf_counter() - started
    n = int(rows.labels.shape[0])
    accuracy = summarize(rows.clean_pred, rows.clean_pred, rows.labels)["benign_accuracy"]
    rows.metrics["clean"] = AttackMetrics(kind="clean", num_samples=n, benign_accuracy=accuracy)
    rows.timings["clean"] = seconds
    if rows.per_sample is not None:
        rows.per_sample.clean_pred = rows.clean_pred.tolist()
    rows.emit(f"clean: BA {accuracy:.4f} on {n} samples ({seconds:.1f} s)")


def _universal_row(rows: _Rows, name: str, perturbation: PerturbationLike, clamp: bool) -> None:
    started = time.perf_counter()
    capture = _Capture(rows.examples)

    def apply(x: torch.Tensor) -> torch.Tensor:
        x_t = perturbation.apply(x, clamp=clamp)
        capture.keep(x_t)
        rows.observe(name, x_t)
        return x_t

    with inputs_unchecked(rows.classifier, enabled=not clamp):
        adv_pred, max_linf = predict(rows.classifier, rows.images, batch_size=rows.batch_size,
                                     device=rows.device, transform=apply)
    meta = getattr(perturbation, "metadata", None) or {}
    rows.add(name, "universal", adv_pred, None, max_linf, None, time.perf_counter() - started,
             attack=meta.get("attack"), eps=getattr(perturbation, "eps", None))
    rows.keep_examples(name, "universal", None, capture)


class TriggerLike(Protocol):
    """A backdoor trigger: ``apply(x) -> x'`` on float batches in [0, 1]."""

    def apply(self, images: torch.Tensor) -> torch.Tensor: ...


def _describe_trigger(trigger: TriggerLike) -> Any:
    to_dict = getattr(trigger, "to_dict", None)
    return to_dict() if callable(to_dict) else type(trigger).__name__


def _backdoor_row(rows: _Rows, name: str, trigger: TriggerLike, target: int) -> None:
    """Predictions on every triggered test image; the row's ``target_hit_rate`` is the ASR."""
    started = time.perf_counter()
    capture = _Capture(rows.examples)

    def apply(x: torch.Tensor) -> torch.Tensor:
        x_t = trigger.apply(x)
        capture.keep(x_t)
        return x_t

    adv_pred, max_linf = predict(rows.classifier, rows.images, batch_size=rows.batch_size,
                                 device=rows.device, transform=apply)
    rows.add(name, "backdoor", adv_pred, None, max_linf, None, time.perf_counter() - started,
             attack="backdoor")
    metrics = rows.metrics[name]
    metrics.target = int(target)
    metrics.target_hit_rate = target_hit_rate(adv_pred, int(target))
    nontarget = target_hit_rate(adv_pred, int(target), rows.labels, exclude_target_class=True)
    metrics.target_hit_rate_nontarget = None if nontarget != nontarget else nontarget
    rows.emit(f"{name}: ASR (target {int(target)}) {metrics.target_hit_rate:.4f}")
    rows.keep_examples(name, "backdoor", None, capture)


def _per_sample_row(rows: _Rows, name: str, kind: str, limit: int | None,
                    attack: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
                    spec: WhiteboxSpec | None = None) -> None:
    """A row of adversarial examples made per batch by ``attack(x, y, batch_index)``."""
    started = time.perf_counter()
    idx, subset = rows.subset(limit)
    images = rows.images if idx is None else rows.images[idx]
    labels = rows.labels if idx is None else rows.labels[idx]
    capture = _Capture(rows.examples)

    def kept(x: torch.Tensor, y: torch.Tensor, b: int) -> torch.Tensor:
        """The row's attack, its first adversarial images kept."""
        x_adv = attack(x, y, b)
        capture.keep(x_adv)
        rows.observe(name, x_adv)
        return x_adv

    adv_pred, max_linf = predict_under_attack(kept, rows.classifier, images, labels,
                                              batch_size=rows.batch_size, device=rows.device)
    rows.add(name, kind, adv_pred, idx, max_linf, subset, time.perf_counter() - started,
             attack=None if spec is None else spec.name, eps=None if spec is None else spec.eps)
    rows.keep_examples(name, kind, idx, capture)


def _spec_attack(spec: WhiteboxSpec, fn: AttackFn, classifier: nn.Module,
                 public_encoder: nn.Module | None
                 ) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    kwargs = attack_kwargs(spec)
    if spec.is_encoder_attack:
        target = public_encoder if spec.on == "public" else classifier.encoder

        def on_encoder(x: torch.Tensor, y: torch.Tensor, b: int) -> torch.Tensor:
            return fn(target, x, eps=spec.eps, seed=spec.seed + b, **kwargs)  # type: ignore[no-any-return]

        return on_encoder

    def on_classifier(x: torch.Tensor, y: torch.Tensor, b: int) -> torch.Tensor:
        return fn(classifier, x, y, eps=spec.eps, seed=spec.seed + b, **kwargs)  # type: ignore[no-any-return]

    return on_classifier


def _worst_case_rows(rows: _Rows) -> None:
    """Per-sample worst case over each group of rows (:data:`WORST_CASE_ROWS`), on the samples
    every row of the group evaluated: a sample counts as robust only if every row classifies it
    correctly; its worst-case prediction is, by priority, a row's wrong prediction that differs
    from the clean one, any row's wrong prediction, else the (correct) label."""
    n = int(rows.labels.shape[0])
    done: list[list[str]] = []
    for name, kinds in WORST_CASE_ROWS.items():
        members = [r for r, m in rows.metrics.items() if m.kind in kinds]
        if len(members) < 2 or members in done:  # "all" = "DAE" when no adaptive row ran
            continue
        done.append(members)
        covered = torch.ones(n, dtype=torch.bool)
        chosen = rows.labels.clone()
        score = torch.zeros(n, dtype=torch.int8)  # 0 correct, 1 wrong, 2 wrong and changed
        for member in members:
            idx, pred = rows.predictions[member]
            seen = torch.zeros(n, dtype=torch.bool)
            full = rows.labels.clone()
            where = slice(None) if idx is None else idx
            seen[where], full[where] = True, pred
            covered &= seen
            mine = ((full != rows.labels).to(torch.int8)
                    + ((full != rows.labels) & (full != rows.clean_pred)).to(torch.int8))
            better = mine > score
            chosen[better], score[better] = full[better], mine[better]
        idx = covered.nonzero().squeeze(1)
        subset = {"rows": members, "count": int(idx.numel())}
        rows.add(name, "worst_case", chosen[idx], None if idx.numel() == n else idx, None,
                 subset, 0.0)
        if rows.per_sample is not None:  # derived from the member rows: not stored twice
            rows.per_sample.adv_pred.pop(name, None)
            rows.per_sample.indices.pop(name, None)


def _cost(classifier: nn.Module, rows: _Rows) -> dict[str, Any]:
    """Inference cost of the evaluated model: clean-row milliseconds per image (batched,
    ``torch.inference_mode``), parameters and branches (ZePAD's reviewers asked for its 3x cost
    against the single-encoder model; docs/methods.md, "ZePAD")."""
    n = max(int(rows.labels.shape[0]), 1)
    roles = getattr(classifier, "roles", None)
    return {"inference_ms_per_image": 1000.0 * rows.timings.get("clean", 0.0) / n,
            "num_parameters": int(sum(p.numel() for p in classifier.parameters())),
            "branches": len(roles) if isinstance(roles, list) else 1,
            "batch_size": rows.batch_size}


def _check_test_set(images: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ConfigError(
            "test_images must be a tensor (N, C, H, W), got "
            f"{getattr(images, 'shape', type(images))}"
        )
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ConfigError(
            f"test_images must be uint8 (0..255) or float in [0, 1], got {images.dtype}"
        )
    if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
        raise ConfigError(
            f"test_labels must be int64 (N,) with N = {images.shape[0]} test images, got "
            f"{tuple(getattr(labels, 'shape', ()))}"
        )
    if images.shape[0] == 0:
        raise ConfigError("the test set is empty")


def _plan(specs: list[WhiteboxSpec], perturbations: Mapping[str, Any],
          encoder_attacks: Mapping[str, Any], classifier: nn.Module,
          public_encoder: nn.Module | None,
          overrides: Mapping[str, AttackFn] | None) -> dict[str, AttackFn]:
    """Resolve and validate every attack before the (possibly long) evaluation starts."""
    names = ["clean", *perturbations, *encoder_attacks, *(s.row_name for s in specs),
             *WORST_CASE_ROWS]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"attack row names must be unique; repeated: {duplicates}")
    resolved = {spec.row_name: resolve_attack(spec.name, overrides) for spec in specs}
    for spec in specs:
        validate_spec(resolved[spec.row_name], spec)
    deployed = (encoder_attacks or any(s.kind == "encoder_deployed" for s in specs))
    if deployed and not isinstance(getattr(classifier, "encoder", None), nn.Module):
        raise ConfigError(
            f"encoder attacks on the deployed model need classifier.encoder; "
            f"{type(classifier).__name__} has none"
        )
    if any(s.kind == "encoder_public" for s in specs) and public_encoder is None:
        raise ConfigError("on=public encoder attacks need the public encoder (public_encoder=)")
    return resolved


def evaluate_classifier(
    classifier: nn.Module,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    perturbations: Mapping[str, PerturbationLike] | None = None,
    encoder_attacks: Mapping[str, EncoderAttackFn] | None = None,
    whitebox: Sequence[WhiteboxSpec | str] = (),
    batch_size: int = 256,
    clamp: bool = True,
    device: torch.device | str = "cpu",
    whitebox_limit: int | None = None,
    subset_mode: str = "stratified",
    subset_seed: int = 0,
    keep_per_sample: bool = True,
    context: Mapping[str, Any] | None = None,
    whitebox_attacks: Mapping[str, AttackFn] | None = None,
    public_encoder: nn.Module | None = None,
    log: Callable[[str], None] | None = None,
    examples: int = 0,
    backdoors: Mapping[str, tuple[TriggerLike, int]] | None = None,
) -> EvaluationRecord:
    """Evaluate ``classifier`` on a test set under every given attack (rows: module docstring).

    Args:
        classifier: images float ``(n, C, H, W)`` in [0, 1] -> logits ``(n, num_classes)``; any
            module (no-defense model, defended model, ensemble). Evaluated in eval mode (its
            mode is restored afterwards).
        test_images: uint8 ``(N, C, H, W)`` (0..255) or float in [0, 1].
        test_labels: int64 ``(N,)``.
        perturbations: row name -> universal perturbation (anything with ``apply(x, clamp)``).
        encoder_attacks: row name -> ``fn(encoder, x) -> x_adv`` (already configured), run on
            the deployed model's encoder.
        whitebox: :class:`WhiteboxSpec` s or spec strings (``"pgd:eps=8/255,steps=10"``).
        batch_size: images per forward pass / per attack batch.
        clamp: clamp ``x + delta`` to [0, 1] (default; ``False`` = the CGCL code's unclamped
            evaluation: the encoder's [0, 1] input check is then switched off for those rows).
        device: where the model and batches run.
        whitebox_limit: default number of test samples of per-sample rows (``None`` = all).
        subset_mode, subset_seed: how limited rows choose their samples.
        keep_per_sample: store per-sample predictions in ``record.per_sample``.
        context: extra configuration merged into ``record.config``.
        whitebox_attacks: name -> attack function, consulted before the registries.
        public_encoder: the public pre-trained encoder (for ``on=public`` encoder attacks).
        log: called with one line per finished row (e.g. ``print``).
        examples: keep the first ``examples`` samples of every attack row (clean and
            adversarial images, label, predictions; see :class:`RowExamples`) on the record
            object, read with :func:`examples_of` (not part of its JSON). ``0``: none.
        backdoors: row name -> ``(trigger, target class)``: a ``backdoor`` row each.
    Returns:
        an :class:`~encshield.evaluation.records.EvaluationRecord`.
    """
    _check_test_set(test_images, test_labels)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
        raise ConfigError(f"examples must be an integer >= 0 (images kept per attack row), "
                          f"got {examples!r}")
    if subset_mode not in SUBSET_MODES:
        raise ConfigError(
            f"subset_mode {subset_mode!r} is not allowed; allowed values: {', '.join(SUBSET_MODES)}"
        )
    specs = [parse_whitebox(s) if isinstance(s, str) else s for s in whitebox]
    perturbations = dict(perturbations or {})
    encoder_attacks = dict(encoder_attacks or {})
    backdoors = dict(backdoors or {})
    resolved = _plan(specs, perturbations, encoder_attacks, classifier, public_encoder,
                     whitebox_attacks)
    labels = test_labels.detach().cpu().to(torch.int64)
    rows = _Rows(classifier, test_images, labels, batch_size, device, subset_mode, subset_seed,
                 log or (lambda line: None),
                 per_sample=PerSampleRecord(labels=labels.tolist(), clean_pred=[])
                 if keep_per_sample else None, examples=examples)
    was_training = classifier.training
    classifier.eval()
    classifier.to(device)
    if public_encoder is not None:
        public_encoder.eval().to(device)
    detector = detector_of(classifier)
    if detector is not None:
        settings = getattr(detector, "config", None)
        rows.detection = DetectionCollector(
            detector, batch_size, device, fpr=getattr(settings, "fpr", 0.05),
            sweep=getattr(settings, "sweep", None) or DEFAULT_SWEEP)
    started_all = time.perf_counter()
    try:
        _clean_row(rows)
        if rows.detection is not None:
            started = time.perf_counter()
            rows.detection.clean(test_images)
            rows.timings["detection_clean"] = time.perf_counter() - started
        for name, perturbation in perturbations.items():
            _universal_row(rows, name, perturbation, clamp)
        for name, (trigger, target) in backdoors.items():
            _backdoor_row(rows, name, trigger, target)
        for name, fn in encoder_attacks.items():
            encoder = classifier.encoder
            _per_sample_row(rows, name, "encoder_deployed", whitebox_limit,
                            lambda x, y, b, fn=fn, encoder=encoder: fn(encoder, x))  # type: ignore[misc]
        for spec in sorted(specs, key=lambda s: not s.is_encoder_attack):  # encoder rows first
            limit = whitebox_limit if spec.limit is None else spec.limit
            attack = _spec_attack(spec, resolved[spec.row_name], classifier, public_encoder)
            _per_sample_row(rows, spec.row_name, spec.kind, limit, attack, spec)
        _worst_case_rows(rows)
    finally:
        classifier.train(was_training)
    order = ["clean", *perturbations, *encoder_attacks,
             *(s.row_name for s in specs if s.is_encoder_attack),
             *(s.row_name for s in specs if not s.is_encoder_attack), *backdoors,
             *(name for name in WORST_CASE_ROWS if name in rows.metrics)]
    rows.timings["evaluation_total"] = time.perf_counter() - started_all
    evaluation_config: dict[str, Any] = {
        "classifier": describe_classifier(classifier),
        "public_encoder": None if public_encoder is None else describe_encoder(public_encoder),
        "num_test": int(labels.shape[0]),
        "test_image_size": list(test_images.shape[1:]),
        "batch_size": batch_size,
        "clamp": clamp,
        "perturbations": {name: describe_perturbation(p) for name, p in perturbations.items()},
        "encoder_attacks": {name: describe_callable(fn) for name, fn in encoder_attacks.items()},
        "whitebox": [spec.to_dict() for spec in specs],
        "whitebox_limit": whitebox_limit,
        "subset_mode": subset_mode,
        "subset_seed": subset_seed,
        "metric_convention": "per-sample over each row's samples (not a mean of batch means)",
    }
    if backdoors:  # only then: the digests of evaluations without backdoor rows stay as they were
        evaluation_config["backdoors"] = {
            name: {"trigger": _describe_trigger(t), "target": int(target)}
            for name, (t, target) in backdoors.items()}
    config: dict[str, Any] = to_jsonable(dict(context or {}))
    config["evaluation"] = to_jsonable(evaluation_config)
    record = EvaluationRecord(
        config=config,
        config_hash=config_digest(config),
        versions=version_info(),
        machine=machine_info(device),
        wall_time_s={k: round(v, 4) for k, v in rows.timings.items()},
        metrics={name: rows.metrics[name] for name in order},
        created=now_iso(),
        per_sample=rows.per_sample,
        detection=None if rows.detection is None else rows.detection.summary(
            {name: idx for name, (idx, _) in rows.predictions.items()}),
        cost=_cost(classifier, rows),
    )
    # on the object only: the JSON (to_dict) lists its fields explicitly and stays small
    setattr(record, EXAMPLES_ATTRIBUTE, {n: rows.kept[n] for n in order if n in rows.kept})
    return record
