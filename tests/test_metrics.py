"""Metrics: hand-computed values, brute-force loop references, validation, documented
conventions."""

from __future__ import annotations

import math
import random

import pytest
import torch

from encshield.evaluation import metrics as m

# A tiny case used by several tests (hand-computed below):
#   index:   0  1  2  3  4  5
LABELS = [0, 1, 2, 3, 0, 1]
CLEAN = [0, 1, 2, 0, 1, 1]  # correct: T T T F F T  -> 4 of 6
ADV = [0, 2, 2, 1, 1, 0]  # correct: T F T F F F  -> 2 of 6


# ------------------------------------------------------------------------------------------
# hand-computed values
# ------------------------------------------------------------------------------------------


def test_benign_and_robust_accuracy_by_hand() -> None:
    assert m.benign_accuracy(CLEAN, LABELS) == pytest.approx(4 / 6)  # indices 0, 1, 2, 5
    assert m.robust_accuracy(ADV, LABELS) == pytest.approx(2 / 6)  # indices 0, 2


def test_fooling_rate_by_hand() -> None:
    # clean vs adv: 0=0, 1!=2, 2=2, 0!=1, 1=1, 1!=0 -> changed at 1, 3, 5 -> 3 / 6.
    # Index 3 was already wrong (0 -> 1 both wrong): the fooling rate counts it anyway.
    assert m.fooling_rate(CLEAN, ADV) == pytest.approx(3 / 6)


def test_error_rate_by_hand() -> None:
    # adv wrong at 1, 3, 4, 5 -> 4 / 6 = 1 - RA
    assert m.error_rate(ADV, LABELS) == pytest.approx(4 / 6)
    assert m.error_rate(ADV, LABELS) == pytest.approx(1 - m.robust_accuracy(ADV, LABELS))


def test_attack_success_rate_by_hand() -> None:
    # initially correct: 0, 1, 2, 5 (4 samples); of these adv wrong at 1 and 5 -> 2 / 4 = 0.5
    assert m.attack_success_rate(CLEAN, ADV, LABELS) == pytest.approx(0.5)


def test_attack_success_rate_undefined_without_correct_samples() -> None:
    # no sample is correct on clean inputs: nothing can be flipped -> nan (documented)
    value = m.attack_success_rate([1, 0], [1, 1], [0, 1])
    assert isinstance(value, float) and math.isnan(value)


def test_target_hit_rate_by_hand() -> None:
    # adv == 1 at indices 3, 4 -> 2 / 6 over ALL samples (BadEncoder: includes the target class)
    assert m.target_hit_rate(ADV, 1) == pytest.approx(2 / 6)
    assert m.target_hit_rate(ADV, 1, LABELS) == pytest.approx(2 / 6)
    # excluding samples whose label is 1 (indices 1, 5): left 0, 2, 3, 4 with adv 0, 2, 1, 1
    # -> 2 / 4
    assert m.target_hit_rate(ADV, 1, LABELS, exclude_target_class=True) == pytest.approx(0.5)
    # a per-sample target works too: targets 0,0,0,0,0,0 -> adv == 0 at 0, 5 -> 2 / 6
    assert m.target_hit_rate(ADV, torch.zeros(6, dtype=torch.long)) == pytest.approx(2 / 6)
    # everything excluded -> nan
    assert math.isnan(m.target_hit_rate([1, 1], 1, [1, 1], exclude_target_class=True))
    with pytest.raises(ValueError, match="needs labels"):
        m.target_hit_rate(ADV, 1, exclude_target_class=True)


def test_decline_rate_by_hand() -> None:
    # (BA - RA) / BA = (4/6 - 2/6) / (4/6) = 0.5
    assert m.decline_rate(4 / 6, 2 / 6) == pytest.approx(0.5)
    assert m.decline_rate(0.8, 0.8) == 0.0
    assert m.decline_rate(0.5, 0.6) == pytest.approx(-0.2)  # an attack that helps: reported as is
    assert math.isnan(m.decline_rate(0.0, 0.0))
    with pytest.raises(ValueError, match="ba"):
        m.decline_rate(1.5, 0.2)


