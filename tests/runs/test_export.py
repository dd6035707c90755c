"""`export` (runs/export.py) and prediction with a model's own training statistics (runs/inference.py):
a seed becomes a model folder that predicts the run's numbers on another machine; a clip gets the same
prediction whichever file it arrives in; checkpoints written before statistics were stored convert."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sentangle
from sentangle.core.errors import CheckpointError, DataError
from sentangle.data.named import load_dataset
from sentangle.runs.checkpoint import checkpoint_digest, load_checkpoint
from sentangle.runs.export import checkpoint_of
from sentangle.runs.inference import input_dataset, load_trained
from sentangle.runs.predictions import predictions_csv, read_seed_predictions
from sentangle.training.trainer import predict

SHARED = "shared_0"  # the clip both feature files hold


def write_npz(path: Path, seed: int, shift: float = 0.0) -> Path:
    """An utterance .npz (readers/npz.py) of 24 train, 6 valid and 6 test clips, the last test clip
    SHARED with fixed features; `seed` and `shift` change every other clip (and so the file's
    training statistics)."""
    rng = np.random.default_rng(seed)
    n = 36
    split = np.array(["train"] * 24 + ["valid"] * 6 + ["test"] * 6)
    text = rng.normal(size=(n, 6)).astype(np.float32)
    audio = (rng.normal(shift, 1.0 + shift, size=(n, 3))).astype(np.float32)
    ids = np.array([f"f{seed}v{i // 3}_{i % 3}" for i in range(n - 1)] + [SHARED])
    text[-1], audio[-1] = np.linspace(-1, 1, 6), [0.5, -0.25, 2.0]
    label = rng.uniform(-3, 3, n).astype(np.float32)
    label[-1] = 1.0
    np.savez(path, id=ids, split=split, text=text, audio=audio, label=label)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("export")
    data = write_npz(root / "feats.npz", seed=0)
    res = sentangle.train(
        {"name": "lf_dnn", "hidden": 8, "fusion_hidden": 8},
        str(data),  # an absolute path: the model folder must not carry it
        out=str(root / "runs"),
        seeds=1,
        train={"epochs": 2, "progress": False},
    )
    seed_dir = Path(res["folder"]) / "seed_1111"
    return {"root": root, "data": data, "seed_dir": seed_dir, "ckpt": seed_dir / "checkpoint.pt"}


def old_checkpoint(trained, path: Path) -> Path:
    """The trained checkpoint as versions before stored statistics wrote it (their digest too)."""
    payload = torch.load(trained["ckpt"], weights_only=True)
    del payload["preprocessing"]
    payload["sha256"] = checkpoint_digest(payload)
    torch.save(payload, path)
    return path


def test_checkpoint_carries_statistics_under_its_digest(trained, tmp_path):
    model, cfg, payload = load_checkpoint(trained["ckpt"])
    prep = payload["preprocessing"]
    ds = load_dataset(str(trained["data"]))  # the training data, normalised as in training
    assert prep["normalization"]["audio"]["mean"] == ds.normalizers["audio"].mean.tolist()
    assert prep["features"]["input_dims"] == {"text": 6, "audio": 3}
    assert prep["features"]["dataset"] == {"name": "feats.npz"}
    # the digest covers it: an edited statistic is refused
    payload["preprocessing"]["normalization"]["audio"]["mean"][0] += 1.0
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="do not match the SHA-256"):
        load_checkpoint(tmp_path / "edited.pt")
    # a checkpoint without it keeps the digest older versions computed: config, data, seed, weights
    old = torch.load(old_checkpoint(trained, tmp_path / "old.pt"), weights_only=True)
    h = hashlib.sha256(json.dumps([old["config"], old["data"], old["seed"]], sort_keys=True, default=str).encode())
    for name in sorted(old["state_dict"]):
        t = old["state_dict"][name].contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    assert old["sha256"] == h.hexdigest()
    assert load_checkpoint(tmp_path / "old.pt")[2].get("preprocessing") is None


def test_exported_folder_predicts_the_runs_numbers_from_another_place(trained, tmp_path, same_predictions):
    res = sentangle.export(trained["seed_dir"], tmp_path / "model")
    assert res == {"folder": str(tmp_path / "model"), "checkpoint": str(trained["ckpt"]), "recomputed": False}
    # another machine: the folder and the data moved, another working folder, an empty cache
    machine = tmp_path / "machine"
    shutil.move(tmp_path / "model", machine / "models" / "mine")
    shutil.copy(trained["data"], machine / "input.npz")
    (machine / "work").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "sentangle.cli", "predict", "../models/mine", "../input.npz", "-o", "out.csv"],
        cwd=machine / "work",
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "SENTANGLE_CACHE": str(machine / "cache"), "HF_HOME": str(machine)},
    )
    assert proc.returncode == 0, proc.stderr
    same_predictions((machine / "work" / "out.csv").read_text(), predictions_csv(trained["seed_dir"], "test"))


def test_no_path_of_this_machine_is_written(trained, tmp_path):
    sentangle.export(trained["seed_dir"], tmp_path / "model")
    paths = {str(trained["root"]), str(trained["root"].resolve()), str(tmp_path), os.getcwd(), str(Path.home())}
    paths |= {sys.prefix, str(Path(sentangle.__file__).parent)}
    for f in (tmp_path / "model").iterdir():
        data = f.read_bytes()
        for p in paths:
            assert p.encode() not in data, (f.name, p)
    card = (tmp_path / "model" / "README.md").read_text()
    assert "feats.npz" in card and "seed 1111" in card and "| test |" in card  # data, seed, metrics


def test_same_clip_same_prediction_whichever_file_it_arrives_in(trained, tmp_path):
    a = write_npz(tmp_path / "a.npz", seed=1)
    b = write_npz(tmp_path / "b.npz", seed=2, shift=1.0)  # other clips, other training statistics
    sentangle.export(trained["seed_dir"], tmp_path / "model")
    # the old behaviour, each file normalised with its own training split, reads the clip differently
    own = [load_dataset(str(f)).splits["test"].features["audio"][-1] for f in (a, b)]
    assert not np.allclose(own[0], own[1])
    old = old_checkpoint(trained, tmp_path / "old.pt")
    for source in (trained["ckpt"], tmp_path / "model", old):  # old: statistics recomputed from its config
        model = load_trained(source)
        got = []
        for f in (a, b):
            pred, _, ids = predict(model.model, input_dataset(model, str(f)), "test")
            got.append(float(pred[ids.index(SHARED)]))
        assert got[0] == got[1], source
    # and it is the prediction the run made for the same features in its own file
    pred, _, _ = read_seed_predictions(trained["seed_dir"], "test")
    assert got[0] == pytest.approx(float(pred[-1]), abs=1e-6)


def test_old_checkpoint_converts_with_recomputed_statistics(trained, tmp_path):
    seed_dir = tmp_path / "run" / "seed_1111"
    seed_dir.mkdir(parents=True)
    old_checkpoint(trained, seed_dir / "checkpoint.pt")
    res = sentangle.export(seed_dir, tmp_path / "model")
    assert res["recomputed"] is True
    sentangle.export(trained["seed_dir"], tmp_path / "new" / "model")
    got = json.loads((tmp_path / "model" / "preprocessing.json").read_text())
    want = json.loads((tmp_path / "new" / "model" / "preprocessing.json").read_text())
    assert got == want  # the same statistics, to the last bit, as those stored at training time
    assert "recomputed from the run's dataset" in (tmp_path / "model" / "README.md").read_text()


def test_old_checkpoint_whose_data_is_gone_names_what_is_missing(trained, tmp_path):
    data = write_npz(tmp_path / "gone.npz", seed=0)
    res = sentangle.train(
        {"name": "lf_dnn", "hidden": 4, "fusion_hidden": 4},
        str(data),
        out=str(tmp_path / "runs"),
        seeds=1,
        train={"epochs": 1, "progress": False},
    )
    seed_dir = Path(res["folder"]) / "seed_1111"
    old_checkpoint({"ckpt": seed_dir / "checkpoint.pt"}, seed_dir / "checkpoint.pt")
    data.unlink()
    with pytest.raises(CheckpointError, match=r"carries no normalisation statistics .* cannot be loaded .*gone.npz"):
        sentangle.export(seed_dir, tmp_path / "model")
    assert not (tmp_path / "model").exists()
    # predicting on other data says what it does instead
    with pytest.warns(UserWarning, match="normalising the input with its own training split"):
        input_dataset(load_trained(seed_dir / "checkpoint.pt"), str(trained["data"]))


def test_checkpoint_of_wants_a_seed_folder_or_a_checkpoint(trained, tmp_path):
    assert checkpoint_of(trained["seed_dir"]) == trained["ckpt"]
    assert checkpoint_of(trained["ckpt"]) == trained["ckpt"]
    with pytest.raises(CheckpointError, match=r"is a run folder; expected one of its seed folders \(.*seed_1111\)"):
        checkpoint_of(trained["seed_dir"].parent)
    with pytest.raises(CheckpointError, match="is not a seed folder"):
        checkpoint_of(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint_of(tmp_path / "none")


def test_a_model_folder_without_its_data_asks_for_it(trained, tmp_path):
    sentangle.export(trained["seed_dir"], tmp_path / "model")
    with pytest.raises(DataError, match="trained on feats.npz, which it does not carry"):
        input_dataset(load_trained(tmp_path / "model"))
