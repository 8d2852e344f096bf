"""Typed records of the jobs (attack fits, defenses, encoder evaluations).

An evaluation of a classifier has its own record, :class:`encshield.evaluation.EvaluationRecord`.
Every record here is a dataclass with the provenance fields ``versions``, ``machine`` and
``created`` (:mod:`encshield.provenance`), converts to strict JSON with :meth:`Record.to_dict`
and back with :meth:`Record.from_dict` (unknown keys of older files are kept in ``details``),
and is written atomically by :meth:`Record.save`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from encshield.errors import ConfigError
from encshield.provenance import (
    machine_info,
    now_iso,
    to_jsonable,
    version_info,
    write_json,
)

__all__ = ["AttackRecord", "BackdoorEvalRecord", "BackdoorRecord", "DefenseRecord",
           "EncoderEvalRecord", "Record", "TuneRecord"]

R = TypeVar("R", bound="Record")


@dataclass
class Record:
    """Base of the workflow records: provenance fields and JSON round trip."""

    versions: dict[str, str] = field(default_factory=version_info)
    machine: dict[str, Any] = field(default_factory=machine_info)
    created: str = field(default_factory=now_iso)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (non-finite floats -> ``None``)."""
        return to_jsonable(asdict(self))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """Inverse of :meth:`to_dict`; keys this version does not know go to ``details``."""
        if not isinstance(data, dict):
            raise ConfigError(f"not a {cls.__name__}: expected a JSON object")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        values["details"] = {**dict(values.get("details") or {}), **extra}
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(f"not a {cls.__name__}: {error}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the record as strict JSON, atomically."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:
        """Read a record written by :meth:`save`."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read the record {path}: {error}") from None


@dataclass
class AttackRecord(Record):
    """What :func:`encshield.workflows.fit_attack` did.

    Attributes:
        attack: registered attack name; ``config``: its full resolved config.
        eps: L-inf budget (``None`` for patches); ``seed``: the fit's seed.
        encoder: the encoder's spec, file, sha256 and provenance.
        surrogate: the surrogate data (dataset, split, limit, seed, used images, subset).
        fit_seconds: time of the fit itself.
        objective: the attack objective before/after on a surrogate subset (lower = stronger).
        output: ``{"path", "sha256"}`` of the written perturbation, when saved.
    """

    attack: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    eps: float | None = None
    seed: int = 0
    encoder: dict[str, Any] = field(default_factory=dict)
    surrogate: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0
    objective: dict[str, Any] = field(default_factory=dict)
    output: dict[str, str] = field(default_factory=dict)


@dataclass
class DefenseRecord(Record):
    """What a defense did (:meth:`encshield.defenses.Defense.fit`,
    :func:`~encshield.workflows.fit_defense`).

    Attributes:
        name: registered defense name; ``config`` its full config and ``config_hash``.
        epochs: training epochs; ``losses``: mean training loss per epoch; ``loss_parts``: per
            epoch, the mean of each named loss term; ``train_accuracy``: clean training accuracy
            per epoch (or once, for a head on a frozen encoder).
        num_train, num_classes, seed, device, time_s: the run.
        summary: one human line of defense-specific results (e.g. Gen-AF's chosen layers).
        details: defense-specific entries (stage records, chosen layers ...).
        encoder, data: filled by the workflow (encoder spec/sha256, training data selection).
        output: ``{"path", "sha256"}`` of the written model, when saved.
    """

    name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    epochs: int = 0
    losses: list[float] = field(default_factory=list)
    loss_parts: list[dict[str, float]] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    num_train: int = 0
    num_classes: int = 0
    seed: int = 0
    device: str = "cpu"
    time_s: float = 0.0
    summary: str = ""
    encoder: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    output: dict[str, str] = field(default_factory=dict)


@dataclass
class EncoderEvalRecord(Record):
    """What :func:`encshield.workflows.evaluate_encoder` measured.

    Attributes:
        encoder: spec, file, sha256, provenance.
        train, test: the data selections (memory bank / probe training set; evaluation set).
        knn: ``{"k20": acc, "k200": acc}`` weighted kNN top-1 (fractions), ``knn_temperature``.
        linear: ``{"train_top1", "test_top1", "epochs"}`` of the linear probe (empty when
            skipped).
        seconds: wall time of the evaluation.
    """

    encoder: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)
    knn: dict[str, float] = field(default_factory=dict)
    knn_temperature: float = 0.07
    linear: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class TuneRecord(Record):
    """What :func:`encshield.workflows.tune_defense` tried and chose.

    Attributes:
        defense: the defense tuned; ``encoder``: the public encoder.
        train, val: the training and the validation selections (disjoint images).
        attack: the white-box spec of the validation RA.
        grid: dotted config keys -> candidate values; ``base``: overrides of every point.
        criterion: how the best point is chosen; ``baseline``: the no-defense model's
            ``val_ba``, ``val_ra``, ``fit_seconds`` on the same data.
        points: per point: ``point``, ``overrides``, ``val_ba``, ``val_ra``, ``score``,
            ``qualifies`` (BA floor met), ``fit_seconds``, ``train_accuracy``, ``losses``.
        chosen, chosen_point: the winning overrides (full and grid part); ``qualified``: whether
            it met the BA floor.
        seconds: wall time of the whole search.
    """

    defense: str = ""
    encoder: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    val: dict[str, Any] = field(default_factory=dict)
    attack: str = ""
    grid: dict[str, list[Any]] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)
    criterion: str = ""
    baseline: dict[str, Any] = field(default_factory=dict)
    points: list[dict[str, Any]] = field(default_factory=list)
    chosen: dict[str, Any] = field(default_factory=dict)
    chosen_point: dict[str, Any] = field(default_factory=dict)
    qualified: bool = False
    seconds: float = 0.0


@dataclass
class BackdoorRecord(Record):
    """What :func:`encshield.workflows.inject_backdoor` did.

    Attributes:
        encoder: the clean encoder's spec, file, sha256 and provenance.
        shadow: the shadow data (dataset, split, limit, seed, used images).
        targets: per target: trigger, class index, dataset, references and their source.
        config: the full :class:`~encshield.backdoor.BadEncoderConfig`.
        result: the training loop's result (exported encoder, sha256, steps, kNN monitor).
        seconds: wall time of this call (a resumed run: of this session only).
        output: ``{"path", "sha256"}`` of the copied backdoored encoder, when saved.
    """

    encoder: dict[str, Any] = field(default_factory=dict)
    shadow: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    output: dict[str, str] = field(default_factory=dict)


@dataclass
class BackdoorEvalRecord(Record):
    """What :func:`encshield.workflows.evaluate_backdoor` measured.

    Attributes:
        encoder, clean_encoder: the backdoored encoder and its clean counterpart (``None``:
            none was available, CA and ASR-B are ``None``).
        trigger: the trigger stamped on the test images; ``train``, ``test``: the data.
        head: how both downstream heads were trained.
        metrics: ``target``, ``ca``, ``ba``, ``asr``, ``asr_nontarget``, ``asr_b``,
            ``num_test`` (fractions; :class:`~encshield.backdoor.BackdoorMetrics`).
        labels: the test labels; ``predictions``: per-sample predictions
            (``backdoored_clean``, ``backdoored_triggered``, ``clean_clean``, ``clean_triggered``).
        seconds: wall time of the heads and the predictions.
    """

    encoder: dict[str, Any] = field(default_factory=dict)
    clean_encoder: dict[str, Any] | None = None
    trigger: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)
    head: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    labels: list[int] = field(default_factory=list)
    predictions: dict[str, list[int]] = field(default_factory=dict)
    seconds: float = 0.0
