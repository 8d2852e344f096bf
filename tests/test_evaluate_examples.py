"""Example images of an evaluation (``evaluate_classifier(..., examples=k)``): the first ``k``
samples of every attack row, with labels and predictions equal to the record's per-sample ones.

Kept apart from ``test_evaluate.py`` (already over the 600-line budget); reuses its smoke
classifier, its stand-in attack and its workflow fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from encshield.errors import ConfigError
from encshield.evaluation import evaluate_classifier
from encshield.evaluation.evaluate import RowExamples, examples_of
from encshield.evaluation.records import EvaluationRecord
from tests.test_evaluate import (  # noqa: F401  (fixtures are found by name)
    constant_perturbation,
    fgsm_stand_in,
    smoke,
    zero_perturbation,
)
from tests.test_evaluate_workflow import _no_defense, files  # noqa: F401

K = 4
WHITEBOX = "fgsm:eps=8/255,limit=9"


def _quantized(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1).mul(255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def with_examples(smoke: dict) -> EvaluationRecord:  # noqa: F811
    """Two universal rows and one white-box row on a 9-sample subset, batches of 3 (so the
    k = 4 kept samples span two batches), and the worst-case rows."""
    return evaluate_classifier(
        smoke["classifier"], smoke["test_x"], smoke["test_y"],
        perturbations={"zero": zero_perturbation(), "grey": constant_perturbation(0.5)},
        whitebox=[WHITEBOX], whitebox_attacks={"fgsm": fgsm_stand_in}, batch_size=3,
        examples=K)


def test_examples_cover_every_attack_row_in_record_order(with_examples: EvaluationRecord) -> None:
    kept = examples_of(with_examples)
    assert list(kept) == ["zero", "grey", WHITEBOX]  # worst-case rows have no images of their own
    assert {n: m.kind for n, m in with_examples.rows()}["worst-case all"] == "worst_case"
    for name, row in kept.items():
        assert isinstance(row, RowExamples) and row.row == name and len(row) == K
        assert row.kind == with_examples.metrics[name].kind
        assert row.clean.dtype == row.adversarial.dtype == torch.uint8
        assert row.clean.shape == row.adversarial.shape == (K, 3, 32, 32)


def test_labels_and_predictions_equal_the_per_sample_record(
        with_examples: EvaluationRecord) -> None:
    per = with_examples.per_sample
    assert per is not None
    for name, row in examples_of(with_examples).items():
        subset = per.indices.get(name)
        assert row.indices == (list(range(K)) if subset is None else subset[:K])
        assert row.labels == [per.labels[i] for i in row.indices]
        assert row.clean_pred == [per.clean_pred[i] for i in row.indices]
        assert row.adv_pred == per.adv_pred[name][:K]
    assert per.indices[WHITEBOX][:K] != list(range(K))  # the subset's first samples, not the set's


def test_images_are_the_rows_own_inputs(smoke: dict,  # noqa: F811
                                        with_examples: EvaluationRecord) -> None:
    kept = examples_of(with_examples)
    x = smoke["test_x"]
    for row in kept.values():
        assert torch.equal(row.clean, x[row.indices])
    assert torch.equal(kept["zero"].adversarial, x[:K])  # a zero perturbation changes nothing
    grey = constant_perturbation(0.5).apply(x[:K].float() / 255)
    assert torch.equal(kept["grey"].adversarial, _quantized(grey))
    wb = kept[WHITEBOX]
    expected = _quantized(fgsm_stand_in(smoke["classifier"], x[wb.indices].float() / 255,
                                        smoke["test_y"][wb.indices], eps=8 / 255))
    assert (wb.adversarial.int() - expected.int()).abs().max() <= 1  # same attack, same inputs
    assert (wb.adversarial.int() - wb.clean.int()).abs().max() <= 8 + 1  # within the budget


def test_examples_stay_out_of_the_json_and_the_config(smoke: dict,  # noqa: F811
                                                      with_examples: EvaluationRecord) -> None:
    plain = evaluate_classifier(
        smoke["classifier"], smoke["test_x"], smoke["test_y"],
        perturbations={"zero": zero_perturbation(), "grey": constant_perturbation(0.5)},
        whitebox=[WHITEBOX], whitebox_attacks={"fgsm": fgsm_stand_in}, batch_size=3)
    assert examples_of(plain) == {}
    assert plain.config_hash == with_examples.config_hash  # not part of what was run
    assert plain.metrics == with_examples.metrics  # and nothing else changed
    text = with_examples.to_json()
    assert "examples" not in json.loads(text) and len(text) < 2 * len(plain.to_json())
    assert examples_of(EvaluationRecord.from_json(text)) == {}
    assert EvaluationRecord.from_json(text) == with_examples  # the round trip still holds


def test_more_examples_than_samples_and_bad_values(smoke: dict) -> None:  # noqa: F811
    x, y = smoke["test_x"][:5], smoke["test_y"][:5]
    record = evaluate_classifier(smoke["classifier"], x, y,
                                 perturbations={"zero": zero_perturbation()}, examples=50)
    assert len(examples_of(record)["zero"]) == 5
    for bad in (-1, 2.5, True):
        with pytest.raises(ConfigError, match="examples must be an integer"):
            evaluate_classifier(smoke["classifier"], x, y, examples=bad)  # type: ignore[arg-type]


def test_evaluate_model_passes_examples_through(files: dict[str, Path]) -> None:  # noqa: F811
    record = _no_defense(files, examples=2)
    kept = examples_of(record)
    assert list(kept) == ["zero", "grey"] and all(len(r) == 2 for r in kept.values())
    per = record.per_sample
    assert kept["grey"].adv_pred == per.adv_pred["grey"][:2]
    assert record.config["dataset"]["class_names"]  # what the bench writes beside the images
    assert examples_of(_no_defense(files)) == {}