def test_summarize_by_hand() -> None:
    summary = m.summarize(CLEAN, ADV, LABELS)
    assert tuple(summary) == m.SUMMARY_KEYS
    assert summary == pytest.approx({
        "benign_accuracy": 4 / 6,
        "robust_accuracy": 2 / 6,
        "fooling_rate": 3 / 6,
        "error_rate": 4 / 6,
        "attack_success_rate": 2 / 4,
    })
    assert all(type(v) is float for v in summary.values())


def test_detection_accuracy_by_hand() -> None:
    scores = [0.9, 0.2, 0.6, 0.4, 0.5]
    truth = [True, False, False, True, True]
    # flagged iff score > 0.5: T F T F F (0.5 itself is NOT flagged: strict rule)
    # correct vs truth:        T T F F F -> 2 / 5
    assert m.detection_accuracy(scores, truth, threshold=0.5) == pytest.approx(2 / 5)
    # threshold 0.45: flagged T F T F T -> correct T T F F T -> 3 / 5
    assert m.detection_accuracy(scores, truth, threshold=0.45) == pytest.approx(3 / 5)


def test_auroc_known_cases() -> None:
    truth = [0, 0, 0, 1, 1, 1]
    assert m.auroc([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], truth) == 1.0  # perfect separation
    assert m.auroc([0.7, 0.8, 0.9, 0.1, 0.2, 0.3], truth) == 0.0  # reversed
    assert m.auroc([0.5] * 6, truth) == 0.5  # all ties
    # positives [0.8, 0.4], negatives [0.4, 0.1]: pairs (0.8,0.4)=1, (0.8,0.1)=1, (0.4,0.4)=0.5,
    # (0.4,0.1)=1 -> 3.5 / 4 = 0.875
    assert m.auroc([0.8, 0.4, 0.4, 0.1], [1, 1, 0, 0]) == pytest.approx(0.875)


def test_tpr_at_fpr_by_hand() -> None:
    negatives = [float(v) for v in range(20)]  # 0 .. 19
    positives = [18.0, 18.5, 20.0, 5.0]
    scores = negatives + positives
    truth = [False] * 20 + [True] * 4
    # fpr 0.05 of 20 clean samples -> at most floor(1.0) = 1 false positive -> t = the 2nd largest
    # clean score = 18; rule score > 18 flags the clean 19 (FPR 1/20) and positives 18.5, 20
    # (18.0 is tied with t and not flagged) -> TPR 2 / 4
    assert m.threshold_at_fpr(scores, truth, 0.05) == 18.0
    assert m.tpr_at_fpr(scores, truth, 0.05) == pytest.approx(0.5)
    # fpr 0 -> t = 19 (the largest clean score): only 20.0 is above -> 1 / 4
    assert m.tpr_at_fpr(scores, truth, 0.0) == pytest.approx(0.25)
    # fpr 1 -> t = -inf: everything flagged
    assert m.tpr_at_fpr(scores, truth, 1.0) == 1.0
    # the detection accuracy at the same threshold uses the same rule:
    # clean: 19 flagged (1 wrong of 20); adv: 2 of 4 flagged -> correct 19 + 2 = 21 of 24
    assert m.detection_accuracy(scores, truth, 18.0) == pytest.approx(21 / 24)


def test_mean_of_batch_means_differs_from_per_sample() -> None:
    # Why metrics are per sample: 5 samples in batches of 4, correct = 1 1 1 1 | 0.
    # Per sample: 4 / 5 = 0.8. The CGCL code's mean of batch means: (4/4 + 0/1) / 2 = 0.5 -- the
    # lone sample of the last batch weighs as much as the four others together.
    labels = [0, 0, 0, 0, 0]
    pred = [0, 0, 0, 0, 1]
    assert m.benign_accuracy(pred, labels) == pytest.approx(0.8)
    assert m.mean_of_batch_accuracies(pred, labels, batch_size=4) == pytest.approx(0.5)
    # with equal batches both agree
    assert (m.mean_of_batch_accuracies(pred[:4], labels[:4], 2)
            == m.benign_accuracy(pred[:4], labels[:4]))


# ------------------------------------------------------------------------------------------
# brute-force references on random inputs
# ------------------------------------------------------------------------------------------


