"""Checkpoints: usable from a fresh process, and every kind of broken or hostile file is refused.

A refused checkpoint is a CheckpointError naming the file (CLI: exit 2, one `error:` line, no
traceback); code inside a pickle never runs; a failed `predict -o` writes nothing and leaves an
existing output file as it was.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import sentangle
from sentangle.cli import main
from sentangle.core.errors import CheckpointError
from sentangle.runs.checkpoint import checkpoint_digest, load_checkpoint
from sentangle.runs.predictions import predictions_csv


def write_npz(path: Path, n: int = 40, seed: int = 0) -> Path:
    """An utterance-feature .npz in the bc-LSTM layout (see readers/npz.py)."""
    rng = np.random.default_rng(seed)
    split = np.array(["train"] * (n // 2) + ["valid"] * (n // 4) + ["test"] * (n - n // 2 - n // 4))
    np.savez(
        path,
        id=np.array([f"v{i // 4}_{i % 4}" for i in range(n)]),
        split=split,
        text=rng.normal(size=(n, 6)).astype(np.float32),
        audio=rng.normal(size=(n, 3)).astype(np.float32),
        label=rng.uniform(-3, 3, n).astype(np.float32),
    )
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ckpt")
    data = write_npz(root / "feats.npz")
    res = sentangle.train(
        {"name": "lf_dnn", "hidden": 8, "fusion_hidden": 8},
        str(data),
        out=str(root / "runs"),
        seeds=1,
        train={"epochs": 2, "progress": False},
    )
    return {"data": data, "seed_dir": Path(res["folder"]) / "seed_1111"}


def test_predict_in_a_fresh_process(trained, tmp_path, same_predictions):
    ckpt, out = trained["seed_dir"] / "checkpoint.pt", tmp_path / "sub" / "out.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "sentangle.cli", "predict", str(ckpt), str(trained["data"]), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 10 predictions" in proc.stderr
    same_predictions(out.read_text(), predictions_csv(trained["seed_dir"], "test"))


def test_checkpoint_carries_config_versions_and_digest(trained):
    model, cfg, payload = load_checkpoint(trained["seed_dir"] / "checkpoint.pt")
    # every option of the model, the ones left at their default included (modalities)
    assert cfg.model == {"name": "lf_dnn", "hidden": 8, "fusion_hidden": 8, "dropout": 0.2, "modalities": None}
    assert {"torch", "numpy", "sentangle"} <= set(payload["versions"])
    assert payload["sha256"] == checkpoint_digest(payload)
    torch.load(trained["seed_dir"] / "checkpoint.pt", weights_only=True)  # plain data and tensors only


def test_checkpoint_without_digest_loads_only_when_allowed(trained, tmp_path, capsys):
    payload = torch.load(trained["seed_dir"] / "checkpoint.pt", weights_only=True)
    del payload["sha256"]  # written before the digest existed
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="has no SHA-256 digest.*--allow-unverified"):
        load_checkpoint(tmp_path / "old.pt")
    assert main(["eval", str(tmp_path / "old.pt"), "--json"]) == 2
    assert "has no SHA-256 digest" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "old.pt"), "--json", "--allow-unverified"]) == 0
    model, cfg, loaded = load_checkpoint(tmp_path / "old.pt", allow_unverified=True)
    # the same model and config as the file with its digest: nothing is dropped or rebuilt differently
    want_model, want_cfg, _ = load_checkpoint(trained["seed_dir"] / "checkpoint.pt")
    assert cfg.to_dict() == want_cfg.to_dict() and loaded["seed"] == payload["seed"]
    got, want = model.state_dict(), want_model.state_dict()
    assert got.keys() == want.keys() == payload["state_dict"].keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


# ---- broken and hostile files ----------------------------------------------------------------
class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _truncated(src: bytes, path: Path, marker: Path) -> None:
    path.write_bytes(src[: len(src) // 2])


def _flipped(src: bytes, path: Path, marker: Path) -> None:
    # flip one byte in the middle of the largest tensor record: the zip still opens, torch loads it
    info = max(
        (i for i in zipfile.ZipFile(io.BytesIO(src)).infolist() if "/data/" in i.filename), key=lambda i: i.file_size
    )
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(src)
    data[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _text_file(src: bytes, path: Path, marker: Path) -> None:
    path.write_text("id,prediction\n1,0.5\n")


def _empty(src: bytes, path: Path, marker: Path) -> None:
    path.write_bytes(b"")


def _foreign_torch_file(src: bytes, path: Path, marker: Path) -> None:
    torch.save({"weight": torch.zeros(3)}, path)


def _missing_entries(src: bytes, path: Path, marker: Path) -> None:
    torch.save({"format": "sentangle-checkpoint-1", "state_dict": {}}, path)


def _weights_for_another_model(src: bytes, path: Path, marker: Path) -> None:
    payload = torch.load(io.BytesIO(src), weights_only=True)
    payload["config"]["model"]["hidden"] = 12  # a consistent file whose weights have other shapes
    payload["sha256"] = checkpoint_digest(payload)
    torch.save(payload, path)


def _code_in_torch_save(src: bytes, path: Path, marker: Path) -> None:
    torch.save({"format": "sentangle-checkpoint-1", "config": RunsCode(marker)}, path)


def _code_in_plain_pickle(src: bytes, path: Path, marker: Path) -> None:
    with path.open("wb") as f:
        pickle.dump(RunsCode(marker), f)


BROKEN = [
    (_truncated, "is corrupt, truncated or not a sentangle checkpoint"),
    (_flipped, "do not match the SHA-256"),
    (_text_file, "is corrupt, truncated or not a sentangle checkpoint"),
    (_empty, "is corrupt, truncated or not a sentangle checkpoint"),
    (_foreign_torch_file, "not written by sentangle"),
    (_missing_entries, "no ['config', 'data'] entries"),
    (_weights_for_another_model, "weights do not fit model 'lf_dnn'"),
    (_code_in_torch_save, "contains code (posix.system)"),
    (_code_in_plain_pickle, "contains code (posix.system)"),
]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("spoil,expected", BROKEN, ids=[f.__name__.strip("_") for f, _ in BROKEN])
def test_broken_checkpoint_is_refused_and_nothing_is_written(trained, tmp_path, capsys, spoil, expected):
    bad, marker = tmp_path / "model.pt", tmp_path / "code_ran"
    spoil((trained["seed_dir"] / "checkpoint.pt").read_bytes(), bad, marker)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(bad)
    assert str(bad) in str(e.value) and expected in str(e.value)

    out = tmp_path / "preds" / "out.csv"
    out.parent.mkdir()
    out.write_text("previous predictions\n")
    capsys.readouterr()
    assert main(["predict", str(bad), str(trained["data"]), "-o", str(out)]) == 2
    assert main(["eval", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"error: checkpoint {bad}" in err and expected in err and "Traceback" not in err
    assert out.read_text() == "previous predictions\n"  # untouched, not half-overwritten
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.csv"]  # no temp file left
    assert not marker.exists()  # the payload never ran


def test_the_code_payload_is_real(tmp_path):
    # the refusal above matters: loading the same bytes without restriction runs the command
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    _code_in_plain_pickle(b"", path, marker)
    with path.open("rb") as f:
        pickle.load(f)
    assert marker.exists()


def test_checkpoint_saved_before_an_option_existed_loads_as_it_was_trained(tmp_path):
    # DBR's encoder_norm came after DBR checkpoints existed: their configs lack the key, their
    # weights lack the norm, and they must load as the model they were (no norm), not fail.
    data = write_npz(tmp_path / "feats.npz")
    res = sentangle.train(
        {"name": "dbr", "hidden": 8, "heads": 2, "encoder_norm": False},
        str(data),
        out=str(tmp_path / "runs"),
        seeds=1,
        train={"epochs": 1, "progress": False},
    )
    seed_dir = Path(res["folder"]) / "seed_1111"
    payload = torch.load(seed_dir / "checkpoint.pt", weights_only=True)
    del payload["config"]["model"]["encoder_norm"]
    payload["sha256"] = checkpoint_digest(payload)
    torch.save(payload, tmp_path / "old.pt")
    model, cfg, _ = load_checkpoint(tmp_path / "old.pt")
    assert model.encoders["text"].encoder.norm is None and "encoder_norm" not in cfg.model
    new, _, _ = load_checkpoint(seed_dir / "checkpoint.pt")
    for a, b in zip(model.state_dict().values(), new.state_dict().values()):
        torch.testing.assert_close(a, b)
