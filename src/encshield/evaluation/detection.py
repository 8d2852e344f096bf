"""Detection of adversarial inputs: the :class:`Detector` interface, ZePAD's confidence-gap
detector and the detection section of an evaluation.

A :class:`Detector` scores images (higher = more likely adversarial) and flags a sample when its
score exceeds ``threshold`` (strict, the convention of :mod:`encshield.evaluation.metrics`). Any
model with a *confidence signal* exposes one: a model with ``roles`` (``mpae`` / ``bmp`` per
branch) and ``branch_logits(x)`` gets a :class:`ConfidenceGapDetector` through
:func:`detector_of` (with the settings in its ``detector_settings``), and any model may instead
carry a ready ``detector`` attribute.

ZePAD's DAE detection (Lei, Yang, Zhang, ICLR 2026; docs/methods.md, "ZePAD"; METHODS.md 3.4):
flag an input when the confidence of the adversarially fine-tuned MPAE branches exceeds the
confidence of the clean BMP branch by more than 0.1. The paper leaves open whether "MPAE
confidence" is the mean or the max over the MPAE branches and whether it is the raw ``m_i`` or
the amplified ``c_i`` of RFDM: both are settings (:class:`DetectorConfig`, defaults ``mean`` and
``raw``).

:func:`detection_summary` reports, for one attack row, on the mix of the row's clean and
adversarial inputs (each sample once clean, once attacked): detection accuracy at the threshold,
TPR and FPR at the threshold, AUROC, TPR at 5 % FPR (with its threshold) and a threshold sweep,
all from :mod:`encshield.evaluation.metrics`. :class:`DetectionCollector` gathers the scores
while :func:`~encshield.evaluation.evaluate_classifier` runs its rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict, Field

from encshield.evaluation.metrics import auroc, detection_accuracy, threshold_at_fpr, tpr_at_fpr
from encshield.images import to_float
from encshield.models.fusion import confidence_gap

__all__ = [
    "DEFAULT_SWEEP",
    "ConfidenceGapDetector",
    "DetectionCollector",
    "Detector",
    "DetectorConfig",
    "detection_summary",
    "detector_of",
]

#: Thresholds of the sweep reported with every detection row (the configured one is added).
DEFAULT_SWEEP = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)


class DetectorConfig(BaseModel):
    """Settings of ZePAD's confidence-gap detector (METHODS.md 3.4).

    Attributes:
        threshold: flag when ``gap > threshold`` (the paper: 0.1).
        statistic: MPAE confidence as the ``mean`` or the ``max`` over the MPAE branches.
        confidence: ``raw`` (``m_i``, max softmax) or ``amplified`` (RFDM's ``c_i``).
        k: the amplification of ``c_i`` when ``confidence="amplified"`` (``None``: RFDM's 3;
            ZePAD's defense fills in its fusion ``k``).
        fpr: the false-positive rate of the reported TPR (5 %).
        sweep: further thresholds reported with their accuracy, TPR and FPR.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    threshold: float = Field(0.1, allow_inf_nan=False)
    statistic: Literal["mean", "max"] = "mean"
    confidence: Literal["raw", "amplified"] = "raw"
    k: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    fpr: float = Field(0.05, ge=0.0, le=1.0)
    sweep: list[float] = Field(default_factory=lambda: list(DEFAULT_SWEEP))


@runtime_checkable
class Detector(Protocol):
    """Scores images float ``(N, C, H, W)`` in [0, 1]; flags ``score > threshold``."""

    threshold: float

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample scores ``(N,)`` (higher = more likely adversarial), detached, on the CPU."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the detector is and its settings (JSON-ready)."""
        ...


class ConfidenceSignal(Protocol):
    """A model with branch roles and branch logits (e.g. a
    :class:`~encshield.models.FusedClassifier`)."""

    roles: list[str]

    def branch_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        ...


class ConfidenceGapDetector:
    """ZePAD's detector: ``gap = conf(MPAE) - conf(BMP)`` per sample (see the module docstring).

    Args:
        model: a :class:`ConfidenceSignal` (roles and branch logits).
        config: a :class:`DetectorConfig` or a mapping of its fields.
    """

    def __init__(self, model: ConfidenceSignal, config: DetectorConfig | dict[str, Any] | None
                 = None) -> None:
        self.model = model
        self.config = (config if isinstance(config, DetectorConfig)
                       else DetectorConfig(**dict(config or {})))
        self.threshold = float(self.config.threshold)
        self.mpae = [i for i, r in enumerate(model.roles) if r == "mpae"]
        self.bmp = [i for i, r in enumerate(model.roles) if r == "bmp"]

    def gap(self, logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """The differentiable gap ``(N,)`` of given branch logits."""
        cfg = self.config
        return confidence_gap(logits, self.mpae, self.bmp, statistic=cfg.statistic,
                              confidence=cfg.confidence, k=3.0 if cfg.k is None else cfg.k)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """The gap of images ``x`` in [0, 1] ``(N,)``, without gradient, on the CPU."""
        with torch.no_grad():
            return self.gap(self.model.branch_logits(x)).detach().float().cpu()

    def describe(self) -> dict[str, Any]:
        return {"type": "confidence_gap", "mpae": self.mpae, "bmp": self.bmp,
                **self.config.model_dump(mode="json")}


def detector_of(model: Any) -> Detector | None:
    """The detector a model exposes: its ``detector`` attribute when that is a :class:`Detector`,
    else a :class:`ConfidenceGapDetector` when it has ``roles`` with at least one MPAE and one
    BMP branch, ``branch_logits`` and ``detector_settings`` (not ``None``); else ``None``."""
    own = getattr(model, "detector", None)
    if isinstance(own, Detector):
        return own
    roles = getattr(model, "roles", None)
    settings = getattr(model, "detector_settings", None)
    if (settings is None or not callable(getattr(model, "branch_logits", None))
            or not isinstance(roles, list) or "mpae" not in roles or "bmp" not in roles):
        return None
    return ConfidenceGapDetector(model, settings)


def _finite(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else float(value)


def detection_summary(clean: torch.Tensor, adversarial: torch.Tensor, threshold: float, *,
                      fpr: float = 0.05, sweep: Sequence[float] = DEFAULT_SWEEP
                      ) -> dict[str, Any]:
    """Detection metrics on the mix of clean and adversarial scores (``(n,)`` each).

    Returns:
        ``num_clean``, ``num_adversarial``, ``threshold``, ``accuracy`` (of ``score >
        threshold`` on the mix), ``tpr`` and ``fpr`` at the threshold, ``auroc``,
        ``tpr_at_fpr`` (at most ``fpr`` false positives, :func:`~encshield.evaluation.metrics.
        tpr_at_fpr`), its ``threshold_at_fpr`` (``None`` when infinite), ``target_fpr`` and
        ``sweep``: ``[{"threshold", "accuracy", "tpr", "fpr"}]`` over ``sweep`` plus the
        threshold.
    """
    clean, adversarial = clean.detach().float().cpu(), adversarial.detach().float().cpu()
    scores = torch.cat([clean, adversarial])
    truth = torch.cat([torch.zeros(clean.numel(), dtype=torch.bool),
                       torch.ones(adversarial.numel(), dtype=torch.bool)])

    def at(t: float) -> dict[str, float]:
        return {"threshold": float(t), "accuracy": detection_accuracy(scores, truth, t),
                "tpr": float((adversarial > t).float().mean()),
                "fpr": float((clean > t).float().mean())}

    point = at(threshold)
    return {"num_clean": int(clean.numel()), "num_adversarial": int(adversarial.numel()),
            **point, "auroc": auroc(scores, truth), "target_fpr": float(fpr),
            "tpr_at_fpr": tpr_at_fpr(scores, truth, fpr),
            "threshold_at_fpr": _finite(threshold_at_fpr(scores, truth, fpr)),
            "sweep": [at(t) for t in sorted({*map(float, sweep), float(threshold)})]}


class DetectionCollector:
    """Detector scores of an evaluation's clean inputs and of every attack row's inputs.

    ``clean(images)`` scores the whole test set once; ``observe(row, x)`` the adversarial
    inputs of a row batch by batch (in row order); :meth:`summary` gives the detection section
    of the record: detector description and :func:`detection_summary` per row, each row's
    adversarial scores against the clean scores of the same samples.
    """

    def __init__(self, detector: Detector, batch_size: int, device: torch.device | str,
                 fpr: float = 0.05, sweep: Sequence[float] = DEFAULT_SWEEP) -> None:
        self.detector = detector
        self.batch_size = int(batch_size)
        self.device = device
        self.fpr = float(fpr)
        self.sweep = list(sweep)
        self.clean_scores = torch.empty(0)
        self.rows: dict[str, list[torch.Tensor]] = {}

    def clean(self, images: torch.Tensor) -> None:
        """Score the test images (uint8 or float in [0, 1]) in batches."""
        parts = [self.detector.scores(to_float(images[i:i + self.batch_size], self.device))
                 for i in range(0, images.shape[0], self.batch_size)]
        self.clean_scores = torch.cat(parts) if parts else torch.empty(0)

    def observe(self, row: str, x: torch.Tensor) -> None:
        """Score one batch of row ``row``'s adversarial inputs."""
        self.rows.setdefault(row, []).append(self.detector.scores(x.detach()))

    def summary(self, indices: dict[str, torch.Tensor | None]) -> dict[str, Any]:
        """``{"detector", "rows": {row: detection_summary}}``; ``indices[row]`` are the row's
        sample positions (``None``: all test samples)."""
        rows: dict[str, Any] = {}
        for name, parts in self.rows.items():
            adversarial = torch.cat(parts)
            idx = indices.get(name)
            clean = self.clean_scores if idx is None else self.clean_scores[idx]
            if clean.numel() and adversarial.numel() == clean.numel():
                rows[name] = detection_summary(clean, adversarial, self.detector.threshold,
                                               fpr=self.fpr, sweep=self.sweep)
        return {"detector": self.detector.describe(), "rows": rows}