def _brute(clean: list[int], adv: list[int], y: list[int], target: int) -> dict[str, float]:
    n = len(y)
    ba = sum(1 for i in range(n) if clean[i] == y[i]) / n
    ra = sum(1 for i in range(n) if adv[i] == y[i]) / n
    fr = sum(1 for i in range(n) if adv[i] != clean[i]) / n
    er = sum(1 for i in range(n) if adv[i] != y[i]) / n
    correct = [i for i in range(n) if clean[i] == y[i]]
    asr = sum(1 for i in correct if adv[i] != y[i]) / len(correct) if correct else math.nan
    thr = sum(1 for i in range(n) if adv[i] == target) / n
    kept = [i for i in range(n) if y[i] != target]
    thr_ex = sum(1 for i in kept if adv[i] == target) / len(kept) if kept else math.nan
    return {"ba": ba, "ra": ra, "fr": fr, "er": er, "asr": asr, "thr": thr, "thr_ex": thr_ex}


@pytest.mark.parametrize("seed", range(8))
def test_classification_metrics_match_brute_force(seed: int) -> None:
    r = random.Random(seed)
    n = r.randint(1, 300)
    k = r.randint(2, 6)
    y = [r.randrange(k) for _ in range(n)]
    clean = [yi if r.random() < 0.6 else r.randrange(k) for yi in y]
    adv = [ci if r.random() < 0.5 else r.randrange(k) for ci in clean]
    target = r.randrange(k)
    ref = _brute(clean, adv, y, target)
    tc, ta, ty = torch.tensor(clean), torch.tensor(adv), torch.tensor(y)
    assert m.benign_accuracy(tc, ty) == pytest.approx(ref["ba"], abs=1e-12)
    assert m.robust_accuracy(ta, ty) == pytest.approx(ref["ra"], abs=1e-12)
    assert m.fooling_rate(tc, ta) == pytest.approx(ref["fr"], abs=1e-12)
    assert m.error_rate(ta, ty) == pytest.approx(ref["er"], abs=1e-12)
    assert m.attack_success_rate(tc, ta, ty) == pytest.approx(ref["asr"], abs=1e-12, nan_ok=True)
    assert m.target_hit_rate(ta, target) == pytest.approx(ref["thr"], abs=1e-12)
    assert m.target_hit_rate(ta, target, ty, exclude_target_class=True) == pytest.approx(
        ref["thr_ex"], abs=1e-12, nan_ok=True
    )
    summary = m.summarize(tc, ta, ty)
    assert summary["benign_accuracy"] == pytest.approx(ref["ba"], abs=1e-12)
    assert summary["attack_success_rate"] == pytest.approx(ref["asr"], abs=1e-12, nan_ok=True)
    for value in (*summary.values(), m.target_hit_rate(ta, target)):
        assert type(value) is float and (math.isnan(value) or 0.0 <= value <= 1.0)


def _brute_auroc(scores: list[float], truth: list[bool]) -> float:
    pos = [s for s, t in zip(scores, truth) if t]
    neg = [s for s, t in zip(scores, truth) if not t]
    total = 0.0
    for p in pos:
        for q in neg:
            total += 1.0 if p > q else 0.5 if p == q else 0.0
    return total / (len(pos) * len(neg))


def _brute_tpr_at_fpr(scores: list[float], truth: list[bool], fpr: float) -> float:
    """Best TPR over every threshold t of the rule ``score > t`` whose FPR is <= fpr."""
    pos = [s for s, t in zip(scores, truth) if t]
    neg = [s for s, t in zip(scores, truth) if not t]
    best = 0.0
    for t in [-math.inf, *scores]:
        fp = sum(1 for q in neg if q > t) / len(neg)
        if fp <= fpr + 1e-12:
            best = max(best, sum(1 for p in pos if p > t) / len(pos))
    return best


