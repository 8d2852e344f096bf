"""Evaluation: encoder quality (kNN, linear probe), attack/defense metrics and the protocol.

* :mod:`~encshield.evaluation.metrics`: per-sample metrics (BA, RA, fooling rate, error rate,
  attack success rate, target hit rate, decline rate, detection accuracy, AUROC, TPR at FPR).
* :mod:`~encshield.evaluation.evaluate`: :func:`evaluate_classifier` (any classifier, every
  attack, one record), built on :mod:`~encshield.evaluation.specs` (per-sample attack specs and
  threat models), :mod:`~encshield.evaluation.subsets` (the seeded class-stratified subset
  rule), :mod:`~encshield.evaluation.predict` (batched predictions) and
  :mod:`~encshield.evaluation.describe` (JSON descriptions). The DAE experiment that builds the
  model first is :func:`encshield.workflows.evaluate_model`.
* :mod:`~encshield.evaluation.records`: :class:`EvaluationRecord` (JSON round trip).
"""

from encshield.evaluation.evaluate import evaluate_classifier
from encshield.evaluation.knn import knn_accuracy, knn_predict
from encshield.evaluation.linear_probe import linear_probe
from encshield.evaluation.metrics import (
    attack_success_rate,
    auroc,
    benign_accuracy,
    decline_rate,
    detection_accuracy,
    error_rate,
    fooling_rate,
    robust_accuracy,
    summarize,
    target_hit_rate,
    tpr_at_fpr,
)
from encshield.evaluation.records import (
    AttackMetrics,
    EvaluationRecord,
    PerSampleRecord,
)
from encshield.evaluation.specs import WhiteboxSpec, parse_whitebox
from encshield.evaluation.subsets import select_subset
from encshield.models.features import extract_features

__all__ = [
    "AttackMetrics",
    "EvaluationRecord",
    "PerSampleRecord",
    "WhiteboxSpec",
    "attack_success_rate",
    "auroc",
    "benign_accuracy",
    "decline_rate",
    "detection_accuracy",
    "error_rate",
    "evaluate_classifier",
    "extract_features",
    "fooling_rate",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "parse_whitebox",
    "robust_accuracy",
    "select_subset",
    "summarize",
    "target_hit_rate",
    "tpr_at_fpr",
]
