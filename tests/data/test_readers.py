"""Readers for the MMSA / MulT feature pickles and utterance .npz files, and the safe unpickler.

Every test writes a tiny file in exactly the published layout, so the readers are checked against
the format, not against our own writer.
"""

from __future__ import annotations

import collections
import fractions
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from sentangle.core.errors import DataError
from sentangle.data.readers.mmsa import read_mmsa_pickle
from sentangle.data.readers.mult import read_mult_pickle
from sentangle.data.readers.npz import read_npz_utterances
from sentangle.data.safe_pickle import load_pickle

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
SIZES = {"train": 5, "valid": 3, "test": 4}


# ---- tiny files in the published layouts -------------------------------------------------------
def mmsa_split(n: int, seed: int, aligned: bool, L: int = 6, Ta: int = 9, Tv: int = 7) -> dict:
    rng = np.random.default_rng(seed)
    text_len = rng.integers(2, L + 1, n)
    text_len[0] = L  # one full-length row so padding is not the same everywhere
    attention = (np.arange(L)[None] < text_len[:, None]).astype(np.int64)
    text_bert = np.stack([rng.integers(100, 30000, (n, L)) * attention, attention, np.zeros((n, L), np.int64)], axis=1)
    text = rng.normal(size=(n, L, 4)).astype(np.float32)  # BERT outputs are not zero at [PAD] positions
    d = {
        "raw_text": np.array([f"utterance {i}" for i in range(n)]),
        "id": np.array([f"vid{seed}$_${i}" for i in range(n)]),
        "text": text,
        "text_bert": text_bert.astype(np.float64),  # MMSA stores them as floats
        "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
        "classification_labels": np.zeros(n),
        "annotations": np.array(["Neutral"] * n),
    }
    if aligned:
        d["audio"] = rng.normal(size=(n, L, 3)).astype(np.float32) * attention[..., None]
        d["vision"] = rng.normal(size=(n, L, 2)).astype(np.float32) * attention[..., None]
    else:
        d["audio_lengths"] = rng.integers(1, Ta + 1, n)
        d["vision_lengths"] = rng.integers(1, Tv + 1, n)
        d["audio"] = (
            rng.normal(size=(n, Ta, 3)).astype(np.float32)
            * (np.arange(Ta)[None] < d["audio_lengths"][:, None])[..., None]
        )
        d["vision"] = (
            rng.normal(size=(n, Tv, 2)).astype(np.float32)
            * (np.arange(Tv)[None] < d["vision_lengths"][:, None])[..., None]
        )
    return d


def mmsa_data(aligned: bool = False) -> dict:
    return {s: mmsa_split(n, seed, aligned) for seed, (s, n) in enumerate(SIZES.items())}


def mult_split(n: int, seed: int, T: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, n)
    real = (np.arange(T)[None] >= T - lengths[:, None])[..., None]  # left-padded
    return {
        "text": rng.normal(size=(n, T, 6)) * real,
        "audio": (rng.normal(size=(n, T, 4)) * real).astype(np.float32),
        "vision": rng.normal(size=(n, T, 3)) * real,
        "labels": rng.uniform(-3, 3, (n, 1, 1)).astype(np.float32),
        "id": np.array([[f"vid{seed}".encode(), str(i).encode(), b""] for i in range(n)], dtype=object),
    }


def mult_data() -> dict:
    return {s: mult_split(n, seed) for seed, (s, n) in enumerate(SIZES.items())}


def dump(obj, path: Path, protocol: int = pickle.HIGHEST_PROTOCOL) -> Path:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


