"""The bad-input corpus: every broken input gets one clear error and leaves nothing behind.

Each case writes a bad file in the exact published format (MMSA pickle, MulT pickle, utterance
.npz, MMSA label.csv, MIntRec tsv) into tmp_path, or names something that does not exist, and
is run twice through the same code as `sentangle`:

  (a) the subcommand's function, which must raise the expected error type, with a message naming
      the file (or the unknown name), the field or key, and what was expected;
  (b) `sentangle.cli.main`, which must exit 2 with that message on stderr as one `error:` line
      (no traceback) and leave no run folder or partial output under --out.

Files a generator would only make less clear are committed in tests/badinput/ (see its README).
Reader-level details are tested in test_readers.py / test_labelcsv.py / test_dataset.py and
broken checkpoints in test_checkpoints.py; this corpus checks the whole path from the command line.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from sentangle import cli
from sentangle.core.errors import ConfigError, DataError, UnknownNameError
from sentangle.runs import checkpoint as checkpoint_module
from sentangle.runs.predictions import predictions_csv as stored_csv

CORPUS = Path(__file__).parent / "badinput"
SIZES = {"train": 5, "valid": 3, "test": 4}
QUICK = ["--seeds", "1", "--no-progress", "train.epochs=1"]
SMALL = "dataset.scale=0.05"


# ---- the real formats ------------------------------------------------------------------------
def mmsa_data() -> dict:
    """An unaligned MMSA `unaligned_50.pkl` (readers/mmsa.py) with 5/3/4 samples."""
    out = {}
    for seed, (s, n) in enumerate(SIZES.items()):
        rng = np.random.default_rng(seed)
        L, Ta, Tv = 6, 9, 7
        att = (np.arange(L)[None] < rng.integers(2, L + 1, n)[:, None]).astype(np.int64)
        al, vl = rng.integers(1, Ta + 1, n), rng.integers(1, Tv + 1, n)
        out[s] = {
            "id": np.array([f"vid{seed}$_${i}" for i in range(n)]),
            "raw_text": np.array([f"utterance {i}" for i in range(n)]),
            "text": rng.normal(size=(n, L, 4)).astype(np.float32),
            "text_bert": np.stack([rng.integers(100, 30000, (n, L)) * att, att, 0 * att], axis=1).astype(np.float64),
            "audio": (rng.normal(size=(n, Ta, 3)) * (np.arange(Ta)[None] < al[:, None])[..., None]).astype(np.float32),
            "vision": (rng.normal(size=(n, Tv, 2)) * (np.arange(Tv)[None] < vl[:, None])[..., None]).astype(np.float32),
            "audio_lengths": al,
            "vision_lengths": vl,
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
        }
    return out


def mult_data() -> dict:
    """A MulT `mosi_data.pkl` (readers/mult.py): left-padded, labels (N, 1, 1), ids (N, 3) bytes."""
    out = {}
    for seed, (s, n) in enumerate(SIZES.items()):
        rng = np.random.default_rng(seed)
        real = (np.arange(5)[None] >= 5 - rng.integers(1, 6, n)[:, None])[..., None]
        out[s] = {
            "text": rng.normal(size=(n, 5, 6)) * real,
            "audio": (rng.normal(size=(n, 5, 4)) * real).astype(np.float32),
            "vision": rng.normal(size=(n, 5, 3)) * real,
            "labels": rng.uniform(-3, 3, (n, 1, 1)).astype(np.float32),
            "id": np.array([[f"vid{seed}".encode(), str(i).encode(), b""] for i in range(n)], dtype=object),
        }
    return out


def npz_arrays(n: int = 9) -> dict:
    """An utterance-feature .npz (readers/npz.py): id, label, split and one (N, d) array per modality."""
    rng = np.random.default_rng(0)
    return {
        "id": np.array([f"v{i // 3}_{i % 3}" for i in range(n)]),
        "label": rng.uniform(-3, 3, n).astype(np.float32),
        "split": np.array(["train"] * 4 + ["valid"] * 2 + ["test"] * 3),
        "text": rng.normal(size=(n, 5)).astype(np.float32),
        "audio": rng.normal(size=(n, 4)).astype(np.float32),
    }


LABEL_CSV = [
    "video_id,clip_id,text,label,mode",
    "vidA,1,good film,2.4,train",
    "vidA,2,bad,-1.0,valid",
    "vidB,1,fine,0.2,test",
]
TSV_HEADER = "season\tepisode\tclip\ttext\tlabel"


class RunsCode:
    """Unpickling this runs a shell command: the classic malicious pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def dump(obj, path: Path) -> Path:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=4)
    return path


# ---- cases -----------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    make: Callable[[Path], list[str]]  # writes into the folder, returns the command line (without --out)
    error: type
    expected: list[str]  # parts of the message; "{tmp}" stands for the folder
    marker: bool = False  # the input carries code that would create tmp/code_ran
    extra: dict = field(default_factory=dict)


