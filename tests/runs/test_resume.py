"""Kill a real multi-seed run (SIGKILL, no chance to clean up), start it again: nothing is lost.

Finished seeds are skipped with their files untouched, unfinished seeds are trained again, temp
files of killed writes do not confuse the restart, and the final numbers equal those of a run that
was never interrupted. The same for `sentangle compare` over several models.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sentangle.cli import main

# Seeds long enough (about a second each) that a kill lands inside one, data small enough to be quick.
SLOW = [
    "dataset.scale=0.1",
    "dataset.lengths={text: 8, audio: 12, vision: 12}",
    "dataset.dims={text: 16, audio: 5, vision: 6}",
    "train.epochs=20",
    "train.patience=100",
    "train.threads=1",
    "train.progress=false",
]
TRAIN = ["train", "--seeds", "3", "--name", "r", "--no-progress", *SLOW]
COMPARE = ["compare", "-m", "lf_dnn,lmf", "-d", "synthetic", "--seeds", "2", *SLOW]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "sentangle.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL `proc` as soon as `ready()` holds (polled every 5 ms)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before the kill point: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the kill point was never reached")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def finish(args: list[str], cwd: Path) -> None:
    proc = start(args, cwd)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()
    }


def results(summary_path: Path) -> tuple[dict, dict]:
    s = json.loads(summary_path.read_text())
    return s["splits"], s["per_seed"]


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same run, never interrupted (in-process)."""
    out = tmp_path_factory.mktemp("reference")
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out / "r"


def test_kill_at_the_start_and_inside_a_seed_then_resume(tmp_path, reference):
    run = tmp_path / "runs" / "r"
    # 1. killed as soon as the run folder exists: nothing has finished
    kill_when(start([*TRAIN, "--out", "runs"], tmp_path), lambda: (run / "config.yaml").exists())
    assert not list(run.glob("seed_*/metrics.json"))
    # 2. killed again while seed 1112 trains
    kill_when(start([*TRAIN, "--out", "runs"], tmp_path), lambda: (run / "seed_1111" / "metrics.json").exists())
    assert not (run / "seed_1113" / "metrics.json").exists() and not (run / "summary.json").exists()
    # what a process killed inside an atomic write leaves: a temp file beside the real name
    (run / "seed_1112").mkdir(exist_ok=True)
    (run / "seed_1112" / ".metrics.json.k1ll3d.tmp").write_text('{"metrics": {"test": {"mae": 0.0')
    (run / "seed_1112" / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"PK\x03\x04 half a zip")
    done_before = snapshot(run / "seed_1111")
    # 3. the restart finishes the run
    finish([*TRAIN, "--out", "runs"], tmp_path)
    assert snapshot(run / "seed_1111") == done_before  # skipped: same bytes, same mtimes
    for seed in (1112, 1113):
        assert (run / f"seed_{seed}" / "metrics.json").is_file()
        assert (run / f"seed_{seed}" / "checkpoint.pt").is_file()
    assert temp_files(run) == []
    assert results(run / "summary.json") == results(reference / "summary.json")


def _numbers(csv_text: str) -> list[dict]:
    # training time differs between runs; every metric column must not
    return [
        {k: v for k, v in row.items() if k != "train_seconds_mean"} for row in csv.DictReader(io.StringIO(csv_text))
    ]


