"""`sentangle ablate`: variants of one model over seeds, one table with deltas vs the full model."""

import csv
import json

import pytest

from sentangle.cli import main
from sentangle.core.errors import ConfigError
from sentangle.recipes.ablate import load_ablation

SPEC = """
name: tiny-dbr
model: {name: dbr, hidden: 16}
dataset: {name: synthetic, scale: 0.06, lengths: {text: 8, audio: 12, vision: 12}, dims: {text: 16, audio: 5, vision: 6}}
overrides: {train.epochs: 2, train.progress: false}
seeds: 2
variants:
  - name: no-brf
    overrides: {model.brf: false}
  - name: full
  - name: plain
    overrides: [model.tsf=false, model.agpr=false, model.brf=false]
"""


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablate")
    path = tmp / "abl.yaml"
    path.write_text(SPEC)
    assert main(["ablate", "-c", str(path), "--out", str(tmp / "runs")]) == 0
    return tmp


def test_each_variant_is_a_run_folder_with_its_switches(ablation):
    root = ablation / "runs" / "tiny-dbr"
    for v in ("full", "no-brf", "plain"):
        s = json.loads((root / v / "summary.json").read_text())
        assert s["seeds"] == [1111, 1112]
    cfg = (root / "plain" / "config.yaml").read_text()
    assert "tsf: false" in cfg and "agpr: false" in cfg and "brf: false" in cfg
    assert "brf: true" in (root / "full" / "config.yaml").read_text()


def test_table_full_first_best_marked_and_paired_deltas(ablation):
    root = ablation / "runs" / "tiny-dbr"
    md = (root / "ablation.md").read_text()
    test = md.split("## test")[1].split("## valid")[0]
    rows = [line for line in test.splitlines() if line.startswith("| `")]
    assert [r.split("|")[1].strip() for r in rows] == ["`full`", "`no-brf`", "`plain`"]
    assert "**" in test and "Δ MAE" in test and "`model.brf=false`" in test
    per = {v: json.loads((root / v / "summary.json").read_text())["per_seed"] for v in ("full", "no-brf")}
    deltas = [per["no-brf"][s]["test"]["mae"] - per["full"][s]["test"]["mae"] for s in ("1111", "1112")]
    rows_csv = {(r["variant"], r["split"]): r for r in csv.DictReader((root / "ablation.csv").read_text().splitlines())}
    assert float(rows_csv[("no-brf", "test")]["delta_mae_mean"]) == pytest.approx(sum(deltas) / 2, abs=1e-6)
    assert float(rows_csv[("full", "test")]["delta_mae_mean"]) == 0.0
    assert f"{sum(deltas) / 2:+.3f}" in rows[1]


def test_rerun_reuses_finished_seeds(ablation):
    metrics = ablation / "runs" / "tiny-dbr" / "full" / "seed_1111" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    assert main(["ablate", "-c", str(ablation / "abl.yaml"), "--out", str(ablation / "runs"), "--variant", "full"]) == 0
    assert metrics.stat().st_mtime_ns == before


@pytest.mark.parametrize("name", ["ablate-tsda", "ablate-rtil", "ablate-irg_svr", "ablate-dbr"])
def test_packaged_ablations_resolve_with_real_switches(name, small_synthetic):
    from sentangle.config import make_config
    from sentangle.models import create_model

    spec = load_ablation(name)
    assert spec["reference"] == "full" and spec["variants"][0]["name"] == "full"
    for v in spec["variants"]:
        cfg = make_config(
            spec["model"], spec["dataset"], spec["config"], spec["seeds"], overrides=spec["overrides"] + v["overrides"]
        )
        opts = {k: val for k, val in cfg.model.items() if k != "name"}
        opts["hidden"] = 16
        create_model(cfg.model["name"], small_synthetic.input_dims, 1, **opts)  # every switch exists and combines


def test_bad_ablation_files_are_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model: dbr\ndataset: synthetic\nvariants:\n  - name: full\n  - name: x\n    overrides: {model.tfs: false}\n"
    )
    assert main(["ablate", "-c", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "variant 'x'" in err and "tfs" in err
    assert not (tmp_path / "bad").exists()  # nothing trained before the check
    bad.write_text("model: dbr\nvariants: [{name: a}, {name: a}]\n")
    with pytest.raises(ConfigError, match="given twice"):
        load_ablation(bad)
    bad.write_text("model: dbr\nvariant: []\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_ablation(bad)