def mmsa(spoil, name="unaligned_50.pkl"):
    def make(tmp: Path) -> list[str]:
        raw = mmsa_data()
        spoil(raw, tmp)
        return ["train", "-d", str(dump(raw, tmp / name)), *QUICK]

    return make


def mult(spoil):
    def make(tmp: Path) -> list[str]:
        raw = mult_data()
        spoil(raw, tmp)
        return ["train", "-d", str(dump(raw, tmp / "mosi_data.pkl")), *QUICK]

    return make


def npz(**overrides):
    def make(tmp: Path) -> list[str]:
        arrays = {**npz_arrays(), **overrides}
        np.savez(tmp / "feats.npz", **{k: v for k, v in arrays.items() if v is not None})
        return ["train", "-d", str(tmp / "feats.npz"), *QUICK]

    return make


def raw_file(name: str, content: bytes, command: str = "train"):
    def make(tmp: Path) -> list[str]:
        (tmp / name).write_bytes(content)
        return [command, "-d", str(tmp / name), *QUICK] if command == "train" else [command, "info", str(tmp / name)]

    return make


def mintrec(train: bytes, dev: bytes | None = b"S1\tE1\t9\tyo\tGreet\n"):
    def make(tmp: Path) -> list[str]:
        folder = tmp / "data" / "mintrec"
        folder.mkdir(parents=True)
        (folder / "train.tsv").write_bytes(TSV_HEADER.encode() + b"\n" + train)
        if dev is not None:
            (folder / "dev.tsv").write_bytes(TSV_HEADER.encode() + b"\n" + dev)
        return ["train", "-d", "mintrec", "--data-root", str(tmp / "data"), *QUICK]

    return make


def committed(name: str):
    def make(tmp: Path) -> list[str]:
        shutil.copy(CORPUS / name, tmp / name)
        return ["train", "-d", str(tmp / name), *QUICK]

    return make


def command(*argv: str):
    return lambda tmp: list(argv)


def _set(split, key, value):
    def spoil(raw, tmp):
        raw[split][key] = value(raw[split][key]) if callable(value) else value

    return spoil


def _delete(split, key=None):
    def spoil(raw, tmp):
        if key is None:
            del raw[split]
        else:
            del raw[split][key]

    return spoil


def _nan(split, key, value=np.nan):
    def spoil(raw, tmp):
        raw[split][key][0, -1, 0] = value

    return spoil


def _evil_split(raw, tmp):
    raw["train"] = RunsCode(tmp / "code_ran")


def _evil_nested(raw, tmp):
    raw["valid"]["id"] = np.array([RunsCode(tmp / "code_ran")] * 3, dtype=object)


