"""Evaluation: encoder quality (kNN, linear probe) and, later, the attack/defense metrics."""

from encshield.evaluation.features import extract_features
from encshield.evaluation.knn import knn_accuracy, knn_predict
from encshield.evaluation.linear_probe import linear_probe

__all__ = ["extract_features", "knn_accuracy", "knn_predict", "linear_probe"]
