"""Evaluation: encoder quality (kNN, linear probe), attack/defense metrics and the protocol.

* :mod:`~encshield.evaluation.metrics`: per-sample metrics (BA, RA, fooling rate, error rate,
  attack success rate, target hit rate, decline rate, detection accuracy, AUROC, TPR at FPR).
* :mod:`~encshield.evaluation.protocol`: :func:`evaluate_classifier` (any classifier, every
  attack) and :func:`run_dae_protocol` (encoder -> no-defense head -> evaluation).
* :mod:`~encshield.evaluation.records`: :class:`EvaluationRecord` (JSON round trip).
"""

from encshield.evaluation.features import extract_features
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
from encshield.evaluation.protocol import (
    WhiteboxSpec,
    evaluate_classifier,
    parse_budget,
    parse_whitebox,
    run_dae_protocol,
    run_model_protocol,
    select_subset,
)
from encshield.evaluation.records import AttackMetrics, EvaluationRecord, PerSampleRecord

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
    "parse_budget",
    "parse_whitebox",
    "robust_accuracy",
    "run_dae_protocol",
    "run_model_protocol",
    "select_subset",
    "summarize",
    "target_hit_rate",
    "tpr_at_fpr",
]