def test_kill_a_comparison_then_resume(tmp_path, tmp_path_factory):
    ref = tmp_path_factory.mktemp("compare_reference")
    assert main([*COMPARE, "--out", str(ref)]) == 0
    out = tmp_path / "cmp"
    proc = start([*COMPARE, "--out", "cmp"], tmp_path)
    kill_when(proc, lambda: (out / "lmf-synthetic" / "seed_1111" / "metrics.json").exists())
    assert not (out / "lmf-synthetic" / "seed_1112" / "metrics.json").exists()
    assert not (out / "synthetic" / "comparison.csv").exists()
    finished = {
        **{f"lf_dnn/{k}": v for k, v in snapshot(out / "lf_dnn-synthetic").items() if k.startswith("seed_")},
        **{f"lmf/{k}": v for k, v in snapshot(out / "lmf-synthetic" / "seed_1111").items()},
    }
    assert any(k.startswith("lf_dnn/seed_1112/") for k in finished)

    finish([*COMPARE, "--out", "cmp"], tmp_path)
    after = {
        **{f"lf_dnn/{k}": v for k, v in snapshot(out / "lf_dnn-synthetic").items() if k.startswith("seed_")},
        **{f"lmf/{k}": v for k, v in snapshot(out / "lmf-synthetic" / "seed_1111").items()},
    }
    assert after == finished  # the finished model and the finished seed were not trained again
    assert (out / "lmf-synthetic" / "seed_1112" / "metrics.json").is_file()
    assert _numbers((out / "synthetic" / "comparison.csv").read_text()) == _numbers(
        (ref / "synthetic" / "comparison.csv").read_text()
    )
    for model in ("lf_dnn", "lmf"):
        assert results(out / f"{model}-synthetic" / "summary.json") == results(
            ref / f"{model}-synthetic" / "summary.json"
        )
    assert temp_files(out) == []


# ---- in-process: what a restart must never take for a finished seed --------------------------
TINY = [
    "dataset.scale=0.05",
    "dataset.lengths={text: 8, audio: 12, vision: 12}",
    "dataset.dims={text: 16, audio: 5, vision: 6}",
    "train.epochs=2",
    "model.hidden=16",
    "train.progress=false",
]


def test_overwrite_with_another_config_killed_midway_never_mixes_configs(tmp_path, monkeypatch):
    base = ["train", "--out", str(tmp_path), "--name", "x", "--seeds", "2"]
    args = [*base, *TINY]
    assert main(args) == 0
    old = json.loads((tmp_path / "x" / "seed_1112" / "metrics.json").read_text())["metrics"]

    from sentangle.runs import runner as runs

    real_fit = runs.fit

    def dies_at_second_seed(model, ds, cfg, seed, desc=""):
        if seed == 1112:
            raise KeyboardInterrupt  # stands for a kill after seed 1111 of the new config finished
        return real_fit(model, ds, cfg, seed, desc=desc)

    monkeypatch.setattr(runs, "fit", dies_at_second_seed)
    with pytest.raises(KeyboardInterrupt):
        main([*base, "--overwrite", *TINY, "train.lr=0.003"])
    monkeypatch.setattr(runs, "fit", real_fit)
    assert not (tmp_path / "x" / "seed_1112" / "metrics.json").exists()  # the old config's result is gone
    assert not (tmp_path / "x" / "summary.json").exists()
    assert main([*args, "train.lr=0.003"]) == 0  # resuming the new config retrains seed 1112
    new = json.loads((tmp_path / "x" / "seed_1112" / "metrics.json").read_text())["metrics"]
    assert new != old


def test_unreadable_metrics_file_means_train_again(tmp_path):
    args = ["train", "--out", str(tmp_path), "--name", "y", "--seeds", "1", *TINY]
    assert main(args) == 0
    done = tmp_path / "y" / "seed_1111" / "metrics.json"
    good = json.loads(done.read_text())["metrics"]
    done.write_text("")  # e.g. zeroed by a crash of the machine
    with pytest.warns(UserWarning, match="metrics.json cannot be read"):
        assert main(args) == 0
    assert json.loads(done.read_text())["metrics"] == good


