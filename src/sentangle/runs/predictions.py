"""A seed's predictions on every split, in one compressed file: seed_<s>/predictions.npz.

    <split>.id            ids of the split's samples, in dataset order (str)
    <split>.prediction    the model's outputs as predicted (float32): (N,) for regression, the
                          logits (N, C) for classification
    <split>.label         the labels as loaded: float (N,) for regression, class indices (N,)
    class_names           (classification) the class names, in logit order

The arrays are stored as the model returned them; `predictions_csv` gives them back as CSV (id,
prediction, label, logit_<class>): the columns `sentangle predict` writes first, before polarity,
probabilities and diagnostics. Run folders written before this
format hold predictions_<split>.csv instead; `read_seed_predictions` reads either.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from sentangle.core.io import atomic_write

FILE = "predictions.npz"


def csv_text(pred: np.ndarray, label: np.ndarray, ids: list[str], class_names: list[str] | None) -> str:
    """Predictions as CSV: id, prediction, label (and one logit column per class for classification)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    if class_names is None:
        w.writerow(["id", "prediction", "label"])
        w.writerows((i, f"{p:.6f}", f"{y:.6f}") for i, p, y in zip(ids, pred, label))
    else:
        names = list(class_names)
        w.writerow(["id", "prediction", "label"] + [f"logit_{c}" for c in names])
        w.writerows(
            [i, names[int(np.argmax(p))], names[int(y)]] + [f"{v:.5f}" for v in p] for i, p, y in zip(ids, pred, label)
        )
    return buf.getvalue()


def write_seed_predictions(
    seed_dir: Path, outputs: dict[str, tuple[np.ndarray, np.ndarray, list[str]]], class_names: list[str] | None
) -> Path:
    """Write seed_dir/predictions.npz from {split: (prediction, label, ids)} as `predict` returns them."""
    arrays: dict[str, Any] = {}  # Any: numpy's stub would read a key as its allow_pickle flag
    for split, (pred, label, ids) in outputs.items():
        arrays[f"{split}.id"] = np.asarray(ids, dtype=str)
        arrays[f"{split}.prediction"] = np.asarray(pred, dtype=np.float32)
        arrays[f"{split}.label"] = np.asarray(label)
    if class_names is not None:
        arrays["class_names"] = np.asarray(class_names, dtype=str)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    return atomic_write(Path(seed_dir) / FILE, write)


def _stored(seed_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str] | None] | None:
    path = Path(seed_dir) / FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        if f"{split}.prediction" not in z.files:
            return None
        names = [str(c) for c in z["class_names"]] if "class_names" in z.files else None
        return z[f"{split}.prediction"], z[f"{split}.label"], [str(i) for i in z[f"{split}.id"]], names


def stored_predictions(seed_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str] | None] | None:
    """(predictions or logits as stored, labels, ids, class names) of `split` from the folder's
    predictions.npz; None when it holds none."""
    return _stored(seed_dir, split)


def predictions_csv(seed_dir: Path, split: str) -> str | None:
    """The seed's predictions on `split` as CSV: id, prediction, label and the logits, the first columns
    of what `sentangle predict` writes (None when not stored)."""
    legacy = Path(seed_dir) / f"predictions_{split}.csv"
    stored = _stored(seed_dir, split)
    if stored is None:
        return legacy.read_bytes().decode("utf-8") if legacy.is_file() else None
    pred, label, ids, names = stored
    return csv_text(pred, label, ids, names)


def has_predictions(seed_dir: Path, split: str) -> bool:
    return _stored(seed_dir, split) is not None or (Path(seed_dir) / f"predictions_{split}.csv").is_file()


def read_csv_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """(prediction, label, class names) from a predictions CSV; class indices for classification."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        names = [c[len("logit_") :] for c in (rows[0] if rows else {}) if c.startswith("logit_")]
    if not names:
        return (np.array([float(r["prediction"]) for r in rows]), np.array([float(r["label"]) for r in rows]), None)
    index = {n: i for i, n in enumerate(names)}
    return (np.array([index[r["prediction"]] for r in rows]), np.array([index[r["label"]] for r in rows]), names)


def read_seed_predictions(seed_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str] | None] | None:
    """(prediction, label, class names) of one seed on `split`, from predictions.npz or an older
    folder's predictions_<split>.csv; predicted and true class indices for classification. None when
    the seed folder holds neither (the results store in git keeps no predictions)."""
    stored = _stored(seed_dir, split)
    if stored is not None:
        pred, label, _, names = stored
        if names is None:
            return pred.astype(np.float64), label.astype(np.float64), None
        return np.argmax(pred, axis=1), label.astype(np.int64), names
    legacy = Path(seed_dir) / f"predictions_{split}.csv"
    return read_csv_predictions(legacy) if legacy.is_file() else None


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 (logits (N, C) -> class probabilities)."""
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def polarity(score: float) -> str:
    """negative / neutral / positive as the field's 3-class accuracy reads a sentiment score:
    clipped to [-1, 1] and rounded, so neutral is |score| < 0.5."""
    return "neutral" if abs(score) < 0.5 else ("positive" if score > 0 else "negative")


def prediction_rows(
    pred: np.ndarray,
    ids: list[str],
    class_names: list[str] | None,
    label: np.ndarray | None = None,
    label_range: tuple[float, float] | list[float] | None = None,
    diagnostics: dict[str, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """One record per clip, what `sentangle predict` writes as CSV or JSON: id, prediction (score,
    or class name), label (when the input has labels), polarity (a sentiment score, on a scale
    symmetric around 0) or logits and probabilities per class, then the model's diagnostics."""
    rows: list[dict[str, Any]] = []
    symmetric = label_range is None or abs(float(label_range[0]) + float(label_range[1])) < 1e-9
    if class_names is not None:
        logits, probs = np.asarray(pred, np.float64), probabilities(pred)
    for k, i in enumerate(ids):
        row: dict[str, Any] = {"id": i}
        if class_names is None:
            row["prediction"] = round(float(pred[k]), 6)
            if label is not None:
                row["label"] = round(float(label[k]), 6)
            if symmetric:
                row["polarity"] = polarity(float(pred[k]))
        else:
            row["prediction"] = class_names[int(np.argmax(pred[k]))]
            if label is not None:
                row["label"] = class_names[int(label[k])]
            row.update({f"logit_{c}": round(float(v), 5) for c, v in zip(class_names, logits[k])})
            row.update({f"prob_{c}": round(float(v), 5) for c, v in zip(class_names, probs[k])})
        for name, values in (diagnostics or {}).items():
            v = np.asarray(values[k], np.float64).reshape(-1)
            row.update(
                {name: round(float(v[0]), 5)}
                if v.size == 1
                else {f"{name}_{j}": round(float(x), 5) for j, x in enumerate(v)}
            )
        rows.append(row)
    return rows


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """Records as CSV text, one column per key any of them has (in first-seen order)."""
    buf = io.StringIO()
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["id", "prediction"]
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
