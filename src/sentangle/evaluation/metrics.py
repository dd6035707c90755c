"""Evaluation metrics, computed the way the field computes them (see shared/design/METRICS.md).

Regression follows MMSA's ``MetricsTop`` for CMU-MOSI / CMU-MOSEI; classification follows the
MIntRec evaluation (sklearn accuracy and macro precision / recall / F1), plus the unweighted
average recall (UAR) that speech-emotion benchmarks report. Every value is a plain
Python float in fraction units (0..1 for accuracies and F1); reports convert to percent.

Decisions that the published code leaves open, made here once:

* ``corr`` is NaN when either side is constant (or N == 1): Pearson correlation is undefined
  there. Returning 0 would make a collapsed model look like a measured "no correlation" and
  average silently into seed means; NaN propagates into the mean / std so the report shows it,
  and a NaN never compares as "better" during model selection. np.corrcoef returns NaN too, but
  with a RuntimeWarning; we check first so nothing is emitted.
* ``acc2_non0`` / ``f1_non0`` are NaN when every label is 0 (nothing left to score). MMSA would
  crash on that subset; it only arises on tiny or synthetic splits.
* Labels must be finite as well as predictions: a NaN label would silently count as a miss.
* sklearn is called with ``zero_division=0``. That is the value sklearn's default ("warn") also
  returns, so numbers match the published code, minus the warning spam on degenerate batches.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

__all__ = [
    "METRIC_DIRECTIONS",
    "REGRESSION_KEYS",
    "CLASSIFICATION_KEYS",
    "regression_metrics",
    "classification_metrics",
    "compute_metrics",
]

REGRESSION_KEYS = ("mae", "corr", "acc7", "acc5", "acc3", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0")
CLASSIFICATION_KEYS = ("accuracy", "uar", "f1_macro", "precision_macro", "recall_macro", "f1_weighted")

# Model selection needs to know which way is better; only the error metric is minimised.
METRIC_DIRECTIONS: dict[str, str] = {k: ("min" if k == "mae" else "max") for k in REGRESSION_KEYS + CLASSIFICATION_KEYS}

TASKS = ("regression", "classification")

# acc-k clips to the range whose integers are the k classes: 7 -> [-3, 3], 5 -> [-2, 2], 3 -> [-1, 1].
_ACC_CLIP = {"acc7": 3.0, "acc5": 2.0, "acc3": 1.0}


# ---- input handling ---------------------------------------------------------------------------


def _to_numpy(x: Any, name: str) -> np.ndarray:
    # Duck-typed so this module does not need torch for numpy callers.
    if hasattr(x, "detach") and hasattr(x, "is_floating_point"):
        t = x.detach().cpu()
        if t.is_floating_point():
            # numpy has no bfloat16; float64 represents every float16/bfloat16/float32 exactly,
            # so rounding and sign tests are unaffected by the cast.
            t = t.double()
        x = t.numpy()
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: cannot be read as an array ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
    return arr


def _column(arr: np.ndarray, name: str) -> np.ndarray:
    # (N, 1) is what a regression head with output_dim 1 emits; anything wider is a caller bug.
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected shape (N,) or (N, 1), got {tuple(arr.shape)}")
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name}: {bad} value(s) are NaN or infinite")


def _check_pair(pred: np.ndarray, label: np.ndarray) -> None:
    if pred.shape[0] != label.shape[0]:
        raise ValueError(f"pred has {pred.shape[0]} samples but label has {label.shape[0]}")
    if pred.shape[0] == 0:
        raise ValueError("no samples: metrics of an empty split are undefined")


# ---- regression -------------------------------------------------------------------------------


def _pearson(p: np.ndarray, y: np.ndarray) -> float:
    if p.shape[0] < 2 or p.min() == p.max() or y.min() == y.max():
        return math.nan
    dp, dy = _unit_centered(p), _unit_centered(y)
    if dp is None or dy is None:
        return math.nan
    r = float(np.dot(dp, dy) / math.sqrt(float(np.dot(dp, dp)) * float(np.dot(dy, dy))))
    return min(1.0, max(-1.0, r))  # rounding can push |r| a hair past 1, as np.corrcoef guards too


def _unit_centered(x: np.ndarray) -> np.ndarray | None:
    # Correlation is scale-free, so rescale to |x| <= 1 before centering: finite inputs near
    # 1e308 would otherwise overflow the mean or the sums of squares into inf/NaN with warnings.
    x = x / np.abs(x).max()
    d = x - x.mean()
    m = np.abs(d).max()
    if m == 0:  # distinct values that the rescale merged (subnormal range); treat as constant
        return None
    return d / m


def _weighted_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(f1_score(truth, pred, average="weighted", zero_division=0))


def regression_metrics(pred: Any, label: Any) -> dict[str, float]:
    """MOSI/MOSEI metrics for predictions and labels of shape (N,) or (N, 1), arrays or tensors.

    Keys: mae, corr, acc7, acc5, acc3, acc2_has0, f1_has0, acc2_non0, f1_non0.
    MAE uses unclipped values. acc-k rounds with numpy (half to even: 2.5 -> 2, -0.5 -> -0)
    after clipping both sides. has-0 scores (p >= 0) against (y >= 0) on every sample; non-0
    drops y == 0 and scores (p > 0) against (y > 0). F1s are sklearn's support-weighted F1.
    Raises ValueError on NaN/inf, mismatched lengths, wrong shapes or an empty input.
    """
    p = _column(_to_numpy(pred, "pred"), "pred").astype(np.float64)
    y = _column(_to_numpy(label, "label"), "label").astype(np.float64)
    _check_pair(p, y)
    _check_finite(p, "pred")
    _check_finite(y, "label")

    out: dict[str, float] = {"mae": float(np.mean(np.abs(p - y))), "corr": _pearson(p, y)}
    for key, c in _ACC_CLIP.items():
        # -0.0 == 0.0 in numpy, so a -0.4 prediction still matches a 0 label.
        hits = np.round(np.clip(p, -c, c)) == np.round(np.clip(y, -c, c))
        out[key] = float(hits.mean())

    truth, guess = y >= 0, p >= 0
    out["acc2_has0"] = float(accuracy_score(truth, guess))
    out["f1_has0"] = _weighted_f1(truth, guess)

    keep = y != 0
    if keep.any():
        truth, guess = y[keep] > 0, p[keep] > 0
        out["acc2_non0"] = float(accuracy_score(truth, guess))
        out["f1_non0"] = _weighted_f1(truth, guess)
    else:
        out["acc2_non0"] = out["f1_non0"] = math.nan
    return out


# ---- classification ---------------------------------------------------------------------------


def _class_ids(arr: np.ndarray, name: str) -> np.ndarray:
    # Float class ids are accepted only when integral, so a (N,) vector of binary probabilities
    # or a single-logit head is refused instead of being truncated into nonsense.
    _check_finite(arr, name)
    if arr.dtype.kind == "f":
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(
                f"{name}: expected integer class ids, got non-integral floats "
                "(pass (N, C) logits, or threshold a single-logit output yourself)"
            )
    ids = arr.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise ValueError(f"{name}: class ids must be >= 0, found {int(ids.min())}")
    return ids


def _uar(y: np.ndarray, pred: np.ndarray) -> float:
    # Mean over the classes present in the labels of the share of their samples predicted as
    # themselves: sklearn's balanced_accuracy_score, without its warning when a prediction names a
    # class absent from the labels (that prediction is simply a miss for its true class).
    classes = np.unique(y)
    return float(np.mean([np.mean(pred[y == c] == c) for c in classes]))


def classification_metrics(logits_or_pred: Any, label: Any, num_classes: int | None = None) -> dict[str, float]:
    """Accuracy, UAR, macro precision / recall / F1 and weighted F1 (sklearn, zero_division=0).

    `logits_or_pred` is (N, C) scores (argmax taken; ties go to the lowest index, as in torch)
    or (N,) / (N, 1) integer class ids; `label` is (N,) or (N, 1) integer class ids.

    With `num_classes`, the macro averages run over labels=range(num_classes), so a class absent
    from both labels and predictions counts as F1 = precision = recall = 0. MIntRec calls sklearn
    without `labels`, i.e. over the classes present in labels or predictions; the two agree
    whenever every class occurs in one of them (the case on a full test split) and differ only on
    small subsets, where ours is the stricter, split-independent definition. Without
    `num_classes` we behave exactly like MIntRec. Weighted F1 is the same either way (an absent
    class has weight 0).

    `uar` (unweighted average recall, the speech-emotion field's main score) is the mean recall
    over the classes present in the labels, sklearn's balanced_accuracy_score. It ignores
    `num_classes`: it equals `recall_macro` when every class occurs in the labels, and is higher
    when a class is absent from the labels (recall_macro then counts that class as recall 0 with
    `num_classes`, or counts a class that occurs only in the predictions without it).
    """
    scores = _to_numpy(logits_or_pred, "logits_or_pred")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if scores.ndim == 2 and scores.shape[1] > 1:
        if num_classes is not None and scores.shape[1] != num_classes:
            raise ValueError(f"logits have {scores.shape[1]} columns but num_classes is {num_classes}")
        _check_finite(scores, "logits")  # np.argmax would silently pick the first NaN
        pred = np.argmax(scores, axis=1).astype(np.int64)
    else:
        pred = _class_ids(_column(scores, "logits_or_pred"), "pred")
    y = _class_ids(_column(_to_numpy(label, "label"), "label"), "label")
    _check_pair(pred, y)

    labels = None
    if num_classes is not None:
        num_classes = int(num_classes)
        for arr, name in ((pred, "pred"), (y, "label")):
            if arr.max() >= num_classes:
                raise ValueError(f"{name}: class id {int(arr.max())} out of range for num_classes={num_classes}")
        labels = list(range(num_classes))

    precision, recall, f1, _ = precision_recall_fscore_support(y, pred, labels=labels, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "uar": _uar(y, pred),
        "f1_macro": float(f1),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_weighted": float(f1_score(y, pred, labels=labels, average="weighted", zero_division=0)),
    }


# ---- dispatch ---------------------------------------------------------------------------------


def compute_metrics(task: str, pred: Any, label: Any, num_classes: int | None = None) -> dict[str, float]:
    """`regression_metrics` or `classification_metrics` by task name.

    `num_classes` is ignored for regression so a trainer can pass its dataset's value
    unconditionally; a (N, C) prediction is still refused there by the shape check.
    """
    if task == "regression":
        return regression_metrics(pred, label)
    if task == "classification":
        return classification_metrics(pred, label, num_classes)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