def test_a_failed_first_start_does_not_block_the_corrected_run(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path), "--name", "z", "--seeds", "1", *TINY]
    assert main([*args, "train.select_metric=acc"]) == 2  # fails inside training, after config.yaml
    assert "select_metric 'acc'" in capsys.readouterr().err
    assert (tmp_path / "z" / "config.yaml").exists() and not (tmp_path / "z" / "seed_1111" / "metrics.json").exists()
    assert main(args) == 0, capsys.readouterr().err  # nothing finished under the failed config: no refusal
    assert (tmp_path / "z" / "seed_1111" / "metrics.json").exists()


def test_regenerated_data_under_the_same_name_is_not_mixed_with_old_seeds(tmp_path, capsys):
    def write(path, seed):
        rng = np.random.default_rng(seed)
        np.savez(
            path,
            id=np.array([f"v{i}_0" for i in range(24)]),
            label=rng.uniform(-3, 3, 24).astype(np.float32),
            split=np.array(["train"] * 12 + ["valid"] * 6 + ["test"] * 6),
            text=rng.normal(size=(24, 4)).astype(np.float32),
            audio=rng.normal(size=(24, 3)).astype(np.float32),
        )

    data = tmp_path / "feats.npz"
    write(data, 0)
    args = [
        "train",
        "--out",
        str(tmp_path / "runs"),
        "-d",
        str(data),
        "--no-progress",
        "train.epochs=1",
        "model.hidden=8",
    ]
    assert main([*args[:1], "--seeds", "1", *args[1:]]) == 0
    write(data, 1)  # new features, same file name, same config
    capsys.readouterr()
    assert main([*args[:1], "--seeds", "2", *args[1:]]) == 2
    assert "the data differ from those its finished seeds were trained on" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "lf_dnn-feats" / "seed_1112").exists()
    assert main([*args[:1], "--seeds", "2", "--overwrite", *args[1:]]) == 0


def test_seeds_record_their_code_and_reuse_by_other_code_is_warned(tmp_path):
    from sentangle.models.lf_dnn import LFDNN
    from sentangle.models.rtil import IRGSVR, RTIL
    from sentangle.runs.provenance import code_fingerprint, stale_seeds

    # the model's own file counts: the two presets share one file, another model differs
    assert code_fingerprint(IRGSVR) == code_fingerprint(RTIL) != code_fingerprint(LFDNN)
    args = ["train", "--out", str(tmp_path), "--name", "c", "--seeds", "2", *TINY]
    assert main(args) == 0
    folder, code = tmp_path / "c", code_fingerprint(LFDNN)
    records = [json.loads((folder / f"seed_{s}" / "metrics.json").read_text()) for s in (1111, 1112)]
    assert [r["code"] for r in records] == [code, code] and stale_seeds(folder, code) == {}
    assert "models/lf_dnn.py" in code and "training/trainer.py" in code and "models/rtil.py" not in code
    # as if before a model change (by a version that recorded no code structure)
    older = {k: v for k, v in records[1].items() if k != "code_structure"} | {
        "code": code | {"models/lf_dnn.py": "0123456789abcdef"}
    }
    (folder / "seed_1112" / "metrics.json").write_text(json.dumps(older))
    assert stale_seeds(folder, code) == {"seed_1112": ["models/lf_dnn.py"]}
    with pytest.warns(UserWarning, match=r"reusing 1 finished seed\(s\) trained by other code.*seed_1112.*lf_dnn.py"):
        assert main(args) == 0
    assert json.loads((folder / "seed_1112" / "metrics.json").read_text()) == older  # reused as it was
    del older["code"]  # a seed of a version that recorded nothing
    (folder / "seed_1112" / "metrics.json").write_text(json.dumps(older))
    assert stale_seeds(folder, code) == {"seed_1112": ["not recorded"]}
    assert main([*args, "--overwrite"]) == 0
    assert stale_seeds(folder, code) == {}


