"""`sentangle report` and the per-seed diagnostics of run folders."""

import csv
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from sentangle.cli import main
from sentangle.config import make_config
from sentangle.data.dataset import MSADataset, Split
from sentangle.recipes.report import report
from sentangle.report.diagnose import DIAGNOSTICS, diagnose, gate_values
from sentangle.report.tables import results_table
from sentangle.runs.predictions import read_seed_predictions
from sentangle.runs.runner import run

TINY = [
    "dataset.scale=0.06",
    "dataset.lengths={text: 8, audio: 12, vision: 12}",
    "dataset.dims={text: 16, audio: 5, vision: 6}",
    "train.epochs=2",
    "model.hidden=16",
    "train.progress=false",
]
PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path):
    assert path.read_bytes()[:8] == PNG, path
    assert matplotlib.image.imread(path).ndim == 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("report_runs")
    for model in ("dbr", "lf_dnn", "tsda"):
        assert (
            main(["train", "-m", model, "--out", str(out), "--name", model, "--seeds", "2", "--no-progress", *TINY])
            == 0
        )
    return out


def test_dbr_run_writes_diagnostics_per_seed_and_summarises_them(runs):
    folder = runs / "dbr"
    for seed in (1111, 1112):
        d = json.loads((folder / f"seed_{seed}" / "diagnostics.json").read_text())
        assert set(d) == {"valid", "test"}
        share = d["test"]["prediction_share"]
        assert share["shared"] + share["private"] == pytest.approx(1.0)
        assert 0 <= d["test"]["branch_weights"]["shared"] <= 1
    summary = json.loads((folder / "summary.json").read_text())
    diag = summary["diagnostics"]
    per = [
        json.loads((folder / f"seed_{s}" / "diagnostics.json").read_text())["test"]["redundancy"]["linear_cka"]
        for s in (1111, 1112)
    ]
    assert diag["test.redundancy.linear_cka"]["mean"] == pytest.approx(np.mean(per))
    assert diag["test.redundancy.linear_cka"]["n"] == 2
    assert "prediction share" in (folder / "summary.md").read_text()
    # a model with nothing to diagnose gets no file; a gated model gets its gate statistics
    assert not list((runs / "lf_dnn").glob("seed_*/diagnostics.json"))
    g = json.loads((runs / "tsda" / "seed_1111" / "diagnostics.json").read_text())
    assert 0 < g["test"]["gates"]["gate"]["audio"]["mean"] < 1


def test_resumed_run_reads_the_diagnostics_it_has(runs):
    before = json.loads((runs / "dbr" / "summary.json").read_text())["diagnostics"]
    assert (
        main(["train", "-m", "dbr", "--out", str(runs), "--name", "dbr", "--seeds", "2", "--no-progress", *TINY]) == 0
    )
    assert json.loads((runs / "dbr" / "summary.json").read_text())["diagnostics"] == before


def test_diagnostics_opt_in_by_method_or_registry(small_synthetic):
    class Probe:
        def diagnostics(self, dataset):
            return {"test": {"x": 1.0}}

    assert diagnose("anything", Probe(), small_synthetic) == {"test": {"x": 1.0}}
    assert diagnose("lf_dnn", object(), small_synthetic) is None
    assert {"dbr", "tsda", "rtil", "irg_svr"} <= set(DIAGNOSTICS.names())