PKL = "{tmp}/unaligned_50.pkl"
CASES = [
    # NaN / inf features
    Case(
        "mmsa_nan_audio",
        mmsa(_nan("train", "audio")),
        DataError,
        [PKL, "train.audio", "NaN/inf", "expected finite features"],
    ),
    Case(
        "mmsa_inf_text",
        mmsa(_nan("valid", "text", np.inf)),
        DataError,
        [PKL, "valid.text", "NaN/inf", "expected finite"],
    ),
    Case("mult_nan_vision", mult(_nan("test", "vision")), DataError, ["{tmp}/mosi_data.pkl", "test.vision", "NaN/inf"]),
    Case(
        "npz_inf_audio",
        npz(audio=np.full((9, 4), np.inf, np.float32)),
        DataError,
        ["{tmp}/feats.npz", "train.audio", "NaN/inf"],
    ),
    # wrong ranks and shapes
    Case(
        "mmsa_vision_rank2",
        mmsa(_set("train", "vision", lambda x: x[:, 0])),
        DataError,
        [PKL, "train.vision", "(5, 2)", "expected (N, T, d)"],
    ),
    Case(
        "mmsa_audio_rows",
        mmsa(_set("valid", "audio", lambda x: x[:-1])),
        DataError,
        [PKL, "valid.audio", "3 labels", "expected one row per sample"],
    ),
    Case(
        "mmsa_text_bert_shape",
        mmsa(_set("train", "text_bert", lambda x: x[:, :2])),
        DataError,
        [PKL, "train.text_bert", "expected (N, 3, L)"],
    ),
    Case(
        "mmsa_dims_differ",
        mmsa(_set("test", "audio", lambda x: np.concatenate([x, x[..., :1]], -1))),
        DataError,
        [PKL, "split 'test' has feature dims", "'audio': 4", "'audio': 3"],
    ),
    Case(
        "mult_labels_shape",
        mult(_set("train", "labels", np.zeros((5, 2), np.float32))),
        DataError,
        ["{tmp}/mosi_data.pkl", "train.labels", "(5, 2)", "expected (N,)"],
    ),
    Case(
        "npz_text_rows",
        npz(text=np.zeros((8, 5), np.float32)),
        DataError,
        ["{tmp}/feats.npz", "'text'", "(8, 5)", "expected (9, d)"],
    ),
    Case(
        "npz_audio_rank3",
        npz(audio=np.zeros((9, 2, 4), np.float32)),
        DataError,
        ["{tmp}/feats.npz", "audio", "(9, 2, 4)", "expected (N, d)"],
    ),
    # missing keys and splits
    Case(
        "mmsa_no_id", mmsa(_delete("train", "id")), DataError, [PKL, "split 'train' has no 'id'", "expected sample ids"]
    ),
    Case(
        "mmsa_no_labels",
        mmsa(_delete("valid", "regression_labels")),
        DataError,
        [PKL, "split 'valid' has no 'regression_labels'"],
    ),
    Case(
        "mmsa_no_test_split",
        mmsa(_delete("test")),
        DataError,
        [PKL, "missing split(s) ['test']", "expected ['train', 'valid', 'test']"],
    ),
    Case(
        "mult_no_labels",
        mult(_delete("valid", "labels")),
        DataError,
        ["{tmp}/mosi_data.pkl", "split 'valid' has no 'labels'", "expected (N, 1, 1)"],
    ),
    Case(
        "mult_no_valid_split", mult(_delete("valid")), DataError, ["{tmp}/mosi_data.pkl", "missing split(s) ['valid']"]
    ),
    Case("npz_no_audio_key", npz(audio=None), DataError, ["{tmp}/feats.npz", "missing key(s) ['audio']"]),
    Case(
        "npz_no_valid_rows",
        npz(split=np.array(["train"] * 6 + ["test"] * 3)),
        DataError,
        ["{tmp}/feats.npz", "missing split 'valid'", "expected at least"],
    ),
    Case(
        "npz_unknown_split_name",
        npz(split=np.array(["train"] * 4 + ["dev"] * 2 + ["test"] * 3)),
        DataError,
        ["{tmp}/feats.npz", "'split'", "['dev']", "expected only ['train', 'valid', 'test']"],
    ),
    Case(
        "label_csv_no_label_column",
        raw_file("label.csv", b"video_id,clip_id,text,mode\na,1,hi,train\n"),
        DataError,
        ["{tmp}/label.csv", "missing column(s) ['label']", "expected an MMSA label.csv"],
    ),
    # empty splits
    Case(
        "mmsa_empty_valid",
        mmsa(lambda raw, tmp: raw.__setitem__("valid", {k: v[:0] for k, v in raw["valid"].items()})),
        DataError,
        [PKL, "split 'valid' is empty", "expected at least one sample"],
    ),
    Case(
        "mult_empty_train",
        mult(lambda raw, tmp: raw.__setitem__("train", {k: v[:0] for k, v in raw["train"].items()})),
        DataError,
        ["{tmp}/mosi_data.pkl", "split 'train' is empty"],
    ),
    Case(
        "label_csv_header_only",
        raw_file("label.csv", b"video_id,clip_id,text,label,mode\n"),
        DataError,
        ["{tmp}/label.csv", "no data rows", "expected at least one clip"],
    ),
    # labels out of range or of the wrong type
    Case(
        "mmsa_label_out_of_range",
        mmsa(_set("test", "regression_labels", lambda y: np.where(np.arange(4) == 2, 3.5, y))),
        DataError,
        [PKL, "test.labels", "outside [-3.0, 3.0]", "3.5"],
    ),
    Case(
        "mult_label_nan",
        mult(_set("valid", "labels", lambda y: np.full_like(y, np.nan))),
        DataError,
        ["{tmp}/mosi_data.pkl", "valid.labels", "NaN/inf", "expected finite"],
    ),
    Case(
        "npz_label_out_of_range",
        npz(label=np.full(9, 7.0, np.float32)),
        DataError,
        ["{tmp}/feats.npz", "labels", "7.0", "outside [-3.0, 3.0]"],
    ),
    Case(
        "mmsa_label_text",
        mmsa(_set("train", "regression_labels", np.array(["pos"] * 5))),
        DataError,
        [PKL, "train.regression_labels", "not numeric", "expected (N,) sentiment scores"],
    ),
    Case(
        "label_csv_label_not_a_number",
        raw_file("label.csv", "\n".join(LABEL_CSV[:2] + ["vidA,2,bad,positive,valid"]).encode()),
        DataError,
        ["{tmp}/label.csv", "line 3", "'label'", "'positive'", "not a number"],
    ),
    Case(
        "label_csv_label_out_of_range",
        raw_file("label.csv", "\n".join(LABEL_CSV[:2] + ["vidA,2,bad,-4,valid"]).encode()),
        DataError,
        ["{tmp}/label.csv", "line 3", "'-4'", "expected a sentiment score in [-3.0, 3.0]"],
    ),
    Case(
        "mintrec_label_is_a_number",
        mintrec(b"S1\tE1\t1\thi there\t3\n"),
        DataError,
        ["{tmp}/data/mintrec/train.tsv", "line 2", "column 'label' is '3'", "expected one of the MIntRec intents"],
    ),
    Case(
        "mintrec_label_unknown_intent",
        mintrec(b"S1\tE1\t1\thi\tApologize\n"),
        DataError,
        ["train.tsv", "line 2", "'Apologize'", "'Apologise'"],
    ),
    # text that is not UTF-8
    Case(
        "label_csv_latin1",
        committed("latin1_label.csv"),
        DataError,
        ["{tmp}/latin1_label.csv", "line 3", "b'\\xe9'", "not valid UTF-8", "expected a UTF-8"],
    ),
    Case(
        "mintrec_tsv_cp1252",
        mintrec("S1\tE1\t1\t\u201cquoted\u201d caf\u00e9\tGreet\n".encode("cp1252")),
        DataError,
        ["{tmp}/data/mintrec/train.tsv", "line 2", "not valid UTF-8"],
    ),
    Case(
        "mintrec_dev_missing",
        mintrec(b"S1\tE1\t1\thi\tGreet\n", dev=None),
        DataError,
        ["{tmp}/data/mintrec/dev.tsv", "file not found"],
    ),
    # truncated or foreign files
    Case(
        "mmsa_truncated",
        lambda tmp: (
            mmsa(lambda r, t: None)(tmp),
            (tmp / "unaligned_50.pkl").write_bytes((tmp / "unaligned_50.pkl").read_bytes()[:700]),
        )[0],
        DataError,
        [PKL, "not a complete pickle", "truncated or corrupt"],
    ),
    Case(
        "mult_truncated_to_nothing",
        raw_file("mosi_data.pkl", b""),
        DataError,
        ["{tmp}/mosi_data.pkl", "truncated or corrupt"],
    ),
    Case(
        "pickle_of_a_list",
        lambda tmp: ["train", "-d", str(dump([1, 2], tmp / "aligned_50.pkl")), *QUICK],
        DataError,
        ["{tmp}/aligned_50.pkl", "top level is a list", "expected a dict with keys ['train', 'valid', 'test']"],
    ),
    Case(
        "npz_not_a_zip",
        raw_file("feats.npz", b"PK\x03\x04 not really"),
        DataError,
        ["{tmp}/feats.npz", "cannot be read as an .npz"],
    ),
    Case(
        "npz_object_ids",
        npz(id=np.array([{"a": 1}] * 9, dtype=object)),
        DataError,
        ["{tmp}/feats.npz", "key 'id' is an object array", "expected plain numbers/strings"],
    ),
    Case(
        "unknown_suffix",
        raw_file("feats.txt", b"1 2 3"),
        DataError,
        ["{tmp}/feats.txt", "unknown feature file type '.txt'", "expected .pkl (MMSA/MulT), .npz or label .csv"],
    ),
    Case(
        "file_does_not_exist",
        command("train", "-d", "/nonexistent/unaligned_50.pkl", *QUICK),
        DataError,
        ["/nonexistent/unaligned_50.pkl", "does not exist"],
    ),
    Case(
        "data_info_on_truncated_npz",
        raw_file("feats.npz", b"PK\x03\x04", command="data"),
        DataError,
        ["{tmp}/feats.npz", "cannot be read"],
    ),
    # pickles that try to run code: refused before anything is imported
    Case(
        "mmsa_code_as_split",
        mmsa(_evil_split),
        DataError,
        [PKL, "posix.system", "refused", "--trust-pickle"],
        marker=True,
    ),
    Case("mmsa_code_inside_an_array", mmsa(_evil_nested), DataError, [PKL, "posix.system", "refused"], marker=True),
    Case("mult_code", mult(_evil_split), DataError, ["{tmp}/mosi_data.pkl", "refused", "only plain data"], marker=True),
    # unknown names and options: fail before any run folder exists
    Case(
        "unknown_model",
        command("train", "-m", "tsdx", *QUICK),
        UnknownNameError,
        ["unknown model 'tsdx'", "Did you mean 'tsda'?", "Known models", "lf_dnn"],
    ),
    Case(
        "unknown_dataset",
        command("train", "-d", "mosy", *QUICK),
        UnknownNameError,
        ["unknown dataset 'mosy'", "mosi", "synthetic"],
    ),
    Case(
        "unknown_model_option",
        command("train", *QUICK, "dataset.scale=0.05", "model.hiden=8"),
        ConfigError,
        ["model 'lf_dnn' has no option(s) ['hiden']", "its options are: hidden"],
    ),
    Case(
        "unknown_dataset_option",
        command("train", *QUICK, "dataset.scal=0.05"),
        ConfigError,
        ["dataset 'synthetic' has no option(s) ['scal']", "scale"],
    ),
    Case(
        "bad_dataset_option_value",
        lambda tmp: mintrec(b"S1\tE1\t1\thi\tGreet\n")(tmp) + ["dataset.labels=coarse"],
        ConfigError,
        ["labels='coarse'", "expected 'intent20' or 'binary'"],
    ),
    Case(
        "unknown_file_option",
        lambda tmp: npz()(tmp) + ["dataset.trusted=true"],
        ConfigError,
        ["{tmp}/feats.npz", "no option(s) ['trusted']", "split_key"],
    ),
    Case(
        "compare_unknown_second_model",
        command("compare", "-m", "lf_dnn,tfnn", "-d", "synthetic", "--seeds", "1", "train.epochs=1"),
        UnknownNameError,
        ["unknown model 'tfnn'", "Did you mean 'tfn'?"],
    ),
    # model options the constructor rejects: ConfigError like every other option, not a traceback
    *[
        Case(
            f"model_{model}_{opts[0].split('=')[0][6:]}",
            command("train", "-m", model, *QUICK, SMALL, *opts),
            ConfigError,
            expected,
        )
        for model, opts, expected in [
            ("dbr", ["model.hidden=63"], ["hidden=63 must be divisible by heads=4"]),
            ("dbr", ["model.agpr_temperature=0"], ["agpr_temperature=0", "expected a positive number"]),
            ("mult", ["model.dim=30", "model.heads=4"], ["mult: dim (30) must be divisible by heads (4)"]),
            ("misa", ["model.hidden=63"], ["misa: hidden (63) must be divisible by fusion_heads (2)"]),
            ("lmf", ["model.rank=0"], ["lmf: rank must be >= 1, got 0"]),
            ("self_mm", ["model.label_update=batch"], ["label_update must be 'step' or 'epoch', got 'batch'"]),
            ("rtil", ["model.anchor=smell"], ["anchor='smell'", "expected one of"]),
            ("text_only", ["model.pooling=max"], ["pooling must be 'mean' or 'attention', got 'max'"]),
        ]
    ],
    # train settings that used to run silently wrong (lr=-1: MAE 1e8; epochs=2.5: 2) or crash
    *[
        Case(f"train_{key}_{value}", command("train", *QUICK, SMALL, f"train.{key}={value}"), ConfigError, expected)
        for key, value, expected in [
            ("lr", "-1", ["train.lr must be a finite number > 0, got -1.0"]),
            ("lr", "0", ["train.lr must be a finite number > 0, got 0.0"]),
            ("text_lr", "0", ["train.text_lr must be a finite number > 0"]),
            ("epochs", "2.5", ["train.epochs must be a whole number, got 2.5"]),
            ("epochs", "0", ["train.epochs must be a finite number > 0, got 0"]),
            ("batch_size", "0", ["train.batch_size must be a finite number > 0, got 0"]),
            ("eval_batch_size", "-8", ["train.eval_batch_size must be a finite number > 0, got -8"]),
            ("patience", "-1", ["train.patience must be a finite number >= 0, got -1"]),
            ("weight_decay", ".nan", ["train.weight_decay must be a finite number >= 0, got nan"]),
            ("progress", "maybe", ["train.progress must be true or false, got 'maybe'"]),
        ]
    ],
    # --seeds: a count 1..5 or distinct positive seeds, named as the flag
    *[
        Case(
            f"seeds_{name}",
            command(cmd, *(["-m", "lf_dnn", "-d", "synthetic"] if cmd == "compare" else []), "--seeds", value),
            ConfigError,
            ["--seeds=", repr(value), "expected a count 1..5 or distinct positive integer seeds", *extra],
        )
        for cmd, name, value, extra in [
            ("train", "abc", "abc", []),
            ("train", "hex", "0x10", []),
            ("train", "negative", "-3", []),
            ("train", "zero", "0", []),
            ("train", "repeated", "1111,1111", ["[1111] given twice"]),
            ("train", "float", "2.5", []),
            ("compare", "abc", "abc", []),
        ]
    ],
    # modalities without frames: refused when the data are read, before a model can crash on them
    Case(
        "mmsa_audio_zero_frames",
        mmsa(
            lambda raw, tmp: [
                raw[s].update(audio=raw[s]["audio"][:, :0], audio_lengths=0 * raw[s]["audio_lengths"]) for s in raw
            ]
        ),
        DataError,
        [PKL, "train.audio has 0 frames per sample", "(5, 0, 3)", "expected at least one frame"],
    ),
    Case(
        "mmsa_vision_no_real_frame_in_train",
        mmsa(_set("train", "vision_lengths", lambda v: 0 * v)),
        DataError,
        [PKL, "train.vision has no real frame in any sample", "expected at least one real frame"],
    ),
    Case(
        "compare_model_twice",
        command("compare", "-m", "lf_dnn", "-m", "lf_dnn", "-d", "synthetic"),
        ConfigError,
        ["['lf_dnn'] given twice"],
    ),
]
HANDLERS = {
    "train": cli.cmd_train,
    "compare": cli.cmd_compare,
    "data": cli.cmd_data,
    "eval": cli.cmd_eval,
    "predict": cli.cmd_predict,
}


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path, monkeypatch):
    # relative paths (./data, runs/) must not find anything of the project or the shared data
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SENTANGLE_DATA_ROOT", raising=False)


