"""`sentangle predict` on unlabelled input: one clip (--text/--audio/--video), a CSV of clips with
--media, an extracted folder; the model's own extractors and statistics, its feature spec checked."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from sentangle.cli import main
from sentangle.data.lazy import META
from sentangle.runs.inference import load_trained
from sentangle.training.trainer import predict

pytest.importorskip("av", reason="PyAV not installed (pip install 'sentangle[extract]')")
pytest.importorskip("opensmile", reason="opensmile not installed (pip install 'sentangle[extract]')")

# the clips and models of `own_models` (tests/conftest.py): ten clips of unequal lengths
TEXTS = ["what a wonderful film", "i hated it", "fine", "superb acting", "boring"]
TEXTS += ["lovely", "awful", "good", "bad", "ok"]


def write_csv(path: Path, rows: list[list], header: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def run(*args) -> int:
    return main([*map(str, args)])


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def setup(own_models):
    assert own_models["texts"] == TEXTS
    return own_models


def predict_csv(capsys, *args) -> list[dict]:
    capsys.readouterr()
    assert run("predict", *args, "--no-progress") == 0
    return rows_of(capsys.readouterr().out)


def test_the_same_clip_gets_the_same_prediction_whatever_file_or_batch(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # another working directory and another cache
    monkeypatch.setenv("SENTANGLE_CACHE", str(tmp_path / "cache"))
    model, clips = setup["models"]["mult"], setup["clips"]
    # clip 2 (0.9 s) is shorter than others: in a batch its frames are windowed by their padded length
    alone = predict_csv(capsys, model, "--text", TEXTS[2], "--audio", clips / "v2" / "0.wav")
    assert [r["id"] for r in alone] == ["input"] and alone[0]["polarity"] in ("negative", "neutral", "positive")
    score = float(alone[0]["prediction"])

    # in a CSV of clips (no label, no mode) beside a longer and a shorter clip, and in another order
    got = {}
    for order in ([0, 2, 1], [2, 7], [9, 4, 3, 2, 6]):
        table = write_csv(
            tmp_path / f"in{len(order)}.csv", [[f"v{i}", "0", TEXTS[i]] for i in order], ["video_id", "clip_id", "text"]
        )
        out = predict_csv(capsys, model, table, "--media", clips)
        got[tuple(order)] = {r["id"]: float(r["prediction"]) for r in out}
        assert got[tuple(order)]["v2$_$0"] == pytest.approx(score, abs=1e-5)

    # an extracted folder without labels, read whole
    unlabelled = write_csv(
        tmp_path / "u.csv", [[f"v{i}", "0", TEXTS[i]] for i in range(10)], ["video_id", "clip_id", "text"]
    )
    assert run("extract", clips, unlabelled, tmp_path / "u", "--no-progress") == 0
    folder = predict_csv(capsys, model, tmp_path / "u")
    assert len(folder) == 10 and "label" not in folder[0]
    assert {r["id"]: float(r["prediction"]) for r in folder}["v2$_$0"] == pytest.approx(score, abs=1e-5)

    # why clips are batched by length: batched by position, as evaluation does, mult averages the
    # clip's frames in windows of the batch's padded length and gives another number
    trained = load_trained(model)
    from sentangle.runs.inference import input_dataset

    ds = input_dataset(trained, str(tmp_path / "u"), labelled=False)
    pred, _, ids = predict(trained.model, ds, "test")
    assert abs(float(dict(zip(ids, pred))["v2$_$0"]) - score) > 1e-4


def test_json_output_carries_the_model_diagnostics(setup, tmp_path, capsys):
    out = tmp_path / "p.json"
    table = write_csv(
        tmp_path / "in.csv", [["v1", "0", TEXTS[1]], ["v2", "0", TEXTS[2]]], ["video_id", "clip_id", "text"]
    )
    assert run("predict", setup["models"]["rtil"], table, "--media", setup["clips"], "-o", out, "--no-progress") == 0
    rows = json.loads(out.read_text())
    assert [r["id"] for r in rows] == ["v1$_$0", "v2$_$0"]
    gates = [k for k in rows[0] if k.startswith("gate_")]
    assert gates and all(0.0 <= r[g] <= 1.0 for r in rows for g in gates)  # sigmoid gates, per clip


def test_a_missing_clip_is_a_row_with_its_reason(setup, tmp_path, capsys):
    table = write_csv(
        tmp_path / "in.csv", [["v1", "0", TEXTS[1]], ["nope", "7", "lost"]], ["video_id", "clip_id", "text"]
    )
    rows = predict_csv(capsys, setup["models"]["mult"], table, "--media", setup["clips"])
    assert [r["id"] for r in rows] == ["v1$_$0", "nope$_$7"]
    assert rows[0]["error"] == "" and float(rows[0]["prediction"]) == pytest.approx(float(rows[0]["prediction"]))
    assert "no media file; looked for nope/7.mp4" in rows[1]["error"] and rows[1]["prediction"] == ""


def test_a_modality_the_model_reads_must_be_given_or_allowed_missing(setup, capsys):
    model = setup["models"]["mult"]
    assert run("predict", model, "--text", "what a wonderful film") == 2
    err = capsys.readouterr().err
    assert "has no audio, which model folder" in err and "--allow-missing audio" in err
    with pytest.warns(UserWarning, match="predicting with it missing"):
        rows = predict_csv(capsys, model, "--text", "what a wonderful film", "--allow-missing", "audio")
    assert len(rows) == 1 and np.isfinite(float(rows[0]["prediction"]))
    assert run("predict", model, "--audio", setup["clips"] / "v1" / "0.wav") == 2
    assert "has no text" in capsys.readouterr().err


def test_features_of_another_extractor_or_encoder_are_refused_naming_both(setup, tmp_path, capsys):
    root, model = setup["root"], setup["models"]["mult"]
    # librosa gives 25 features per frame, as eGeMAPS does: only the spec tells them apart
    assert (
        run("extract", setup["clips"], root / "label.csv", tmp_path / "lib", "--audio", "librosa", "--no-progress") == 0
    )
    assert run("predict", model, tmp_path / "lib") == 2
    err = capsys.readouterr().err
    assert "does not hold the features" in err and "input audio: 25 features from librosa" in err
    assert "model audio: 25 features from egemaps (opensmile" in err
    # other dims: ComParE's 65 descriptors
    assert (
        run("extract", setup["clips"], root / "label.csv", tmp_path / "cmp", "--audio", "compare", "--no-progress") == 0
    )
    assert run("predict", model, tmp_path / "cmp") == 2
    err = capsys.readouterr().err
    assert "input audio: 65 features from compare" in err and "model audio: 25 features from egemaps" in err
    # text already encoded by another encoder
    assert run("data", "convert", root / "feat", tmp_path / "enc") == 0
    meta = json.loads((tmp_path / "enc" / META).read_text())
    assert meta["info"]["text_encoder"] == "minilm"
    meta["info"]["text_encoder"] = "bert-base-uncased"
    (tmp_path / "enc" / META).write_text(json.dumps(meta))
    assert run("predict", model, tmp_path / "enc") == 2
    err = capsys.readouterr().err
    assert "encoded by 'bert-base-uncased'" in err and "text encoder 'minilm'" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--audio", "none.wav"], "--audio none.wav: no such file"),
        (["DATA", "--text", "hi"], "give one input"),
        (["DATA", "--media", "."], "--media . needs DATA to be a CSV"),
        (["--text", "hi", "--workers", "0"], "--workers 0"),
    ],
)
def test_user_errors_name_the_argument(setup, args, message, capsys, tmp_path):
    args = [str(setup["root"] / "feat") if a == "DATA" else a for a in args]
    out = tmp_path / "p.csv"
    assert run("predict", setup["models"]["mult"], *args, "-o", out) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not out.exists()


def test_the_python_api_gives_the_rows_the_command_writes(setup, capsys):
    import sentangle

    model, wav = setup["models"]["rtil"], setup["clips"] / "v4" / "0.wav"
    rows = sentangle.predict(model, text=TEXTS[4], audio=wav)
    printed = predict_csv(capsys, model, "--text", TEXTS[4], "--audio", wav)
    assert [r["id"] for r in rows] == ["input"]
    assert {k: str(v) for k, v in rows[0].items()} == printed[0]
