"""The model folder that ships inside the package (src/sentangle/pretrained/, rebuilt by
benchmarks/pretrained.py): it loads with its checksums checked, says what it is, and scores obvious
sentences with the right sign through the Python API."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
from pathlib import Path

import pytest

import sentangle
from sentangle.core.errors import CheckpointError
from sentangle.models.portable import CHECKSUMS, FILES, machine_paths
from sentangle.runs.inference import default_model_dir

ROOT = Path(__file__).resolve().parents[2]
POSITIVE = [
    "what a wonderful film",
    "I loved every minute of it, the acting is brilliant and the story is beautiful",
    "this is the best phone I have ever owned, I am really happy with it",
]
NEGATIVE = [
    "this was a terrible, boring waste of time",
    "I hated it, the worst movie I have seen in years",
    "the service was awful and the food was disgusting",
]


@pytest.fixture(scope="module")
def folder() -> Path:
    return default_model_dir()


def test_the_bundled_folder_is_a_small_complete_model_folder(folder):
    assert folder == ROOT / "src" / "sentangle" / "pretrained" / "text-mosei"
    assert sentangle.pretrained_model() == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*FILES, CHECKSUMS])
    # checked independently of the loader: every file is listed with the digest of its bytes
    listed = dict(reversed(line.split("  ", 1)) for line in (folder / CHECKSUMS).read_text().splitlines())
    assert sorted(listed) == sorted(FILES)
    for name, digest in listed.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5e6  # ships in the wheel and the repository


def test_it_loads_as_the_text_model_trained_on_mosei(folder):
    model = sentangle.load_model(folder)
    features = model.preprocessing["features"]
    assert model.build_args is not None and model.build_args["name"] == "text_only"
    assert features["modalities"] == ["text"] and features["task"] == "regression"
    assert features["dataset"]["name"] == "mosei" and features["dataset"]["holdout_valid"] is True
    assert features["text_encoder"]["name"] == "minilm" and features["text_encoder"]["finetune"] == 0
    written = {name: json.loads((folder / name).read_text()) for name in ("config.json", "preprocessing.json")}
    assert machine_paths(written) == []  # nothing of the machine that trained it


def test_an_altered_file_is_refused(folder, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    card = copy / "README.md"
    card.write_text(card.read_text() + "\nedited\n")
    with pytest.raises(CheckpointError, match="README.md"):
        sentangle.load_model(copy)


def test_the_card_states_data_seeds_validation_metrics_and_limits(folder):
    card = (folder / "README.md").read_text()
    assert "# text_only on mosei" in card
    assert "CMU-MOSEI" in card and "YouTube" in card and "English" in card
    assert "mean ± sample std over seeds [" in card and "| valid |" in card
    assert "is the best of the run's" in card  # the exported seed was chosen on valid
    assert "not the dataset's official test split" in card
    assert "Reads text only: it has no audio or vision input." in card
    assert "minilm is frozen" in card


def test_package_data_ships_every_file_of_the_folder(folder):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["sentangle"]
    package = ROOT / "src" / "sentangle"
    for path in folder.iterdir():
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), f"{relative} is not in the package data"


def test_obvious_sentences_get_the_right_sign_through_the_api():
    pos = [sentangle.predict(text=t)[0] for t in POSITIVE]
    neg = [sentangle.predict(None, text=t)[0] for t in NEGATIVE]
    assert all(r["prediction"] > 0 and r["polarity"] == "positive" for r in pos), pos
    assert all(r["prediction"] < 0 and r["polarity"] == "negative" for r in neg), neg
    # the same clip through the folder named explicitly: the same model
    named = sentangle.predict(sentangle.pretrained_model(), text=POSITIVE[0])[0]
    assert named["prediction"] == pos[0]["prediction"]
