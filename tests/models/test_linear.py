"""The closed-form floor (models/linear.py): the trainer fits it once per grid value and keeps the one
best on validation; its torch forward pass gives scikit-learn's own decisions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, mean_absolute_error
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from sentangle.config import TrainConfig
from sentangle.core.errors import ConfigError
from sentangle.data import MSADataset, Split, full_masks
from sentangle.models import create_model
from sentangle.training.trainer import fit, predict

GRID = [1e-3, 1e-2, 1e-1, 1.0]


def dataset(task: str, classes: int = 4, n: int = 90, seed: int = 0) -> MSADataset:
    """Audio 'functionals' (one frame of 12 features) and 3 frames of 5 'text' features per sample;
    labels from a noisy linear score of both."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(17, classes if task == "classification" else 1))
    splits = {}
    for s in ("train", "valid", "test"):
        audio = rng.normal(size=(n, 1, 12)).astype(np.float32) * rng.uniform(0.5, 3, 12).astype(np.float32)
        text = rng.normal(size=(n, 3, 5)).astype(np.float32)
        score = np.concatenate([audio[:, 0], text.mean(1)], 1) @ w + rng.normal(scale=1.0, size=(n, w.shape[1]))
        labels = score.argmax(1) if task == "classification" else np.clip(score[:, 0], -3, 3).astype(np.float32)
        splits[s] = Split(
            {"audio": audio, "text": text},
            {"audio": full_masks(audio), "text": full_masks(text)},
            labels,
            [f"{s}{i}" for i in range(n)],
        )
    names = [f"c{k}" for k in range(classes)] if task == "classification" else None
    return MSADataset("lin", splits, task, names, None if names else (-3, 3)).validate()


def pooled(split: Split) -> np.ndarray:
    # our modality order is text, audio, vision (data.batch.MODALITIES); each averaged over frames
    return np.concatenate([split.features["text"].mean(1), split.features["audio"].mean(1)], 1).astype(np.float64)


def sklearn_pick(ds: MSADataset, make, score, better) -> tuple[int, np.ndarray]:
    """The grid index best on valid and its test predictions, by scikit-learn alone."""
    scaler = StandardScaler().fit(pooled(ds.splits["train"]))
    xs = {s: scaler.transform(pooled(ds.splits[s])) for s in ds.splits}
    best, pick = None, None
    for i, c in enumerate(GRID):
        est = make(c).fit(xs["train"], ds.splits["train"].labels)
        v = score(ds.splits["valid"].labels, est.predict(xs["valid"]))
        if best is None or better(v, best):
            best, pick = v, (i, est.predict(xs["test"]))
    assert pick is not None
    return pick


@pytest.mark.parametrize("classifier", ["logreg", "svm"])
def test_classifier_is_scikit_learns_at_the_value_best_on_valid(classifier):
    ds = dataset("classification")
    model = create_model("linear", ds.input_dims, ds.num_classes, classifier=classifier, grid=GRID)
    res = fit(model, ds, TrainConfig(progress=False), seed=0)
    make = {
        "logreg": lambda c: LogisticRegression(C=c, max_iter=5000, random_state=0),
        "svm": lambda c: LinearSVC(C=c, max_iter=5000, random_state=0),
    }[classifier]
    index, expected = sklearn_pick(ds, make, accuracy_score, lambda a, b: a > b)
    assert res.best_epoch == index + 1 and len(res.history) == len(GRID)
    assert [h["C"] for h in res.history] == GRID
    logits, _, _ = predict(model, ds, "test")
    np.testing.assert_array_equal(np.asarray(logits).argmax(1), expected)
    assert res.metrics["test"]["accuracy"] == pytest.approx(accuracy_score(ds.splits["test"].labels, expected))


def test_regression_is_ridge_with_alpha_from_c():
    ds = dataset("regression")
    model = create_model("linear", ds.input_dims, 1, grid=GRID)
    res = fit(model, ds, TrainConfig(progress=False), seed=0)
    index, expected = sklearn_pick(ds, lambda c: Ridge(alpha=1 / (2 * c)), mean_absolute_error, lambda a, b: a < b)
    assert res.best_epoch == index + 1
    pred, _, _ = predict(model, ds, "test")
    np.testing.assert_allclose(np.asarray(pred), expected, rtol=1e-4, atol=1e-4)


def test_binary_and_a_class_missing_from_training():
    ds = dataset("classification", classes=3)
    train = ds.splits["train"]
    keep = np.flatnonzero(train.labels != 2)  # class 2 never seen in training: two classes remain
    ds.splits["train"] = train.subset(keep)
    model = create_model("linear", ds.input_dims, 3, grid=[1.0])
    fit(model, ds, TrainConfig(progress=False), seed=0)
    logits, _, _ = predict(model, ds, "test")
    pred = np.asarray(logits).argmax(1)
    assert set(pred) <= {0, 1}  # the unseen class never wins
    z = StandardScaler().fit(pooled(ds.splits["train"]))
    est = LogisticRegression(C=1.0, max_iter=5000, random_state=0).fit(
        z.transform(pooled(ds.splits["train"])), ds.splits["train"].labels
    )
    np.testing.assert_array_equal(pred, est.predict(z.transform(pooled(ds.splits["test"]))))


def test_options_are_checked():
    dims = {"audio": 4}
    with pytest.raises(ConfigError, match="model.classifier is 'tree'; expected one of logreg, svm"):
        create_model("linear", dims, 3, classifier="tree")
    with pytest.raises(ConfigError, match="model.grid must be a non-empty list of positive numbers"):
        create_model("linear", dims, 3, grid=[0.0])
    with pytest.raises(ConfigError, match=r"model.modalities \['vision'\] are not in the data"):
        create_model("linear", dims, 3, modalities=["vision"])
    model = create_model("linear", dims, 3)
    assert not any(p.requires_grad for p in model.parameters())  # nothing for an optimiser to move
    assert torch.equal(model.scale, torch.ones(4))
