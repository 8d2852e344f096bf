"""Evaluation records: what was evaluated, how, on what, and the per-attack metrics, as JSON.

An :class:`EvaluationRecord` is one cell of a benchmark (one classifier x one test set x a list of
attacks). It round-trips exactly through JSON (:meth:`EvaluationRecord.to_json` /
:meth:`EvaluationRecord.from_json`, :meth:`~EvaluationRecord.save` /
:meth:`~EvaluationRecord.load`). Undefined metric values (``nan``, e.g. the attack success rate when
no sample is initially correct) are stored as ``null``/``None``, so the JSON is standard (no ``NaN``
tokens).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from encshield.errors import ConfigError
from encshield.evaluation.metrics import SUMMARY_KEYS
from encshield.provenance import atomic_write, machine_info, now_iso, version_info

__all__ = [
    "RECORD_SCHEMA_VERSION",
    "AttackKind",
    "AttackMetrics",
    "EvaluationRecord",
    "PerSampleRecord",
    "config_digest",
    "machine_info",
    "now_iso",
    "version_info",
]

#: Version of the JSON layout written by :meth:`EvaluationRecord.to_dict`.
RECORD_SCHEMA_VERSION = 1

#: ``clean`` (no attack), ``universal`` (a Perturbation fitted on the public encoder),
#: ``encoder_public`` / ``encoder_deployed`` (per-sample attack on the public or on the deployed
#: encoder alone, e.g. feature PGD), ``whitebox`` (per-sample attack on the classifier itself),
#: ``worst_case`` (per-sample worst case over a group of rows); see
#: :mod:`encshield.evaluation.specs`.
AttackKind = Literal["clean", "universal", "encoder_public", "encoder_deployed", "whitebox",
                     "backdoor", "worst_case"]

#: Keys left out of :func:`config_digest` (at any depth): machine-specific locations and
#: outcomes of the run (a head's training losses), which are not part of *what* was run.
UNHASHED_KEYS = frozenset({"path", "root", "output", "source_file", "training_record"})


_P = TypeVar("_P", bound="_PlainRecord")


@dataclass
class _PlainRecord:
    """Base of the flat dataclasses of a record: ``to_dict`` is :func:`dataclasses.asdict`,
    ``from_dict`` its inverse (keys this version does not know are ignored)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[_P], data: dict[str, Any]) -> _P:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


@dataclass
class AttackMetrics(_PlainRecord):
    """The metrics of one row of the results table (one attack, or the clean row).

    All rates are fractions in [0, 1] computed per sample over the row's ``num_samples`` samples
    (a white-box row may use a subset of the test set, so its ``benign_accuracy`` is the clean
    accuracy *on that subset*). ``None`` = not applicable (clean row) or undefined (``nan``).

    Attributes:
        kind: see :data:`AttackKind`.
        num_samples: number of test samples of this row.
        attack: the attack's registered name (``None`` for the clean and worst-case rows).
        eps: its budget (``None`` where it has none, e.g. a patch).
        benign_accuracy, robust_accuracy, fooling_rate, error_rate, attack_success_rate: see
            :mod:`encshield.evaluation.metrics`.
        max_linf: largest ``|x_adv - x|`` over all pixels actually fed to the classifier (after
            clamping), a budget audit; ``None`` for the clean row.
        subset: for rows on a subset of the test set: ``{"mode", "seed", "limit", "count",
            "class_counts"}`` (the indices are in :class:`PerSampleRecord`).
        target: backdoor rows: the target class; ``target_hit_rate``: the fraction of all
            triggered images classified as it (BadEncoder's ASR);
            ``target_hit_rate_nontarget``: the same over the images of other classes.
    """

    kind: str
    num_samples: int
    benign_accuracy: float | None = None
    robust_accuracy: float | None = None
    fooling_rate: float | None = None
    error_rate: float | None = None
    attack_success_rate: float | None = None
    max_linf: float | None = None
    subset: dict[str, Any] | None = None
    attack: str | None = None
    eps: float | None = None
    target: int | None = None
    target_hit_rate: float | None = None
    target_hit_rate_nontarget: float | None = None

    def __post_init__(self) -> None:
        for key in (*SUMMARY_KEYS, "max_linf", "eps", "target_hit_rate",
                    "target_hit_rate_nontarget"):
            setattr(self, key, _finite_or_none(getattr(self, key)))

    @classmethod
    def from_summary(
        cls, kind: str, num_samples: int, summary: dict[str, float], **extra: Any
    ) -> AttackMetrics:
        """From the dict of :func:`encshield.evaluation.metrics.summarize` (``nan`` -> ``None``)."""
        return cls(kind=kind, num_samples=num_samples,
                   benign_accuracy=summary.get("benign_accuracy"),
                   robust_accuracy=summary.get("robust_accuracy"),
                   fooling_rate=summary.get("fooling_rate"), error_rate=summary.get("error_rate"),
                   attack_success_rate=summary.get("attack_success_rate"), **extra)



@dataclass
class PerSampleRecord(_PlainRecord):
    """Per-sample predictions, for later analysis (e.g. which images every attack fools).

    Attributes:
        labels: true class of each evaluated test sample, ``(N,)``.
        clean_pred: clean prediction of each test sample, ``(N,)``.
        adv_pred: per attack row: its prediction on each of its samples (``(N,)``, or
            ``(len(indices[name]),)`` for rows on a subset).
        indices: per attack row on a subset: positions (into ``labels``) of its samples.
        test_indices: positions in the full test split of the evaluated samples, when the test
            split itself was subsampled (``limit_test``), else ``None``.
    """

    labels: list[int]
    clean_pred: list[int]
    adv_pred: dict[str, list[int]] = field(default_factory=dict)
    indices: dict[str, list[int]] = field(default_factory=dict)
    test_indices: list[int] | None = None

    def clean_correct(self) -> list[bool]:
        """Per-sample flag: clean prediction correct."""
        return [p == y for p, y in zip(self.clean_pred, self.labels)]

    def adv_correct(self, name: str) -> list[bool]:
        """Per-sample flag for attack row ``name``: adversarial prediction correct (on its
        samples)."""
        if name not in self.adv_pred:
            raise KeyError(f"no per-sample predictions for {name!r}; have {sorted(self.adv_pred)}")
        idx = self.indices.get(name)
        labels = self.labels if idx is None else [self.labels[i] for i in idx]
        return [p == y for p, y in zip(self.adv_pred[name], labels)]