def test_a_replay_with_identical_metrics_vouches_for_the_seeds_of_its_code(tmp_path):
    from sentangle.models.lf_dnn import LFDNN
    from sentangle.runs.provenance import (
        REPLACED,
        code_fingerprint,
        code_key,
        finish_replay,
        replay_groups,
        stale_seeds,
        start_replay,
        vouched_codes,
    )

    args = ["train", "--out", str(tmp_path), "--name", "r", "--seeds", "3", *TINY]
    assert main(args) == 0
    folder, code = tmp_path / "r", code_fingerprint(LFDNN)
    old_b, old_c = code | {"models/lf_dnn.py": "b" * 16}, code | {"data/batch.py": "c" * 16}

    def rewrite(seed: int, recorded: dict, mae_shift: float = 0.0) -> None:
        path = folder / f"seed_{seed}" / "metrics.json"
        record = json.loads(path.read_text())
        record["metrics"]["test"]["mae"] += mae_shift
        record.pop("code_structure")  # these versions changed code, not only comments
        path.write_text(json.dumps(record | {"code": recorded}))

    # 1111 and 1113 as if trained by version C, whose numbers differed (1111's test MAE); 1112 by B
    rewrite(1111, old_c, 0.25), rewrite(1112, old_b), rewrite(1113, old_c)
    assert replay_groups(folder, code) == [["seed_1111", "seed_1113"], ["seed_1112"]]
    for seed in ("seed_1111", "seed_1112"):
        start_replay(folder / seed)
    assert replay_groups(folder, code) == []  # 1113's code has a replay under way (as after an interrupted run)
    assert finish_replay(folder / "seed_1111") is None  # not trained yet: nothing decided
    assert main(args) == 0  # trains the two unmarked seeds again
    same, differs = finish_replay(folder / "seed_1112"), finish_replay(folder / "seed_1111")
    assert same["identical"] and same["files"] == ["models/lf_dnn.py"] and same["max_abs_diff"] == 0.0
    assert not differs["identical"] and differs["max_abs_diff"] == pytest.approx(0.25)
    assert not list(folder.glob(f"seed_*/{REPLACED}"))
    assert vouched_codes(folder, code) == {code_key(old_b)}
    # version C computed differently: its other seed is no longer finished and trains again
    assert not (folder / "seed_1113" / "metrics.json").exists() and stale_seeds(folder, code) == {}
    rewrite(1112, old_b)  # a seed of B that was never replayed itself still counts as current
    assert stale_seeds(folder, code) == {}
    # a chain: A replayed identically under B, B under this code
    entries = json.loads((folder / "replays.json").read_text())
    old_a = code | {"models/base.py": "a" * 16}
    (folder / "replays.json").write_text(
        json.dumps([*entries, {"seed": "seed_1112", "old": code_key(old_a), "new": code_key(old_b), "identical": True}])
    )
    rewrite(1111, old_a)
    assert vouched_codes(folder, code) == {code_key(old_a), code_key(old_b)} and stale_seeds(folder, code) == {}
    # a different current code vouches for nothing: the replays were against another version
    assert vouched_codes(folder, code | {"training/trainer.py": "d" * 16}) == set()


