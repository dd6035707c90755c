"""Data-parallel training (torchrun, gloo, 2 CPU processes) matches one process with the same global batch."""

import csv
import io
import json
import os
import subprocess
import sys

import pytest
import torch

from sentangle.cli import main
from sentangle.core.errors import TrainingError
from sentangle.data.batch import Batch
from sentangle.data.synthetic import make_synthetic
from sentangle.models.base import create_model
from sentangle.runs.predictions import predictions_csv
from sentangle.training.distributed import Context, is_main, setup, unused_parameters

# Self-MM as plain multi-task learning: auxiliary losses, an on_epoch_end hook, and with the vision
# loss weighted 0 a head that gets no gradient (DDP must be told about unused parameters).
# Dropout 0 so that both runs compute the same function. 64 training samples in batches of 21
# leave a last batch of 1: one rank then takes part with weight 0.
ARGS = [
    "-m",
    "self_mm",
    "-d",
    "synthetic",
    "--seeds",
    "1111",
    "--no-progress",
    "dataset.scale=0.05",
    "dataset.lengths=12",
    "train.epochs=3",
    "train.batch_size=21",
    "train.threads=1",
    "model.label_generation=false",
    "model.post_text_dropout=0",
    "model.post_audio_dropout=0",
    "train.aux_weights.unimodal_vision=0",
]
RUN = "self_mm-synthetic"
# Float sums differ in order (all-reduce of two slices vs one batch); observed differences ~1e-6.
TOL = 1e-4


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_torchrun_two_processes_match_one_process_and_write_once(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "sentangle.cli",
        "train",
        *ARGS,
        "--out",
        str(tmp_path / "ddp"),
    ]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert res.stdout.count("run folder:") == 1  # only rank 0 prints
    assert main(["train", *ARGS, "--out", str(tmp_path / "single")]) == 0

    ddp, one = tmp_path / "ddp", tmp_path / "single"
    assert [p.name for p in ddp.iterdir()] == [RUN]  # one run folder ...
    assert _files(ddp) == _files(one)  # ... with the same files, no per-rank copies or leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]

    a = json.loads((ddp / RUN / "seed_1111/metrics.json").read_text())
    b = json.loads((one / RUN / "seed_1111/metrics.json").read_text())
    assert a["best_epoch"] == b["best_epoch"] and len(a["history"]) == len(b["history"]) == 3
    for ha, hb in zip(a["history"], b["history"]):  # global training loss and validation, per epoch
        for k in ("train_task", "train_unimodal_text", "train_unimodal_audio", "valid_mae", "valid_corr"):
            assert ha[k] == pytest.approx(hb[k], abs=TOL), k
    for split in ("train", "valid", "test"):
        for k in ("mae", "corr"):
            assert a["metrics"][split][k] == pytest.approx(b["metrics"][split][k], abs=TOL), (split, k)
    assert a["history"][0]["train_task"] != pytest.approx(a["history"][-1]["train_task"], abs=1e-3)  # it trained

    wa = torch.load(ddp / RUN / "seed_1111/checkpoint.pt", weights_only=True)["state_dict"]
    wb = torch.load(one / RUN / "seed_1111/checkpoint.pt", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=TOL, rtol=0, msg=k)
    pa = [float(r["prediction"]) for r in csv.DictReader(io.StringIO(predictions_csv(ddp / RUN / "seed_1111", "test")))]
    pb = [float(r["prediction"]) for r in csv.DictReader(io.StringIO(predictions_csv(one / RUN / "seed_1111", "test")))]
    assert pa == pytest.approx(pb, abs=TOL)


def _batch(n):
    x = torch.randn(n, 3, 4)
    return Batch({"text": x}, {"text": torch.ones(n, 3, dtype=torch.bool)}, torch.randn(n), [f"s{i}" for i in range(n)])


def test_shards_are_disjoint_and_scaled_gradients_average_to_the_full_batch():
    torch.manual_seed(0)
    batch, lin = _batch(7), torch.nn.Linear(4, 1)

    def grad(b, share=1.0):
        lin.zero_grad()
        (share * torch.nn.functional.l1_loss(lin(b.features["text"].mean(1)).squeeze(-1), b.labels)).backward()
        return lin.weight.grad.clone()

    parts = [Context(rank=r, world=3).shard(batch) for r in range(3)]
    assert sum((p.ids for p, _ in parts), []) == batch.ids
    averaged = sum(grad(p, share) for p, share in parts) / 3  # what DDP's all-reduce computes
    torch.testing.assert_close(averaged, grad(batch))

    tiny = [Context(rank=r, world=3).shard(_batch(2)) for r in range(3)]
    assert [len(p) for p, _ in tiny] == [1, 1, 1] and [s for _, s in tiny] == [0.0, 1.5, 1.5]  # rank 0 joins, weight 0


def _data():
    return make_synthetic(seed=0, scale=0.02, lengths=6, dims={"text": 8, "audio": 3, "vision": 3})


def test_unused_parameters_finds_switched_off_branches_and_leaves_rng_alone():
    ds = _data()
    batch = next(ds.batches("train", 8))
    model = create_model("self_mm", ds.input_dims, label_generation=False)
    assert unused_parameters(model, batch, {}) == []
    torch.manual_seed(3)
    unused = unused_parameters(model, batch, {"unimodal_vision": 0.0})  # only that loss reaches its head
    assert unused and all(n.startswith("unimodal.vision.") for n in unused)
    after = torch.rand(3)
    torch.manual_seed(3)
    torch.testing.assert_close(after, torch.rand(3))


def test_self_mm_label_generation_is_refused_with_the_way_out():
    ds = _data()
    model = create_model("self_mm", ds.input_dims)
    with pytest.raises(TrainingError, match="label_generation=false"):
        Context(rank=0, world=2).wrap(model, ds, 8, {})


def test_single_process_is_a_pass_through(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = setup("cpu")
    assert not ctx.active and ctx.main and is_main()
    batch = _batch(5)
    assert ctx.shard(batch) == (batch, 1.0)
    model = torch.nn.Linear(2, 1)
    assert ctx.wrap(model, None, 8, {}) is model
    assert ctx.on_main(lambda: 42) == 42
