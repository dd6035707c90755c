"""Confusion matrices as numbers: counts, CSV and Markdown (report/plots.py draws them).

Rows are the true classes, columns the predicted ones, both in the dataset's class order, so a
row sums to the number of samples of its class.
"""

from __future__ import annotations

import csv
import io

import numpy as np

__all__ = ["confusion_counts", "confusion_csv", "confusion_markdown", "read_confusion_csv"]

CORNER = "true \\ predicted"


def confusion_counts(pred: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts from predicted and true class indices."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(label, np.int64), np.asarray(pred, np.int64)), 1)
    return m


def confusion_csv(counts: np.ndarray, names: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([CORNER, *names])
    w.writerows([name, *(int(v) for v in row)] for name, row in zip(names, counts))
    return buf.getvalue()


def read_confusion_csv(text: str) -> tuple[np.ndarray, list[str]]:
    """(counts, class names) from `confusion_csv`'s text."""
    rows = list(csv.reader(io.StringIO(text)))
    names = rows[0][1:]
    return np.array([[int(v) for v in r[1:]] for r in rows[1:]], dtype=np.int64).reshape(len(names), -1), names


def confusion_markdown(counts: np.ndarray, names: list[str]) -> str:
    """Counts, each row's recall (its diagonal share) and the row total: a class the model rarely
    gets right stands out even when it is small."""
    head = [CORNER, *names, "recall", "n"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for i, (name, row) in enumerate(zip(names, counts)):
        n = int(row.sum())
        recall = f"{100 * row[i] / n:.1f}%" if n else "n/a"
        cells = [f"**{int(v)}**" if j == i else str(int(v)) for j, v in enumerate(row)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {recall} | {n} |")
    return "\n".join(lines)