def test_a_second_process_on_the_same_folder_stops_at_once(tmp_path, capsys):
    run = tmp_path / "runs" / "r"
    first = start([*TRAIN, "--out", "runs"], tmp_path)
    try:
        deadline = time.monotonic() + 300
        while not (run / "config.yaml").exists():  # the first process holds the lock from here on
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()[-2000:]
            time.sleep(0.01)
        assert main([*TRAIN, "--out", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert f"{run} is being written by another process (pid {first.pid})" in err
    finally:
        first.kill()
        first.wait(timeout=60)
    assert (tmp_path / "runs" / ".r.lock").exists()  # left by the killed holder, but not locked:
    assert main([*TRAIN, "--out", str(tmp_path / "runs")]) == 0
    assert not (tmp_path / "runs" / ".r.lock").exists()  # removed at a normal end


def test_comment_and_docstring_edits_leave_seeds_current(tmp_path):
    from sentangle.models.lf_dnn import LFDNN
    from sentangle.runs.provenance import _code_only, code_fingerprint, code_structure, stale_seeds

    src = "def f(x):\n    return x + 1\n"
    same = '"""Module."""\n\n# a comment\ndef f(x):  # why\n    """Doc."""\n\n    return (x +\n            1)\n'
    assert _code_only(src) == _code_only(same)
    assert _code_only(src) != _code_only(src.replace("1", "2"))
    assert _code_only('def g():\n    """Only a docstring."""\n') == _code_only("def g():\n    pass\n")
    assert _code_only('x = "not a docstring"\n') != _code_only("")  # a string assigned is code

    args = ["train", "--out", str(tmp_path), "--name", "s", "--seeds", "1", *TINY]
    assert main(args) == 0
    code = code_fingerprint(LFDNN)
    path = tmp_path / "s" / "seed_1111" / "metrics.json"
    record = json.loads(path.read_text())
    assert record["code_structure"] == code_structure(code) and set(record["code_structure"]) == set(code)
    # the file's bytes differed but its structure did not (a comment edit): current
    path.write_text(json.dumps(record | {"code": code | {"models/lf_dnn.py": "0" * 16}}))
    assert stale_seeds(tmp_path / "s", code) == {}
    # the structure differed too (a code edit): stale, naming the file
    path.write_text(
        json.dumps(
            record
            | {
                "code": code | {"models/lf_dnn.py": "0" * 16},
                "code_structure": record["code_structure"] | {"models/lf_dnn.py": "1" * 16},
            }
        )
    )
    assert stale_seeds(tmp_path / "s", code) == {"seed_1111": ["models/lf_dnn.py"]}


def test_constant_predictions_are_named():
    from sentangle.runs.sanity import constant_predictions

    label = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])  # std sqrt(2) = 1.414: the bar is 0.01414
    assert constant_predictions(np.full(5, 0.3), label, "regression")
    assert constant_predictions(np.array([0.3, 0.31, 0.3, 0.29, 0.3]), label, "regression")  # std 0.0063
    assert not constant_predictions(np.array([0.3, 0.33, 0.3, 0.27, 0.3]), label, "regression")  # std 0.019
    assert not constant_predictions(np.full(5, 0.3), np.ones(5), "regression")  # constant labels: nothing to say
    logits = np.array([[2.0, 1.0, 0.0], [3.0, 0.0, 1.0], [1.0, 0.5, 0.2]])
    assert constant_predictions(logits, np.array([0, 1, 2]), "classification")
    varied = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [2.0, 0.0, 0.0]])  # argmax 0, 1, 0
    assert not constant_predictions(varied, np.array([0, 1, 2]), "classification")
    assert not constant_predictions(logits, np.array([1, 1, 1]), "classification")  # one label class


def test_no_better_than_constant_against_hand_worked_errors():
    from sentangle.runs.sanity import no_better_than_constant

    train = np.array([0.0, 0.0, 1.0, 3.0])  # mean 1.0, median 0.5
    label = np.array([0.0, 1.0, 2.0])
    # On these labels the mean errs (1 + 0 + 1) / 3 = 0.667 and the median (0.5 + 0.5 + 1.5) / 3 = 0.833:
    # the best constant is the mean, and the bar is 0.9 * 0.667 = 0.6.
    assert no_better_than_constant(np.array([0.0, 1.0, 0.1]), label, train, "regression")  # MAE 0.633
    assert not no_better_than_constant(np.array([0.0, 1.0, 0.3]), label, train, "regression")  # MAE 0.567
    assert not no_better_than_constant(label.copy(), label, train, "regression")
    # Classification: the train majority class is 1; on [0, 1, 2, 2] it errs 3 of 4, the bar is 0.675.
    train_c, label_c = np.array([1, 1, 0, 2]), np.array([0, 1, 2, 2])
    one_hot = lambda classes: np.eye(3)[classes]
    assert no_better_than_constant(one_hot([2, 0, 1, 1]), label_c, train_c, "classification")  # error 1.0
    assert not no_better_than_constant(one_hot([0, 1, 1, 2]), label_c, train_c, "classification")  # error 0.25
    assert not no_better_than_constant(
        one_hot([1, 1]), np.array([1, 1]), train_c, "classification"
    )  # majority is right


