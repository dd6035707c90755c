"""Same seed, same numbers: two runs of `sentangle.train` into different folders agree exactly.

Checked on CPU with one thread (conftest), for a plain model and one with attention and dropout:
metrics of every split, every checkpoint tensor and the prediction files, bit for bit.
"""

import json

import pytest
import torch

import sentangle
from sentangle.runs.checkpoint import load_checkpoint
from sentangle.runs.predictions import predictions_csv

DATA = {
    "name": "synthetic",
    "scale": 0.05,
    "lengths": {"text": 8, "audio": 12, "vision": 12},
    "dims": {"text": 16, "audio": 5, "vision": 6},
}
TRAIN = {"epochs": 2, "progress": False, "threads": 1}


def train_into(out, model, seeds=(1111, 1112)):
    return sentangle.train(model, DATA, out=str(out), seeds=list(seeds), train=TRAIN)


@pytest.mark.parametrize(
    "model",
    [{"name": "lf_dnn", "hidden": 16}, {"name": "mult", "dim": 8, "heads": 2, "layers": 1}],
    ids=["lf_dnn", "mult"],
)
def test_same_seed_gives_identical_metrics_and_checkpoints(tmp_path, model):
    a = train_into(tmp_path / "a", model)
    b = train_into(tmp_path / "b", model)
    assert a["folder"] != b["folder"]
    assert a["per_seed"] == b["per_seed"]  # exact float equality, every split and metric
    assert a["splits"] == b["splits"]
    for seed in (1111, 1112):
        sa, sb = (f"{r['folder']}/seed_{seed}" for r in (a, b))
        wa, wb = (
            load_checkpoint(f"{sa}/checkpoint.pt")[2]["state_dict"],
            load_checkpoint(f"{sb}/checkpoint.pt")[2]["state_dict"],
        )
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), k
        ma, mb = (json.loads(open(f"{s}/metrics.json").read()) for s in (sa, sb))
        assert ma["history"] == mb["history"] and ma["best_epoch"] == mb["best_epoch"]
        for split in ("train", "valid", "test"):
            assert predictions_csv(sa, split) == predictions_csv(sb, split) is not None
    # the check has teeth: another seed gives other numbers
    assert a["per_seed"][1111] != a["per_seed"][1112]


def test_seed_order_does_not_matter(tmp_path):
    # A resumed run trains a seed in a fresh state; the result must not depend on what ran before.
    model = {"name": "lf_dnn", "hidden": 16}
    both = train_into(tmp_path / "both", model)
    alone = train_into(tmp_path / "alone", model, seeds=(1112,))
    assert alone["per_seed"][1112] == both["per_seed"][1112]
