"""Render the documents of a results plan (recipes/plan.py) from run folders, training what is missing.

    sentangle results [--plan-file benchmarks/results_plan.yaml] [--data-root DIR] [--out results]
                      [--seeds 5] [--only SECTION ...] [--skip GROUP ...] [--workers N]
                      [--retrain-stale | --replay-stale] [--plan] [--write-records] [--quick] [--docs DIR]

(`python benchmarks/results.py` is the same command.) Each section trains groups of models through
`runs.runner.run` (what `sentangle train` calls), one run folder per model under
`<out>/<group>/<model>/`, plus robustness evaluations (`recipes.robust.robust`) and the packaged
ablations (each variant a run folder under `<out>/ablations/<name>/<variant>/`, as `sentangle ablate`).
Finished seeds are reused, so an interrupted run resumes. Git tracks one record per run folder,
`<folder>.json` beside it (`runs.record`), not the folders: a run first unpacks the records into run
folders (a fresh clone has none), and writes the records again after training. The documents are
then written from the run folders alone (tables of recipes.compare / recipes.ablate / recipes.robust,
verdicts of recipes.verdicts, CSVs and PNGs under <docs>/results/); the only typed-in numbers are the
published references the plan names.

--plan     print every run (section, model, dataset, overrides, seeds finished) and train nothing
--write-records  write the record of every run folder of the plan and train nothing
--only     train only these sections (the documents still show whatever the other sections have finished)
--workers  train N run folders at a time, each in its own process with one thread (N = cores)
--retrain-stale  train again the seeds of the plan trained by code other than this checkout's
--replay-stale   cheaper: train one such seed per code version again; when its metrics repeat bit for
           bit the change did not touch that run and its other seeds stand (run folder's replays.json)
--skip     train none of these groups (e.g. the CPU-hungry mosi_utt-finetune), nor the robustness
           evaluations that read them; a later run without --skip trains them
--quick    smoke test: tiny synthetic data, 1 seed, 1 epoch, real-data sections only where the data
           exist; writes the documents under <out>/docs, never under docs/
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import torch
import yaml

from sentangle.core.io import versions, write_text
from sentangle.data.dataset import MSADataset
from sentangle.data.synthetic import oracle_table
from sentangle.models import list_models
from sentangle.recipes.ablate import ablation_csv, ablation_table
from sentangle.recipes.compare import csv_table, markdown_table
from sentangle.recipes.plan import (
    Job,
    PlanError,
    Planner,
    build_jobs,
    dotted,
    finish_replays,
    forget_stale_seeds,
    load_result,
    missing_data,
    plan_path,
    print_plan,
    read_plan,
    retrain_for_robust,
    robust_entries,
    skip_groups,
    start_replays,
    status,
    train_all,
    unpack_plan,
    write_records,
)
from sentangle.recipes.robust import robust_table, waveform_conditions
from sentangle.recipes.tune import tune_section
from sentangle.recipes.verdicts import VerdictContext, judge
from sentangle.report import plots
from sentangle.report.confusion import read_confusion_csv
from sentangle.report.tables import LABELS, RAW_SCALE, fmt
from sentangle.runs.folder import finished
from sentangle.runs.provenance import code_key, stale_seeds, vouched_codes
from sentangle.runs.runner import run_code
from sentangle.runs.sanity import NO_GAIN_MARGIN

DEFAULT_PLAN = Path("benchmarks/results_plan.yaml")
DEFAULT_DOCS = Path("docs")
DEFAULT_OUT = "results"  # git tracks one record per run folder (<folder>.json), see .gitignore
DEFAULT_REFERENCES = "results_references.yaml"  # beside the plan, unless the plan names another


class Doc:
    """One document and the files it links under <its folder>/results/. The documents of a plan
    share one folder and one `written` set, so that files none of them wrote are pruned at the end."""

    def __init__(self, path: Path, written: set[Path]):
        self.path = path
        self.figdir = path.parent / "results"
        self.written = written

    def file(self, name: str, text: str) -> str:
        p = write_text(self.figdir / name, text)
        self.written.add(Path(p).resolve())
        return os.path.relpath(p, self.path.parent)

    def figure(self, name: str, fig) -> str:
        p = plots.save(fig, self.figdir / name)
        self.written.add(Path(p).resolve())
        return os.path.relpath(p, self.path.parent)

    def prune(self) -> None:
        if self.figdir.is_dir():
            for p in self.figdir.rglob("*"):
                if p.is_file() and p.suffix in (".png", ".csv", ".md") and p.resolve() not in self.written:
                    p.unlink()


def _scale(metric: str) -> float:
    return 1.0 if metric in RAW_SCALE else 100.0


def main_metric(task: str) -> str:
    return "mae" if task == "regression" else "accuracy"


def settings_line(group: dict, jobs: list[Job]) -> str:
    ds = group["dataset"]
    ds_text = ds if isinstance(ds, str) else ", ".join(f"{k}={v}" for k, v in ds.items())
    per_model = {j.label.split("/")[-1]: j.shown for j in jobs}
    common = dotted(group.get("overrides"))
    extra = {m: [s for s in v if s not in common] for m, v in per_model.items()}
    line = (
        f"Models ({len(jobs)}): {', '.join(f'`{m}`' for m in per_model)}. Dataset `{ds_text}`; "
        f"seeds {jobs[0].cfg.seeds if jobs else []}; plan overrides: " + (" ".join(f"`{o}`" for o in common) or "none")
    )
    own = [f"`{m}` " + " ".join(f"`{o}`" for o in v) for m, v in extra.items() if v]
    return (
        line
        + (("; per model: " + "; ".join(own)) if own else "")
        + f". Run folders `{Path(jobs[0].cfg.out)}/<model>/`."
        if jobs
        else line
    )


def group_section(
    group: dict, jobs: list[Job], doc: Doc, oracle: bool = False, name: str | None = None, show: dict | None = None
) -> tuple[str, dict]:
    """A group's tables, CSV and figure (files named `name`, default the group id); `show`: the group
    shown again in another section, with its own title and note."""
    name = name or group["id"]
    results = {j.label.split("/")[-1]: load_result(j.cfg) for j in jobs}
    done = {m: r for m, r in results.items() if r}
    title = (show or {}).get("title") or group.get("title") or group["id"]
    parts = [f"### {title}\n", settings_line(group, jobs) + "\n"]
    for note in (group.get("note"), (show or {}).get("note")):
        if note:
            parts.append(note.strip() + "\n")
    if done:
        task = next(iter(done.values()))["task"]
        facts = {m: r["facts"] for m, r in done.items()}
        for split in ("test", "valid"):
            rows = {m: r["splits"][split] for m, r in done.items() if split in r["splits"]}
            if rows:
                parts.append(
                    f"**{split}** (mean ± sample std over seeds; best per column in bold)\n\n"
                    + markdown_table(rows, task, facts if split == "test" else None)
                    + "\n"
                )
        csv_link = doc.file(f"{name}.csv", csv_table(done, task, facts))
        metric = group.get("metric") or main_metric(task)
        sc = _scale(metric)
        fig = plots.metric_bars(
            {
                "test": {
                    m: (r["splits"]["test"][metric]["mean"] * sc, r["splits"]["test"][metric]["std"] * sc)
                    for m, r in done.items()
                    if "test" in r["splits"]
                }
            },
            f"test {LABELS.get(metric, metric)}" + (" (%)" if sc != 1 else ""),
            group["id"],
        )
        png = doc.figure(f"{name}.png", fig)
        parts.append(f"CSV: [{csv_link}]({csv_link})\n\n![{group['id']}: test {metric}]({png})\n")
        if oracle:
            parts.append(oracle_section(done))
        if task == "classification":
            parts.append(confusion_links(done, name, doc))
        short = [
            f"`{m}` {len(r['per_seed'])}/{r['planned_seeds']}"
            for m, r in done.items()
            if len(r["per_seed"]) < r["planned_seeds"]
        ]
        if short:
            parts.append("Seeds finished so far (fewer than planned): " + ", ".join(short) + ".\n")
    missing = [m for m, r in results.items() if not r]
    if missing:
        parts.append("Not finished yet (no seed in its run folder): " + ", ".join(f"`{m}`" for m in missing) + ".\n")
    return "\n".join(parts), results


def confusion_links(done: dict, name: str, doc: Doc) -> str:
    """Each model's test confusion matrix (seeds pooled), as the run folder's record keeps it: CSV and
    a row-normalised plot."""
    links = []
    for m, r in done.items():
        path = Path(r["folder"]) / "confusion.csv"
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            counts, names = read_confusion_csv(text)
            table = doc.file(f"{name}-{m}-confusion.csv", text)
            png = doc.figure(
                f"{name}-{m}-confusion.png",
                plots.confusion_plot(counts, names, f"{m}: test, {len(r['per_seed'])} seed(s) pooled"),
            )
            links.append(f"`{m}` [CSV]({table}) [plot]({png})")
    if not links:
        return ""
    return "Test confusion matrices (rows: true class; seeds pooled): " + "; ".join(links) + ".\n"


def references_section(key: str, refs: dict, refs_name: str) -> str:
    if key not in refs:
        return ""
    r = refs[key]
    order = [
        m
        for m in ("mae", "corr", "acc7", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "accuracy", "uar", "f1_macro")
        if any(m in row for row in r["rows"])
    ]
    lines = [
        f"#### {r['title']} (published; typed in from {refs_name}, not run here)\n",
        "| model | features | source | " + " | ".join(LABELS.get(m, m) for m in order) + " |",
        "|---|---|---|" + "---:|" * len(order),
    ]
    for row in r["rows"]:
        cells = [("-" if m not in row else f"{row[m]:.3f}" if m in RAW_SCALE else f"{row[m]:.2f}") for m in order]
        lines.append(f"| {row['model']} | {row['features']} | {row['source']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\n" + r["note"].strip() if r.get("note") else "") + "\n"


def oracle_section(results: dict) -> str:
    for r in results.values():
        if r:
            info = json.loads((Path(r["folder"]) / "dataset.json").read_text(encoding="utf-8"))
            if "oracle" in (info.get("info") or {}):
                return (
                    "Reference predictors on the same test split (from the true factors; read from the run "
                    "folder's dataset.json):\n\n"
                    # oracle_table reads a dataset's name and info only, as dataset.json keeps them
                    + oracle_table(cast(MSADataset, SimpleNamespace(name=info["name"], info=info["info"])))
                    + "\n"
                )
    return ""


def read_robust(folders: list[Path]) -> dict:
    out = {}
    for f in folders:
        p = f / "robust.json"
        if p.is_file():
            out[f.name] = json.loads(p.read_text(encoding="utf-8"))
    return out


def robust_metric(r: dict | None, condition: str, metric: str) -> dict | None:
    if not r:
        return None
    c = next((c for c in r["conditions"] if c["name"] == condition), None)
    return c["metrics"].get(metric) if c else None


def shortcut_section(sec: dict, job_results: dict, robust_res: dict, doc: Doc) -> str:
    group = sec["groups"][0]["id"]
    clean = sec["analysis"]["clean_group"]
    sc, cl = job_results[group], job_results[clean]
    lines = [
        "| model | train MAE | valid MAE | test MAE | train Acc-2 non0 | valid Acc-2 non0 | test Acc-2 non0 | "
        "test MAE without vision (section 1) | Δ from vision | test MAE, vision removed at test | Δ removed |",
        "|---|" + "---:|" * 10,
    ]
    rows = []
    series: dict[str, dict] = {"train": {}, "valid": {}, "test": {}, "test, no vision (trained without)": {}}
    for m, r in sc.items():
        if not r:
            continue
        s = r["splits"]
        cells = [fmt(k, s[sp][k]) if sp in s else "n/a" for k in ("mae",) for sp in ("train", "valid", "test")]
        cells += [fmt("acc2_non0", s[sp]["acc2_non0"]) if sp in s else "n/a" for sp in ("train", "valid", "test")]
        c = cl.get(m)
        cells.append(fmt("mae", c["splits"]["test"]["mae"]) if c else "n/a")
        cells.append(f"{s['test']['mae']['mean'] - c['splits']['test']['mae']['mean']:+.3f}" if c else "n/a")
        rm = robust_metric(robust_res.get(m), "missing:vision", "mae")
        cells.append(fmt("mae", rm) if rm else "n/a")
        cells.append(f"{rm['mean'] - s['test']['mae']['mean']:+.3f}" if rm else "n/a")
        rows.append(f"| `{m}` | " + " | ".join(cells) + " |")
        for sp in ("train", "valid", "test"):
            if sp in s:
                series[sp][m] = (s[sp]["mae"]["mean"], s[sp]["mae"]["std"])
        if c:
            series["test, no vision (trained without)"][m] = (
                c["splits"]["test"]["mae"]["mean"],
                c["splits"]["test"]["mae"]["std"],
            )
    if not rows:
        return "No finished shortcut runs yet.\n"
    png = doc.figure("shortcut.png", plots.metric_bars(series, "MAE", "mosi_utt + contaminated vision"))
    return (
        'Mean ± sample std over seeds. "Δ from vision": test MAE with the contaminated vision minus the same '
        'model\'s test MAE trained without it (section 1, frozen); "Δ removed": test MAE with vision removed at '
        "test time minus the clean test MAE of the same checkpoints (negative: the model does better without "
        "the lying modality).\n\n" + "\n".join(lines + rows) + f"\n\n![shortcut]({png})\n"
    )


def robustness_section(job: Job, doc: Doc) -> str:
    res = read_robust(job.folders)
    if not res:
        return "No robustness results yet (`robust.json` in the run folders).\n"
    curves = plots.robust_curves(res, doc.figdir / job.label.replace(" ", "-"), job.metric)
    for p in curves:
        doc.written.add(Path(p).resolve())
    links = "\n".join(f"![{Path(p).stem}]({os.path.relpath(p, doc.path.parent)})" for p in curves)
    opts = job.options
    return (
        f"Runs: {', '.join(f'`{f.parent.name}/{f.name}`' for f in job.folders)}; noise levels "
        f"{list(opts['noise_levels'])}, frame-drop rates {list(opts['drop_rates'])}"
        + (
            "; waveform perturbations of the test clips before extraction (data/waveform.py): "
            + ", ".join(c["name"] for c in waveform_conditions(opts["waveform"], opts["seed"]))
            if opts.get("waveform")
            else ""
        )
        + f"; perturbation seed {opts['seed']}.\n\n"
        + robust_table(res, job.metric)
        + "\n\n"
        + links
        + "\n"
    )


def ablation_results(planner: Planner, entry: dict) -> tuple[dict, dict, dict]:
    spec, cfgs = planner.ablation(entry)
    return spec, cfgs, {v: load_result(c) for v, c in cfgs.items()}


def ablations_section(sec: dict, planner: Planner, doc: Doc) -> str:
    parts = ["### Ablations\n"]
    if sec.get("ablation_note"):
        parts.append(sec["ablation_note"].strip() + "\n")
    for entry in sec.get("ablations") or []:
        spec, cfgs, res = ablation_results(planner, entry)
        shown = [spec["reference"], *(v for v in entry.get("variants") or res if v != spec["reference"])]
        res = {v: res[v] for v in shown}
        done = {v: r for v, r in res.items() if r}
        first = cfgs[spec["reference"]]
        parts.append(
            f"### Ablation `{spec['name']}` (`{first.model['name']}` on `{first.dataset['name']}`)\n\n"
            f"From `{Path(spec['file']).name}`; seeds {first.seeds}; shared overrides "
            + (" ".join(f"`{o}`" for o in spec["overrides"]) or "none")
            + f"; run folders `{first.out}/<variant>/`.\n"
        )
        if spec["reference"] not in done:
            parts.append(f"The reference variant `{spec['reference']}` has not finished yet.\n")
            continue
        task = done[spec["reference"]]["task"]
        switches = {v["name"]: " ".join(f"`{o}`" for o in v["overrides"]) for v in spec["variants"]}
        parts.append(ablation_table(done, spec["reference"], task, "test", switches) + "\n")
        link = doc.file(
            f"{sec['id']}-ablation-{spec['name']}.csv", ablation_csv(done, spec["reference"], task, switches)
        )
        missing = [v for v in res if not res[v]]
        parts.append(f"CSV: [{link}]({link})" + (f". Not finished yet: {', '.join(missing)}" if missing else "") + "\n")
    return "\n".join(parts)


# ---- main ----------------------------------------------------------------------------------------
def diagnostics_section(spec: dict, ctx: VerdictContext) -> str:
    """Per-seed diagnostics (mean ± sample std over the seeds, from each run's summary) side by side."""
    cols, names = [], []
    for r in spec["runs"]:
        if "group" in r:
            res, name = (ctx.results.get(r["group"]) or {}).get(r["model"]), f"`{r['model']}` ({r['group']})"
        else:
            res, name = (
                (ctx.ablations.get(r["ablation"], ({}, {}))[1]).get(r["variant"]),
                f"{r['ablation']} / {r['variant']}",
            )
        cols.append(((res or {}).get("diagnostics") or {}, (res or {}).get("per_seed") or {}))
        names.append(r.get("label") or name)
    lines = ["| quantity | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, key in spec["rows"].items():
        cells = [f"{d[key]['mean']:.3f} ± {d[key]['std']:.3f}" if key in d else "-" for d, _ in cols]
        lines.append(f"| {label} (`{key}`) | " + " | ".join(cells) + " |")
    seeds = ", ".join(f"{n}: {len(p)}" for n, (_, p) in zip(names, cols))
    return (
        f"#### {spec.get('title') or 'Diagnostics'}\n\n"
        + (spec["note"].strip() + "\n\n" if spec.get("note") else "")
        + "Mean ± sample std over seeds of each seed's `diagnostics.json` (written after training, "
        f"report/diagnose.py); seeds per run: {seeds}.\n\n" + "\n".join(lines) + "\n"
    )


def verdicts_section(sec: dict, ctx: VerdictContext, doc: Doc) -> tuple[str, list]:
    rows = []
    for c in sec["checks"]:
        status_, detail, clear = judge(c, ctx)
        rows.append((c["id"], c["text"], status_, clear, detail))
    lines = ["| check | verdict | clear of seed noise | computed from the runs |", "|---|---|---|---|"]
    lines += [f"| {t} | **{s}** | {n} | {d} |" for _, t, s, n, d in rows]
    buf = io.StringIO()
    csv.writer(buf).writerows([("id", "check", "verdict", "clear_of_seed_noise", "detail")] + rows)
    link = doc.file(f"{sec['id']}-verdicts.csv", buf.getvalue())
    return (
        "### Verdicts\n\nPASS or FAIL compares means, as each check is worded; PENDING while a run the "
        "check needs has not finished (with the seeds it needs). *Clear of seed noise*: whether the paired "
        "difference behind the verdict (same seeds; mean ± 2 standard errors) lies wholly on the "
        "verdict's side of 0; 'no' means these seeds cannot tell the two sides apart. "
        "Baselines: "
        + ", ".join(f"`{m}`" for m in ctx.baselines)
        + "; proposed: "
        + ", ".join(f"`{m}`" for m in ctx.proposed)
        + ".\n\n"
        + "\n".join(lines)
        + f"\n\nCSV: [{link}]({link})\n"
    ), rows


def verdict_context(plan: dict, planner: Planner) -> VerdictContext:
    """Every group's and every ablation's finished runs, as the checks and diagnostics tables read them."""
    proposed = plan.get("proposed", [])
    ctx = VerdictContext(proposed=proposed, baselines=[m for m in list_models() if m not in proposed])
    for gid, group in plan["_groups"].items():
        ctx.results[gid] = {j.label.split("/")[-1]: load_result(j.cfg) for j in planner.group_jobs("", group)}
    entries = [e for s in plan["sections"] for e in s.get("ablations") or []]
    entries += [{"file": r["ablation"]} for s in plan["sections"] for r in robust_entries(s) if "ablation" in r]
    entries += [
        {"file": r["ablation"]}
        for s in plan["sections"]
        for d in s.get("diagnostics") or []
        for r in d["runs"]
        if "ablation" in r
    ]
    for entry in entries:
        spec, _, res = ablation_results(planner, entry)
        if spec["name"] not in ctx.ablations:  # checks name it; plan entries give its file
            ctx.ablations[spec["name"]] = ctx.ablations[entry["file"]] = (spec, {v: r for v, r in res.items() if r})
    return ctx


def section_text(n: int, sec: dict, plan: dict, planner: Planner, jobs: list[Job], ctx, refs, doc, skipped) -> tuple:
    groups = plan["_groups"]
    parts = [f"## {n}. {sec['title']}\n"]
    if sec.get("note"):
        parts.append(sec["note"].strip() + "\n")
    if sec["id"] in skipped:
        parts.append(f"**Skipped in this run:** {skipped[sec['id']]}\n")

    def group_jobs(gid: str, models=None) -> list[Job]:
        picked = {  # a run the section reads twice (shown and in a diagnostics table) once
            j.folder: j
            for j in jobs
            if j.kind == "train"
            and j.label.startswith(gid + "/")
            and (models is None or j.label.split("/")[-1] in models)
        }
        return list(picked.values())

    for s in sec.get("show") or []:
        g = groups[s["group"]]
        name = f"{sec['id']}-{g['id']}"
        parts.append(group_section(g, group_jobs(g["id"], s.get("models")), doc, bool(sec.get("oracle")), name, s)[0])
    for g in sec.get("groups") or []:
        parts.append(group_section(g, group_jobs(g["id"]), doc, oracle=bool(sec.get("oracle")))[0])
        if "tune" in g:
            defaults = ctx.results.get(g["tune"].get("defaults")) or {}
            parts.append(tune_section(g, ctx.results.get(g["id"]) or {}, defaults, ctx.proposed, planner.out))
    if sec.get("references"):
        parts.append(references_section(sec["references"], refs, refs.get("_file", "")))
    analysis = sec.get("analysis") or {}
    if analysis.get("kind") == "shortcut":
        rob = read_robust(next(j.folders for j in jobs if j.kind == "robust"))
        parts.append(shortcut_section(sec, ctx.results, rob, doc))
    if sec.get("ablations"):
        parts.append(ablations_section(sec, planner, doc))
    for job in (j for j in jobs if j.kind == "robust" and not analysis):
        parts.append(f"### Test-time robustness: {job.label.split(' ', 1)[1]}\n\n" + robustness_section(job, doc))
    for d in sec.get("diagnostics") or []:
        parts.append(diagnostics_section(d, ctx))
    rows: list[tuple] = []
    if sec.get("checks"):
        text, rows = verdicts_section(sec, ctx, doc)
        parts.append(text)
    if sec.get("include"):
        path = plan_path(plan, sec["include"])
        parts.append(
            path.read_text(encoding="utf-8").strip() + "\n"
            if path.is_file()
            else f"(`{sec['include']}` does not exist yet.)\n"
        )
    return "\n".join(parts), rows


def render(plan: dict, planner: Planner, refs: dict, docs_dir: Path, cmd: str, quick: bool, failures, skipped, start):
    """Write every document of the plan into `docs_dir`; returns the verdict rows of every check."""
    all_jobs = {sec["id"]: planner.section_jobs(sec) for sec in plan["sections"]}
    sections = {sec["id"]: sec for sec in plan["sections"]}
    ctx = verdict_context(plan, planner)
    written: set[Path] = set()
    verdict_rows = []
    for d in plan["documents"]:
        doc = Doc(docs_dir / d["file"], written)
        parts = [
            f"# {d['title']}\n",
            ("**QUICK SMOKE RUN: tiny data, 1 epoch; these numbers mean nothing.**\n\n" if quick else "")
            + f"Generated by `{cmd}` from the plan `{plan['_file']}` (sections "
            + ", ".join(f"`{s}`" for s in d["sections"])
            + f"); do not edit by hand. Every number below is read from the run folders under `{planner.out}/` "
            "except tables marked *published*. Protocol: model selection on the validation split only; "
            "mean ± sample std over seeds 1111, 1112, ...; the test split is evaluated once with the selected "
            f"weights. CSVs and figures: `{os.path.relpath(doc.figdir, doc.path.parent)}/`.\n",
        ]
        if d.get("intro"):
            parts.append(d["intro"].strip() + "\n")
        parts.append(f"Versions: {versions()}\n")
        doc_jobs = {}
        for n, sid in enumerate(d["sections"], 1):
            text, rows = section_text(n, sections[sid], plan, planner, all_jobs[sid], ctx, refs, doc, skipped)
            parts.append(text)
            verdict_rows += rows
            doc_jobs[sid] = all_jobs[sid]
        if d.get("provenance"):
            parts.append(collapse_section(all_jobs))
            parts.append(provenance_section(all_jobs))
            if failures:
                parts.append("## Failed runs in the last invocation\n\n" + "\n".join(f"- {f}" for f in failures) + "\n")
        parts.append(training_time_line(doc_jobs, start))
        write_text(doc.path, "\n".join(parts))
        print(f"wrote {doc.path}")
    Doc(docs_dir / "x", written).prune()
    return verdict_rows


def training_time_line(jobs: dict[str, list[Job]], start: float) -> str:
    """The recorded training time of every seed the document reads (reused seeds make this invocation's
    wall time say little about the cost of regenerating it)."""
    seconds = 0.0
    for job in _train_jobs_once(jobs):
        for path in finished(job.folder):
            if int(path.parent.name[5:]) in job.cfg.seeds:
                seconds += json.loads(path.read_text(encoding="utf-8")).get("train_seconds", 0.0)
    return (
        f"\nTraining time of every seed above, as recorded: {seconds / 3600:.1f} h on one thread each; this "
        f"invocation took {(time.time() - start) / 60:.1f} min (finished seeds are reused).\n"
    )


def _train_jobs_once(all_jobs: dict[str, list[Job]]):
    """Each training job's run folder once (a group read by two sections, like the shortcut study's
    clean runs, has one job per section)."""
    seen = set()
    for job in (j for jobs in all_jobs.values() for j in jobs if j.kind == "train"):
        if job.folder not in seen:
            seen.add(job.folder)
            yield job


def collapse_section(all_jobs: dict[str, list[Job]]) -> str:
    """Seeds whose selected model predicts (nearly) one value for a whole split, or does no better
    than a constant: the means above include them, and such a seed's MAE can look merely mediocre."""
    rows, unknown = [], 0
    for job in _train_jobs_once(all_jobs):
        for path in finished(job.folder):
            record = json.loads(path.read_text(encoding="utf-8"))
            constant, no_gain = record.get("constant_predictions"), record.get("no_better_than_constant")
            if constant is None or no_gain is None:
                unknown += 1
            elif constant or no_gain:
                rows.append(
                    f"| {job.label} | {path.parent.name} | {', '.join(constant) or '-'} | {', '.join(no_gain) or '-'} |"
                )
    text = (
        "## Collapsed seeds\n\nA seed has collapsed when its selected model gives (nearly) the same prediction "
        "for every sample of a split whose labels vary (regression: prediction std under 1 % of the label std; "
        "classification: one class for every sample), or when its error on a split is above "
        f"{100 * NO_GAIN_MARGIN:.0f} % of the error of "
        "the best constant predictor fitted on the training labels (mean or median; majority class). "
    )
    if unknown:
        text += f"{unknown} seed(s) were trained before this was recorded and are not checked. "
    if not rows:
        return text + "No checked seed has collapsed.\n"
    return (
        text + f"{len(rows)} seed(s) have, and the means above include them:\n\n| run | seed | constant on "
        "| no better than a constant on |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def provenance_section(all_jobs: dict[str, list[Job]]) -> str:
    """Run folders holding seeds that were trained by other code than this checkout's (run reuse
    goes by config, so after a model change such seeds would otherwise pass unnoticed)."""
    stale: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []  # (run, seeds, files that differ)
    vouched = 0
    for job in _train_jobs_once(all_jobs):
        code = run_code(job.cfg)  # cheap: the fingerprint of each set of files is computed once
        keys = vouched_codes(job.folder, code)
        vouched += (
            sum(
                isinstance(c := json.loads(m.read_text(encoding="utf-8")).get("code"), dict) and code_key(c) in keys
                for m in finished(job.folder)
            )
            if keys
            else 0
        )
        by_files: dict[tuple[str, ...], list[str]] = {}
        for seed, changed in stale_seeds(job.folder, code).items():
            by_files.setdefault(tuple(changed), []).append(seed)
        stale += [(job.label, tuple(sorted(seeds)), changed) for changed, seeds in by_files.items()]
    # After a change of shared code (a package restructure) every row would repeat the same long list
    # of files: name those once, and group the runs that differ in nothing else.
    common: set[str] = set.intersection(*(set(f) for _, _, f in stale)) if len(stale) > 1 else set()
    groups: dict[tuple, list[str]] = {}
    for label, seed_names, files in stale:
        groups.setdefault((seed_names, tuple(f for f in files if f not in common)), []).append(label)
    rows = [
        f"| {', '.join(labels)} | {', '.join(seeds)} | {', '.join(rest) or 'only those above'} |"
        for (seeds, rest), labels in groups.items()
    ]
    head = (
        "## Provenance\n\nEvery finished seed records a hash of each source file that trained it "
        "(`sentangle.runs.provenance.code_fingerprint`: the model's module, the training path and the data "
        "loading, with every file of the package they import). "
    )
    if vouched:
        head += (
            f"{vouched} seed(s) trained by earlier code count as this checkout's: one seed of their code, trained "
            "again by this checkout (`--replay-stale`), repeated its metrics bit for bit (each run folder's "
            "replays.json). "
        )
    if not rows:
        return head + "Every seed above was trained by this checkout's code.\n"
    shared = (
        f"For every one of them these files differ: {', '.join(sorted(common))}; the last column names the "
        "other files. "
        if common
        else ""
    )
    return (
        head + f"{sum(len(s) for _, s, _ in stale)} seed(s) in {len(stale)} run folder(s) were trained by other "
        f"code; the {len(rows)} row(s) below name them and the files that differ. {shared}`git log` those files to "
        "judge; `python benchmarks/results.py --replay-stale` checks whether the change matters to them, "
        "`--retrain-stale` trains them all again.\n\n| run | seeds | files that differ |\n|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    ap.add_argument("--plan-file", default=str(DEFAULT_PLAN), help=f"the plan (default {DEFAULT_PLAN})")
    ap.add_argument("--data-root", default=None)
    ap.add_argument(
        "--out",
        default=None,
        help="run folders and their records (default results, where git tracks the records; --quick: "
        "runs/results-quick)",
    )
    ap.add_argument(
        "--docs", default=None, help=f"folder of the documents (default {DEFAULT_DOCS}; --quick: <out>/docs)"
    )
    ap.add_argument("--seeds", type=int, default=5, help="at most this many of the seeds 1111..1115 per run")
    ap.add_argument("--only", nargs="+", default=None, metavar="SECTION")
    ap.add_argument("--skip", nargs="+", default=[], metavar="GROUP")
    ap.add_argument(
        "--retrain-stale",
        action="store_true",
        help="train again the finished seeds that other code trained (those the provenance section lists)",
    )
    ap.add_argument(
        "--replay-stale",
        action="store_true",
        help="per code version that trained stale seeds, train one seed again; identical metrics keep the "
        "others (recorded in the run folder's replays.json), different metrics retrain them",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="train this many run folders at a time (processes, one thread each; e.g. the number of cores)",
    )
    ap.add_argument("--plan", action="store_true", help="print the runs and what is finished; train nothing")
    ap.add_argument(
        "--write-records",
        action="store_true",
        help="write the record of every run folder of the plan (<folder>.json, what git tracks); train nothing",
    )
    ap.add_argument("--quick", action="store_true")
    return ap


def main(argv: list[str] | None = None, prog: str = "sentangle results") -> int:
    """Exit code 0, 1 when a run failed; a plan that cannot be used raises PlanError (a ConfigError)."""
    args = build_parser(prog).parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = time.time()
    plan = read_plan(Path(args.plan_file))
    refs_file = plan_path(plan, plan.get("references", DEFAULT_REFERENCES))
    try:
        refs = yaml.safe_load(refs_file.read_text(encoding="utf-8")) or {} if refs_file.is_file() else {}
    except yaml.YAMLError as e:
        raise PlanError(f"references file {refs_file}: cannot be read as YAML ({e})") from None
    refs["_file"] = refs_file.name
    out = args.out or ("runs/results-quick" if args.quick else DEFAULT_OUT)
    docs_dir = Path(args.docs or (Path(out) / "docs" if args.quick else DEFAULT_DOCS))
    if args.quick and docs_dir.resolve() == DEFAULT_DOCS.resolve():
        raise PlanError(f"--quick never writes into {DEFAULT_DOCS}/; give another --docs")
    ids = [s["id"] for s in plan["sections"]]
    unknown = sorted(set(args.only or []) - set(ids))
    if unknown:
        raise PlanError(f"--only: unknown section(s) {unknown}; sections: {', '.join(ids)}")
    planner = Planner(plan, out, args.seeds, args.quick, args.data_root)
    every_job = unpack_plan(plan, planner, ids)  # the documents read every section's folders
    if args.write_records:
        write_records(every_job)
        return 0
    jobs, skipped = build_jobs(plan, planner, args.only or ids, "plan" if args.plan else "run")
    jobs = skip_groups(jobs, args.skip, plan["_groups"])
    if args.plan:
        print_plan(jobs, skipped)
        return 0
    # (a search still running decides its run's config when it ends: recipes/tune.py)
    conflicts = [str(j.folder) for j in jobs if j.kind == "train" and "search" not in j.options and status(j.cfg)[1]]
    if conflicts:
        raise PlanError(
            "these run folders hold runs with other settings (delete them and their records "
            "<folder>.json, or use another --out): " + ", ".join(conflicts)
        )
    try:
        if args.retrain_stale:
            forget_stale_seeds(jobs)
        if args.replay_stale:
            start_replays(jobs)
        retrain_for_robust(jobs)
        failures = train_all(jobs, out, max(args.workers, 1))
        if finish_replays(jobs):
            failures += train_all(jobs, out, max(args.workers, 1))
    finally:  # what finished before an interruption is recorded too
        write_records(jobs)
    all_skipped = {s["id"]: why for s in plan["sections"] if (why := missing_data(s, planner.data_root))}
    cmd = prog + (" --quick" if args.quick else "")
    rows = render(plan, planner, refs, docs_dir, cmd, args.quick, failures, {**all_skipped, **skipped}, start)
    for _, text, s, clear, detail in rows:
        print(f"[{s}] {text}\n         {detail}; clear of seed noise: {clear}")
    return 1 if failures else 0