def test_a_collapsed_seed_is_warned_about_and_recorded(tmp_path, monkeypatch):
    from sentangle.runs import runner as runs

    real = runs.predict

    def constant(model, ds, split, *args):
        pred, label, ids = real(model, ds, split, *args)
        # The tiny model may itself be near-constant: give the other splits the labels themselves.
        return np.full_like(pred, 0.5) if split == "test" else label.copy(), label, ids

    monkeypatch.setattr(runs, "predict", constant)
    with pytest.warns(
        UserWarning,
        match=r"seed_1111: the selected model gives \(nearly\) the same prediction for every "
        r"sample of test: it has collapsed",
    ):
        assert main(["train", "--out", str(tmp_path), "--name", "k", "--seeds", "1", *TINY]) == 0
    record = json.loads((tmp_path / "k" / "seed_1111" / "metrics.json").read_text())
    assert record["constant_predictions"] == ["test"] and record["no_better_than_constant"] == []


def test_a_seed_that_learned_nothing_is_warned_about_and_recorded(tmp_path, monkeypatch):
    from sentangle.runs import runner as runs

    real = runs.predict

    def noisy_mean(model, ds, split, *args):  # the train mean plus noise: not constant, no better than it
        pred, label, ids = real(model, ds, split, *args)
        if split == "train":
            return label.copy(), label, ids
        rng = np.random.default_rng(0)
        return (
            (ds.splits["train"].labels.mean() + rng.normal(0, 0.3 * label.std(), len(label))).astype(pred.dtype),
            label,
            ids,
        )

    monkeypatch.setattr(runs, "predict", noisy_mean)
    with pytest.warns(
        UserWarning,
        match=r"on valid, test the selected model's error is above 90% of that of the best "
        r"constant predictor",
    ):
        assert main(["train", "--out", str(tmp_path), "--name", "n", "--seeds", "1", *TINY]) == 0
    record = json.loads((tmp_path / "n" / "seed_1111" / "metrics.json").read_text())
    assert record["constant_predictions"] == [] and record["no_better_than_constant"] == ["valid", "test"]


@pytest.mark.parametrize(("old_epoch", "new_epoch", "identical"), [(3, 3, True), (3, 4, False)])
def test_a_replay_is_identical_only_with_the_same_best_epoch(tmp_path, old_epoch, new_epoch, identical):
    # Metrics that agree bit for bit but come from another selected epoch mean the training
    # trajectory changed, so the old code's seeds cannot be vouched for.
    from sentangle.runs.provenance import REPLACED, finish_replay

    seed_dir = tmp_path / "r" / "seed_1111"
    seed_dir.mkdir(parents=True)
    metrics = {"valid": {"mae": 0.75, "corr": float("nan")}, "test": {"mae": 0.8125, "acc2_non0": 0.5}}
    old = {"metrics": metrics, "best_epoch": old_epoch, "code": {"models/x.py": "a" * 16}}
    new = {"metrics": metrics, "best_epoch": new_epoch, "code": {"models/x.py": "b" * 16}}
    (seed_dir / REPLACED).write_text(json.dumps(old))
    (seed_dir / "metrics.json").write_text(json.dumps(new))
    entry = finish_replay(seed_dir)
    assert entry["identical"] is identical
    assert entry["best_epoch"] == [old_epoch, new_epoch]
    assert entry["max_abs_diff"] == 0.0
    assert json.loads((tmp_path / "r" / "replays.json").read_text())[-1]["identical"] is identical