def test_report_cli_end_to_end(runs, capsys):
    out = runs / "rep"
    assert (
        main(
            [
                "robust",
                str(runs / "dbr"),
                str(runs / "tsda"),
                "--out",
                str(runs / "rob"),
                "--no-plots",
                "--noise-levels",
                "1",
                "--drop-rates",
                "0.5",
            ]
        )
        == 0
    )
    assert main(["report", str(runs / "dbr"), str(runs / "lf_dnn"), str(runs / "tsda"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| run | seeds |" in printed and "`dbr`" in printed
    md = (out / "report.md").read_text()
    summaries = {m: json.loads((runs / m / "summary.json").read_text()) for m in ("dbr", "lf_dnn", "tsda")}
    # the best test MAE (lowest) is the bold one
    best = min(summaries, key=lambda m: summaries[m]["splits"]["test"]["mae"]["mean"])
    test_rows = md.split("## test")[1].split("## valid")[0]
    row = next(line for line in test_rows.splitlines() if line.startswith(f"| `{best}`"))
    assert row.split("|")[3].strip().startswith("**")
    for name in (
        "pred_dbr.png",
        "pred_lf_dnn.png",
        "gates_dbr.png",
        "gates_tsda.png",
        "robust_noise_audio.png",
        "robust_frame_drop.png",
    ):
        is_png(out / name)
    assert not (out / "gates_lf_dnn.png").exists() and "no gates" in md
    assert "branch_weights" in md and "prediction_share.shared" in md and "## Robustness" in md
    rows = list(csv.DictReader((out / "report.csv").read_text().splitlines()))
    assert {r["model"] for r in rows} == {"dbr", "lf_dnn", "tsda"}
    r = next(r for r in rows if r["model"] == "dbr" and r["split"] == "test")
    assert float(r["mae_mean"]) == pytest.approx(summaries["dbr"]["splits"]["test"]["mae"]["mean"], abs=1e-6)


def test_report_confusion_matrix_with_class_names(small_synthetic, tmp_path):
    ds = small_synthetic
    cut = np.quantile(ds.splits["train"].labels, [1 / 3, 2 / 3])
    three = MSADataset(
        "toy3",
        {
            s: Split(sp.features, sp.masks, np.digitize(sp.labels, cut).astype(np.int64), sp.ids)
            for s, sp in ds.splits.items()
        },
        task="classification",
        class_names=["neg", "neu", "pos"],
        label_range=None,
    )
    cfg = make_config(
        "lf_dnn",
        "synthetic",
        seeds=1,
        out=str(tmp_path),
        name="cls",
        overrides=["train.epochs=2", "model.hidden=16", "train.progress=false"],
    )
    run(cfg, dataset=three)
    pred, label, names = read_seed_predictions(tmp_path / "cls" / "seed_1111", "test")
    assert names == ["neg", "neu", "pos"] and set(label) <= {0, 1, 2} and len(pred) == len(three.splits["test"])
    res = report([tmp_path / "cls"], gates=False)
    is_png(tmp_path / "cls" / "report" / "pred_cls.png")
    assert "F1 macro" in res["table"] and "UAR" in res["table"]
    # the confusion counts of the one seed: each row sums to its class's number of test samples
    rows = list(csv.reader((tmp_path / "cls" / "report" / "confusion_cls.csv").read_text().splitlines()))
    counts = np.bincount(three.splits["test"].labels, minlength=3).tolist()
    assert rows[0][1:] == ["neg", "neu", "pos"] and [sum(map(int, r[1:])) for r in rows[1:]] == counts
    # the run folder has the same matrix, written when the run finished
    assert (tmp_path / "cls" / "confusion.csv").read_text().splitlines() == [",".join(r) for r in rows]
    assert "true \\ predicted" in Path(res["markdown"]).read_text()
    # what a results document reads back from the run's record
    from sentangle.report.confusion import read_confusion_csv

    back, back_names = read_confusion_csv((tmp_path / "cls" / "confusion.csv").read_text())
    assert back_names == ["neg", "neu", "pos"] and back.sum(1).tolist() == counts


def test_gate_values_shapes(small_synthetic):
    from sentangle.models import create_model

    model = create_model("dbr", small_synthetic.input_dims, 1, hidden=16)
    g = gate_values(model, small_synthetic, "valid")
    n = len(small_synthetic.splits["valid"])
    assert set(g["branch_weights"]) == {"shared", "private"}
    assert np.allclose(g["branch_weights"]["shared"] + g["branch_weights"]["private"], 1)
    assert set(g["tsf_gate"]) == {"text", "audio", "vision"} and len(g["tsf_gate"]["audio"]) == n


def test_results_table_marks_the_best_in_the_metric_direction():
    rows = {
        "a": {"mae": {"mean": 0.9, "std": 0.1, "n": 2}, "corr": {"mean": 0.5, "std": 0.0, "n": 2}},
        "b": {"mae": {"mean": 0.7, "std": 0.1, "n": 2}, "corr": {"mean": 0.4, "std": 0.0, "n": 2}},
    }
    lines = results_table(rows, "regression", {"note": {"a": "x"}}).splitlines()
    a, b = lines[2].split("|"), lines[3].split("|")
    assert b[3].strip().startswith("**") and not a[3].strip().startswith("**")  # lower MAE
    assert a[4].strip().startswith("**") and not b[4].strip().startswith("**")  # higher Corr
    assert a[-2].strip() == "x" and b[-2].strip() == "n/a"


def test_report_names_a_folder_without_summary(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no summary.json" in capsys.readouterr().err


def test_interval_and_beyond_noise_against_hand_values():
    from sentangle.report.tables import aggregate, beyond_noise, interval_text

    # diffs -0.10, -0.07, -0.10: mean -0.09, sample variance (1e-4 + 4e-4 + 1e-4) / 2 = 3e-4,
    # 2 SE = 2 * sqrt(3e-4) / sqrt(3) = 0.02 -> [-0.110, -0.070]
    st = aggregate([-0.10, -0.07, -0.10])
    assert interval_text("mae", st) == "[-0.110, -0.070]"
    assert beyond_noise(st, "below") == "yes" and beyond_noise(st, "above") == "no"
    # 2 SE = 2 * 0.1 / sqrt(4) = 0.1: a mean of 0.1 touches 0, 0.11 clears it
    assert beyond_noise({"mean": 0.1, "std": 0.1, "n": 4}, "above") == "no"
    assert beyond_noise({"mean": 0.11, "std": 0.1, "n": 4}, "above") == "yes"
    assert beyond_noise({"mean": 0.5, "std": 0.0, "n": 1}, "above") == "n/a"
    assert interval_text("acc2_non0", {"mean": 0.8, "std": 0.02, "n": 4}, signed=False) == "[78.00, 82.00]"
    with pytest.raises(ValueError, match="side"):
        beyond_noise(st, "left")


def test_an_undefined_metric_reads_n_a_also_after_a_json_round_trip():
    from sentangle.report.tables import fmt

    # a correlation over one test clip is NaN; stored JSON writes it as null
    assert fmt("corr", {"mean": float("nan"), "std": 0.0, "n": 1}) == "n/a"
    assert fmt("corr", {"mean": None, "std": None, "n": 1}) == "n/a"
    assert fmt("mae", {"mean": 0.5, "std": 0.1, "n": 3}) == "0.500 ± 0.100"