@dataclass
class EvaluationRecord:
    """One evaluation: configuration, environment, timings and per-attack metrics.

    Attributes:
        config: everything needed to reproduce the run (encoder file/sha256/provenance, dataset,
            splits and sizes, head and its training record, perturbation files + sha256 +
            metadata, white-box specs, seeds, clamp, batch size).
        config_hash: :func:`config_digest` of ``config``.
        versions: ``{"encshield", "torch", "python", ...}``.
        machine: ``{"platform", "cpu", "cpu_count", "threads", "device", ...}``.
        wall_time_s: seconds per stage (``load_encoder``, ``load_data``, ``train_head``,
            ``clean``, one per attack row, ``total``).
        metrics: row name -> :class:`AttackMetrics`; the first row is ``clean``.
        created: ISO-8601 UTC time the record was made.
        per_sample: optional :class:`PerSampleRecord`.
        schema_version: :data:`RECORD_SCHEMA_VERSION`.
        detection: when the classifier exposes a detector
            (:func:`encshield.evaluation.detection.detector_of`): ``{"detector", "rows": {row:
            detection metrics on the clean + adversarial mix}}``; else ``None``.
        cost: inference cost (``inference_ms_per_image`` of the clean row, ``num_parameters``,
            ``branches``); ``None`` in records written before it existed.
    """

    config: dict[str, Any]
    config_hash: str
    versions: dict[str, str]
    machine: dict[str, Any]
    wall_time_s: dict[str, float]
    metrics: dict[str, AttackMetrics]
    created: str
    per_sample: PerSampleRecord | None = None
    schema_version: int = RECORD_SCHEMA_VERSION
    detection: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None

    # ------------------------------------------------------------------ convenience

    @property
    def benign_accuracy(self) -> float | None:
        """BA of the classifier on the whole evaluated test set (the ``clean`` row)."""
        row = self.metrics.get("clean")
        return None if row is None else row.benign_accuracy

    def rows(self) -> list[tuple[str, AttackMetrics]]:
        """``(name, metrics)`` in insertion order (clean first)."""
        return list(self.metrics.items())

    # ------------------------------------------------------------------ serialisation

    def to_dict(self, *, include_per_sample: bool = True) -> dict[str, Any]:
        """A JSON-serialisable dict (standard JSON: ``nan`` became ``None`` already)."""
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "created": self.created,
            "config_hash": self.config_hash,
            "config": self.config,
            "versions": self.versions,
            "machine": self.machine,
            "wall_time_s": self.wall_time_s,
            "metrics": {name: row.to_dict() for name, row in self.metrics.items()},
            "per_sample": (
                self.per_sample.to_dict()
                if include_per_sample and self.per_sample is not None else None
            ),
        }
        if self.detection is not None:
            out["detection"] = self.detection
        if self.cost is not None:
            out["cost"] = self.cost
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationRecord:
        """Inverse of :meth:`to_dict`; ConfigError naming a missing field."""
        required = (
            "config", "config_hash", "versions", "machine", "wall_time_s", "metrics", "created"
        )
        missing = [key for key in required if key not in data]
        if missing:
            raise ConfigError(f"not an evaluation record: missing field(s) {missing}")
        per_sample = data.get("per_sample")
        return cls(
            config=data["config"],
            config_hash=data["config_hash"],
            versions=data["versions"],
            machine=data["machine"],
            wall_time_s={k: float(v) for k, v in data["wall_time_s"].items()},
            metrics={name: AttackMetrics.from_dict(row) for name, row in data["metrics"].items()},
            created=data["created"],
            per_sample=PerSampleRecord.from_dict(per_sample) if per_sample else None,
            schema_version=int(data.get("schema_version", RECORD_SCHEMA_VERSION)),
            detection=data.get("detection"),
            cost=data.get("cost"),
        )

    def to_json(self, *, include_per_sample: bool = True, indent: int | None = 2) -> str:
        """Standard JSON text (``allow_nan=False``: no ``NaN``/``Infinity`` tokens)."""
        return json.dumps(
            self.to_dict(include_per_sample=include_per_sample), indent=indent, allow_nan=False
        )

    @classmethod
    def from_json(cls, text: str) -> EvaluationRecord:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str], *, include_per_sample: bool = True) -> Path:
        """Write the JSON record (atomically: a temporary file renamed into place)."""
        return atomic_write(path, self.to_json(include_per_sample=include_per_sample) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvaluationRecord:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------
# helpers for building records
# ------------------------------------------------------------------------------------------


def _strip_unhashed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_unhashed(v) for k, v in value.items() if k not in UNHASHED_KEYS}
    if isinstance(value, (list, tuple)):
        return [_strip_unhashed(v) for v in value]
    return value


def config_digest(config: dict[str, Any]) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of ``config``.

    Keys in :data:`UNHASHED_KEYS` (at any depth) are left out: where files live is not part of
    what was run (their sha256 values are), nor are outcomes such as a head's training losses.
    Equal digests = same experiment.
    """
    text = json.dumps(_strip_unhashed(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
