"""A seed's stored predictions: one compressed predictions.npz, older folders' CSVs, and reports without them."""

from __future__ import annotations

import csv
import io

import numpy as np

from sentangle.config import make_config
from sentangle.recipes.report import report
from sentangle.runs.predictions import (
    FILE,
    has_predictions,
    predictions_csv,
    read_seed_predictions,
    write_seed_predictions,
)
from sentangle.runs.runner import run


def test_regression_predictions_round_trip_and_give_the_csv_back(tmp_path):
    rng = np.random.default_rng(0)
    pred = rng.normal(size=7).astype(np.float32)
    label = rng.uniform(-3, 3, size=7).astype(np.float32)
    ids = [f"v{i}" for i in range(7)]
    write_seed_predictions(tmp_path, {"test": (pred, label, ids)}, None)
    got_pred, got_label, names = read_seed_predictions(tmp_path, "test")
    assert names is None and np.array_equal(got_pred, pred.astype(np.float64)) and np.array_equal(got_label, label)
    rows = list(csv.DictReader(io.StringIO(predictions_csv(tmp_path, "test"))))
    assert [r["id"] for r in rows] == ids
    assert [float(r["prediction"]) for r in rows] == [round(float(p), 6) for p in pred]
    assert [float(r["label"]) for r in rows] == [round(float(y), 6) for y in label]
    assert read_seed_predictions(tmp_path, "valid") is None and not has_predictions(tmp_path, "valid")


def test_classification_predictions_keep_logits_and_class_names(tmp_path):
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5], [0.0, 0.2, 0.9]], dtype=np.float32)
    label = np.array([1, 2, 2])
    write_seed_predictions(tmp_path, {"test": (logits, label, ["a", "b", "c"])}, ["neg", "neu", "pos"])
    pred, got_label, names = read_seed_predictions(tmp_path, "test")
    assert names == ["neg", "neu", "pos"] and list(pred) == [1, 0, 2] and list(got_label) == [1, 2, 2]
    rows = list(csv.DictReader(io.StringIO(predictions_csv(tmp_path, "test"))))
    assert [(r["prediction"], r["label"]) for r in rows] == [("neu", "neu"), ("neg", "pos"), ("pos", "pos")]
    assert [float(r["logit_pos"]) for r in rows] == [-1.0, 0.5, 0.9]


def test_an_older_folders_csv_is_read_the_same_way(tmp_path):
    (tmp_path / "predictions_test.csv").write_text(
        "id,prediction,label,logit_no,logit_yes\nx,yes,no,0.10000,0.90000\ny,no,no,0.70000,0.30000\n"
    )
    pred, label, names = read_seed_predictions(tmp_path, "test")
    assert names == ["no", "yes"] and list(pred) == [1, 0] and list(label) == [0, 0]
    assert predictions_csv(tmp_path, "test") == (tmp_path / "predictions_test.csv").read_text()


def test_a_run_writes_one_file_and_a_report_without_it_says_why(tmp_path):
    cfg = make_config(
        "lf_dnn",
        "synthetic",
        seeds=1,
        out=str(tmp_path),
        name="r",
        overrides=["train.epochs=1", "model.hidden=8", "train.progress=false"],
    )
    res = run(cfg)
    seed = tmp_path / "r" / "seed_1111"
    assert (seed / FILE).is_file() and not list(seed.glob("predictions_*.csv"))
    with np.load(seed / FILE) as z:
        splits = {k.split(".")[0] for k in z.files}
        assert splits == set(res["splits"])
        assert all(len(z[f"{s}.id"]) == len(z[f"{s}.prediction"]) == len(z[f"{s}.label"]) for s in splits)
    (seed / FILE).unlink()  # as in a run folder from git
    out = report([tmp_path / "r"], out=tmp_path / "rep", gates=False)
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "`r`: no seed folder holds test predictions" in text and not out["plots"]
