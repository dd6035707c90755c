"""Metric tables in Markdown: mean +- std over seeds, accuracies and F1 in percent."""
from __future__ import annotations

import math

import numpy as np

LABELS = {
    "mae": "MAE", "corr": "Corr", "acc2_has0": "Acc-2 has0", "f1_has0": "F1 has0", "acc2_non0": "Acc-2 non0",
    "f1_non0": "F1 non0", "acc7": "Acc-7", "acc5": "Acc-5", "acc3": "Acc-3", "accuracy": "Acc",
    "f1_macro": "F1 macro", "precision_macro": "P macro", "recall_macro": "R macro", "f1_weighted": "F1 weighted",
}
REGRESSION_ORDER = ["mae", "corr", "acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0"]
CLASSIFICATION_ORDER = ["accuracy", "f1_macro", "precision_macro", "recall_macro", "f1_weighted"]
RAW_SCALE = {"mae", "corr"}  # every other metric is a fraction shown in percent


def aggregate(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single seed) ignoring nothing."""
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": int(a.size)}


def fmt(metric: str, stat: dict[str, float]) -> str:
    scale, digits = (1.0, 3) if metric in RAW_SCALE else (100.0, 2)
    mean, std = stat["mean"] * scale, stat["std"] * scale
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if stat.get("n", 1) > 1 else f"{mean:.{digits}f}"


def metric_order(task: str, names) -> list[str]:
    order = REGRESSION_ORDER if task == "regression" else CLASSIFICATION_ORDER
    return [m for m in order if m in names]


def split_table(summary: dict[str, dict[str, dict]], task: str) -> str:
    """summary: split -> metric -> {mean, std, n}. One row per split."""
    first = next(iter(summary.values()))
    cols = metric_order(task, first)
    lines = ["| split | " + " | ".join(LABELS[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for split, stats in summary.items():
        lines.append(f"| {split} | " + " | ".join(fmt(c, stats[c]) for c in cols) + " |")
    return "\n".join(lines)
