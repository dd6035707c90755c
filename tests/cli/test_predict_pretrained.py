"""`sentangle predict --text "..."` with no MODEL uses the model that ships with sentangle; without
a model and without a text it stops with one clear error; `predict MODEL DATA` still reads both."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

from sentangle.cli import main
from sentangle.runs.inference import default_model_dir


def predict_text(capsys, text: str) -> dict:
    assert main(["predict", "--text", text]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1
    return rows[0]


def test_predict_text_without_a_model_uses_the_bundled_one(capsys):
    good = predict_text(capsys, "what a wonderful film")
    bad = predict_text(capsys, "this was a terrible, boring waste of time")
    assert float(good["prediction"]) > 0 and good["polarity"] == "positive"
    assert float(bad["prediction"]) < 0 and bad["polarity"] == "negative"
    # the same as naming the bundled folder
    assert main(["predict", str(default_model_dir()), "--text", "what a wonderful film"]) == 0
    named = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert named["prediction"] == good["prediction"]


def test_predict_without_a_model_or_a_text_is_a_clear_error():
    # the real command: one line, exit code 2, no traceback
    r = subprocess.run([sys.executable, "-m", "sentangle.cli", "predict"], capture_output=True, text=True, check=False)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: predict: give MODEL"), r.stderr
    assert "--text" in lines[0] and "Traceback" not in r.stderr


def test_predict_model_data_still_takes_two_arguments(capsys, tmp_path):
    # DATA is read as data, not taken for the model: a missing file is named as a feature file
    missing = tmp_path / "clips.npz"
    assert main(["predict", str(default_model_dir()), str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"feature file {missing} does not exist" in err
