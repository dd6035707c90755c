"""Sanity checks of a trained seed's predictions: collapsed to a constant, or no better than one."""

from __future__ import annotations

import numpy as np


def constant_predictions(pred: np.ndarray, label: np.ndarray, task: str) -> bool:
    """Whether a split's predictions are (nearly) constant while its labels are not: regression
    predictions whose std is below 1% of the labels' std, or one class predicted for every sample
    of a split with several classes. Such a model scores like the mean (or majority) predictor;
    its MAE alone does not show it."""
    if len(label) < 2:
        return False
    if task == "regression":
        spread = float(np.std(label))
        return spread > 0 and float(np.std(pred)) < 0.01 * spread
    return len(np.unique(label)) > 1 and len(np.unique(np.argmax(pred, -1))) == 1


# no_better_than_constant's bar: on MOSEI text, diverged DBR seeds were at 0.95-1.03 times the best
# constant's test MAE and healthy models at 0.78-0.83 (the runs of docs/dbr.md, "Encoder output scale").
NO_GAIN_MARGIN = 0.9


def no_better_than_constant(
    pred: np.ndarray, label: np.ndarray, train_label: np.ndarray, task: str, margin: float = NO_GAIN_MARGIN
) -> bool:
    """Whether a split's error is above `margin` times that of the best constant predictor fitted
    on the training labels (their mean or median for MAE, their majority class for the error
    rate). A model that has learned (almost) nothing scores there without being constant."""
    if len(label) == 0 or len(train_label) == 0:
        return False
    if task == "regression":
        error = float(np.mean(np.abs(pred - label)))
        base = min(float(np.mean(np.abs(c - label))) for c in (np.mean(train_label), np.median(train_label)))
    else:
        majority = np.bincount(train_label.astype(int)).argmax()
        error = float(np.mean(np.argmax(pred, -1) != label))
        base = float(np.mean(label != majority))
    return base > 0 and error > margin * base
