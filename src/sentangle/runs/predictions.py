"""A seed's predictions on every split, in one compressed file: seed_<s>/predictions.npz.

    <split>.id            ids of the split's samples, in dataset order (str)
    <split>.prediction    the model's outputs as predicted (float32): (N,) for regression, the
                          logits (N, C) for classification
    <split>.label         the labels as loaded: float (N,) for regression, class indices (N,)
    class_names           (classification) the class names, in logit order

The arrays are stored as the model returned them, so `predictions_csv` gives back the CSV that
`sentangle predict` writes for the same checkpoint, byte for byte. Run folders written before this
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


def predictions_csv(seed_dir: Path, split: str) -> str | None:
    """The seed's predictions on `split` as the CSV `sentangle predict` writes (None when not stored)."""
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
