"""Transcripts from speech (data/extractors/asr.py) for clips without one: extract --asr, predict --asr."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from sentangle.cli import main
from sentangle.core.errors import UnknownNameError
from sentangle.data.extractors.asr import transcriber
from sentangle.data.media import decode_audio

pytest.importorskip("pocketsphinx", reason="pocketsphinx not installed (pip install 'sentangle[asr]')")
pytest.importorskip("opensmile", reason="opensmile not installed (pip install 'sentangle[extract]')")
if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng not installed (Debian package espeak-ng): no speech to recognise", allow_module_level=True)

SENTENCES = ["what a wonderful film", "i hated every minute", "the acting was superb", "boring and far too long"]


def speak(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    for i, text in enumerate(SENTENCES):
        speak(text, root / "clips" / f"s{i}" / "0.wav")
    return root


def test_the_recogniser_hears_the_words_of_synthetic_speech(speech):
    heard = transcriber("pocketsphinx")(decode_audio(speech / "clips" / "s0" / "0.wav", 16000))
    assert {"wonderful", "film"} <= set(heard.split())
    with pytest.raises(UnknownNameError, match="unknown speech recogniser 'whisper'"):
        transcriber("whisper")


def test_extract_transcribes_rows_without_text_and_caches_them(speech, tmp_path, capsys):
    table = tmp_path / "label.csv"
    with open(table, "w", newline="") as f:  # no text column at all; the labels give a regression task
        csv.writer(f).writerows(
            [["video_id", "clip_id", "label", "mode"]] + [[f"s{i}", "0", i - 1.5, "test"] for i in range(4)]
        )
    args = ["extract", str(speech / "clips"), str(table), "--asr", "pocketsphinx", "--no-progress"]
    args += ["--cache-dir", str(tmp_path / "cache")]
    assert main([args[0], *args[1:3], str(tmp_path / "a"), *args[3:]]) == 0
    texts = json.loads((tmp_path / "a" / "test" / "texts.json").read_text())
    assert "wonderful" in texts[0].split() and all(isinstance(t, str) for t in texts)
    meta = json.loads((tmp_path / "a" / "sentangle-features.json").read_text())
    assert meta["info"]["asr"]["name"] == "pocketsphinx" and meta["info"]["asr"]["version"]
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["clips"]["transcribed"] == 4 and report["cache"]["extracted"] == 4
    assert main([args[0], *args[1:3], str(tmp_path / "b"), *args[3:]]) == 0  # again: transcripts from the cache
    assert json.loads((tmp_path / "b" / "report.json").read_text())["cache"]["reused"] == 4
    assert json.loads((tmp_path / "b" / "test" / "texts.json").read_text()) == texts
    capsys.readouterr()
    assert main(["extract", str(speech / "clips"), str(table), str(tmp_path / "c"), "--no-progress"]) == 2
    assert "missing column(s) ['text']" in capsys.readouterr().err  # without --asr the transcript is needed


def test_predict_transcribes_a_clip_given_without_text(speech, tmp_path, capsys):
    table = tmp_path / "label.csv"
    with open(table, "w", newline="") as f:
        rows = [
            [f"s{i}", "0", SENTENCES[i], 2.0 if i % 2 == 0 else -2.0, "train" if i < 2 else "valid"] for i in range(4)
        ]
        csv.writer(f).writerows(
            [["video_id", "clip_id", "text", "label", "mode"], *rows, ["s0", "1", "x", 1.0, "test"]]
        )
    speak("what a wonderful film", speech / "clips" / "s0" / "1.wav")
    assert main(["extract", str(speech / "clips"), str(table), str(tmp_path / "feat"), "--no-progress"]) == 0
    run = ["train", "-d", str(tmp_path / "feat"), "-m", "lf_dnn", "--seeds", "1", "--out", str(tmp_path / "runs")]
    assert main([*run, "--no-progress", "train.epochs=1"]) == 0
    model = tmp_path / "model"
    assert main(["export", str(tmp_path / "runs" / "lf_dnn-feat" / "seed_1111"), str(model)]) == 0
    wav = speech / "clips" / "s0" / "0.wav"
    heard = transcriber("pocketsphinx")(decode_audio(wav, 16000))
    capsys.readouterr()
    assert main(["predict", str(model), "--audio", str(wav), "--asr", "pocketsphinx"]) == 0
    by_asr = capsys.readouterr().out
    assert main(["predict", str(model), "--audio", str(wav), "--text", heard]) == 0
    assert capsys.readouterr().out == by_asr  # the transcript is the text the model read
    assert main(["predict", str(model), str(tmp_path / "feat"), "--asr", "pocketsphinx"]) == 2
    assert "--asr transcribes clips given as media" in capsys.readouterr().err
