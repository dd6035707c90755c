"""sentangle results (recipes/plan.py, recipes/results.py): the plan resolves without training, and a
--quick run of the synthetic section writes the expected documents, tables, CSVs and figures (tiny
data, one seed, one epoch)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sentangle.cli import main as cli_main
from sentangle.recipes import results
from sentangle.recipes.plan import PlanError, Planner, build_jobs, neural_models, read_plan, train_all
from sentangle.runs.folder import folder_lock

ROOT = Path(__file__).resolve().parents[2]
PLAN = str(ROOT / "benchmarks" / "results_plan.yaml")


def run(argv: list[str]) -> int:
    """`sentangle results ...` with the project's plan, from any working directory."""
    return cli_main(["results", "--plan-file", PLAN, *argv])


@pytest.fixture(scope="module")
def quick_synthetic(tmp_path_factory) -> Path:
    """The --quick synthetic section trained once, one process, for the tests that read or copy it."""
    out = tmp_path_factory.mktemp("quick") / "runs"
    assert run(["--quick", "--only", "synthetic", "--out", str(out), "--docs", str(out / "docs")]) == 0
    return out


def test_plan_lists_runs_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "runs"
    assert run(["--plan", "--out", str(out), "--only", "synthetic", "robustness"]) == 0
    text = capsys.readouterr().out
    assert "synthetic-unaligned/tsda" in text and "synthetic-aligned/lf_dnn" in text
    assert "ablations/dbr-synthetic/plain" in text and "robust synthetic-unaligned" in text
    assert "seeds 0/5" in text and "0 finished" in text
    assert not out.exists()  # nothing trained, no folder written


def test_skip_drops_a_group_and_what_reads_it(tmp_path, capsys):
    args = ["--plan", "--out", str(tmp_path), "--only", "synthetic", "robustness"]
    assert run(args + ["--skip", "synthetic-unaligned"]) == 0
    text = capsys.readouterr().out
    assert "synthetic-unaligned/" not in text and "synthetic-aligned/lf_dnn" in text
    assert "robust synthetic-unaligned" not in text and "ablations/dbr-synthetic/plain" in text
    assert run(args + ["--skip", "nope"]) == 2
    assert "unknown group(s) ['nope']" in capsys.readouterr().err


