"""Metric tables in Markdown: mean +- std over seeds, accuracies and F1 in percent."""

from __future__ import annotations

import math

import numpy as np

from sentangle.evaluation.metrics import METRIC_DIRECTIONS

LABELS = {
    "mae": "MAE",
    "corr": "Corr",
    "acc2_has0": "Acc-2 has0",
    "f1_has0": "F1 has0",
    "acc2_non0": "Acc-2 non0",
    "f1_non0": "F1 non0",
    "acc7": "Acc-7",
    "acc5": "Acc-5",
    "acc3": "Acc-3",
    "accuracy": "Acc",
    "uar": "UAR",
    "f1_macro": "F1 macro",
    "precision_macro": "P macro",
    "recall_macro": "R macro",
    "f1_weighted": "F1 weighted",
}
REGRESSION_ORDER = ["mae", "corr", "acc7", "acc5", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0"]
CLASSIFICATION_ORDER = ["accuracy", "uar", "f1_macro", "precision_macro", "recall_macro", "f1_weighted"]
RAW_SCALE = {"mae", "corr"}  # every other metric is a fraction shown in percent


def aggregate(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single seed) ignoring nothing."""
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": int(a.size)}


def beyond_noise(stat: dict[str, float], side: str) -> str:
    """'yes' when mean +- 2 standard errors of the mean (std / sqrt(n), from `aggregate`) lies wholly
    `side` of 0 ('above' or 'below'), 'no' when it does not, 'n/a' for fewer than two values: a
    difference of means over a few seeds says little unless it clears its own seed noise."""
    if side not in ("above", "below"):
        raise ValueError(f"side: expected 'above' or 'below', got {side!r}")
    if stat.get("n", 0) < 2:
        return "n/a"
    half = 2 * stat["std"] / math.sqrt(stat["n"])
    return "yes" if (stat["mean"] - half > 0 if side == "above" else stat["mean"] + half < 0) else "no"


def interval_text(metric: str, stat: dict[str, float], signed: bool = True) -> str:
    """'[lo, hi]' = mean +- 2 standard errors, in the metric's display scale (signed: for differences)."""
    scale, digits = (1.0, 3) if metric in RAW_SCALE else (100.0, 2)
    half = 2 * stat["std"] / math.sqrt(stat["n"]) if stat.get("n", 0) > 1 else 0.0
    f = f"{'+' if signed else ''}.{digits}f"
    return f"[{(stat['mean'] - half) * scale:{f}}, {(stat['mean'] + half) * scale:{f}}]"


def fmt(metric: str, stat: dict[str, float | None]) -> str:
    scale, digits = (1.0, 3) if metric in RAW_SCALE else (100.0, 2)
    if stat["mean"] is None or math.isnan(stat["mean"]):  # undefined (a correlation over one clip); JSON null
        return "n/a"
    mean, std = stat["mean"] * scale, (stat["std"] or 0.0) * scale
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if (stat.get("n") or 1) > 1 else f"{mean:.{digits}f}"


def metric_order(task: str, names) -> list[str]:
    order = REGRESSION_ORDER if task == "regression" else CLASSIFICATION_ORDER
    return [m for m in order if m in names]


def split_table(summary: dict[str, dict[str, dict]], task: str, label: str = "split") -> str:
    """summary: split (or another row name, headed `label`) -> metric -> {mean, std, n}. One row per split."""
    first = next(iter(summary.values()))
    cols = metric_order(task, first)
    lines = [f"| {label} | " + " | ".join(LABELS[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for split, stats in summary.items():
        lines.append(f"| {split} | " + " | ".join(fmt(c, stats[c]) for c in cols) + " |")
    return "\n".join(lines)


def best_mean(rows: dict[str, dict[str, dict]], metric: str) -> float | None:
    """The best mean of `metric` over rows, in the metric's direction (evaluation.metrics); NaN skipped."""

    means = [r[metric]["mean"] for r in rows.values() if metric in r and r[metric]["mean"] == r[metric]["mean"]]
    if not means:
        return None
    return min(means) if METRIC_DIRECTIONS.get(metric, "max") == "min" else max(means)


def results_table(
    rows: dict[str, dict[str, dict]], task: str, extra: dict[str, dict[str, str]] | None = None, label: str = "model"
) -> str:
    """rows: row name -> metric -> {mean, std, n}; one row each, the best mean per metric in bold.

    `extra`: further columns, header -> row name -> text (e.g. parameters, deltas), after the metrics.
    """
    cols = metric_order(task, {m for r in rows.values() for m in r})
    best = {c: best_mean(rows, c) for c in cols}
    extra = extra or {}
    head = [label, "seeds"] + [LABELS.get(c, c) for c in cols] + list(extra)
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, stats in rows.items():
        n = next(iter(stats.values()))["n"] if stats else 0
        cells = [f"`{name}`", str(n)]
        for c in cols:
            text = fmt(c, stats[c]) if c in stats else "n/a"
            cells.append(f"**{text}**" if c in stats and best[c] is not None and stats[c]["mean"] == best[c] else text)
        cells += [col.get(name, "n/a") for col in extra.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
