"""Tuned groups of a results plan (recipes/tune.py): the search runs its trials on validation with its
own seed, the best values train over the protocol's seeds, nothing is searched twice, a search
resumes from its record alone, and the document shows defaults beside tuned."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sentangle.cli import main as cli_main
from sentangle.recipes.plan import PlanError, read_plan

DATA = "{name: synthetic, scale: 0.03, lengths: 8, dims: 8}"
SPACES = """\
lf_dnn:
  train.lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
  model.hidden: [8, 16]
"""


def plan_text(trials: int = 2, tune_extra: str = "", defaults: str = "plain") -> str:
    return f"""\
seeds: 2
overrides: {{train.threads: 1, train.epochs: 1, train.patience: 1}}
proposed: [tsda]
sections:
  - id: s
    title: tuned or not
    groups:
      - {{id: plain, dataset: {DATA}, models: [lf_dnn]}}
      - id: tuned
        dataset: {DATA}
        models: [lf_dnn]
        tune: {{space: spaces.yaml, trials: {trials}, seed: 2026, defaults: {defaults}{tune_extra}}}
"""


def write_plan(folder: Path, **kw) -> Path:
    (folder / "spaces.yaml").write_text(SPACES)
    path = folder / "plan.yaml"
    path.write_text(plan_text(**kw))
    return path


def results(plan: Path, out: Path, docs: Path) -> int:
    return cli_main(["results", "--plan-file", str(plan), "--out", str(out), "--docs", str(docs)])


def test_search_then_seeds_then_nothing_twice_and_resume_from_the_record(tmp_path):
    plan, out, docs = write_plan(tmp_path), tmp_path / "out", tmp_path / "docs"
    assert results(plan, out, docs) == 0
    record = json.loads((out / "tuned" / "lf_dnn.search.json").read_text())
    assert record["complete"] == 2 and len(record["trials"]) == 2
    values = [t["value"] for t in record["trials"]]
    assert record["best"]["value"] == min(values)  # validation MAE, lower is better
    # each trial trained with the search seed only, never with a protocol seed
    trial_seeds = {p.name for p in (out / "tuned" / "lf_dnn-search").glob("trial_*/seed_*")}
    assert trial_seeds == {"seed_2026"}
    # the tuned run: the protocol's seeds at the best trial's values
    import yaml

    cfg = yaml.safe_load((out / "tuned" / "lf_dnn" / "config.yaml").read_text())
    assert cfg["train"]["lr"] == pytest.approx(record["best"]["params"]["train.lr"])
    assert cfg["model"]["hidden"] == record["best"]["params"]["model.hidden"]
    assert cfg["seeds"] == [1111, 1112]
    md = (docs / "RESULTS.md").read_text()
    assert "#### Defaults beside tuned (`tuned` against `plain`)" in md
    row = next(line for line in md.splitlines() if line.startswith("| `lf_dnn` |") and "2/2, best" in line)
    assert row.split(" | ")[1] != "-"  # the default run's test MAE is shown beside

    # again: nothing new is searched or trained
    metrics = out / "tuned" / "lf_dnn" / "seed_1111" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    assert results(plan, out, docs) == 0
    assert len(json.loads((out / "tuned" / "lf_dnn.search.json").read_text())["trials"]) == 2
    assert metrics.stat().st_mtime_ns == before

    # a machine with the record only (no database): the search resumes from the trials it lists
    shutil.rmtree(out / "tuned" / "lf_dnn-search")
    write_plan(tmp_path, trials=3)
    assert results(plan, out, docs) == 0
    again = json.loads((out / "tuned" / "lf_dnn.search.json").read_text())
    assert again["complete"] == 3
    assert [t["params"] for t in again["trials"][:2]] == [t["params"] for t in record["trials"]]
    assert [t["value"] for t in again["trials"][:2]] == values

    # a budget lowered below what a study ran: the best of the first trials only, as every model gets
    write_plan(tmp_path, trials=2)
    assert results(plan, out, docs) == 0
    lowered = json.loads((out / "tuned" / "lf_dnn.search.json").read_text())
    assert lowered["budget_trials"] == [0, 1] and lowered["best"] == record["best"]


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"tune_extra": ", epochs: 3"}, r"tune: unknown keys \['epochs'\]"),
        ({"tune_extra": ", seed: 7"}, r"tune.seed: expected an integer >= 1001"),
        ({"defaults": "nope"}, r"refers to unknown group\(s\) \['nope'\]"),
    ],
)
def test_tune_errors_name_the_entry(tmp_path, kw, message):
    text = plan_text(**kw)
    if "seed: 7" in text:  # the second seed key replaces the first
        text = text.replace("seed: 2026, ", "")
    (tmp_path / "spaces.yaml").write_text(SPACES)
    (tmp_path / "plan.yaml").write_text(text)
    with pytest.raises(PlanError, match=message):
        read_plan(tmp_path / "plan.yaml")


def test_a_model_without_a_space_is_refused(tmp_path):
    plan = write_plan(tmp_path)
    (tmp_path / "spaces.yaml").write_text("tsda:\n  train.lr: [0.001]\n")
    with pytest.raises(PlanError, match=r"has no space for model\(s\) \['lf_dnn'\]"):
        read_plan(plan)
    (tmp_path / "spaces.yaml").write_text("lf_dnn:\n  train.lr: {type: float, low: 1, high: 0}\n")
    with pytest.raises(PlanError, match=r"spaces.yaml \(lf_dnn\): train.lr: needs low < high"):
        read_plan(plan)