# ---- safe unpickler -------------------------------------------------------------------------
class RunsCode:
    """Unpickling this calls os.system, the classic malicious-pickle payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_data_loads_in_every_protocol(tmp_path, protocol):
    obj = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "ids": np.array(["x", "yy"]),
        "b": np.array([b"q"]),
        "scalar": np.float64(2.5),
        "od": collections.OrderedDict(k=[1, 2]),
        "dd": collections.defaultdict(list, z=[3]),
        "bytes": b"\x00\xff",
        "set": {1, 2},
        "obj": np.array(["s", 1], dtype=object),
        "fortran": np.ones((3, 2)).T,
    }
    back = load_pickle(dump(obj, tmp_path / "d.pkl", protocol))
    assert np.array_equal(back["a"], obj["a"]) and back["a"].dtype == np.float32
    assert back["ids"].tolist() == ["x", "yy"] and back["b"].tolist() == [b"q"]
    assert back["scalar"] == 2.5 and back["od"] == obj["od"] and back["dd"]["z"] == [3]
    assert back["bytes"] == b"\x00\xff" and back["set"] == {1, 2} and back["obj"].tolist() == ["s", 1]
    assert np.array_equal(back["fortran"], obj["fortran"])


def test_code_running_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = dump({"train": RunsCode(marker)}, tmp_path / "evil.pkl")
    with pytest.raises(DataError) as e:
        load_pickle(path)
    msg = str(e.value)
    assert "evil.pkl" in msg and "system" in msg and "--trust-pickle" in msg
    assert not marker.exists()
    # the same refusal through a reader
    with pytest.raises(DataError, match="refused"):
        read_mmsa_pickle(path)
    assert not marker.exists()


def test_trusted_loads_other_classes(tmp_path):
    path = dump({"x": fractions.Fraction(1, 3)}, tmp_path / "frac.pkl")
    with pytest.raises(DataError, match=r"fractions\.Fraction"):
        load_pickle(path)
    assert load_pickle(path, trusted=True)["x"] == fractions.Fraction(1, 3)


@pytest.mark.parametrize("content", [b"", b"\x80\x04\x95", b"not a pickle at all"])
def test_corrupt_pickle_names_file(tmp_path, content):
    path = tmp_path / "broken.pkl"
    path.write_bytes(content)
    with pytest.raises(DataError, match="broken.pkl"):
        load_pickle(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nowhere.pkl"):
        load_pickle(tmp_path / "nowhere.pkl")


# ---- MMSA -----------------------------------------------------------------------------------
def test_mmsa_unaligned(tmp_path):
    raw = mmsa_data(aligned=False)
    ds = read_mmsa_pickle(dump(raw, tmp_path / "unaligned_50.pkl"), name="mosi")
    assert list(ds.splits) == ["train", "valid", "test"]
    assert ds.modalities == ("text", "audio", "vision") and ds.input_dims == {"text": 4, "audio": 3, "vision": 2}
    assert ds.info["aligned"] is False and ds.source.endswith("unaligned_50.pkl")
    for s, n in SIZES.items():
        sp, r = ds.splits[s], raw[s]
        assert len(sp) == n and sp.features["audio"].shape == (n, 9, 3) and sp.features["vision"].shape == (n, 7, 2)
        assert sp.features["audio"].dtype == np.float32
        assert np.array_equal(sp.masks["audio"].sum(1), r["audio_lengths"])
        assert np.array_equal(sp.masks["vision"].sum(1), r["vision_lengths"])
        assert sp.masks["audio"][np.arange(n), r["audio_lengths"] - 1].all()  # real frames come first
        assert np.array_equal(sp.masks["text"], r["text_bert"][:, 1].astype(bool))
        assert sp.ids == list(r["id"]) and sp.texts == list(r["raw_text"])
        assert np.allclose(sp.labels, r["regression_labels"])
        assert sp.tokens is None  # features preferred when both are there


def test_mmsa_aligned_masks_follow_text(tmp_path):
    raw = mmsa_data(aligned=True)
    ds = read_mmsa_pickle(dump(raw, tmp_path / "aligned_50.pkl"))
    sp = ds.splits["train"]
    want = raw["train"]["text_bert"][:, 1].astype(bool)
    assert ds.info["aligned"] is True
    for m in ("text", "audio", "vision"):
        assert np.array_equal(sp.masks[m], want)
    assert not want.all()  # the test would be vacuous without padding


def test_mmsa_without_bert_uses_nonzero_text_and_full_masks(tmp_path):
    raw = mmsa_data(aligned=True)
    for d in raw.values():
        d["text"] *= d.pop("text_bert")[:, 1, :, None]  # zero rows are the only padding sign left
    sp = read_mmsa_pickle(dump(raw, tmp_path / "aligned_50.pkl")).splits["valid"]
    assert np.array_equal(sp.masks["text"], (raw["valid"]["text"] != 0).any(-1))
    assert not sp.masks["text"].all()
    assert sp.masks["audio"].all() and sp.masks["vision"].all()


def test_mmsa_bert_tokens(tmp_path):
    raw = mmsa_data(aligned=False)
    ds = read_mmsa_pickle(dump(raw, tmp_path / "unaligned_50.pkl"), text="bert")
    sp = ds.splits["test"]
    assert "text" not in sp.features and ds.modalities == ("text", "audio", "vision")
    assert ds.text_encoder == "bert-base-uncased"
    assert sp.tokens["input_ids"].dtype == np.int64 and sp.tokens["input_ids"].shape == (4, 6)
    assert np.array_equal(sp.tokens["input_ids"], raw["test"]["text_bert"][:, 0])
    assert np.array_equal(sp.tokens["attention_mask"], raw["test"]["text_bert"][:, 1])
    batch = next(ds.batches("test", 4))
    assert batch.tokens["input_ids"].shape[1] == int(raw["test"]["text_bert"][:, 1].sum(1).max())


def test_mmsa_only_bert_falls_back_to_tokens(tmp_path):
    raw = mmsa_data(aligned=False)
    for d in raw.values():
        del d["text"]
    ds = read_mmsa_pickle(dump(raw, tmp_path / "u.pkl"))
    assert ds.splits["train"].tokens is not None and "text" not in ds.splits["train"].features
    with pytest.raises(DataError, match="'text' features"):
        read_mmsa_pickle(tmp_path / "u.pkl", text="features")


def test_mmsa_neg_inf_audio_replaced_and_counted(tmp_path):
    raw = mmsa_data(aligned=False)
    raw["train"]["audio"][0, 0, :2] = -np.inf
    raw["test"]["audio"][1, 0, 0] = -np.inf
    with pytest.warns(UserWarning) as record:
        ds = read_mmsa_pickle(dump(raw, tmp_path / "u.pkl"))
    messages = [str(w.message) for w in record if "-inf" in str(w.message)]
    assert len(messages) == 2 and any("train.audio: replaced 2" in m for m in messages)
    assert ds.info["replaced_neg_inf"] == {"train": 2, "valid": 0, "test": 1}
    assert ds.splits["train"].features["audio"][0, 0, :2].tolist() == [0.0, 0.0]


def test_mmsa_neg_inf_outside_audio_fails(tmp_path):
    raw = mmsa_data(aligned=False)
    raw["valid"]["vision"][0, 0, 0] = -np.inf
    with pytest.raises(DataError, match=r"u\.pkl.*valid\.vision"):
        read_mmsa_pickle(dump(raw, tmp_path / "u.pkl"))


def test_mmsa_labels_dict_form(tmp_path):
    raw = mmsa_data(aligned=True)
    for d in raw.values():
        d["labels"] = {"M": d.pop("regression_labels"), "T": np.zeros(len(d["id"]))}
    ds = read_mmsa_pickle(dump(raw, tmp_path / "a.pkl"))
    assert np.allclose(ds.splits["valid"].labels, raw["valid"]["labels"]["M"])


def test_mmsa_clips_lengths_past_the_stored_frames(tmp_path):
    raw = mmsa_data(aligned=False)
    raw["train"]["audio_lengths"][0] = 500
    with pytest.warns(UserWarning, match="audio_lengths"):
        ds = read_mmsa_pickle(dump(raw, tmp_path / "u.pkl"))
    assert ds.splits["train"].masks["audio"][0].all()
    assert ds.info["clipped_lengths"]["train"] == {"audio": 1}


def _nan_audio(raw):
    raw["train"]["audio"][1, 0, 0] = np.nan


def _pos_inf_text(raw):
    raw["valid"]["text"][0, 0, 0] = np.inf


def _missing_split(raw):
    del raw["test"]


def _short_audio(raw):
    raw["train"]["audio"] = raw["train"]["audio"][:-1]


def _short_ids(raw):
    raw["valid"]["id"] = raw["valid"]["id"][:-1]


def _labels_out_of_range(raw):
    raw["test"]["regression_labels"][2] = 3.5


def _no_labels(raw):
    del raw["train"]["regression_labels"]


def _empty_split(raw):
    raw["test"] = {k: v[:0] for k, v in raw["test"].items()}


def _no_modality(raw):
    for k in ("text", "text_bert", "audio", "vision", "audio_lengths", "vision_lengths"):
        del raw["valid"][k]


def _bad_lengths(raw):
    raw["train"]["vision_lengths"] = raw["train"]["vision_lengths"][:-2]


def _not_numeric(raw):
    raw["train"]["vision"] = np.array([["a"]] * 5, dtype=object)


MMSA_BAD = [
    (_nan_audio, ["train.audio", "NaN"]),
    (_pos_inf_text, ["valid.text", "NaN/inf"]),
    (_missing_split, ["missing split", "'test'", "'train'"]),
    (_short_audio, ["train.audio", "(4, 9, 3)", "5 labels"]),
    (_short_ids, ["valid.id"]),
    (_labels_out_of_range, ["test.labels", "3.5"]),
    (_no_labels, ["'train'", "regression_labels"]),
    (_empty_split, ["'test'", "empty"]),
    (_no_modality, ["'valid'", "no modality"]),
    (_bad_lengths, ["train.vision_lengths"]),
    (_not_numeric, ["train.vision"]),
]


@pytest.mark.parametrize("spoil,expected", MMSA_BAD, ids=[f.__name__ for f, _ in MMSA_BAD])
def test_mmsa_bad_files(tmp_path, spoil, expected):
    raw = mmsa_data(aligned=False)
    spoil(raw)
    path = dump(raw, tmp_path / "unaligned_50.pkl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError) as e:
            read_mmsa_pickle(path)
    msg = str(e.value)
    assert str(path) in msg
    for part in expected:
        assert part in msg


def test_mmsa_truncated_pickle(tmp_path):
    path = dump(mmsa_data(), tmp_path / "unaligned_50.pkl")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="unaligned_50.pkl.*truncated"):
        read_mmsa_pickle(path)


def test_mmsa_top_level_not_dict(tmp_path):
    with pytest.raises(DataError, match=r"l\.pkl.*list"):
        read_mmsa_pickle(dump([1, 2], tmp_path / "l.pkl"))


# ---- MulT -----------------------------------------------------------------------------------
def test_mult_left_padded_masks_and_ids(tmp_path):
    raw = mult_data()
    ds = read_mult_pickle(dump(raw, tmp_path / "mosi_data.pkl"))
    assert ds.input_dims == {"text": 6, "audio": 4, "vision": 3} and ds.info["padding"] == "left"
    for s, n in SIZES.items():
        sp, r = ds.splits[s], raw[s]
        want = (r["text"] != 0).any(-1)
        assert not want.all() and not want[:, 0].all() and want[:, -1].all()  # left-padded fixture
        for m in ("text", "audio", "vision"):
            assert np.array_equal(sp.masks[m], want)
            assert sp.features[m].dtype == np.float32
        assert sp.ids == [f"vid{list(SIZES).index(s)}_{i}" for i in range(n)]  # empty part dropped
        assert np.allclose(sp.labels, r["labels"].reshape(-1)) and sp.labels.shape == (n,)


def test_mult_one_dim_ids_and_missing_modality(tmp_path):
    raw = mult_data()
    for d in raw.values():
        d["id"] = np.array([f"clip{i}" for i in range(len(d["labels"]))])
        del d["vision"]
    ds = read_mult_pickle(dump(raw, tmp_path / "m.pkl"))
    assert ds.modalities == ("text", "audio") and ds.splits["valid"].ids == ["clip0", "clip1", "clip2"]


def test_mult_neg_inf_audio(tmp_path):
    raw = mult_data()
    raw["valid"]["audio"][0, -1, :] = -np.inf  # a real frame that is -inf everywhere stays real
    with pytest.warns(UserWarning, match="valid.audio: replaced 4"):
        ds = read_mult_pickle(dump(raw, tmp_path / "m.pkl"))
    sp = ds.splits["valid"]
    assert ds.info["replaced_neg_inf"] == {"train": 0, "valid": 4, "test": 0}
    assert sp.masks["audio"][0, -1] and (sp.features["audio"][0, -1] == 0).all()


def _mult_nan(raw):
    raw["train"]["vision"][0, -1, 0] = np.nan


def _mult_missing_split(raw):
    del raw["valid"]


def _mult_short_text(raw):
    raw["test"]["text"] = raw["test"]["text"][:-1]


def _mult_out_of_range(raw):
    raw["valid"]["labels"][1] = -4.0


def _mult_empty(raw):
    raw["train"] = {k: v[:0] for k, v in raw["train"].items()}


def _mult_labels_shape(raw):
    raw["train"]["labels"] = np.zeros((5, 2))


MULT_BAD = [
    (_mult_nan, ["train.vision", "NaN"]),
    (_mult_missing_split, ["missing split", "'valid'"]),
    (_mult_short_text, ["test.text", "(3, 5, 6)"]),
    (_mult_out_of_range, ["valid.labels", "-4.0"]),
    (_mult_empty, ["'train'", "empty"]),
    (_mult_labels_shape, ["train.labels", "(5, 2)"]),
]


@pytest.mark.parametrize("spoil,expected", MULT_BAD, ids=[f.__name__ for f, _ in MULT_BAD])
def test_mult_bad_files(tmp_path, spoil, expected):
    raw = mult_data()
    spoil(raw)
    path = dump(raw, tmp_path / "mosei_senti_data.pkl")
    with pytest.raises(DataError) as e:
        read_mult_pickle(path)
    msg = str(e.value)
    assert str(path) in msg
    for part in expected:
        assert part in msg


def test_mult_truncated_and_evil(tmp_path):
    path = dump(mult_data(), tmp_path / "mosi_data.pkl")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="mosi_data.pkl"):
        read_mult_pickle(path)
    marker = tmp_path / "marker"
    evil = dump({"train": RunsCode(marker), "valid": {}, "test": {}}, tmp_path / "evil.pkl")
    with pytest.raises(DataError, match="evil.pkl.*refused"):
        read_mult_pickle(evil)
    assert not marker.exists()


# ---- utterance .npz -------------------------------------------------------------------------
def write_npz(path: Path, **overrides) -> Path:
    rng = np.random.default_rng(0)
    n = 9
    arrays = {
        "id": np.array([f"v{i // 3}_{i % 3 + 1}" for i in range(n)]),
        "text": rng.normal(size=(n, 5)).astype(np.float32),
        "audio": rng.normal(size=(n, 4)).astype(np.float32),
        "vision": rng.normal(size=(n, 3)).astype(np.float32),
        "label": rng.uniform(-3, 3, n).astype(np.float32),
        "split": np.array(["train"] * 4 + ["valid"] * 2 + ["test"] * 3),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_npz_utterances(tmp_path):
    path = write_npz(tmp_path / "u.npz")
    ds = read_npz_utterances(path)
    with np.load(path) as z:
        assert ds.modalities == ("text", "audio") and ds.input_dims == {"text": 5, "audio": 4}
        assert {s: len(sp) for s, sp in ds.splits.items()} == {"train": 4, "valid": 2, "test": 3}
        va = ds.splits["valid"]
        assert va.features["text"].shape == (2, 1, 5) and va.masks["audio"].all()
        assert va.ids == ["v1_2", "v1_3"] and np.allclose(va.labels, z["label"][4:6])
        assert np.array_equal(va.features["audio"][:, 0], z["audio"][4:6])
    assert read_npz_utterances(path, modalities=("vision",)).modalities == ("vision",)


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ({"audio": None}, ["'audio'", "missing"]),
        ({"split": np.array(["train"] * 4 + ["dev"] * 2 + ["test"] * 3)}, ["'split'", "dev"]),
        ({"audio": np.full((9, 4), np.nan, np.float32)}, ["train.audio", "NaN"]),
        ({"text": np.zeros((8, 5), np.float32)}, ["'text'", "(8, 5)"]),
        ({"label": np.full(9, 7.0, np.float32)}, ["labels", "7.0"]),
        ({"split": np.array(["train"] * 7 + ["test"] * 2)}, ["missing split", "'valid'"]),
        ({"id": np.array([{"a": 1}] * 9, dtype=object)}, ["'id'", "object"]),
    ],
)
def test_npz_bad_files(tmp_path, overrides, expected):
    path = write_npz(tmp_path / "feats.npz", **overrides)
    with pytest.raises(DataError) as e:
        read_npz_utterances(path)
    msg = str(e.value)
    assert str(path) in msg
    for part in expected:
        assert part in msg


def test_npz_not_a_zip(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        read_npz_utterances(path)


def test_npz_real_bclstm_file():
    path = SHARED / "mosi" / "bclstm_utterance_features.npz"
    if not path.is_file():
        pytest.skip(f"real data not available at {path} (../shared/data relative to the project root)")
    ds = read_npz_utterances(path, modalities=("text", "audio", "vision"))
    assert {s: len(sp) for s, sp in ds.splits.items()} == {"train": 1312, "valid": 135, "test": 752}
    assert ds.input_dims == {"text": 100, "audio": 73, "vision": 100}
    ids = [i for sp in ds.splits.values() for i in sp.ids]
    assert len(set(ids)) == 2199
    train_videos = {i.rsplit("_", 1)[0] for i in ds.splits["train"].ids}
    test_videos = {i.rsplit("_", 1)[0] for i in ds.splits["test"].ids}
    assert not train_videos & test_videos  # the file's split is speaker-independent