def _with_out(argv: list[str], out: Path) -> list[str]:
    if argv[0] in ("train", "compare"):
        return [argv[0], "--out", str(out), *argv[1:]]
    return argv


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, capsys):
    tmp = tmp_path / "in"
    tmp.mkdir()
    out = tmp_path / "runs"
    argv = _with_out(case.make(tmp), out)
    expected = [e.replace("{tmp}", str(tmp)) for e in case.expected]

    # (a) the error type and a message naming file, field and expectation
    args = cli.build_parser().parse_args(argv)
    with pytest.raises(case.error) as err:
        HANDLERS[args.command](args)
    for part in expected:
        assert part in str(err.value), (part, str(err.value))

    # (b) the command line: exit 2, the message on stderr, no traceback, nothing written
    capsys.readouterr()
    assert cli.main(argv) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    error_lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(error_lines) == 1, stderr
    for part in expected:
        assert part in error_lines[0], (part, stderr)
    assert not out.exists(), sorted(str(p) for p in out.rglob("*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing beside the input either
    if case.marker:
        assert not (tmp / "code_ran").exists()


def test_trust_flag_is_what_lets_pickled_code_run(tmp_path, capsys):
    """The refusal above is a real gate: with --trust-pickle (or dataset.trusted=true) the same file runs."""
    marker = tmp_path / "code_ran"
    path = dump({"train": RunsCode(marker), "valid": {}, "test": {}}, tmp_path / "unaligned_50.pkl")
    out = tmp_path / "runs"
    assert cli.main(["train", "--out", str(out), "-d", str(path), *QUICK]) == 2
    assert "refused" in capsys.readouterr().err and not marker.exists()
    # trusted: the payload runs (os.system returns 0), and the reader then rejects the non-dict split
    assert cli.main(["train", "--out", str(out), "--trust-pickle", "-d", str(path), *QUICK]) == 2
    assert marker.exists()
    assert "split 'train' is a int; expected a dict of arrays" in capsys.readouterr().err
    marker.unlink()
    assert cli.main(["train", "--out", str(out), "-d", str(path), *QUICK, "dataset.trusted=true"]) == 2
    assert marker.exists() and not out.exists()


def test_corpus_files_are_what_they_claim():
    raw = (CORPUS / "latin1_label.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert raw.decode("latin-1").splitlines()[0] == LABEL_CSV[0]


# ---- output paths, checkpoints and arguments of the other commands -----------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run (synthetic data, 1 epoch, 1 seed) shared by every case that needs a checkpoint."""
    root = tmp_path_factory.mktemp("trained")
    argv = ["train", "--out", str(root), "--name", "run", *QUICK, SMALL, "model.hidden=8", "model.fusion_hidden=8"]
    assert cli.main(argv) == 0
    run = root / "run"
    return {"run": run, "ckpt": run / "seed_1111" / "checkpoint.pt"}


def _full_disk(monkeypatch):
    # every fsync of a written file reports what a full disk does
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


def _checkpoint_onto_dev_full(monkeypatch):
    # the checkpoint's bytes really go to a full device: torch.save must report ENOSPC, not "unexpected pos"
    save = checkpoint_module._save
    monkeypatch.setattr(checkpoint_module, "_save", lambda payload, tmp: save(payload, "/dev/full"))


def _read_only_folder(monkeypatch):
    # root may write anywhere, so a read-only folder is simulated where files are created
    def mkstemp(*a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def _without_digest(tmp: Path, ckpt: Path) -> Path:
    payload = torch.load(ckpt, weights_only=True)
    del payload["sha256"]
    torch.save(payload, tmp / "old.pt")
    return tmp / "old.pt"


def _with_code(tmp: Path, ckpt: Path) -> Path:
    torch.save({"format": "sentangle-checkpoint-1", "config": RunsCode(tmp / "code_ran")}, tmp / "evil.pt")
    return tmp / "evil.pt"


def _link(tmp: Path, target: str, name: str = "link") -> str:
    (tmp / name).symlink_to(target)
    return str(tmp / name)


def _file(tmp: Path, name: str = "afile") -> str:
    (tmp / name).write_text("keep me\n")
    return str(tmp / name)


@dataclass
class OutCase:
    id: str
    make: Callable[[Path, dict], list[str]]  # (input folder, trained run) -> argv
    expected: list[str]  # "{tmp}" stands for the input folder
    patch: Callable | None = None  # monkeypatch -> None, applied for the command only


OUT_CASES = [
    # output paths
    OutCase(
        "train_out_is_a_file",
        lambda t, r: ["train", "--out", _file(t), *QUICK],
        ["{tmp}/afile is a file; expected a folder"],
    ),
    OutCase(
        "train_out_is_a_device",
        lambda t, r: ["train", "--out", "/dev/null", *QUICK],
        ["/dev/null", "device or special file"],
    ),
    OutCase(
        "train_out_link_to_a_file",
        lambda t, r: ["train", "--out", _link(t, _file(t)), *QUICK],
        ["{tmp}/link is a symbolic link", "links are not followed"],
    ),
    OutCase(
        "train_out_under_a_file",
        lambda t, r: ["train", "--out", _file(t) + "/runs", *QUICK],
        ["{tmp}/afile is not a folder"],
    ),
    OutCase(
        "train_out_read_only",
        lambda t, r: ["train", "--out", str(t / "new" / "runs"), *QUICK, SMALL],
        ["cannot write", "{tmp}/new/runs/lf_dnn-synthetic", "permission denied"],
        _read_only_folder,
    ),
    OutCase(
        "train_disk_full",
        lambda t, r: ["train", "--out", str(t / "new" / "runs"), *QUICK, SMALL],
        ["cannot write", "{tmp}/new/runs/lf_dnn-synthetic/config.yaml", "no space left on device"],
        _full_disk,
    ),
    OutCase(
        "train_checkpoint_disk_full",
        lambda t, r: ["train", "--out", str(t / "runs"), *QUICK, SMALL, "model.hidden=8"],
        ["cannot write", "{tmp}/runs/lf_dnn-synthetic/seed_1111/checkpoint.pt", "no space left on device"],
        _checkpoint_onto_dev_full,
    ),
    OutCase(
        "predict_o_is_a_directory",
        lambda t, r: ["predict", str(r["ckpt"]), "-o", str(t)],
        ["output {tmp} is a directory; expected a file path"],
    ),
    OutCase(
        "predict_o_dev_stdout",
        lambda t, r: ["predict", str(r["ckpt"]), "-o", "/dev/stdout"],
        ["/dev/stdout is a symbolic link", "links are not followed"],
    ),
    OutCase(
        "predict_o_symlink",
        lambda t, r: ["predict", str(r["ckpt"]), "-o", _link(t, str(t / "elsewhere.csv"))],
        ["{tmp}/link is a symbolic link"],
    ),
    OutCase(
        "predict_o_dev_full",
        lambda t, r: ["predict", str(r["ckpt"]), "-o", "/dev/full"],
        ["/dev/full is a device or special file; expected a regular file"],
    ),
    OutCase(
        "predict_o_under_a_file",
        lambda t, r: ["predict", str(r["ckpt"]), "-o", _file(t) + "/p.csv"],
        ["{tmp}/afile is not a folder"],
    ),
    OutCase(
        "predict_disk_full",
        lambda t, r: ["predict", str(r["ckpt"]), "-o", str(t / "new" / "p.csv")],
        ["cannot write output {tmp}/new/p.csv: no space left on device"],
        _full_disk,
    ),
    OutCase(
        "predict_read_only",
        lambda t, r: ["predict", str(r["ckpt"]), "-o", str(t / "p.csv")],
        ["cannot write output {tmp}/p.csv: permission denied"],
        _read_only_folder,
    ),
    OutCase(
        "report_out_is_a_file",
        lambda t, r: ["report", str(r["run"]), "--out", _file(t)],
        ["{tmp}/afile is a file; expected a folder"],
    ),
    OutCase(
        "report_disk_full",
        lambda t, r: ["report", str(r["run"]), "--out", str(t / "rep"), "--no-gates"],
        ["cannot write output {tmp}/rep/", "no space left on device"],
        _full_disk,
    ),
    OutCase(
        "robust_out_is_a_device",
        lambda t, r: ["robust", str(r["run"]), "--out", "/dev/null"],
        ["/dev/null is a device or special file; expected a regular folder"],
    ),
    OutCase(
        "ablate_out_is_a_file",
        lambda t, r: ["ablate", "-c", "ablate-tsda", "--out", _file(t)],
        ["{tmp}/afile is a file; expected a folder"],
    ),
    OutCase(
        "convert_out_is_a_symlink",
        lambda t, r: ["data", "convert", "synthetic", _link(t, str(t / "target")), SMALL],
        ["{tmp}/link is a symbolic link"],
    ),
    OutCase(
        "convert_out_is_a_file",
        lambda t, r: ["data", "convert", "synthetic", _file(t), SMALL, "--overwrite"],
        ["{tmp}/afile is a file; expected a folder"],
    ),
    OutCase(
        "convert_disk_full",
        lambda t, r: ["data", "convert", "synthetic", str(t / "new" / "lazy"), SMALL],
        ["cannot write output {tmp}/new/", "no space left on device"],
        _full_disk,
    ),
    # checkpoints
    OutCase(
        "checkpoint_without_digest",
        lambda t, r: ["eval", str(_without_digest(t, r["ckpt"]))],
        ["{tmp}/old.pt has no SHA-256 digest", "--allow-unverified"],
    ),
    OutCase(
        "checkpoint_with_code",
        lambda t, r: ["predict", str(_with_code(t, r["ckpt"])), "-o", str(t / "p.csv")],
        ["{tmp}/evil.pt contains code (posix.system)", "must not be loaded"],
    ),
    OutCase("checkpoint_is_a_folder", lambda t, r: ["eval", str(t)], ["checkpoint {tmp} is not a file"]),
    OutCase(
        "checkpoint_missing", lambda t, r: ["eval", str(t / "none.pt")], ["checkpoint {tmp}/none.pt does not exist"]
    ),
    # arguments of the other commands
    OutCase(
        "robust_negative_noise",
        lambda t, r: ["robust", str(r["run"]), "--noise-levels", "-1", "--no-plots"],
        ["--noise-levels takes a comma list of noise sigmas >= 0", "'-1'"],
    ),
    OutCase(
        "robust_drop_rate_1",
        lambda t, r: ["robust", str(r["run"]), "--drop-rates", "0.5,1", "--no-plots"],
        ["--drop-rates takes a comma list of frame drop rates in [0, 1)", "'0.5,1'"],
    ),
    OutCase(
        "robust_noise_not_numbers",
        lambda t, r: ["robust", str(r["run"]), "--noise-levels", "low,high", "--no-plots"],
        ["--noise-levels", "'low,high'"],
    ),
    OutCase(
        "ablate_seeds_repeated",
        lambda t, r: ["ablate", "-c", "ablate-tsda", "--seeds", "1112,1112", "--out", str(t / "abl")],
        ["--seeds='1112,1112'", "given twice"],
    ),
]


def _tree(root: Path) -> list[tuple[str, bytes | None]]:
    return sorted(
        (str(p.relative_to(root)), p.read_bytes() if p.is_file() and not p.is_symlink() else None)
        for p in root.rglob("*")
    )


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", OUT_CASES, ids=[c.id for c in OUT_CASES])
def test_bad_output_checkpoint_or_argument(case: OutCase, trained, tmp_path, capsys, monkeypatch):
    tmp = tmp_path / "in"
    tmp.mkdir()
    argv = case.make(tmp, trained)
    expected = [e.replace("{tmp}", str(tmp)) for e in case.expected]
    before, run_before = _tree(tmp_path), _tree(trained["run"])
    capsys.readouterr()
    with monkeypatch.context() as m:
        if case.patch:
            case.patch(m)
        assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    error_lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(error_lines) == 1, err
    for part in expected:
        assert part in error_lines[0], (part, err)
    assert "corrupt" not in err or "contains code" not in err
    assert "weights_only" not in err
    # nothing half-written: no temp file, no partial folder, no replaced link, input run untouched
    assert _tree(tmp_path) == before
    assert _tree(trained["run"]) == run_before
    assert not (tmp / "code_ran").exists()


def test_debug_flag_shows_the_traceback():
    with pytest.raises(ConfigError, match="train.lr must be a finite number > 0"):
        cli.main(["--debug", "train", *QUICK, SMALL, "train.lr=-1"])


def test_predict_dash_is_standard_output(trained, capsys, same_predictions):
    assert cli.main(["predict", str(trained["ckpt"]), "-o", "-"]) == 0
    same_predictions(capsys.readouterr().out, stored_csv(trained["run"] / "seed_1111", "test"))
    assert not Path("-").exists()


def test_checkpoint_written_through_a_file_reports_a_full_disk(trained):
    # the reason the checkpoint goes through a Python file: torch.save onto a path says "unexpected pos"
    payload = torch.load(trained["ckpt"], weights_only=True)
    with pytest.raises(OSError) as e:
        checkpoint_module._save(payload, "/dev/full")
    assert e.value.errno == errno.ENOSPC


def test_unverified_checkpoint_loads_with_the_flag(trained, tmp_path, capsys, same_predictions):
    old = _without_digest(tmp_path, trained["ckpt"])
    assert cli.main(["predict", str(old), "--allow-unverified"]) == 0
    same_predictions(capsys.readouterr().out, stored_csv(trained["run"] / "seed_1111", "test"))


def test_real_read_only_folder(trained, capsys):
    # /sys refuses new files even to root in most containers; skip where it does not
    probe = Path("/sys/sentangle-probe")
    try:
        probe.touch()
    except OSError:
        pass
    else:
        probe.unlink()
        pytest.skip("/sys is writable here")
    assert cli.main(["predict", str(trained["ckpt"]), "-o", str(probe)]) == 2
    err = capsys.readouterr().err
    assert f"error: cannot write output {probe}: " in err and "Traceback" not in err and not probe.exists()


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["train", "-m", "dbr", *QUICK, SMALL, "model.hidden=63"], "hidden=63 must be divisible by heads=4"),
        (["train", "--no-progress", "--seeds", "0x10"], "--seeds='0x10'"),
        (["predict", "/nonexistent.pt", "-o", "/dev/stdout"], "/dev/stdout is a symbolic link"),
    ],
    ids=["model_option", "seeds_hex", "dev_stdout"],
)
def test_real_entry_point_has_no_traceback(argv, expected, tmp_path):
    # this checkout's package, whatever an installed copy points at
    start = f"import sys; sys.path.insert(0, {str(Path(cli.__file__).parents[1])!r}); import sentangle.cli as c; sys.exit(c.main())"
    proc = subprocess.run(
        [sys.executable, "-c", start, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "error: " in proc.stderr and expected in proc.stderr
    assert list(tmp_path.iterdir()) == []
