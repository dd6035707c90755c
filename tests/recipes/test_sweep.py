"""Optuna sweeps: trials train through run(), report validation scores, share one study across workers."""

import csv
import json
import sys

import pytest

from sentangle.cli import main
from sentangle.config import make_config
from sentangle.core.errors import SweepError
from sentangle.recipes.sweep import check_keys, import_optuna, read_space, sweep

TINY = [
    "dataset.scale=0.05",
    "dataset.lengths=6",
    "dataset.dims=6",
    "train.epochs=2",
    "train.threads=1",
    "model.fusion_hidden=8",
]
SPACE = """\
train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
model.hidden: {type: int, low: 4, high: 16, step: 4}
train.scheduler: [none, cosine]
"""


def _space(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_workers_share_a_study_and_report_validation_scores(tmp_path):
    optuna = pytest.importorskip("optuna", reason="optional: pip install 'sentangle[sweep]'")
    space = _space(tmp_path, SPACE)
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    kw = dict(storage=storage, study="tiny", out=str(tmp_path / "sweeps"), overrides=TINY, progress=False)
    first = sweep("lf_dnn", "synthetic", space, 3, sampler_seed=0, **kw)
    assert first["trials"] == first["complete"] == 3
    second = sweep("lf_dnn", "synthetic", space, 2, sampler_seed=1, **kw)  # another worker, same storage
    assert second["trials"] == second["complete"] == 5

    study = optuna.load_study(study_name="tiny", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE  # MAE
    trials = study.trials
    folders = {t.user_attrs["run_folder"] for t in trials}
    assert len(folders) == 5  # one run folder per trial
    for t in trials:
        metrics = json.loads((tmp_path / "sweeps/tiny" / f"trial_{t.number:04d}/seed_1111/metrics.json").read_text())
        assert t.value == metrics["metrics"]["valid"]["mae"]  # the validation score, never test
        assert t.value == pytest.approx(metrics["best_score"], abs=1e-6)
        config = (tmp_path / "sweeps/tiny" / f"trial_{t.number:04d}/config.yaml").read_text()
        assert f"hidden: {t.params['model.hidden']}" in config and f"scheduler: {t.params['train.scheduler']}" in config

    with open(tmp_path / "sweeps/tiny/trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2, 3, 4]
    assert [float(r["valid mae"]) for r in rows] == [t.value for t in trials]
    best = min(trials, key=lambda t: t.value)
    assert second["best"]["number"] == best.number
    assert f"**{best.number}**" in (tmp_path / "sweeps/tiny/trials.md").read_text()
    cfg = make_config(config=second["best_yaml"])  # usable with `sentangle train -c`
    assert cfg.train.lr == pytest.approx(best.params["train.lr"]) and cfg.model["hidden"] == best.params["model.hidden"]
    assert cfg.dataset["scale"] == 0.05 and cfg.seeds == [1111, 1112, 1113, 1114, 1115]  # the protocol's seeds

    other = _space(tmp_path, "train.lr: {type: float, low: 1.0e-3, high: 1.0e-2}\n", "other.yaml")
    with pytest.raises(SweepError, match="different space"):  # scores of another space are not comparable
        sweep("lf_dnn", "synthetic", other, 1, **kw)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "model.hiden: {type: int, low: 4, high: 16}\n",
            r"model\.hiden: lf_dnn has no setting 'hiden'; known: .*hidden",
        ),
        (
            "optim.lr: {type: float, low: 0.1, high: 1}\n",
            r"optim\.lr: expected a dotted key under model, dataset, train",
        ),
        ("train.lrr: [0.1, 0.2]\n", r"train\.lrr: train has no setting 'lrr'"),
        ("dataset.scal: [0.1, 0.2]\n", r"dataset\.scal: dataset has no setting 'scal'"),
        (
            "train.lr: {type: gaussian, mean: 0.1}\n",
            r"train\.lr: expected a mapping with type float, int or categorical",
        ),
        ("train.lr: {type: float, low: 0.1, high: 0.01}\n", r"train\.lr: needs low < high"),
        ("train.lr: {type: float, low: 0, high: 0.01, log: true}\n", r"train\.lr: .*a log scale needs low > 0"),
        ("model.hidden: {type: int, low: 4.5, high: 16}\n", r"model\.hidden: int needs a numeric 'low'"),
        ("train.lr: {type: float, low: 0.1, high: 1, choices: [1]}\n", r"train\.lr: float takes .*not \['choices'\]"),
        (
            "train.scheduler: {type: categorical, choices: []}\n",
            r"train\.scheduler: categorical needs a non-empty list",
        ),
        ("train.select_metric: [mae, corr]\n", r"the selection metric/split defines the objective"),
    ],
)
def test_bad_space_files_name_the_file_and_key(tmp_path, text, expected):
    path = _space(tmp_path, text)
    with pytest.raises(SweepError, match=expected) as e:
        check_keys(path, read_space(path), make_config("lf_dnn", "synthetic"))
    assert str(path) in str(e.value)


def test_cli_reports_a_bad_space_without_training(tmp_path, capsys, monkeypatch):
    pytest.importorskip("optuna")
    monkeypatch.chdir(tmp_path)
    path = _space(tmp_path, "model.hiden: [8, 16]\n")
    assert main(["sweep", "-m", "lf_dnn", "--space", str(path), "--trials", "1", *TINY]) == 2
    err = capsys.readouterr().err
    assert f"space file {path}: model.hiden" in err
    assert not (tmp_path / "runs").exists()
    assert main(["sweep", "--space", str(tmp_path / "missing.yaml"), "--trials", "1"]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err


def test_missing_optuna_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    with pytest.raises(SweepError, match=r"pip install 'sentangle\[sweep\]'"):
        import_optuna()


def test_a_trial_whose_worker_died_is_retried_into_its_run_folder(tmp_path, monkeypatch):
    optuna = pytest.importorskip("optuna")
    import time
    import warnings

    from sentangle.recipes import sweep as sweep_module

    monkeypatch.setattr(sweep_module, "HEARTBEAT", 1)
    monkeypatch.setattr(sweep_module, "GRACE", 1)
    storage_url = f"sqlite:///{tmp_path / 'sweep.db'}"
    # A worker that started trial 0, sent a heartbeat and died.
    with warnings.catch_warnings():  # Optuna calls heartbeats experimental and expects optimize()
        warnings.simplefilter("ignore")
        storage = optuna.storages.RDBStorage(storage_url, heartbeat_interval=1, grace_period=1)
        study = optuna.create_study(storage=storage, study_name="dead", direction="minimize")
        dead = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)})
        storage.record_heartbeat(dead._trial_id)
    time.sleep(2.5)

    space = _space(tmp_path, "train.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n")
    sweep(
        "lf_dnn",
        "synthetic",
        space,
        1,
        storage=storage_url,
        study="dead",
        out=str(tmp_path / "sweeps"),
        overrides=TINY,
        progress=False,
    )
    trials = optuna.load_study(study_name="dead", storage=storage_url).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert trials[1].state == optuna.trial.TrialState.COMPLETE
    assert trials[1].params == trials[0].params  # the same values ...
    assert trials[1].user_attrs["run_folder"].endswith("trial_0000")  # ... into the first try's folder
