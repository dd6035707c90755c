"""The `sentangle` command end to end on a tiny synthetic dataset."""

import csv
import io
import json

import pytest

import sentangle
from sentangle.cli import main
from sentangle.runs.predictions import predictions_csv

TINY = [
    "dataset.scale=0.06",
    "dataset.lengths={text: 8, audio: 12, vision: 12}",
    "dataset.dims={text: 16, audio: 5, vision: 6}",
    "train.epochs=3",
    "model.hidden=16",
]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def seed_rows(seed_dir, split):
    """A seed's stored predictions as the rows of the CSV that `sentangle predict` writes."""
    return list(csv.DictReader(io.StringIO(predictions_csv(seed_dir, split))))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--out", str(out), "--name", "tiny", "--seeds", "2", "--no-progress", *TINY]) == 0
    return out / "tiny"


def test_train_writes_a_complete_run_folder(run_dir, capsys):
    for f in ("config.yaml", "environment.json", "dataset.json", "summary.json", "summary.md"):
        assert (run_dir / f).is_file(), f
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["seeds"] == [1111, 1112]
    assert set(summary["splits"]) == {"train", "valid", "test"}
    mae = summary["splits"]["test"]["mae"]
    per_seed = [summary["per_seed"][str(s)]["test"]["mae"] for s in (1111, 1112)]
    assert mae["mean"] == pytest.approx(sum(per_seed) / 2)
    assert mae["std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2**0.5)  # sample std of two
    for seed in (1111, 1112):
        d = run_dir / f"seed_{seed}"
        m = json.loads((d / "metrics.json").read_text())
        assert m["seed"] == seed and 1 <= m["best_epoch"] <= 3 and len(m["history"]) >= 1
        assert (d / "checkpoint.pt").stat().st_size > 0
        rows = seed_rows(d, "test")
        assert len(rows) == json.loads((run_dir / "dataset.json").read_text())["splits"]["test"]["samples"]
    assert "| test |" in (run_dir / "summary.md").read_text()
    env = json.loads((run_dir / "environment.json").read_text())
    assert {"torch", "numpy", "python", "sentangle"} <= set(env)


def test_finished_seeds_are_not_retrained(run_dir):
    before = {s: (run_dir / f"seed_{s}" / "metrics.json").stat().st_mtime_ns for s in (1111, 1112)}
    assert main(["train", "--out", str(run_dir.parent), "--name", "tiny", "--seeds", "3", "--no-progress", *TINY]) == 0
    after = {s: (run_dir / f"seed_{s}" / "metrics.json").stat().st_mtime_ns for s in (1111, 1112)}
    assert before == after
    assert (run_dir / "seed_1113" / "metrics.json").exists()


def test_a_different_config_in_the_same_folder_is_refused(run_dir, capsys):
    code = main(["train", "--out", str(run_dir.parent), "--name", "tiny", "--no-progress", *TINY, "train.lr=0.5"])
    assert code == 2
    err = capsys.readouterr().err
    assert "different config" in err and "train.lr:" in err and "0.5 now" in err  # names what differs


def test_eval_and_predict_reproduce_the_run(run_dir, capsys, tmp_path, same_predictions):
    ckpt = run_dir / "seed_1111" / "checkpoint.pt"
    assert main(["eval", str(ckpt), "--split", "test", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["test"]
    want = json.loads((run_dir / "seed_1111" / "metrics.json").read_text())["metrics"]["test"]
    assert got == pytest.approx(want)
    out = tmp_path / "p.csv"
    assert main(["predict", str(ckpt), "--output", str(out)]) == 0
    same_predictions(out.read_text(), predictions_csv(run_dir / "seed_1111", "test"))
    rows = read_csv(out)
    assert [r["polarity"] for r in rows] == [
        "neutral" if abs(float(r["prediction"])) < 0.5 else ("positive" if float(r["prediction"]) > 0 else "negative")
        for r in rows
    ]


def test_predict_on_data_lacking_a_modality_needs_allow_missing(run_dir, tmp_path, capsys):
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "no_vision.npz"  # text and audio of the checkpoint's widths, no vision
    np.savez(
        data,
        id=np.array([f"v{i}_0" for i in range(6)]),
        label=rng.uniform(-3, 3, 6).astype(np.float32),
        split=np.array(["train", "train", "valid", "valid", "test", "test"]),
        text=rng.normal(size=(6, 16)).astype(np.float32),
        audio=rng.normal(size=(6, 5)).astype(np.float32),
    )
    out, ckpt = tmp_path / "p.csv", str(run_dir / "seed_1111" / "checkpoint.pt")
    assert main(["predict", ckpt, str(data), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no_vision.npz has no vision, which checkpoint" in err and "--allow-missing vision" in err
    assert not out.exists()
    assert main(["predict", ckpt, str(data), "--allow-missing", "speech", "-o", str(out)]) == 2
    assert "--allow-missing speech: checkpoint" in capsys.readouterr().err and not out.exists()
    with pytest.warns(UserWarning, match=r"no_vision.npz has no vision, which checkpoint .* was trained with: "):
        assert main(["predict", ckpt, str(data), "--allow-missing", "vision", "--output", str(out)]) == 0
    assert len(read_csv(out)) == 2
    with pytest.raises(SystemExit):  # an abbreviation of --data-root is not taken for it
        main(["predict", ckpt, "--data", str(data)])


def test_corrupt_checkpoint_gets_a_clear_error(run_dir, tmp_path, capsys):
    data = (run_dir / "seed_1111" / "checkpoint.pt").read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    assert main(["eval", str(bad)]) == 2
    assert "truncated.pt is corrupt" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "none.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_names_list_the_known_ones(tmp_path, capsys):
    assert main(["train", "--model", "tsdx", "--out", str(tmp_path), "--no-progress", *TINY]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'tsdx'" in err and "lf_dnn" in err and "text_only" in err
    assert main(["train", "--dataset", "mosy", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'mosy'" in err and "mosi" in err and "synthetic" in err


@pytest.mark.parametrize("cmd", ["train", "eval", "predict", "export", "data", "extract", "models", "results"])
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: sentangle " + cmd in capsys.readouterr().out


def test_data_list_and_info(capsys):
    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    for name in ("synthetic", "mosi", "mosi_utt", "mosei", "mintrec"):
        assert name in listed
    assert main(["data", "info", "synthetic", *[t for t in TINY if t.startswith("dataset.")]]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["modalities"] == ["text", "audio", "vision"] and info["input_dims"]["vision"] == 6


def test_python_api_mirrors_the_cli(tmp_path):
    res = sentangle.train(
        {"name": "lf_dnn", "hidden": 16},
        {
            "name": "synthetic",
            "scale": 0.06,
            "lengths": {"text": 8, "audio": 12, "vision": 12},
            "dims": {"text": 16, "audio": 5, "vision": 6},
        },
        out=str(tmp_path),
        seeds=1,
        train={"epochs": 2, "progress": False},
    )
    assert res["splits"]["test"]["mae"]["n"] == 1
    model, cfg, _ = sentangle.load_checkpoint(tmp_path / "lf_dnn-synthetic" / "seed_1111" / "checkpoint.pt")
    assert cfg.model["hidden"] == 16 and type(model).__name__ == "LFDNN"


def test_resume_ignores_display_settings(run_dir):
    # progress and thread count do not change results, so they do not block resuming
    assert (
        main(["train", "--out", str(run_dir.parent), "--name", "tiny", "--seeds", "2", *TINY, "train.threads=1"]) == 0
    )


def test_compare_writes_one_table(tmp_path, capsys):
    assert (
        main(["compare", "-m", "lf_dnn,text_only", "-d", "synthetic", "--seeds", "1", "--out", str(tmp_path), *TINY])
        == 0
    )
    md = (tmp_path / "synthetic" / "comparison.md").read_text()
    assert "lf_dnn" in md and "text_only" in md and "**" in md
    assert (tmp_path / "synthetic" / "comparison.csv").read_text().count("\n") >= 3
    assert (tmp_path / "lf_dnn-synthetic" / "seed_1111" / "metrics.json").exists()