@pytest.mark.parametrize("seed", range(8))
def test_detection_metrics_match_brute_force(seed: int) -> None:
    r = random.Random(100 + seed)
    n = r.randint(2, 120)
    truth = [r.random() < 0.4 for _ in range(n)]
    truth[0], truth[1] = True, False  # both classes present
    # coarse integer scores -> many ties; positives shifted up a little
    scores = [float(r.randint(0, 8) + (2 if t else 0)) for t in truth]
    assert m.auroc(scores, truth) == pytest.approx(_brute_auroc(scores, truth), abs=1e-12)
    for fpr in (0.0, 0.05, 0.1, 0.25, 0.5, 1.0):
        expected = _brute_tpr_at_fpr(scores, truth, fpr)
        assert m.tpr_at_fpr(scores, truth, fpr) == pytest.approx(expected, abs=1e-12)
        # the achieved FPR never exceeds the requested one
        t = m.threshold_at_fpr(scores, truth, fpr)
        neg = [s for s, tr in zip(scores, truth) if not tr]
        assert sum(1 for q in neg if q > t) / len(neg) <= fpr + 1e-12
    threshold = r.choice(scores)
    brute_acc = sum(1 for s, t in zip(scores, truth) if (s > threshold) == t) / n
    assert m.detection_accuracy(scores, truth, threshold) == pytest.approx(brute_acc, abs=1e-12)


def test_auroc_is_exact_for_large_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(4000, generator=g) < 0.5
    scores = torch.randint(0, 50, (4000,), generator=g).float() + truth.float() * 3
    # reference with a vectorised pairwise comparison (exact)
    pos, neg = scores[truth], scores[~truth]
    diff = pos[:, None] - neg[None, :]
    expected = (float((diff > 0).sum()) + 0.5 * float((diff == 0).sum())) / diff.numel()
    assert m.auroc(scores, truth) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_detection_metrics_match_scikit_learn(seed: int) -> None:
    """AUROC = ``roc_auc_score``; TPR at FPR = the highest TPR of ``roc_curve``'s operating points
    whose FPR does not exceed the requested one (the rules ``score > t`` and sklearn's
    ``score >= tau`` reach the same points). scikit-learn is a test-only dependency."""
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(200 + seed)
    n = int(torch.randint(20, 400, (1,), generator=g))
    truth = torch.rand(n, generator=g) < 0.3 + 0.1 * seed
    truth[0], truth[1] = True, False
    scores = torch.randn(n, generator=g) + 1.5 * truth.float()
    if seed % 2:
        scores = torch.round(scores * 2) / 2  # many ties
    y_true, y_score = truth.numpy().astype(int), scores.double().numpy()
    assert m.auroc(scores, truth) == pytest.approx(
        sklearn_metrics.roc_auc_score(y_true, y_score), abs=1e-12)
    fprs, tprs, _ = sklearn_metrics.roc_curve(y_true, y_score, drop_intermediate=False)
    for fpr in (0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0):
        expected = float(tprs[fprs <= fpr + 1e-12].max())
        assert m.tpr_at_fpr(scores, truth, fpr) == pytest.approx(expected, abs=1e-12), fpr


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------


def test_shape_mismatch_is_a_clear_value_error() -> None:
    with pytest.raises(ValueError, match="same length: clean_pred has 3, labels has 2"):
        m.benign_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="adv_pred has 2"):
        m.summarize([0, 1, 2], [0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="1-D"):
        m.robust_accuracy(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="no samples"):
        m.fooling_rate([], [])
    with pytest.raises(ValueError, match="integer class indices"):
        m.benign_accuracy(torch.tensor([0.2, 1.7]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="same length"):
        m.auroc([0.1, 0.2], [True])


def test_detection_validation() -> None:
    with pytest.raises(ValueError, match="both adversarial and clean"):
        m.auroc([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="both adversarial and clean"):
        m.tpr_at_fpr([0.1, 0.2], [False, False])
    with pytest.raises(ValueError, match="NaN"):
        m.auroc([0.1, float("nan")], [True, False])
    with pytest.raises(ValueError, match="boolean"):
        m.auroc([0.1, 0.2], [2, 0])
    with pytest.raises(ValueError, match="fpr"):
        m.tpr_at_fpr([0.1, 0.2], [True, False], fpr=1.5)


def test_accepts_tensors_on_any_dtype_and_returns_python_floats() -> None:
    clean = torch.tensor(CLEAN, dtype=torch.int32)
    adv = torch.tensor(ADV, dtype=torch.int64)
    labels = torch.tensor(LABELS, dtype=torch.uint8)
    assert type(m.benign_accuracy(clean, labels)) is float
    assert m.fooling_rate(clean.float(), adv) == pytest.approx(0.5)  # integral floats are fine
    assert type(m.auroc(torch.tensor([0.1, 0.9]), torch.tensor([False, True]))) is float