def test_bad_section_and_quick_doc_are_refused(tmp_path, capsys):
    assert run(["--plan", "--only", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown section" in capsys.readouterr().err
    assert run(["--quick", "--docs", "docs", "--out", str(tmp_path)]) == 2
    assert "never writes" in capsys.readouterr().err


def test_plan_file_errors_name_the_entry(tmp_path):
    bad = tmp_path / "plan.yaml"
    bad.write_text("sections:\n  - id: a\n    groups:\n      - {id: g, dataset: synthetic, models: all, epochs: 3}\n")
    with pytest.raises(
        PlanError, match=r"plan.yaml: sections\[0\] \(a\)\.groups\[0\] \(g\): unknown keys \['epochs'\]"
    ):
        read_plan(bad)


def test_quick_synthetic_writes_tables_and_resumes(quick_synthetic, tmp_path, capsys):
    out, doc = tmp_path / "runs", tmp_path / "doc" / "RESULTS.md"
    shutil.copytree(quick_synthetic, out)  # file times kept: "not trained again" below compares them
    assert run(["--quick", "--only", "synthetic", "--out", str(out), "--docs", str(doc.parent)]) == 0
    md = doc.read_text()
    assert "QUICK SMOKE RUN" in md
    for heading in (
        "## 6. Synthetic benchmark",
        "### aligned",
        "### unaligned",
        "## 8. Acceptance checks",
        "Published reference rows, CMU-MOSI",
        "Published reference rows, MIntRec",
    ):
        assert heading in md, heading
    # one row per registered model in the synthetic test table, with the oracle table beside it

    section = md.split("## 6.")[1].split("## 7.")[0]
    for m in neural_models():
        assert f"| `{m}` | 1 |" in section, m
    assert "| Bayes oracle | s, a, b, c |" in section and "| static floor (order-blind) |" in section
    # computed verdicts: the synthetic claim is decided, real-data checks wait for their runs
    # the model claims are in each model's check document, rendered by the same command from the same runs
    tsda = (doc.parent / "tsda_checks.md").read_text()
    assert tsda.startswith("# TSDA checks") and "## 1. Synthetic benchmark: does TSDA use temporal order?" in tsda
    row = next(line for line in tsda.splitlines() if line.startswith("| TSDA's test MAE below LF-DNN's"))
    assert "**PASS**" in row or "**FAIL**" in row

    def mean_test_mae(group, model):
        runs = sorted((out / group / model).glob("seed_*/metrics.json"))
        assert runs, (group, model)
        return np.mean([json.loads(p.read_text())["metrics"]["test"]["mae"] for p in runs])

    # the verdict itself, decided here from the runs' own metrics files
    groups = ("synthetic-aligned", "synthetic-unaligned")
    want = "PASS" if all(mean_test_mae(g, "tsda") < mean_test_mae(g, "lf_dnn") for g in groups) else "FAIL"
    assert f"**{want}**" in row
    assert "**PENDING** | n/a | no finished run" in md  # mosi_utt: nothing trained there
    figs = doc.parent / "results"
    for name in (
        "synthetic-aligned.csv",
        "synthetic-unaligned.csv",
        "synthetic-aligned.png",
        "acceptance-verdicts.csv",
    ):
        assert (figs / name).is_file(), name
    header = (figs / "synthetic-unaligned.csv").read_text().splitlines()[0]
    assert header.startswith("model,split,seeds,mae_mean")
    stdout = capsys.readouterr().out
    assert "[PASS]" in stdout or "[FAIL]" in stdout
    assert f"[{want}] TSDA's test MAE below LF-DNN's" in stdout
    assert (figs / "tsda_synthetic-verdicts.csv").is_file() and (
        figs / "tsda_synthetic-synthetic-unaligned.png"
    ).is_file()
    # the finished runs are reported as such and not trained again
    metrics = out / "synthetic-unaligned" / "tsda" / "seed_1111" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    assert run(["--plan", "--quick", "--only", "synthetic", "--out", str(out)]) == 0
    assert "22 runs planned, 22 finished, 0 seeds to train" in capsys.readouterr().out
    assert metrics.stat().st_mtime_ns == before
    # git keeps one record per run folder, beside it: from the records alone (a fresh clone) the run
    # folders come back, and nothing is left to train
    records = sorted(p.relative_to(out) for p in out.glob("**/*.json") if (p.with_suffix("") / "config.yaml").is_file())
    assert len(records) == 22 and Path("synthetic-unaligned/tsda.json") in records
    full = out.rename(tmp_path / "full")
    for rec in records:
        (out / rec).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(full / rec, out / rec)
    assert run(["--plan", "--quick", "--only", "synthetic", "--out", str(out)]) == 0
    assert "22 runs planned, 22 finished, 0 seeds to train" in capsys.readouterr().out
    unpacked = json.loads(metrics.read_text())
    assert (
        "history" not in unpacked
        and unpacked["metrics"] == json.loads((full / metrics.relative_to(out)).read_text())["metrics"]
    )
    shutil.rmtree(out)
    full.rename(out)
    # a seed trained by other code is named in the doc's provenance section
    assert "Every seed above was trained by this checkout's code." in md
    record = json.loads(metrics.read_text())
    structure = record.pop("code_structure")  # as if by a version that did not record it (a code change)
    metrics.write_text(json.dumps(record | {"code": record["code"] | {"models/tsda.py": "0123456789abcdef"}}))
    assert run(["--quick", "--only", "synthetic", "--out", str(out), "--docs", str(doc.parent)]) == 0
    md = doc.read_text()
    assert "| synthetic-unaligned/tsda | seed_1111 | models/tsda.py |" in md.split("## Provenance")[1]
    # --retrain-stale trains that seed again and nothing else
    other = out / "synthetic-unaligned" / "lf_dnn" / "seed_1111" / "metrics.json"
    untouched = other.stat().st_mtime_ns
    assert run(["--quick", "--only", "synthetic", "--out", str(out), "--docs", str(doc.parent), "--retrain-stale"]) == 0
    retrained = json.loads(metrics.read_text())
    assert (retrained["code"], retrained["code_structure"]) == (record["code"], structure)
    assert other.stat().st_mtime_ns == untouched
    assert "Every seed above was trained by this checkout's code." in doc.read_text()
    # --replay-stale trains it again, finds the same numbers and records that in replays.json
    older = record | {"code": record["code"] | {"models/tsda.py": "0123456789abcdef"}}
    metrics.write_text(json.dumps(older))
    assert run(["--quick", "--only", "synthetic", "--out", str(out), "--docs", str(doc.parent), "--replay-stale"]) == 0
    replays = json.loads((metrics.parent.parent / "replays.json").read_text())
    assert [(r["seed"], r["identical"], r["files"]) for r in replays] == [("seed_1111", True, ["models/tsda.py"])]
    assert json.loads(metrics.read_text())["metrics"] == record["metrics"] and other.stat().st_mtime_ns == untouched
    metrics.write_text(json.dumps(older))  # as another seed of that older code would be: it counts as current
    assert run(["--quick", "--only", "acceptance", "--out", str(out), "--docs", str(doc.parent)]) == 0
    provenance = doc.read_text().split("## Provenance")[1]
    assert "1 seed(s) trained by earlier code count as this checkout's" in provenance
    assert "Every seed above was trained by this checkout's code." in provenance


def test_workers_train_in_parallel_with_the_same_numbers(quick_synthetic, tmp_path, capsys):
    seq, par = quick_synthetic, tmp_path / "par"
    # the parallel run also does the robustness section: its robustness job runs beside the workers
    extra = ["synthetic", "robustness", "--workers", "2"]
    assert run(["--quick", "--out", str(par), "--docs", str(par / "docs"), "--only", *extra]) == 0
    folders = sorted(p.relative_to(seq) for p in seq.glob("synthetic-*/*/seed_1111"))
    assert len(folders) == 22 and folders == sorted(p.relative_to(par) for p in par.glob("synthetic-*/*/seed_1111"))
    for f in folders:
        a, b = (json.loads((root / f / "metrics.json").read_text()) for root in (seq, par))
        assert a["metrics"] == b["metrics"], f  # one thread each: the same numbers, in whatever order
    robust = sorted(par.glob("synthetic-unaligned/*/robust.json"))
    assert len(robust) == 5  # the plan's robustness job reads five of the unaligned runs
    for r in robust:
        conditions = json.loads(r.read_text())["conditions"]
        assert {"clean", "missing:vision"} <= {c["name"] for c in conditions}
        clean = next(c for c in conditions if c["name"] == "clean")["metrics"]["mae"]["mean"]
        trained = json.loads((r.parent / "summary.json").read_text())["splits"]["test"]["mae"]["mean"]
        assert clean == pytest.approx(trained, abs=1e-6), r  # the checkpoints the workers wrote, evaluated again
    section = (par / "docs" / "RESULTS.md").read_text().split("## 7.")[1].split("## 8.")[0]
    assert "### Test-time robustness" in section and "No robustness results yet" not in section

    # the results store keeps no checkpoints: up-to-date evaluations are reused without them, and a
    # stale one has the seeds it reads trained again (same metrics) before it runs
    for c in par.glob("**/checkpoint.pt"):
        c.unlink()
    args = ["--quick", "--out", str(par), "--docs", str(par / "docs"), "--only", "synthetic", "robustness"]
    kept, stale = robust[0].parent, robust[1].parent
    before = {f: (f / "seed_1111" / "metrics.json").stat().st_mtime_ns for f in (kept, stale)}
    old = json.loads((stale / "seed_1111" / "metrics.json").read_text())["metrics"]
    assert run(args) == 0
    assert {f: (f / "seed_1111" / "metrics.json").stat().st_mtime_ns for f in (kept, stale)} == before
    assert not list(par.glob("**/checkpoint.pt"))
    (stale / "robust.json").unlink()
    assert run([*args, "--plan"]) == 0  # --plan counts the seed that will train again
    assert "4 up to date; 1 finished seed(s) without a checkpoint here train again first" in capsys.readouterr().out
    assert run(args) == 0
    assert (stale / "seed_1111" / "checkpoint.pt").is_file() and (stale / "robust.json").is_file()
    assert json.loads((stale / "seed_1111" / "metrics.json").read_text())["metrics"] == old
    assert (kept / "seed_1111" / "metrics.json").stat().st_mtime_ns == before[kept]
    assert not (kept / "seed_1111" / "checkpoint.pt").exists()


def test_a_folder_another_process_trains_is_left_to_it_not_failed(quick_synthetic, tmp_path, capsys):
    """Two `sentangle results` on one plan share the work through the run-folder locks: a folder the
    other holds is its job, not a failure of this one."""
    out = tmp_path / "runs"
    shutil.copytree(quick_synthetic, out)
    folder = out / "synthetic-unaligned" / "lf_dnn"
    shutil.rmtree(folder / "seed_1111")
    plan = read_plan(Path(PLAN))
    jobs = build_jobs(plan, Planner(plan, str(out), 5, True, None), ["synthetic"], "run")[0]
    job = [j for j in jobs if j.label == "synthetic-unaligned/lf_dnn"]
    with folder_lock(folder):  # as the other process would
        assert train_all(job, str(out)) == []
    assert (
        f"left to the other process: synthetic-unaligned/lf_dnn: {folder} is being written" in capsys.readouterr().out
    )
    assert not (folder / "seed_1111").exists()
    assert train_all(job, str(out)) == [] and (folder / "seed_1111" / "metrics.json").is_file()


def test_collapsed_seeds_are_listed(tmp_path):
    from types import SimpleNamespace

    def job(name, seeds):
        folder = tmp_path / name
        for seed, constant in seeds.items():
            (folder / seed).mkdir(parents=True)
            record = (
                {"seed": 1}
                if constant is None
                else {"seed": 1, "constant_predictions": constant[0], "no_better_than_constant": constant[1]}
            )
            (folder / seed / "metrics.json").write_text(json.dumps(record))
        return SimpleNamespace(kind="train", folder=folder, label=name)

    ok = job("mosei/lf_dnn", {"seed_1111": ([], []), "seed_1112": ([], [])})
    bad = job(
        "mosei/dbr",
        {
            "seed_1111": (["valid", "test"], ["train"]),
            "seed_1112": ([], ["test"]),
            "seed_1113": None,
            "seed_1114": ([], []),
        },
    )
    text = results.collapse_section({"mosei": [ok, bad, ok]})
    assert "| mosei/dbr | seed_1111 | valid, test | train |" in text and "| mosei/dbr | seed_1112 | - | test |" in text
    assert "2 seed(s) have" in text and "seed_1114" not in text
    assert "mosei/lf_dnn" not in text and "1 seed(s) were trained before" in text
    assert "No checked seed has collapsed" in results.collapse_section({"mosei": [ok]})


BEST_OF_PLAN = """\
seeds: 2
overrides: {train.threads: 1, train.epochs: 1, train.patience: 1, dataset.scale: 0.03, dataset.lengths: 8, dataset.dims: 8}
sections:
  - id: s
    title: picked on validation
    groups:
      - {id: fixed, dataset: synthetic, models: [lf_dnn, lmf, tfn]}
      - {id: other, dataset: synthetic, models: {best_of: fixed, families: [[lf_dnn, lmf], [tfn]]},
         overrides: {train.lr: 2.0e-3}}
"""


def test_best_of_trains_each_familys_best_on_validation_once_the_family_has_finished(tmp_path, capsys):
    plan, out = tmp_path / "plan.yaml", tmp_path / "out"
    plan.write_text(BEST_OF_PLAN)
    args = ["results", "--plan-file", str(plan), "--out", str(out), "--docs", str(tmp_path / "docs")]
    assert cli_main([*args, "--plan"]) == 0
    assert "other/" not in capsys.readouterr().out  # nothing to pick from yet
    assert cli_main([*args, "--skip", "other"]) == 0
    assert cli_main([*args, "--plan"]) == 0
    listed = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("s ")]

    def valid_mae(model):
        seeds = sorted((out / "fixed" / model).glob("seed_*/metrics.json"))
        assert len(seeds) == 2
        return np.mean([json.loads(p.read_text())["metrics"]["valid"]["mae"] for p in seeds])

    best = min(("lf_dnn", "lmf"), key=valid_mae)  # MAE: lower is better
    assert sorted(x for x in listed if x.startswith("other/")) == sorted([f"other/{best}", "other/tfn"])

    # a fresh clone has only the records: one command unpacks the picked groups' folders too (their
    # models are known once the source group is unpacked), and nothing is left to train
    assert cli_main(args) == 0
    records = {p: p.read_bytes() for p in out.glob("*/*.json")}
    assert len(records) == 5
    shutil.rmtree(out)
    for p, data in records.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    capsys.readouterr()
    assert cli_main([*args, "--plan"]) == 0
    assert "5 runs planned, 5 finished, 0 seeds to train" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ("{best_of: nope, families: [[lf_dnn]]}", r"refers to unknown group\(s\) \['nope'\]"),
        ("{best_of: fixed, families: []}", r"\(other\)\.models\.families: expected a list of non-empty lists"),
        ("{best_of: fixed, families: [[lf_dnn]], metric: speed}", r"\.models\.metric: 'speed'; expected one of"),
        ("{best_of: fixed, families: [[lf_dnn, nosuch]]}", r"nosuch"),
        ("{best_of: other, families: [[lf_dnn]]}", r"group 'other': models.best_of 'other' is a group whose models"),
    ],
)
def test_best_of_errors_name_the_entry(tmp_path, models, message):
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        BEST_OF_PLAN.split("      - {id: other")[0] + f"      - {{id: other, dataset: synthetic, models: {models}}}\n"
    )
    with pytest.raises((PlanError, KeyError), match=message):
        read_plan(plan)


def test_robustness_tables_and_curves_use_the_groups_metric(tmp_path):
    plan, out, docs = tmp_path / "plan.yaml", tmp_path / "out", tmp_path / "docs"
    plan.write_text(
        BEST_OF_PLAN.split("      - {id: fixed")[0].replace("seeds: 2", "seeds: 1")
        + "      - {id: fixed, dataset: synthetic, models: [lf_dnn], metric: corr}\n"
        + "    robust: {group: fixed, models: [lf_dnn], noise_levels: [1.0], drop_rates: []}\n"
    )
    assert cli_main(["results", "--plan-file", str(plan), "--out", str(out), "--docs", str(docs)]) == 0
    section = (docs / "RESULTS.md").read_text().split("### Test-time robustness")[1]
    assert "Test Corr (mean" in section and "Test MAE" not in section
    robust = json.loads((out / "fixed" / "lf_dnn" / "robust.json").read_text())
    corr = next(c for c in robust["conditions"] if c["name"] == "clean")["metrics"]["corr"]["mean"]
    assert f"| clean | {corr:.3f}" in section
    assert list((docs / "results").glob("robust-fixed/*.png"))
