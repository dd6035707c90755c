"""Normalisation statistics kept on the dataset, applied to other data, and their JSON form."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sentangle.core.errors import DataError
from sentangle.data.dataset import MSADataset, Split, Standardize, statistics_from_json, statistics_to_json
from sentangle.data.lazy import save_lazy
from sentangle.data.named import load_dataset
from sentangle.data.preprocessing import PREPROCESSING_FORMAT, dataset_spec, preprocessing, preprocessing_statistics


def split(x: np.ndarray, lengths=None) -> Split:
    n, t = x.shape[:2]
    mask = np.ones((n, t), bool) if lengths is None else np.arange(t)[None] < np.asarray(lengths)[:, None]
    x = x * mask[..., None]
    return Split({"audio": x.astype(np.float32)}, {"audio": mask}, np.zeros(n, np.float32), [f"c{i}" for i in range(n)])


def toy(seed: int, shift: float = 0.0) -> MSADataset:
    rng = np.random.default_rng(seed)
    splits = {
        s: split(rng.normal(shift, 2.0, (n, 3, 4)), rng.integers(1, 4, n)) for s, n in (("train", 30), ("test", 5))
    }
    return MSADataset("toy", splits, source=f"toy{seed}.npz")


def test_normalize_keeps_the_statistics_it_applied():
    ds = toy(0)
    raw = ds.splits["train"]
    real = raw.features["audio"][raw.masks["audio"]].astype(np.float64)  # the real training frames, by hand
    ds.normalize(("audio",), clip=10.0)
    norm = ds.normalizers["audio"]
    np.testing.assert_allclose(norm.mean, real.mean(0), rtol=1e-12)
    np.testing.assert_allclose(norm.scale, real.std(0), rtol=1e-12)  # no column is near the floor here
    assert not norm.dropped.any() and norm.clip == 10.0 and set(ds.normalizers) == {"audio"}


def test_normalize_with_applies_given_statistics_not_the_datas_own():
    trained = toy(0).normalize(("audio",))
    other = toy(1, shift=5.0)  # another file: its own training split has another mean
    raw = other.splits["test"].features["audio"].copy()
    mask = other.splits["test"].masks["audio"]
    other.normalize_with(trained.normalizers)
    norm = trained.normalizers["audio"]
    want = np.clip((raw - norm.mean) / norm.scale, -10, 10) * mask[..., None]
    np.testing.assert_allclose(other.splits["test"].features["audio"], want, rtol=1e-6, atol=1e-6)
    assert other.normalizers["audio"] is norm
    assert other.info["normalization"]["audio"]["statistics"] == "given"
    # a dataset without a training split can be normalised too (nothing of its own is computed)
    no_train = toy(2)
    del no_train.splits["train"]
    assert no_train.normalize_with(trained.normalizers).normalizers == trained.normalizers
    with pytest.raises(DataError, match=r"toy1.npz: audio has 4 features; the given statistics are for 2"):
        toy(1).normalize_with({"audio": Standardize(np.zeros(2), np.ones(2), np.zeros(2, bool), 10.0)})


def test_normalize_with_on_a_memory_mapped_dataset_matches_the_in_memory_one(tmp_path):
    small = dict(scale=0.05, lengths={"text": 6, "audio": 9, "vision": 8}, dims={"text": 4, "audio": 3, "vision": 5})
    stats = load_dataset("synthetic", seed=0, **small).normalizers
    folder = save_lazy(load_dataset("synthetic", seed=1, normalize=(), **small), tmp_path / "lazy")
    lazy = load_dataset(str(folder), normalize=()).normalize_with(stats)
    eager = load_dataset("synthetic", seed=1, normalize=(), **small).normalize_with(stats)
    assert isinstance(lazy.splits["test"].features["audio"], np.memmap)  # the file is not rewritten
    assert set(lazy.splits["test"].transforms) == {"audio", "vision"}
    for a, b in zip(lazy.batches("test", 4), eager.batches("test", 4), strict=True):
        for m in ("audio", "vision"):
            np.testing.assert_array_equal(a.features[m].numpy(), b.features[m].numpy())


def test_statistics_json_round_trip_is_exact():
    rng = np.random.default_rng(0)
    mean = np.concatenate([rng.normal(size=6), np.float32([0.1, 1 / 3]).astype(np.float64), [1e-300, -0.0]])
    scale = np.abs(rng.normal(size=10)) + np.float64(np.float32(0.7))
    dropped = np.zeros(10, bool)
    dropped[[2, 7]] = True
    stats = {"audio": Standardize(mean, scale, dropped, 7.5)}
    back = statistics_from_json(json.loads(json.dumps(statistics_to_json(stats))), "stats")["audio"]
    assert back.mean.dtype == np.float64 and back.mean.view(np.uint64).tolist() == mean.view(np.uint64).tolist()
    assert back.scale.view(np.uint64).tolist() == scale.view(np.uint64).tolist()
    assert back.dropped.tolist() == dropped.tolist() and back.clip == 7.5
    assert statistics_to_json(stats)["audio"]["dropped"] == [2, 7]


@pytest.mark.parametrize(
    "value,expected",
    [
        ({"smell": {}}, "expected a mapping from modalities"),
        ({"audio": {"mean": [0.0]}}, r"stats.audio: expected \{mean, scale, dropped, clip\}"),
        ({"audio": {"mean": [0.0, 1.0], "scale": [1.0], "dropped": [], "clip": 1}}, "same length"),
        ({"audio": {"mean": [0.0], "scale": [0.0], "dropped": [], "clip": 1}}, "positive scale"),
        ({"audio": {"mean": ["a"], "scale": [1.0], "dropped": [], "clip": 1}}, "lists of numbers"),
        ({"audio": {"mean": [0.0], "scale": [1.0], "dropped": [3], "clip": 1}}, r"indices in \[0, 1\)"),
    ],
)
def test_bad_statistics_are_named(value, expected):
    with pytest.raises(DataError, match=expected):
        statistics_from_json(value, "stats")


def test_preprocessing_holds_statistics_and_a_feature_spec_without_machine_paths(tmp_path):
    ds = toy(0).normalize(("audio",))
    ds.class_names, ds.task = None, "regression"
    ds.info["extractors"] = {"audio": {"name": "opensmile", "version": "2.5"}}
    # an absolute path of this machine (tmp_path is one) keeps its file name only
    file = str(tmp_path / "data" / "feats.npz")
    prep = preprocessing(ds, None, {"name": file, "root": str(tmp_path), "trusted": True, "x": 1})
    assert prep["format"] == PREPROCESSING_FORMAT
    assert prep["features"] == {
        "modalities": ["audio"],
        "input_dims": {"audio": 4},
        "task": "regression",
        "class_names": None,
        "text_encoder": None,
        "dataset": {"name": "feats.npz", "x": 1},
        "extractors": {"audio": {"name": "opensmile", "version": "2.5"}},
        "max_frames": None,
        "label_range": [float(v) for v in ds.label_range],
    }
    back = preprocessing_statistics(json.loads(json.dumps(prep)), "p")
    assert back is not None and np.array_equal(back["audio"].mean, ds.normalizers["audio"].mean)
    assert preprocessing_statistics(None, "p") is None  # an old checkpoint: unknown, not "none applied"
    assert preprocessing_statistics({**prep, "normalization": None}, "p") is None


def test_text_encoder_of_the_spec_is_the_setting_that_encoded_the_texts():
    ds = toy(0)
    ds.info.update(text_encoder="minilm", finetune=0, max_length=32)  # as text.prepare_text records it
    assert preprocessing(ds, {"name": "other", "finetune": 0})["features"]["text_encoder"] == {
        "name": "minilm",
        "finetune": 0,
        "max_length": 32,
    }
    assert preprocessing(toy(0), "bert-x")["features"]["text_encoder"] == {
        "name": "bert-x",
        "finetune": "all",
        "max_length": 64,
    }
    assert dataset_spec({"name": "synthetic", "scale": 0.1}) == {"name": "synthetic", "scale": 0.1}
