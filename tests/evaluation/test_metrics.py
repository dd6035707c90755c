"""Metrics against hand-worked values and an independent pure-Python implementation.

Every expected number in the hand-worked tests is derived in the comments beside it, so a
failure says which definition drifted (clipping, rounding, the has-0 / non-0 split, weighting).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import f1_score

from sentangle.evaluation.metrics import (
    CLASSIFICATION_KEYS,
    METRIC_DIRECTIONS,
    REGRESSION_KEYS,
    classification_metrics,
    compute_metrics,
    regression_metrics,
)

# Any warning (numpy RuntimeWarning, sklearn UndefinedMetricWarning) fails the test: the
# metrics promise to be silent on degenerate inputs.
pytestmark = pytest.mark.filterwarnings("error")

approx = pytest.approx


# ---- hand-worked regression example --------------------------------------------------------

#             0     1     2    3    4    5     6    7
LABEL = [3.0, -2.6, 1.6, 0.0, 0.0, 1.5, -0.5, 2.5]
PRED = [3.6, -2.2, 1.2, 0.0, 0.4, 2.5, 0.0, 0.0]


def test_worked_example_every_regression_metric():
    m = regression_metrics(np.array(PRED), np.array(LABEL))
    assert list(m) == list(REGRESSION_KEYS)

    # |p - y| = 0.6, 0.4, 0.4, 0, 0.4, 1.0, 0.5, 2.5 -> sum 5.8 -> 5.8 / 8 = 0.725.
    # (Clipping p to [-3, 3] first would turn 0.6 into 0 and give 5.2 / 8 = 0.65.)
    assert m["mae"] == approx(0.725, abs=1e-12)

    # acc7, clip to [-3, 3] then round half to even:
    #   y -> 3, -3, 2, 0, 0, 2 (1.5), -0 (-0.5), 2 (2.5)
    #   p -> 3 (3.6 clipped), -2, 1, 0, 0, 2 (2.5), 0, 0
    #   hits: 0 yes, 1 no, 2 no, 3 yes, 4 yes, 5 yes, 6 yes, 7 no -> 5 / 8
    # (round-half-away-from-zero would miss 5 (2 vs 3) and 6 (-1 vs 0) -> 3 / 8.)
    assert m["acc7"] == approx(5 / 8)
    # acc5, clip to [-2, 2]:
    #   y -> 2, -2, 2, 0, 0, 2, -0, 2 ;  p -> 2, -2, 1, 0, 0, 2, 0, 0
    #   hits: all but 2 (2 vs 1) and 7 (2 vs 0) -> 6 / 8
    assert m["acc5"] == approx(6 / 8)
    # acc3, clip to [-1, 1]:
    #   y -> 1, -1, 1, 0, 0, 1, -0, 1 ;  p -> 1, -1, 1, 0, 0, 1, 0, 0
    #   hits: all but 7 -> 7 / 8
    assert m["acc3"] == approx(7 / 8)

    # has-0: y >= 0 -> T F T T T T F T (6 T, 2 F); p >= 0 -> T F T T T T T T (0.0 counts as >= 0)
    #   only sample 6 disagrees -> acc 7 / 8
    #   class T: TP 6 (0,2,3,4,5,7), FP 1 (6), FN 0 -> P 6/7, R 1, F1 = 2*(6/7)/(13/7) = 12/13
    #   class F: TP 1 (1), FP 0, FN 1 (6)      -> P 1, R 1/2, F1 = 2*(1/2)/(3/2)  = 2/3
    #   weighted by support: (6 * 12/13 + 2 * 2/3) / 8 = (72/13 + 4/3) / 8 = 268/312 = 67/78
    assert m["acc2_has0"] == approx(7 / 8)
    assert m["f1_has0"] == approx(67 / 78, abs=1e-12)
    # (The macro average would be (12/13 + 2/3) / 2 = 31/39 -- make sure we did not compute it.)
    assert m["f1_has0"] != approx(31 / 39)

    # non-0: drop samples 3 and 4 (y == 0), leaving 0, 1, 2, 5, 6, 7
    #   y > 0 -> T F T T F T (4 T, 2 F); p > 0 -> T F T T F F (0.0 is not > 0)
    #   sample 7 disagrees -> acc 5 / 6
    #   class T: TP 3 (0,2,5), FP 0, FN 1 (7) -> P 1, R 3/4, F1 = 1.5/1.75 = 6/7
    #   class F: TP 2 (1,6), FP 1 (7), FN 0  -> P 2/3, R 1, F1 = (4/3)/(5/3) = 4/5
    #   weighted: (4 * 6/7 + 2 * 4/5) / 6 = (24/7 + 8/5) / 6 = (176/35) / 6 = 88/105
    assert m["acc2_non0"] == approx(5 / 6)
    assert m["f1_non0"] == approx(88 / 105, abs=1e-12)

    # Pearson r, checked against numpy's own definition.
    assert m["corr"] == approx(np.corrcoef(PRED, LABEL)[0, 1], rel=1e-12)


def test_values_are_plain_python_floats_in_fraction_units():
    m = regression_metrics(PRED, LABEL)
    assert all(type(v) is float for v in m.values())
    assert all(0.0 <= m[k] <= 1.0 for k in REGRESSION_KEYS if k not in ("mae", "corr"))
    c = classification_metrics([0, 1, 1], [0, 1, 0])
    assert all(type(v) is float for v in c.values())


# ---- rounding and clipping, one sample at a time ---------------------------------------------


@pytest.mark.parametrize(
    "pred, label, acc7, acc5, acc3",
    [
        (2.5, 2.0, 1, 1, 1),  # 2.5 -> 2 (half to even), not 3
        (1.5, 2.0, 1, 1, 1),  # 1.5 -> 2 (even neighbour is 2)
        (-0.5, 0.0, 1, 1, 1),  # -0.5 -> -0.0, which equals 0.0
        (0.5, 0.0, 1, 1, 1),  # 0.5 -> 0
        (-2.5, -2.0, 1, 1, 1),  # -2.5 -> -2
        (0.5, 1.0, 0, 0, 0),  # 0.5 -> 0 vs 1, still a miss after every clip
        (3.5, 3.0, 1, 1, 1),  # acc7 clips 3.5 to 3 (unclipped it would round to 4)
        (-4.2, -3.0, 1, 1, 1),  # clipping on the negative side too
        (2.9, 2.0, 0, 1, 1),  # acc7: 3 vs 2; acc5 clips 2.9 to 2 -> hit
        (1.7, 1.0, 0, 0, 1),  # acc7/acc5: 2 vs 1; acc3 clips 1.7 to 1 -> hit
        (-2.6, -2.4, 0, 1, 1),  # acc7: -3 vs -2; acc5 clips both to -2 -> hit
        (0.6, 0.4, 0, 0, 0),  # 1 vs 0 at every k: clipping does not rescue sub-unit errors
    ],
)
def test_rounding_half_to_even_and_clipping(pred, label, acc7, acc5, acc3):
    m = regression_metrics([pred], [label])
    assert (m["acc7"], m["acc5"], m["acc3"]) == (acc7, acc5, acc3)


# ---- has-0 versus non-0 ------------------------------------------------------------------------


def test_prediction_of_exactly_zero_is_nonnegative_but_not_positive():
    m = regression_metrics([0.0, 0.0], [-1.0, 1.0])
    # has-0: truth (y >= 0) F T, guess (p >= 0) T T -> acc 1/2
    #   class T: TP 1, FP 1, FN 0 -> P 1/2, R 1, F1 2/3 ; class F: TP 0 -> F1 0
    #   weighted: (1 * 2/3 + 1 * 0) / 2 = 1/3
    assert m["acc2_has0"] == approx(0.5)
    assert m["f1_has0"] == approx(1 / 3)
    # non-0: truth (y > 0) F T, guess (p > 0) F F -> acc 1/2
    #   class F: TP 1, FP 1, FN 0 -> F1 2/3 ; class T: TP 0 -> F1 0 ; weighted 1/3
    assert m["acc2_non0"] == approx(0.5)
    assert m["f1_non0"] == approx(1 / 3)
    # The same accuracy for opposite reasons: has-0 misses sample 0, non-0 misses sample 1.
    assert regression_metrics([0.0], [-1.0])["acc2_has0"] == 0.0
    assert regression_metrics([0.0], [-1.0])["acc2_non0"] == 1.0
    assert regression_metrics([0.0], [1.0])["acc2_has0"] == 1.0
    assert regression_metrics([0.0], [1.0])["acc2_non0"] == 0.0


def test_zero_labels_count_for_has0_and_are_dropped_for_non0():
    m = regression_metrics([-1.0, 1.0, 1.0], [0.0, 0.0, 2.0])
    # has-0: truth T T T, guess F T T -> acc 2/3
    #   class T: TP 2, FP 0, FN 1 -> P 1, R 2/3, F1 = (4/3)/(5/3) = 4/5 ; class F has support 0
    #   weighted: (3 * 4/5 + 0 * 0) / 3 = 4/5
    assert m["acc2_has0"] == approx(2 / 3)
    assert m["f1_has0"] == approx(0.8)
    # non-0 keeps only the third sample, which is right.
    assert m["acc2_non0"] == 1.0
    assert m["f1_non0"] == 1.0


def test_all_zero_labels_give_nan_non0_without_warnings():
    m = regression_metrics([0.3, -0.2, 0.0], [0.0, 0.0, 0.0])
    assert math.isnan(m["acc2_non0"]) and math.isnan(m["f1_non0"])
    # has-0 is still defined: truth T T T, guess T F T -> 2/3; F1 of class T: P 1, R 2/3 -> 4/5.
    assert m["acc2_has0"] == approx(2 / 3)
    assert m["f1_has0"] == approx(0.8)
    assert math.isnan(m["corr"])  # labels are constant


# ---- correlation -------------------------------------------------------------------------------


def test_corr_by_hand():
    # p = 1 2 3, y = 1 3 2: means 2 and 2; dp = -1 0 1, dy = -1 1 0
    # sum dp*dy = 1, sum dp^2 = 2, sum dy^2 = 2 -> r = 1 / sqrt(4) = 1/2
    assert regression_metrics([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])["corr"] == approx(0.5, abs=1e-15)
    # y = -2p + 7 is a perfect negative linear relation -> r = -1 (and never below it)
    r = regression_metrics([1.0, 2.0, 3.0, 4.0], [5.0, 3.0, 1.0, -1.0])["corr"]
    assert r == approx(-1.0, abs=1e-15) and r >= -1.0


@pytest.mark.parametrize(
    "pred, label",
    [
        ([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]),  # constant prediction (a collapsed model)
        ([0.0, 1.0, 2.0], [2.0, 2.0, 2.0]),  # constant labels
        ([0.7], [0.1]),  # one sample
    ],
)
def test_corr_is_nan_when_undefined_without_warnings(pred, label):
    assert math.isnan(regression_metrics(pred, label)["corr"])


def test_corr_survives_huge_and_tiny_finite_values():
    rng = np.random.default_rng(0)
    p, y = rng.normal(size=50), rng.normal(size=50)
    ref = np.corrcoef(p, y)[0, 1]
    # Scaling is invisible to Pearson r; 1e300 would overflow a naive sum of squares.
    assert regression_metrics(p * 1e300, y)["corr"] == approx(ref, rel=1e-12)
    assert regression_metrics(p, y * 1e-300)["corr"] == approx(ref, rel=1e-12)


# ---- input forms --------------------------------------------------------------------------------


def test_column_vectors_lists_and_ints_give_the_same_numbers():
    ref = regression_metrics(np.array(PRED), np.array(LABEL))
    col = regression_metrics(np.array(PRED)[:, None], np.array(LABEL)[:, None])
    lst = regression_metrics(PRED, LABEL)
    assert col == ref and lst == ref
    # integer labels (e.g. a rounded label set) are read as floats
    assert regression_metrics([0.4, -1.2], [0, -1])["acc7"] == 1.0


def test_torch_tensors():
    torch = pytest.importorskip("torch")
    ref = regression_metrics(np.array(PRED, dtype=np.float32), np.array(LABEL, dtype=np.float32))
    p = torch.tensor(PRED, requires_grad=True).unsqueeze(1)  # (N, 1) straight from a model head
    got = regression_metrics(p, torch.tensor(LABEL))
    assert got == ref
    # bfloat16 has no numpy dtype; the conversion must still work (values are bf16-rounded).
    bf = regression_metrics(torch.tensor(PRED, dtype=torch.bfloat16), torch.tensor(LABEL))
    assert bf["acc7"] == ref["acc7"]
    c = classification_metrics(torch.tensor([[0.1, 0.9], [2.0, -1.0]]), torch.tensor([1, 1]))
    assert c["accuracy"] == 0.5


@pytest.mark.parametrize(
    "pred, label, match",
    [
        ([0.1, float("nan")], [0.0, 1.0], "NaN or infinite"),
        ([0.1, float("inf")], [0.0, 1.0], "NaN or infinite"),
        ([0.1, -float("inf")], [0.0, 1.0], "NaN or infinite"),
        ([0.1, 0.2], [0.0, float("nan")], "label.*NaN"),
        ([0.1, 0.2, 0.3], [0.0, 1.0], "3 samples.*2"),
        (np.zeros((3, 2)), np.zeros(3), r"shape \(N,\) or \(N, 1\)"),
        (np.zeros((2, 1, 1)), np.zeros(2), r"shape \(N,\) or \(N, 1\)"),
        (np.float64(0.5), np.zeros(1), r"shape \(N,\) or \(N, 1\)"),
        ([], [], "empty"),
        (["a", "b"], [0.0, 1.0], "expected numbers"),
    ],
)
def test_bad_regression_inputs_raise(pred, label, match):
    with pytest.raises(ValueError, match=match):
        regression_metrics(pred, label)


# ---- classification -------------------------------------------------------------------------------

# Four classes; class 3 appears in neither labels nor predictions.
CLS_LABEL = [0, 0, 1, 1, 2]
CLS_PRED = [0, 1, 1, 1, 2]


def test_classification_by_hand_with_absent_class():
    m = classification_metrics(CLS_PRED, CLS_LABEL, num_classes=4)
    assert list(m) == list(CLASSIFICATION_KEYS)
    # accuracy: samples 0, 2, 3, 4 right -> 4/5
    assert m["accuracy"] == approx(0.8)
    # per class (TP, FP, FN):
    #   0: (1, 0, 1) -> P 1,   R 1/2, F1 2/3
    #   1: (2, 1, 0) -> P 2/3, R 1,   F1 4/5
    #   2: (1, 0, 0) -> P 1,   R 1,   F1 1
    #   3: (0, 0, 0) -> P 0,   R 0,   F1 0   (zero_division=0; counted because num_classes=4)
    # macro F1 = (2/3 + 4/5 + 1 + 0) / 4 = (10 + 12 + 15) / 15 / 4 = 37/60
    assert m["f1_macro"] == approx(37 / 60)
    # macro P = (1 + 2/3 + 1 + 0) / 4 = 2/3 ; macro R = (1/2 + 1 + 1 + 0) / 4 = 5/8
    assert m["precision_macro"] == approx(2 / 3)
    assert m["recall_macro"] == approx(5 / 8)
    # weighted F1 by support (2, 2, 1, 0): (2 * 2/3 + 2 * 4/5 + 1 * 1) / 5 = (20 + 24 + 15) / 75
    assert m["f1_weighted"] == approx(59 / 75)


def test_classification_without_num_classes_averages_over_seen_classes():
    m = classification_metrics(CLS_PRED, CLS_LABEL)
    # Only classes 0, 1, 2 are seen (MIntRec's sklearn default):
    # F1 (2/3 + 4/5 + 1) / 3 = 37/45 ; P (1 + 2/3 + 1) / 3 = 8/9 ; R (1/2 + 1 + 1) / 3 = 5/6
    assert m["f1_macro"] == approx(37 / 45)
    assert m["precision_macro"] == approx(8 / 9)
    assert m["recall_macro"] == approx(5 / 6)
    # An absent class has zero weight, so weighted F1 does not depend on num_classes.
    assert m["f1_weighted"] == approx(59 / 75)
    assert m["accuracy"] == approx(0.8)


def test_uar_by_hand_and_where_it_differs_from_recall_macro():
    # labels 0 0 0 1 2 2, preds 0 1 1 1 2 0: recall of 0 = 1/3, of 1 = 1/1, of 2 = 1/2
    # UAR = (1/3 + 1 + 1/2) / 3 = 11/18, while accuracy = 3/6 = 1/2 (the big class drags it down)
    label, pred = [0, 0, 0, 1, 2, 2], [0, 1, 1, 1, 2, 0]
    m = classification_metrics(pred, label)
    assert m["uar"] == approx(11 / 18) and m["accuracy"] == approx(1 / 2)
    assert m["recall_macro"] == approx(11 / 18)  # every class occurs in the labels: the two agree
    # With a fourth class that never occurs, recall_macro counts it as recall 0; UAR does not.
    four = classification_metrics(pred, label, num_classes=4)
    assert four["uar"] == approx(11 / 18) and four["recall_macro"] == approx(11 / 24)
    # A prediction of a class absent from the labels is a miss, nothing more (and no warning):
    # labels 0 0 1, preds 0 2 1 -> recalls 1/2 and 1 -> 3/4 (recall_macro also averages class 2's 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        other = classification_metrics([0, 2, 1], [0, 0, 1])
    assert other["uar"] == approx(3 / 4) and other["recall_macro"] == approx(1 / 2)


def test_uar_is_sklearns_balanced_accuracy():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(5)
    for _ in range(50):
        c = int(rng.integers(2, 9))
        label, pred = rng.integers(0, c, size=40), rng.integers(0, c, size=40)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn warns when pred has a class the labels lack
            ref = balanced_accuracy_score(label, pred)
        assert classification_metrics(pred, label, c)["uar"] == approx(ref, abs=1e-12)


def test_class_only_predicted_counts_in_the_macro_average():
    # label 0 0, pred 0 1: class 0 (1, 0, 1) -> F1 2/3 ; class 1 (0, 1, 0) -> P 0, R 0 -> F1 0
    # macro over the seen classes {0, 1}: (2/3 + 0) / 2 = 1/3
    assert classification_metrics([0, 1], [0, 0])["f1_macro"] == approx(1 / 3)


def test_logits_argmax_matches_integer_predictions():
    logits = np.full((5, 4), -1.0)
    logits[np.arange(5), CLS_PRED] = 2.0
    assert classification_metrics(logits, CLS_LABEL, 4) == classification_metrics(CLS_PRED, CLS_LABEL, 4)
    # (N, 1) integer ids and float-but-integral labels are the same ids
    ids = np.array(CLS_PRED)[:, None]
    assert classification_metrics(ids, np.array(CLS_LABEL, dtype=np.float32), 4)["f1_macro"] == approx(37 / 60)


def test_logit_ties_go_to_the_lowest_index():
    # Row 0 ties classes 1 and 2 -> 1; row 1 ties 0 and 2 -> 0. Both right only if the lowest
    # index wins; taking the last tied index would give 2 and 2, both wrong.
    m = classification_metrics([[0.0, 5.0, 5.0], [3.0, 1.0, 3.0]], [1, 0])
    assert m["accuracy"] == 1.0


@pytest.mark.parametrize(
    "pred, label, num_classes, match",
    [
        ([0.2, 0.9], [0, 1], None, "non-integral"),  # probabilities, not ids
        ([[0.2], [0.9]], [0, 1], None, "non-integral"),  # single-logit head
        ([0, 1], [0, -1], None, ">= 0"),
        ([0, 1], [0, 2], 2, "out of range"),
        ([0, 3], [0, 1], 3, "out of range"),
        ([[0.1, 0.2, 0.7]], [2], 4, "3 columns but num_classes is 4"),
        ([[0.1, float("nan")], [0.3, 0.2]], [0, 1], None, "NaN or infinite"),
        ([0, 1, 1], [0, 1], None, "3 samples.*2"),
        ([], [], None, "empty"),
        ([0, 1], [0, 1], 0, "positive integer"),
        ([0, 1], [0, 1], 2.0, "positive integer"),
        ([0, 1], [0, 1], True, "positive integer"),
    ],
)
def test_bad_classification_inputs_raise(pred, label, num_classes, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(pred, label, num_classes)


# ---- directions and dispatch ---------------------------------------------------------------------


def test_metric_directions_cover_every_returned_key():
    assert set(METRIC_DIRECTIONS) == set(REGRESSION_KEYS) | set(CLASSIFICATION_KEYS)
    assert set(regression_metrics(PRED, LABEL)) <= set(METRIC_DIRECTIONS)
    assert set(classification_metrics(CLS_PRED, CLS_LABEL)) <= set(METRIC_DIRECTIONS)
    assert METRIC_DIRECTIONS["mae"] == "min"
    assert all(v == "max" for k, v in METRIC_DIRECTIONS.items() if k != "mae")


def test_compute_metrics_dispatches_on_task():
    assert compute_metrics("regression", PRED, LABEL) == regression_metrics(PRED, LABEL)
    # a trainer passes num_classes unconditionally; None or not, regression ignores it
    assert compute_metrics("regression", PRED, LABEL, 3) == regression_metrics(PRED, LABEL)
    assert compute_metrics("classification", CLS_PRED, CLS_LABEL, 4)["f1_macro"] == approx(37 / 60)
    with pytest.raises(ValueError, match="unknown task"):
        compute_metrics("ranking", PRED, LABEL)
    with pytest.raises(ValueError, match=r"shape \(N,\) or \(N, 1\)"):
        compute_metrics("regression", np.zeros((8, 3)), LABEL, 3)


# ---- an independent, slow implementation on random inputs -----------------------------------------


def _slow_f1s(truth, pred, classes):
    """Per-class (precision, recall, f1, support) by counting, with 0 for undefined ratios."""
    out = []
    for c in classes:
        tp = sum(1 for t, p in zip(truth, pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(truth, pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(truth, pred) if t == c and p != c)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out.append((prec, rec, f1, tp + fn))
    return out


def _slow_weighted_f1(truth, pred):
    rows = _slow_f1s(truth, pred, sorted(set(truth) | set(pred)))
    return math.fsum(f1 * n for _, _, f1, n in rows) / len(truth)


def _slow_regression(pred, label):
    n = len(pred)
    out = {"mae": math.fsum(abs(p - y) for p, y in zip(pred, label)) / n}
    mp, my = math.fsum(pred) / n, math.fsum(label) / n
    sxy = math.fsum((p - mp) * (y - my) for p, y in zip(pred, label))
    sxx = math.fsum((p - mp) ** 2 for p in pred)
    syy = math.fsum((y - my) ** 2 for y in label)
    constant = len(set(pred)) == 1 or len(set(label)) == 1
    out["corr"] = math.nan if constant else sxy / math.sqrt(sxx * syy)
    for key, c in (("acc7", 3.0), ("acc5", 2.0), ("acc3", 1.0)):
        # Python's round() on floats is also half to even, independently of numpy.
        clip = lambda v: min(max(v, -c), c)
        out[key] = sum(round(clip(p)) == round(clip(y)) for p, y in zip(pred, label)) / n
    truth = [y >= 0 for y in label]
    guess = [p >= 0 for p in pred]
    out["acc2_has0"] = sum(t == g for t, g in zip(truth, guess)) / n
    out["f1_has0"] = _slow_weighted_f1(truth, guess)
    kept = [(p, y) for p, y in zip(pred, label) if y != 0]
    if kept:
        truth = [y > 0 for _, y in kept]
        guess = [p > 0 for p, _ in kept]
        out["acc2_non0"] = sum(t == g for t, g in zip(truth, guess)) / len(kept)
        out["f1_non0"] = _slow_weighted_f1(truth, guess)
    else:
        out["acc2_non0"] = out["f1_non0"] = math.nan
    return out


def _random_regression_case(rng):
    n = int(rng.integers(1, 40))
    # MOSI-style labels: averages of integer ratings, so sixths in [-3, 3] -- this puts exact
    # zeros and exact halves (3/6, 9/6, 15/6) in the labels.
    label = rng.integers(-18, 19, size=n) / 6.0
    if rng.random() < 0.1:
        label[:] = 0.0  # the empty non-0 subset
    # Predictions: continuous, plus exact halves (rounding ties), zeros and values beyond +-3.
    pred = rng.normal(0.0, 2.0, size=n)
    snap = rng.random(n) < 0.4
    pred[snap] = rng.integers(-9, 10, size=int(snap.sum())) / 2.0
    return pred, label


def _same(a, b, tol=1e-12):
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def test_regression_matches_slow_loop_on_random_inputs():
    rng = np.random.default_rng(1234)
    for trial in range(300):
        pred, label = _random_regression_case(rng)
        fast = regression_metrics(pred, label)
        slow = _slow_regression(pred.tolist(), label.tolist())
        bad = {k: (fast[k], slow[k]) for k in REGRESSION_KEYS if not _same(fast[k], slow[k])}
        assert not bad, f"trial {trial}: {bad}"
        if not math.isnan(fast["corr"]):
            assert fast["corr"] == approx(np.corrcoef(pred, label)[0, 1], rel=1e-10, abs=1e-12)


def test_regression_matches_the_published_mmsa_formulas():
    # The formulas as MMSA's MetricsTop writes them (np.corrcoef, sklearn defaults, float32
    # tensors), to show zero_division=0 and float64 arithmetic change nothing that is reported.
    rng = np.random.default_rng(7)
    for _ in range(50):
        pred, label = _random_regression_case(rng)
        if len(pred) < 3 or not (label != 0).any() or np.ptp(pred) == 0 or np.ptp(label) == 0:
            continue
        p, y = pred.astype(np.float32), label.astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sklearn's default zero_division warns
            nz = y != 0
            ref = {
                "mae": np.mean(np.abs(p - y)),
                "corr": np.corrcoef(p, y)[0][1],
                "acc7": np.sum(np.round(np.clip(p, -3, 3)) == np.round(np.clip(y, -3, 3))) / len(y),
                "acc5": np.sum(np.round(np.clip(p, -2, 2)) == np.round(np.clip(y, -2, 2))) / len(y),
                "acc2_has0": np.mean((p >= 0) == (y >= 0)),
                "f1_has0": f1_score(y >= 0, p >= 0, average="weighted"),
                "acc2_non0": np.mean((p[nz] > 0) == (y[nz] > 0)),
                "f1_non0": f1_score(y[nz] > 0, p[nz] > 0, average="weighted"),
            }
        got = regression_metrics(p, y)
        for k, v in ref.items():
            # MMSA reports 4 decimals; agreement far below that is what matters.
            assert got[k] == approx(float(v), abs=1e-6), k


def _slow_classification(pred, label, num_classes):
    classes = range(num_classes) if num_classes else sorted(set(label) | set(pred))
    rows = _slow_f1s(label, pred, classes)
    k, n = len(rows), len(label)
    return {
        "accuracy": sum(p == y for p, y in zip(pred, label)) / n,
        # recall of each class that has a label, averaged with equal weight per class
        "uar": math.fsum(
            sum(p == c for p, y in zip(pred, label) if y == c) / label.count(c) for c in sorted(set(label))
        )
        / len(set(label)),
        "f1_macro": math.fsum(r[2] for r in rows) / k,
        "precision_macro": math.fsum(r[0] for r in rows) / k,
        "recall_macro": math.fsum(r[1] for r in rows) / k,
        "f1_weighted": math.fsum(r[2] * r[3] for r in rows) / n,
    }


def test_classification_matches_slow_loop_on_random_inputs():
    rng = np.random.default_rng(99)
    for trial in range(300):
        c = int(rng.integers(2, 21))  # binary (UR-FUNNY, MIntRec coarse) up to MIntRec's 20
        n = int(rng.integers(1, 30))  # small n so some classes are often absent
        label = rng.integers(0, c, size=n)
        logits = rng.normal(size=(n, c))
        num_classes = c if rng.random() < 0.5 else None
        fast = classification_metrics(logits, label, num_classes)
        slow = _slow_classification(logits.argmax(1).tolist(), label.tolist(), num_classes)
        bad = {k: (fast[k], slow[k]) for k in CLASSIFICATION_KEYS if not _same(fast[k], slow[k])}
        assert not bad, f"trial {trial} (C={c}, n={n}, num_classes={num_classes}): {bad}"


# ---- found by mutation testing (docs/mutation.md) -------------------------------------------------
GOOD = np.array([0.5, -1.0, 2.0])


@pytest.mark.parametrize(
    "call,message",
    [
        # every error names the argument it is about, as given by the caller
        (lambda: regression_metrics(np.array(["a", "b", "c"]), GOOD), "pred: expected numbers"),
        (lambda: regression_metrics(np.zeros((3, 2)), GOOD), "pred: expected shape (N,) or (N, 1)"),
        (lambda: regression_metrics(np.array([0.0, np.nan, 1.0]), GOOD), "pred: 1 value(s) are NaN"),
        (lambda: regression_metrics(GOOD, np.array(["a", "b", "c"])), "label: expected numbers"),
        (lambda: regression_metrics(GOOD, np.zeros((3, 2))), "label: expected shape (N,) or (N, 1)"),
        (lambda: regression_metrics(GOOD, np.array([np.inf, 0.0, 1.0])), "label: 1 value(s) are NaN"),
        (lambda: classification_metrics(np.array(["a", "b"]), [0, 1]), "logits_or_pred: expected numbers"),
        (lambda: classification_metrics(np.zeros((2, 2, 2)), [0, 1]), "logits_or_pred: expected shape (N,)"),
        (lambda: classification_metrics(np.array([[0.0, np.nan], [1.0, 0.0]]), [0, 1]), "logits: 1 value(s)"),
        (lambda: classification_metrics(np.array([0.0, np.nan]), [0, 1]), "pred: 1 value(s) are NaN"),
        (
            lambda: classification_metrics(np.array([0.0, 0.7]), [0, 1]),
            "pred: expected integer class ids, got non-integral floats "
            "(pass (N, C) logits, or threshold a single-logit output yourself)",
        ),
        (lambda: classification_metrics([0, 1], np.array(["a", "b"])), "label: expected numbers"),
        (lambda: classification_metrics([0, 1], np.zeros((2, 2, 2))), "label: expected shape (N,)"),
        (lambda: classification_metrics([0, 1], np.array([np.nan, 1.0])), "label: 1 value(s) are NaN"),
        (lambda: classification_metrics([0, 3], [0, 1], num_classes=2), "pred: class id 3 out of range"),
        (lambda: classification_metrics([0, 1], [0, 3], num_classes=2), "label: class id 3 out of range"),
        (lambda: regression_metrics([[1.0], [1.0, 2.0]], GOOD), "pred: cannot be read as an array"),
        (lambda: regression_metrics([], []), "no samples: metrics of an empty split are undefined"),
    ],
)
def test_errors_name_the_argument(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value).startswith(message), str(info.value)


def test_corr_is_clipped_to_one_when_rounding_overshoots():
    # a label proportional to the prediction: the dot-product formula gives 1.0000000000000002 here
    p = np.array([3559.904207218547, 1707.6198772204157, -5941.0147463524245, 140.2784285336925, 1843.3272194309016])
    y = np.array([705.0755353457686, 338.21162846372766, -1176.6788961027742, 27.783581337750405, 365.08985927830633])
    p, y = np.append(p, 2706.840835721221), np.append(y, 536.1175863867172)
    assert regression_metrics(p, y)["corr"] == 1.0
    assert regression_metrics(-p, y)["corr"] == -1.0


def test_one_class_is_a_valid_num_classes():
    # "a positive integer": 1 is the boundary and is accepted
    m = classification_metrics([0, 0, 0], [0, 0, 0], num_classes=1)
    assert m["accuracy"] == 1.0 and m["f1_macro"] == 1.0
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        classification_metrics([0, 0, 0], [0, 0, 0], num_classes=0)
