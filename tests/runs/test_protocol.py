"""Grouped (speaker-independent) cross-validation, train.protocol: grouped_cv, and the test
confusion matrix a classification run writes."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from sentangle.cli import main
from sentangle.config import make_config
from sentangle.core.errors import CheckpointError, ConfigError, DataError
from sentangle.data.dataset import MSADataset, Split, full_masks
from sentangle.evaluation.metrics import classification_metrics
from sentangle.runs import runner
from sentangle.runs.export import checkpoint_of
from sentangle.runs.protocol import Folds
from sentangle.runs.provenance import code_fingerprint, stale_seeds
from sentangle.runs.runner import run, run_code

SPEAKERS = [f"spk{i:02d}" for i in range(6)]
CLASSES = ["angry", "happy", "sad"]
CLIPS = 9  # per speaker, three of each class


def speech_dataset(seed: int = 0) -> MSADataset:
    """Six speakers with three classes each, spread over the three stored splits so that a speaker
    sits in more than one of them (the protocol pools them anyway). The audio carries the class,
    plus a per-speaker offset that a leak of test speakers' statistics would move."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(len(CLASSES), 4)) * 3
    rows = []
    for s, spk in enumerate(SPEAKERS):
        offset = rng.normal(size=4) + 0.5 * s
        for c in range(CLIPS):
            label = c % len(CLASSES)
            x = centre[label] + offset + rng.normal(size=(5, 4)) * 0.5
            rows.append((f"{spk}$_$clip{c}", label, x.astype(np.float32), "train test valid".split()[c // 3]))
    splits = {}
    for split, frames in (("train", 5), ("valid", 3), ("test", 4)):  # unequal lengths: pooling pads
        part = [r for r in rows if r[3] == split]
        x = np.stack([r[2][:frames] for r in part])
        splits[split] = Split(
            {"audio": x, "vision": x[..., :2].copy()},
            {"audio": full_masks(x), "vision": full_masks(x)},
            np.array([r[1] for r in part], dtype=np.int64),
            [r[0] for r in part],
        )
    return MSADataset("speech", splits, task="classification", class_names=CLASSES, label_range=None).validate()


def cv_config(tmp_path: Path, folds=3, seeds=1, name="cv", **extra):
    overrides = [
        "train.epochs=6",
        "train.batch_size=8",
        "train.lr=0.01",
        "model.hidden=8",
        "train.progress=false",
        "train.protocol=grouped_cv",
        f"train.folds={folds}",
        *[f"train.{k}={v}" for k, v in extra.items()],
    ]
    return make_config("lf_dnn", "synthetic", seeds=seeds, out=str(tmp_path), name=name, overrides=overrides)


def speaker(i: str) -> str:
    return i.split("$_$")[0]


def test_folds_deal_sorted_speakers_round_robin_and_never_share_one():
    ds = speech_dataset()
    folds = Folds(ds, 3)
    # sorted speakers 00..05 dealt round-robin into 3 folds: {00, 03}, {01, 04}, {02, 05}
    assert [p["test"] for p in folds.plan] == [["spk00", "spk03"], ["spk01", "spk04"], ["spk02", "spk05"]]
    assert [p["valid"] for p in folds.plan] == [["spk01", "spk04"], ["spk02", "spk05"], ["spk00", "spk03"]]
    all_ids = sorted(i for sp in ds.splits.values() for i in sp.ids)
    tested, validated = [], []
    for k in range(len(folds)):
        fold = folds.dataset(k, normalize=())
        spk = {s: {speaker(i) for i in sp.ids} for s, sp in fold.splits.items()}
        assert not (spk["train"] & spk["valid"] or spk["train"] & spk["test"] or spk["valid"] & spk["test"])
        assert spk["train"] | spk["valid"] | spk["test"] == set(SPEAKERS)
        assert spk["test"] == set(folds.plan[k]["test"])
        # every clip of a speaker goes with it, whichever stored split held it
        assert len(fold.splits["test"]) == CLIPS * len(spk["test"])
        tested += fold.splits["test"].ids
        validated += fold.splits["valid"].ids
    assert sorted(tested) == all_ids and sorted(validated) == all_ids  # each sample once


def test_leave_one_speaker_out_and_too_many_folds():
    ds = speech_dataset()
    assert len(Folds(ds, 0)) == len(SPEAKERS)
    assert [p["test"] for p in Folds(ds, 0).plan] == [[s] for s in SPEAKERS]
    with pytest.raises(ConfigError, match=r"train\.folds=7: more folds than .* speakers \(6"):
        Folds(ds, 7)


def test_ids_without_a_speaker_prefix_are_refused():
    ds = speech_dataset()
    ds.splits["valid"].ids[0] = "loose_clip"
    with pytest.raises(DataError, match=r"'loose_clip' has no '\$_\$'"):
        Folds(ds, 3)


def test_each_fold_is_normalised_with_its_own_training_speakers():
    ds = speech_dataset()
    folds = Folds(ds, 3)
    fold = folds.dataset(0)
    raw = folds.dataset(0, normalize=())
    train_frames = raw.splits["train"].features["audio"][raw.splits["train"].masks["audio"]]
    np.testing.assert_allclose(fold.normalizers["audio"].mean, train_frames.astype(np.float64).mean(0), rtol=1e-6)
    every_frame = np.concatenate([sp.features["audio"][sp.masks["audio"]] for sp in ds.splits.values()])
    assert not np.allclose(fold.normalizers["audio"].mean, every_frame.mean(0), atol=0.1)
    # a dataset normalised beforehand (with its stored train split) would leak: refused
    ds.normalize(("audio",))
    with pytest.raises(ConfigError, match="already normalised"):
        Folds(ds, 3)


def test_cv_run_pools_the_folds_and_resumes_without_retraining(tmp_path, monkeypatch, capsys):
    ds = speech_dataset()
    cfg = cv_config(tmp_path)
    summary = run(cfg, dataset=ds)
    folder = tmp_path / "cv"
    seed_dir = folder / "seed_1111"

    # pooled metrics == metrics of the folds' test predictions concatenated (read independently)
    logits, labels, ids = [], [], []
    for k in range(3):
        with np.load(seed_dir / "folds" / f"fold_{k}" / "predictions.npz") as z:
            logits.append(z["test.prediction"])
            labels.append(z["test.label"])
            ids += [str(i) for i in z["test.id"]]
        assert (seed_dir / "folds" / f"fold_{k}" / "checkpoint.pt").is_file()
    assert sorted(ids) == sorted(i for sp in ds.splits.values() for i in sp.ids)
    expected = classification_metrics(np.concatenate(logits), np.concatenate(labels), len(CLASSES))
    record = json.loads((seed_dir / "metrics.json").read_text())
    assert record["metrics"]["test"] == pytest.approx(expected)
    assert summary["splits"]["test"]["uar"]["mean"] == pytest.approx(expected["uar"])
    assert [f["groups"]["test"] for f in record["folds"]] == [
        ["spk00", "spk03"],
        ["spk01", "spk04"],
        ["spk02", "spk05"],
    ]
    assert not (seed_dir / "checkpoint.pt").exists()  # K models, in the fold folders
    s = json.loads((folder / "summary.json").read_text())
    assert s["protocol"]["folds"] == 3 and s["protocol"]["groups"] == 6
    md = (folder / "summary.md").read_text()
    assert "Per fold" in md and "spk00, spk03" in md and "UAR" in md

    # the pooled confusion matrix counts every sample once: row sums are the class counts
    with open(folder / "confusion.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == CLASSES and [r[0] for r in rows[1:]] == CLASSES
    all_labels = np.concatenate([sp.labels for sp in ds.splits.values()])
    assert [sum(int(v) for v in r[1:]) for r in rows[1:]] == np.bincount(all_labels, minlength=3).tolist()

    # restart after fold 2 and the seed were lost: only fold 2 is trained again
    (seed_dir / "metrics.json").unlink()
    (seed_dir / "folds" / "fold_2" / "metrics.json").unlink()
    kept = seed_dir / "folds" / "fold_0" / "metrics.json"
    before = kept.stat().st_mtime_ns
    calls = []
    train_seed = runner.train_seed
    monkeypatch.setattr(runner, "train_seed", lambda *a, **k: calls.append(a[2]) or train_seed(*a, **k))
    again = run(cfg, dataset=ds)
    assert calls == [seed_dir / "folds" / "fold_2"]
    assert kept.stat().st_mtime_ns == before
    assert again["splits"]["test"] == summary["splits"]["test"]  # same seed, same data: same fold 2

    # the seeds of this checkout are its own for every staleness check (the plan, the provenance
    # section, --retrain-stale), which fingerprint the run's code as the runner does
    assert stale_seeds(folder, run_code(cfg)) == {}
    without = stale_seeds(folder, code_fingerprint(runner.MODELS.get("lf_dnn")))  # as they were read before
    assert "runs/protocol.py" in without["seed_1111"]

    # the seed folder holds K models: export says so and names a fold
    with pytest.raises(CheckpointError, match="grouped cross-validation.*fold_0"):
        checkpoint_of(seed_dir)
    assert checkpoint_of(seed_dir / "folds" / "fold_1") == seed_dir / "folds" / "fold_1" / "checkpoint.pt"
    # a fold's model on its dataset's own splits would score speakers it trained on: refused
    assert main(["eval", str(seed_dir / "folds" / "fold_1" / "checkpoint.pt")]) == 2
    assert "one fold's model of a grouped cross-validation run" in capsys.readouterr().err


def test_fixed_classification_run_writes_confusion_per_seed(tmp_path):
    ds = speech_dataset()
    cfg = make_config(
        "lf_dnn",
        "synthetic",
        seeds=2,
        out=str(tmp_path),
        name="fixed",
        overrides=["train.epochs=2", "model.hidden=8", "train.progress=false"],
    )
    run(cfg, dataset=ds)
    counts = np.bincount(ds.splits["test"].labels, minlength=3).tolist()
    for seed in (1111, 1112):
        with open(tmp_path / "fixed" / f"seed_{seed}" / "confusion.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert [sum(int(v) for v in r[1:]) for r in rows[1:]] == counts
    with open(tmp_path / "fixed" / "confusion.csv", newline="") as f:
        pooled = list(csv.reader(f))
    assert [sum(int(v) for v in r[1:]) for r in pooled[1:]] == [2 * c for c in counts]
    assert (tmp_path / "fixed" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "true \\ predicted" in (tmp_path / "fixed" / "summary.md").read_text()


def test_protocol_settings_are_checked(tmp_path):
    assert make_config(overrides=["train.folds=loso"]).train.folds == 0
    for bad, match in (
        ("train.protocol=kfold", "train.protocol must be fixed or grouped_cv"),
        ("train.folds=2", "train.folds must be 0 or loso"),
        ("train.folds=abc", "train.folds must be a whole number or loso"),
        ("train.folds=-1", r"train\.folds must be a finite number >= 0"),
    ):
        with pytest.raises(ConfigError, match=match):
            make_config(overrides=[bad])


def test_cli_too_many_folds_exits_2_naming_train_folds(tmp_path, capsys):
    # an utterance-level .npz with speaker-prefixed ids, 4 speakers
    rng = np.random.default_rng(0)
    n = 24
    ids = np.array([f"s{i % 4}$_$u{i}" for i in range(n)])
    np.savez(
        tmp_path / "spk.npz",
        id=ids,
        label=rng.uniform(-2, 2, n),
        split=np.array(["train", "valid", "test"] * (n // 3)),
        text=rng.normal(size=(n, 6)),
        audio=rng.normal(size=(n, 3)),
    )
    args = ["train", "-m", "lf_dnn", "-d", str(tmp_path / "spk.npz"), "--seeds", "1", "--out", str(tmp_path)]
    args += ["--no-progress", "train.protocol=grouped_cv", "model.hidden=8", "train.epochs=1"]
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert main([*args, "train.folds=5", "--name", "bad"]) == 2
        err = capsys.readouterr().err
        assert "train.folds=5" in err and "(4" in err and "Traceback" not in err
        assert not (tmp_path / "bad").exists()  # refused before anything was written
        # the same data loaded by name: unnormalised, each fold normalising itself, LOSO
        assert main([*args, "train.folds=loso", "--name", "ok"]) == 0
    finally:
        os.chdir(cwd)
    record = json.loads((tmp_path / "ok" / "seed_1111" / "metrics.json").read_text())
    assert len(record["folds"]) == 4 and set(record["metrics"]) == {"valid", "test"}
    info = json.loads((tmp_path / "ok" / "seed_1111" / "folds" / "fold_0" / "dataset.json").read_text())
    assert info["splits"]["test"]["samples"] == n // 4 and "normalization" in info["info"]
