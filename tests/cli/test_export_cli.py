"""`sentangle export` and model folders given to `eval` / `predict`, end to end; every refusal is
exit 2 with one `error:` line naming what is wrong, and writes nothing."""

from __future__ import annotations

import json
import shutil

import pytest

from sentangle.cli import main
from sentangle.runs.predictions import predictions_csv

TINY = ["--seeds", "1", "--no-progress", "dataset.scale=0.05", "train.epochs=1", "model.hidden=8"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--out", str(out), "--name", "tiny", *TINY]) == 0
    return out / "tiny"


@pytest.fixture(scope="module")
def model_dir(run_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny"
    assert main(["export", str(run_dir / "seed_1111"), str(folder)]) == 0
    return folder


def test_export_then_eval_and_predict_the_folder_like_the_run(run_dir, model_dir, tmp_path, capsys, same_predictions):
    capsys.readouterr()
    # a named dataset: the folder reloads it from its name and options, normalised with its statistics
    assert main(["predict", str(model_dir), "-o", str(tmp_path / "p.csv")]) == 0
    same_predictions((tmp_path / "p.csv").read_text(), predictions_csv(run_dir / "seed_1111", "test"))
    assert main(["eval", str(model_dir), "--split", "test", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["test"]
    want = json.loads((run_dir / "seed_1111" / "metrics.json").read_text())["metrics"]["test"]
    assert got == pytest.approx(want)
    assert main(["eval", str(model_dir), "synthetic", "--split", "test", "--json"]) == 0  # DATA given
    assert json.loads(capsys.readouterr().out)["test"]["mae"] != pytest.approx(
        want["mae"]
    )  # default scale 1: other clips


def test_export_says_what_it_wrote(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir / "seed_1111" / "checkpoint.pt"), str(tmp_path / "m")]) == 0
    assert f"wrote model folder {tmp_path / 'm'}" in capsys.readouterr().out
    assert (tmp_path / "m" / "model.safetensors").is_file()


def _tamper(folder):
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-3] ^= 0x20
    (folder / "model.safetensors").write_bytes(bytes(data))


CASES = {
    "not a seed folder": (
        lambda r, m, t: ["export", str(r), str(t / "new")],
        "is a run folder; expected one of its seed folders",
    ),
    "not a seed folder at all": (
        lambda r, m, t: ["export", str(t), str(t / "new")],
        "is not a seed folder (no checkpoint.pt in it)",
    ),
    "DIR exists": (
        lambda r, m, t: ["export", str(r / "seed_1111"), str(m)],
        "already exists; expected a path to a new model folder",
    ),
    "--overwrite onto a folder that is not a model folder": (
        lambda r, m, t: ["export", str(r / "seed_1111"), str(t), "--overwrite"],
        "exists and is not a model folder; not replaced",
    ),
    "DIR is a symlink": (
        lambda r, m, t: ["export", str(r / "seed_1111"), str(_link(t))],
        "is a symbolic link; expected a path to a new model folder",
    ),
    "tampered model.safetensors": (
        lambda r, m, t: ["predict", str(_spoiled(m, t, _tamper)), "-o", str(t / "p.csv")],
        "model.safetensors does not match its SHA-256 in checksums.sha256",
    ),
    "missing file": (
        lambda r, m, t: ["eval", str(_spoiled(m, t, lambda f: (f / "config.json").unlink()))],
        "missing file config.json",
    ),
}


def _link(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    return tmp_path / "link"


def _spoiled(model_dir, tmp_path, spoil):
    folder = shutil.copytree(model_dir, tmp_path / "copy")
    spoil(folder)
    return folder


@pytest.mark.parametrize("case", list(CASES))
def test_refusals_exit_2_with_one_message(run_dir, model_dir, tmp_path, capsys, case):
    args, expected = CASES[case]
    argv = args(run_dir, model_dir, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written (no new folder, no CSV)
    assert not (tmp_path / "target").exists() or list((tmp_path / "target").iterdir()) == []


def test_overwrite_replaces_a_model_folder_whole(run_dir, model_dir, tmp_path, capsys):
    copy = tmp_path / "m"
    assert main(["export", str(run_dir / "seed_1111"), str(copy)]) == 0
    (copy / "model.safetensors").write_bytes(b"older weights")
    (copy / "notes.txt").write_text("left by an older export")
    assert main(["export", str(run_dir / "seed_1111"), str(copy), "--overwrite"]) == 0
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in model_dir.iterdir())
    assert (copy / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left beside it
