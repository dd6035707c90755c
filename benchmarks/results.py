"""Regenerate docs/RESULTS.md from scratch: every run of benchmarks/results_plan.yaml, trained or reused.

    python benchmarks/results.py [--data-root DIR] [--out results] [--seeds 5] [--only SECTION ...]
                                 [--plan] [--quick] [--doc docs/RESULTS.md]

The plan (results_plan.yaml) lists sections; each trains groups of models on one dataset setting
through `runs.runner.run` (what `sentangle.train` calls), one run folder per model under
`<out>/<group>/<model>/`, plus robustness evaluations (`recipes.robust.robust`) and the packaged
ablations (each variant a run folder under `<out>/ablations/<name>/<variant>/`, as `sentangle ablate`).
Finished seeds are reused, so an interrupted run resumes. Git tracks one record per run folder,
`<folder>.json` beside it (`runs.record`), not the folders: a run first unpacks the records into run
folders (a fresh clone has none), and writes the records again after training. The doc is then
written from the run folders alone (tables of recipes.compare / recipes.ablate / recipes.robust,
CSVs and PNGs under docs/results/); the only typed-in numbers are the published references of
results_references.yaml.

--plan     print every run (section, model, dataset, overrides, seeds finished) and train nothing
--write-records  write the record of every run folder of the plan and train nothing
--only     train only these sections (the doc still shows whatever the other sections have finished)
--workers  train N run folders at a time, each in its own process with one thread (N = cores)
--retrain-stale  train again the seeds of the plan trained by code other than this checkout's
--replay-stale   cheaper: train one such seed per code version again; when its metrics repeat bit for
           bit the change did not touch that run and its other seeds stand (run folder's replays.json)
--skip     train none of these groups (e.g. the CPU-hungry mosi_utt-finetune), nor the robustness
           evaluations that read them; a later run without --skip trains them
--quick    smoke test of this script: tiny synthetic data, 1 seed, 1 epoch, real-data sections only
           where the data exist; writes <out>/RESULTS.md, never docs/RESULTS.md
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import itertools
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml
from tqdm import tqdm

from sentangle.config import RunConfig, build_config, make_config, parse_seeds, read_yaml, yaml_value
from sentangle.core.errors import ConfigError, DataError
from sentangle.core.io import exit_with_parent, versions, write_text
from sentangle.core.registry import DATASETS, MODELS, check_options
from sentangle.data.named import READER_ARGUMENTS, find_file
from sentangle.models import list_models
from sentangle.models.base import check_model_options
from sentangle.recipes.ablate import ablation_csv, ablation_table, load_ablation
from sentangle.recipes.compare import csv_table, markdown_table, seed_facts
from sentangle.recipes.robust import robust, robust_table
from sentangle.recipes.verdicts import VerdictContext, check_spec, judge, spec_groups
from sentangle.report import plots
from sentangle.report.tables import LABELS, RAW_SCALE, fmt
from sentangle.runs.folder import comparable_config, finished, resolved_config
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
from sentangle.runs.record import load_record, record_path, save_record
from sentangle.runs.runner import run, summarize
from sentangle.runs.sanity import NO_GAIN_MARGIN

HERE = Path(__file__).resolve().parent
PLAN_FILE = HERE / "results_plan.yaml"
REFS_FILE = HERE / "results_references.yaml"
DEFAULT_DOC = Path("docs/RESULTS.md")
DEFAULT_OUT = "results"  # git tracks one record per run folder (<folder>.json), see .gitignore
SECTION_KEYS = {
    "id",
    "title",
    "note",
    "needs",
    "references",
    "groups",
    "analysis",
    "oracle",
    "robust",
    "ablations",
    "ablation_note",
    "checks",
    "include",
}
GROUP_KEYS = {"id", "title", "dataset", "models", "overrides", "model_options", "model_overrides", "seeds", "note"}
LOAD_OPTIONS = ("root", "modalities", "normalize", "holdout_valid")  # load_dataset's own, not the reader's


class PlanError(ValueError):
    pass


# ---- the plan -------------------------------------------------------------------------------------


def read_plan(path: Path) -> dict:
    """The plan YAML, checked: errors name the file, the entry and what was expected."""
    try:
        plan = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise PlanError(f"plan file {path}: cannot be read as YAML ({e})") from None
    unknown = set(plan) - {"seeds", "overrides", "proposed", "quick", "sections"}
    if unknown:
        raise PlanError(f"plan file {path}: unknown top-level keys {sorted(unknown)}")
    if not isinstance(plan.get("sections"), list) or not plan["sections"]:
        raise PlanError(f"plan file {path}: 'sections' must be a non-empty list")
    ids, groups = set(), {}
    for i, sec in enumerate(plan["sections"]):
        where = f"plan file {path}: sections[{i}]"
        if not isinstance(sec, dict) or not isinstance(sec.get("id"), str):
            raise PlanError(f"{where}: expected a mapping with an 'id'")
        bad = set(sec) - SECTION_KEYS
        if bad:
            raise PlanError(f"{where} ({sec['id']}): unknown keys {sorted(bad)}; expected {sorted(SECTION_KEYS)}")
        if sec["id"] in ids:
            raise PlanError(f"{where}: section id {sec['id']!r} given twice")
        ids.add(sec["id"])
        for j, g in enumerate(sec.get("groups") or []):
            gw = f"{where} ({sec['id']}).groups[{j}]"
            if not isinstance(g, dict) or not isinstance(g.get("id"), str) or "dataset" not in g or "models" not in g:
                raise PlanError(f"{gw}: needs 'id', 'dataset' and 'models'")
            bad = set(g) - GROUP_KEYS
            if bad:
                raise PlanError(f"{gw} ({g['id']}): unknown keys {sorted(bad)}; expected {sorted(GROUP_KEYS)}")
            if g["id"] in groups:
                raise PlanError(f"{gw}: group id {g['id']!r} given twice")
            groups[g["id"]] = g
    for sec in plan["sections"]:
        refs = [(sec.get("robust") or {}).get("group"), (sec.get("analysis") or {}).get("clean_group")]
        for k, c in enumerate(sec.get("checks") or []):
            check_spec(c, f"plan file {path}: section {sec['id']!r}, checks[{k}]")
            refs += spec_groups(c)
        missing = sorted({r for r in refs if r and r not in groups})
        if missing:
            raise PlanError(
                f"plan file {path}: section {sec['id']!r} refers to unknown group(s) {missing}; "
                f"groups: {sorted(groups)}"
            )
    plan["_groups"] = groups
    plan["_file"] = str(path)
    return plan


def _dotted(mapping: dict | None) -> list[str]:
    return [f"{k}={yaml_value(v)}" for k, v in (mapping or {}).items()]


@dataclass
class Job:
    section: str
    kind: str  # train | robust
    label: str
    cfg: RunConfig | None = None
    shown: list[str] = field(default_factory=list)  # the overrides the plan adds, for --plan
    folders: list[Path] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    dataset: str = ""  # as the plan gives it, for --plan

    @property
    def folder(self) -> Path:
        return Path(self.cfg.out) / self.cfg.run_name


class Planner:
    """Turns the plan into run configs; knows the output folder, the seeds and --quick."""

    def __init__(self, plan: dict, out: str, seeds: int, quick: bool, data_root: str | None):
        self.plan, self.out, self.quick, self.data_root = plan, out, quick, data_root
        self.q = plan.get("quick") or {}
        self.max_seeds = int(self.q.get("seeds", 1)) if quick else seeds
        self._text_capable = None

    def seeds(self, wanted=None) -> list[int]:
        return parse_seeds(min(int(wanted or self.plan.get("seeds", 5)), self.max_seeds))

    def models(self, spec, where: str) -> list[str]:
        if spec == "all":
            return list_models()
        if spec == "text_capable":
            return self.text_capable()
        if not isinstance(spec, list):
            raise PlanError(f"{where}: models must be a list, 'all' or 'text_capable', got {spec!r}")
        list_models()
        for m in spec:
            MODELS.get(m)  # an unknown name fails here, naming the registered ones
        return list(spec)

    def text_capable(self) -> list[str]:
        """Every model that builds and runs forward on a text-only batch (tried, not assumed)."""
        if self._text_capable is None:
            from sentangle.data.synthetic import make_synthetic
            from sentangle.runs.runner import model_for

            ds = make_synthetic(scale=0.01, lengths=4, dims=8)
            ds.select_modalities(["text"])
            batch = next(iter(ds.batches("train", 4)))
            ok = []
            for m in list_models():
                try:
                    model_for(build_config(m, "synthetic"), ds)(batch)
                    ok.append(m)
                except Exception:
                    pass
            self._text_capable = ok
        return self._text_capable

    def extra(self, dataset_name: str) -> list[str]:
        """Overrides every run gets after its own: the plan's, then --quick's."""
        over = _dotted(self.plan.get("overrides"))
        if self.quick:
            over += _dotted(self.q.get("overrides"))
            if dataset_name == "synthetic":
                over += _dotted(self.q.get("synthetic"))
        return over

    def root_for(self, dataset_name: str) -> str | None:
        return None if dataset_name == "synthetic" else self.data_root

    def group_jobs(self, section: str, group: dict, only_models=None) -> list[Job]:
        where = f"{self.plan['_file']}: group {group['id']!r}"
        ds = group["dataset"]
        ds_name = ds if isinstance(ds, str) else ds.get("name")
        models = self.models(group["models"], where)
        for opt in ("model_options", "model_overrides"):
            unknown = sorted(set(group.get(opt) or {}) - set(models))
            if unknown:
                raise PlanError(f"{where}: {opt} for model(s) {unknown} that the group does not train")
        jobs = []
        for m in models if only_models is None else [m for m in models if m in only_models]:
            shown = _dotted(group.get("overrides")) + _dotted((group.get("model_overrides") or {}).get(m))
            opts = (group.get("model_options") or {}).get(m)
            cfg = make_config(
                {"name": m, **opts} if opts else m,
                ds,
                seeds=self.seeds(group.get("seeds")),
                out=f"{self.out}/{group['id']}",
                name=m,
                data_root=self.root_for(ds_name),
                overrides=shown + self.extra(ds_name),
            )
            check_model_options(cfg.model["name"], cfg.model, f"{where}, model {m!r}")
            _check_dataset_options(cfg, f"{where}, model {m!r}")
            jobs.append(
                Job(
                    section,
                    "train",
                    f"{group['id']}/{m}",
                    cfg,
                    shown + [f"model.{k}={yaml_value(v)}" for k, v in (opts or {}).items()],
                    dataset=yaml_value(ds),
                )
            )
        return jobs

    def ablation(self, entry: dict) -> tuple[dict, dict[str, RunConfig]]:
        """The spec and one config per variant, exactly as recipes.ablate.ablate builds them."""
        spec = load_ablation(entry["file"])
        ds = spec["dataset"]
        ds_name = ds if isinstance(ds, str) else (ds or {}).get("name", "synthetic")
        cfgs = {}
        for v in spec["variants"]:
            cfg = make_config(
                spec["model"],
                spec["dataset"],
                spec["config"],
                self.seeds(entry.get("seeds", spec["seeds"])),
                f"{self.out}/ablations/{spec['name']}",
                v["name"],
                self.root_for(ds_name),
                spec["overrides"] + v["overrides"] + self.extra(ds_name),
            )
            check_model_options(cfg.model["name"], cfg.model, f"{spec['file']}: variant {v['name']!r}")
            cfgs[v["name"]] = cfg
        return spec, cfgs

    def robust_options(self, opts: dict) -> dict:
        o = {
            "seed": int(opts.get("seed", 0)),
            "noise_levels": tuple(opts.get("noise_levels", (0.25, 0.5, 1.0, 2.0))),
            "drop_rates": tuple(opts.get("drop_rates", (0.1, 0.3, 0.5, 0.7))),
        }
        if self.quick:  # fewer levels; an empty list in the plan stays empty
            o["noise_levels"] = tuple(self.q.get("noise_levels", ())) if o["noise_levels"] else ()
            o["drop_rates"] = tuple(self.q.get("drop_rates", ())) if o["drop_rates"] else ()
        return o

    def section_jobs(self, sec: dict) -> list[Job]:
        groups = self.plan["_groups"]
        jobs = [j for g in sec.get("groups") or [] for j in self.group_jobs(sec["id"], g)]
        analysis = sec.get("analysis") or {}
        if analysis.get("kind") == "shortcut":
            jobs += self.group_jobs(sec["id"], groups[analysis["clean_group"]])  # the "without vision" runs
            target = [j for j in jobs if j.label.startswith(sec["groups"][0]["id"] + "/")]
            jobs.append(
                Job(
                    sec["id"],
                    "robust",
                    f"robust {sec['groups'][0]['id']}",
                    folders=[j.folder for j in target],
                    options=self.robust_options(analysis.get("robust") or {}),
                )
            )
        if sec.get("robust"):
            r = sec["robust"]
            deps = self.group_jobs(sec["id"], groups[r["group"]], only_models=r.get("models"))
            jobs += deps
            jobs.append(
                Job(
                    sec["id"],
                    "robust",
                    f"robust {r['group']}",
                    folders=[j.folder for j in deps],
                    options=self.robust_options(r),
                )
            )
        for entry in sec.get("ablations") or []:
            spec, cfgs = self.ablation(entry)
            jobs += [
                Job(
                    sec["id"],
                    "train",
                    f"ablations/{spec['name']}/{v}",
                    c,
                    [f"(from {Path(spec['file']).name})"]
                    + next(x["overrides"] for x in spec["variants"] if x["name"] == v),
                    dataset=yaml_value(spec["dataset"]),
                )
                for v, c in cfgs.items()
            ]
        return jobs


def _check_dataset_options(cfg: RunConfig, where: str) -> None:
    name = cfg.dataset["name"]
    kwargs = {k: v for k, v in cfg.dataset.items() if k != "name" and k not in LOAD_OPTIONS}
    try:
        check_options(DATASETS.get(name), kwargs, f"{where}: dataset {name!r}", skip=READER_ARGUMENTS)
    except KeyError as e:
        raise PlanError(f"{where}: {e}") from None


def missing_data(sec: dict, root: str | None) -> str | None:
    for rel in sec.get("needs") or []:
        try:
            find_file(root, rel, sec["id"])
        except Exception as e:
            return str(e)
    return None


# ---- run folders ---------------------------------------------------------------------------------


def status(cfg: RunConfig) -> tuple[list[int], bool]:
    """(finished seeds of the plan, whether the folder holds another config: run() would refuse it)."""
    folder = Path(cfg.out) / cfg.run_name
    have = set(_finished_seeds(folder))
    done = [s for s in cfg.seeds if s in have]
    stored = folder / "config.yaml"
    conflict = False
    if done and stored.is_file():
        try:
            conflict = comparable_config(read_yaml(stored)) != comparable_config(resolved_config(cfg).to_dict())
        except (ConfigError, TypeError, KeyError):
            conflict = True
    return done, conflict


def load_result(cfg: RunConfig) -> dict | None:
    """The finished seeds of the plan's seeds, summarised (None when none finished or the config differs)."""
    done, conflict = status(cfg)
    if not done or conflict:
        return None
    folder = Path(cfg.out) / cfg.run_name
    per_seed = {}
    for s in done:
        try:
            per_seed[s] = json.loads((folder / f"seed_{s}" / "metrics.json").read_text(encoding="utf-8"))["metrics"]
        except (OSError, ValueError, KeyError):
            continue  # unreadable: run() retrains it
    if not per_seed:
        return None
    first = next(iter(per_seed.values()))
    task = "regression" if "mae" in next(iter(first.values())) else "classification"
    diagnostics = None
    summary = folder / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text(encoding="utf-8"))
        if sorted(int(x) for x in s.get("seeds", [])) == sorted(per_seed):
            diagnostics = s.get("diagnostics")
    return {
        "folder": str(folder),
        "model": cfg.model["name"],
        "task": task,
        "splits": summarize(per_seed),
        "per_seed": per_seed,
        "facts": seed_facts(str(folder), per_seed),
        "diagnostics": diagnostics,
        "planned_seeds": len(cfg.seeds),
    }


def _train_folders(jobs: list[Job]) -> list[Path]:
    return list(dict.fromkeys(j.folder for j in jobs if j.kind == "train"))


def unpack_records(jobs: list[Job]) -> None:
    """Run folders from their records (`runs.record.load_record`): a fresh clone has only the records,
    and a pull may bring seeds trained elsewhere."""
    for folder in _train_folders(jobs):
        seeds = load_record(folder)
        if seeds is not None:
            tqdm.write(
                f"{folder}: unpacked from {record_path(folder)}" + (f", seeds {', '.join(seeds)}" if seeds else "")
            )


def write_records(jobs: list[Job]) -> None:
    """The record of every run folder with a finished seed, beside the folder (written when it changed)."""
    for folder in _train_folders(jobs):
        if finished(folder) and save_record(folder):
            tqdm.write(f"{folder}: record {record_path(folder)} written")


def _finished_seeds(folder: Path) -> list[int]:
    return [int(p.parent.name[5:]) for p in finished(folder)]


def robust_fresh(folder: Path, opts: dict) -> bool:
    """robust.json covers every finished seed with these options (checked against the seeds'
    metrics.json, not their checkpoints: the results store keeps no checkpoints)."""
    path = folder / "robust.json"
    if not path.is_file():
        return False
    r = json.loads(path.read_text(encoding="utf-8"))
    seeds = _finished_seeds(folder)
    levels = lambda kind: sorted(c["level"] for c in r["conditions"] if c["kind"] == kind)  # noqa: E731
    noise = sorted({c["level"] for c in r["conditions"] if c["kind"] == "noise"})
    return (
        r.get("seeds") == seeds
        and r.get("perturbation_seed") == opts["seed"]
        and noise == sorted(opts["noise_levels"])
        and levels("frame_drop") in ([], sorted(opts["drop_rates"]))
    )


def train_all(jobs: list[Job], out: str, workers: int = 1) -> list[str]:
    """Every job under one overall bar; returns the failures. With workers > 1 the training jobs run
    that many at a time in separate processes (a run folder is never shared: jobs are one per
    folder), and each robustness job runs here as soon as the runs it reads are trained, rather than
    after hours of unrelated training."""
    failures = []
    bar = tqdm(total=len(jobs), desc="results", unit="run", position=0, dynamic_ncols=True)

    def attempt(job: Job, fn) -> None:
        try:
            fn()
        except Exception as e:
            failures.append(f"{job.label}: {type(e).__name__}: {e}")
            tqdm.write(f"FAILED {job.label}:\n{traceback.format_exc()}")

    def pending(job: Job) -> bool:
        done, _ = status(job.cfg)
        if len(done) < len(job.cfg.seeds):
            tqdm.write(f"training {job.label}: seeds {job.cfg.seeds}, {len(done)} finished")
            return True
        return False

    def robust_job(job: Job) -> None:
        # only the folders whose robust.json is out of date: the others may have no checkpoints here
        stale = [f for f in job.folders if _finished_seeds(f) and not robust_fresh(f, job.options)]
        if stale:
            tqdm.write(f"{job.label}: {len(stale)} run folders")
            robust(stale, out=Path(out) / "robust" / job.label.split()[-1], plots=False, **job.options)

    if workers > 1:
        import concurrent.futures as cf
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=exit_with_parent, initargs=(os.getpid(),)
        ) as pool:
            # `run` itself (importable in the worker), without bars; threads come from the plan (1).
            quiet = lambda cfg: dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, progress=False))  # noqa: E731
            futures = {pool.submit(run, quiet(j.cfg)): j for j in jobs if j.kind == "train" and pending(j)}
            training = {j.folder: f for f, j in futures.items()}
            robust_left = [j for j in jobs if j.kind == "robust"]
            bar.update(sum(j.kind == "train" for j in jobs) - len(futures))

            def ready(job: Job) -> bool:
                return all(training[d].done() for d in job.folders if d in training)

            # None first: robustness jobs whose runs need no training start at once
            for f in itertools.chain([None], cf.as_completed(futures)):
                if f is not None:
                    bar.set_postfix_str(futures[f].label)
                    attempt(futures[f], f.result)
                    bar.update(1)
                for job in [j for j in robust_left if ready(j)]:
                    robust_left.remove(job)
                    bar.set_postfix_str(job.label)
                    attempt(job, lambda: robust_job(job))
                    bar.update(1)
        jobs = robust_left
    for job in jobs:
        bar.set_postfix_str(job.label)
        attempt(job, (lambda: pending(job) and run(job.cfg)) if job.kind == "train" else (lambda: robust_job(job)))
        bar.update(1)
    bar.close()
    return failures


# ---- Markdown ------------------------------------------------------------------------------------


class Doc:
    """Collects the Markdown and the files under docs/results/ (removing stale ones at the end)."""

    def __init__(self, path: Path):
        self.path = path
        self.figdir = path.parent / "results"
        self.written: set[Path] = set()

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
    common = _dotted(group.get("overrides"))
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


def group_section(group: dict, jobs: list[Job], doc: Doc, oracle: bool = False) -> tuple[str, dict]:
    results = {j.label.split("/")[-1]: load_result(j.cfg) for j in jobs}
    done = {m: r for m, r in results.items() if r}
    parts = [f"### {group.get('title') or group['id']}\n", settings_line(group, jobs) + "\n"]
    if group.get("note"):
        parts.append(group["note"].strip() + "\n")
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
        csv_link = doc.file(f"{group['id']}.csv", csv_table(done, task, facts))
        metric = main_metric(task)
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
        png = doc.figure(f"{group['id']}.png", fig)
        parts.append(f"CSV: [{csv_link}]({csv_link})\n\n![{group['id']}: test {metric}]({png})\n")
        if oracle:
            parts.append(oracle_section(done))
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


def references_section(key: str, refs: dict) -> str:
    if key not in refs:
        return ""
    r = refs[key]
    order = [
        m
        for m in ("mae", "corr", "acc7", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "accuracy", "f1_macro")
        if any(m in row for row in r["rows"])
    ]
    lines = [
        f"#### {r['title']} (published; typed in from {REFS_FILE.name}, not run here)\n",
        "| model | features | source | " + " | ".join(LABELS.get(m, m) for m in order) + " |",
        "|---|---|---|" + "---:|" * len(order),
    ]
    for row in r["rows"]:
        cells = [("-" if m not in row else f"{row[m]:.3f}" if m in RAW_SCALE else f"{row[m]:.2f}") for m in order]
        lines.append(f"| {row['model']} | {row['features']} | {row['source']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\n" + r["note"].strip() if r.get("note") else "") + "\n"


def oracle_section(results: dict) -> str:
    from sentangle.data.synthetic import oracle_table

    for r in results.values():
        if r:
            info = json.loads((Path(r["folder"]) / "dataset.json").read_text(encoding="utf-8"))
            if "oracle" in (info.get("info") or {}):
                return (
                    "Reference predictors on the same test split (from the true factors; read from the run "
                    "folder's dataset.json):\n\n"
                    + oracle_table(SimpleNamespace(name=info["name"], info=info["info"]))
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
    series = {"train": {}, "valid": {}, "test": {}, "test, no vision (trained without)": {}}
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


def robustness_section(sec: dict, jobs: list[Job], doc: Doc) -> str:
    folders = next(j.folders for j in jobs if j.kind == "robust")
    res = read_robust(folders)
    if not res:
        return "No robustness results yet (`robust.json` in the run folders).\n"
    curves = plots.robust_curves(res, doc.figdir / "robust")
    for p in curves:
        doc.written.add(Path(p).resolve())
    links = "\n".join(f"![{Path(p).stem}]({os.path.relpath(p, doc.path.parent)})" for p in curves)
    opts = next(j.options for j in jobs if j.kind == "robust")
    return (
        f"Runs: {', '.join(f'`{f.parent.name}/{f.name}`' for f in folders)}; noise levels {list(opts['noise_levels'])}, "
        f"frame-drop rates {list(opts['drop_rates'])}.\n\n" + robust_table(res) + "\n\n" + links + "\n"
    )


def ablation_results(planner: Planner, entry: dict) -> tuple[dict, dict, dict]:
    spec, cfgs = planner.ablation(entry)
    return spec, cfgs, {v: load_result(c) for v, c in cfgs.items()}


def ablations_section(sec: dict, planner: Planner, doc: Doc) -> tuple[str, dict]:
    parts, all_res = ["### Ablations\n"], {}
    if sec.get("ablation_note"):
        parts.append(sec["ablation_note"].strip() + "\n")
    for entry in sec.get("ablations") or []:
        spec, cfgs, res = ablation_results(planner, entry)
        done = {v: r for v, r in res.items() if r}
        all_res[spec["name"]] = (spec, done)
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
        link = doc.file(f"ablation-{spec['name']}.csv", ablation_csv(done, spec["reference"], task, switches))
        missing = [v for v in res if not res[v]]
        parts.append(f"CSV: [{link}]({link})" + (f". Not finished yet: {', '.join(missing)}" if missing else "") + "\n")
    return "\n".join(parts), all_res


# ---- main ----------------------------------------------------------------------------------------


def build_jobs(plan: dict, planner: Planner, selected: list[str], mode: str) -> tuple[list[Job], dict[str, str]]:
    jobs, skipped, seen = [], {}, set()
    for sec in plan["sections"]:
        if sec["id"] not in selected:
            continue
        missing = missing_data(sec, planner.data_root)
        if missing and mode != "plan":
            if planner.quick:
                skipped[sec["id"]] = missing
                continue
            raise PlanError(f"section {sec['id']!r}: {missing}")
        if missing:
            skipped[sec["id"]] = missing
        for j in planner.section_jobs(sec):
            key = (j.kind, str(j.folder) if j.kind == "train" else j.label)
            if key not in seen:
                seen.add(key)
                jobs.append(j)
    return jobs, skipped


def forget_stale_seeds(jobs: list[Job]) -> None:
    """Unmark the finished seeds that other code trained (their metrics.json goes; the rest of the
    seed folder is overwritten when the seed trains again), so that this run retrains them."""
    for job in (j for j in jobs if j.kind == "train"):
        for seed in stale_seeds(job.folder, code_fingerprint(MODELS.get(job.cfg.model["name"])), job.cfg.seeds):
            (job.folder / seed / "metrics.json").unlink()
            tqdm.write(f"{job.label}: {seed} was trained by other code; training it again")


def robust_retrains(job: Job) -> list[Path]:
    """metrics.json of the finished seeds that `job` (a robustness evaluation) must train again before
    it can run: those without a checkpoint on this machine, in the folders whose robust.json is out of
    date (a robustness evaluation reloads every seed's checkpoint, and the results store keeps none)."""
    return [
        m
        for f in job.folders
        if not robust_fresh(f, job.options)
        for m in finished(f)
        if not (m.parent / "checkpoint.pt").is_file()
    ]


def retrain_for_robust(jobs: list[Job]) -> None:
    """Unmark the seeds of `robust_retrains`, so that they train again (`git diff` on the store then
    shows whether their metrics repeated)."""
    for job in (j for j in jobs if j.kind == "robust"):
        for metrics in robust_retrains(job):
            metrics.unlink()
            tqdm.write(
                f"{job.label}: {metrics.parent} has no checkpoint here; training it again for the robustness evaluation"
            )


def start_replays(jobs: list[Job]) -> None:
    """--replay-stale: in each run folder, one seed per code version that trained stale seeds is
    unmarked, to be trained again by this checkout's code (`runs.provenance.start_replay`)."""
    for job in (j for j in jobs if j.kind == "train"):
        for group in replay_groups(job.folder, code_fingerprint(MODELS.get(job.cfg.model["name"])), job.cfg.seeds):
            start_replay(job.folder / group[0])
            tqdm.write(f"{job.label}: {group[0]} trains again to check the {len(group)} seed(s) of its code")


def finish_replays(jobs: list[Job]) -> bool:
    """Compare every replayed seed that has trained again with its old metrics (a replay left by an
    interrupted run included); True when some replay differed, so the seeds of its code must train."""
    again = False
    for job in (j for j in jobs if j.kind == "train"):
        for replaced in sorted(job.folder.glob(f"seed_*/{REPLACED}")):
            entry = finish_replay(replaced.parent)
            if entry is None:
                continue  # its training failed: the next run trains it and compares then
            verdict = (
                "identical metrics: the other seeds of its code count as current"
                if entry["identical"]
                else f"metrics differ (up to {entry['max_abs_diff']}): the other seeds of its code train again"
            )
            tqdm.write(f"{job.label}: replay of {entry['seed']}: {verdict}")
            again |= not entry["identical"]
    return again


def skip_groups(jobs: list[Job], skip: list[str], groups: dict) -> list[Job]:
    """The jobs without the training of the named groups and without what reads those folders."""
    unknown = sorted(set(skip) - set(groups))
    if unknown:
        raise PlanError(f"--skip: unknown group(s) {unknown}; groups: {', '.join(groups)}")
    dropped = {j.folder for j in jobs if j.kind == "train" and j.label.split("/")[0] in skip}
    return [
        j
        for j in jobs
        if not (j.kind == "train" and j.folder in dropped) and not (j.kind == "robust" and dropped & set(j.folders))
    ]


def print_plan(jobs: list[Job], skipped: dict[str, str]) -> None:
    total = finished = seeds_left = reused = 0
    for j in jobs:
        if j.kind == "robust":
            again = len(robust_retrains(j))
            seeds_left += again
            print(
                f"{j.section:<11} {j.label:<42} test-time perturbations of {len(j.folders)} run folders "
                f"(noise {list(j.options['noise_levels'])}, drop {list(j.options['drop_rates'])}), "
                f"{sum(robust_fresh(f, j.options) for f in j.folders)} up to date"
                + (f"; {again} finished seed(s) without a checkpoint here train again first" if again else "")
            )
            continue
        done, conflict = status(j.cfg)
        total += 1
        finished += len(done) == len(j.cfg.seeds)
        seeds_left += len(j.cfg.seeds) - len(done)
        ds = j.dataset
        flag = "  CONFLICT: the folder holds another config" if conflict else ""
        stale = 0 if conflict else len(stale_seeds(j.folder, code_fingerprint(MODELS.get(j.cfg.model["name"])), done))
        reused += stale
        print(
            f"{j.section:<11} {j.label:<42} [{ds}] {' '.join(j.shown) or '-'}  seeds {len(done)}/{len(j.cfg.seeds)}"
            + (f" ({stale} by other code)" if stale else "")
            + flag
        )
    for sec, why in skipped.items():
        print(f"{sec:<11} DATA MISSING: {why}")
    print(f"\n{total} runs planned, {finished} finished, {seeds_left} seeds to train")
    if reused:
        print(
            f"{reused} finished seed(s) were trained by other code than this checkout's: they are reused and "
            "listed in the provenance section (--replay-stale checks them, --retrain-stale trains them again)"
        )


def render(
    plan: dict, planner: Planner, refs: dict, doc: Doc, args, failures: list[str], skipped: dict, start: float
) -> list:
    all_jobs = {
        sec["id"]: planner.section_jobs(sec)
        for sec in plan["sections"]
        if sec.get("groups") or sec.get("robust") or sec.get("ablations")
    }
    results: dict[str, dict] = {}
    cmd = "python benchmarks/results.py" + (" --quick" if args.quick else "")
    parts = [
        "# Results\n",
        ("**QUICK SMOKE RUN: tiny data, 1 epoch; these numbers mean nothing.**\n\n" if args.quick else "")
        + f"Generated by `{cmd}` from the plan `benchmarks/{Path(plan['_file']).name}`; do not edit by hand "
        f"(the discussion comes from `docs/results_discussion.md`). Every number below is read from the run folders "
        f"under `{planner.out}/` except the tables marked *published*, typed in from "
        f"`benchmarks/{REFS_FILE.name}` (source: METRICS.md). Protocol: model selection on the validation split only; "
        f"mean ± sample std over seeds 1111, 1112, ...; the test split is evaluated once with the selected weights. "
        f"CSVs and figures: `{os.path.relpath(doc.figdir, doc.path.parent)}/`.\n",
        f"Versions: {versions()}\n",
    ]
    verdict_ctx = VerdictContext(
        results,
        proposed=plan.get("proposed", []),
        baselines=[m for m in list_models() if m not in plan.get("proposed", [])],
    )
    verdict_rows = []
    for n, sec in enumerate(plan["sections"], 1):
        parts.append(f"## {n}. {sec['title']}\n")
        if sec.get("note"):
            parts.append(sec["note"].strip() + "\n")
        if sec["id"] in skipped:
            parts.append(f"**Skipped in this run:** {skipped[sec['id']]}\n")
        jobs = all_jobs.get(sec["id"], [])
        for g in sec.get("groups") or []:
            gjobs = [j for j in jobs if j.kind == "train" and j.label.startswith(g["id"] + "/")]
            text, results[g["id"]] = group_section(g, gjobs, doc, oracle=bool(sec.get("oracle")))
            parts.append(text)
        if sec.get("references"):
            parts.append(references_section(sec["references"], refs))
        analysis = sec.get("analysis") or {}
        if analysis.get("kind") == "shortcut":
            clean = analysis["clean_group"]
            if clean not in results:
                results[clean] = {
                    j.label.split("/")[-1]: load_result(j.cfg)
                    for j in jobs
                    if j.kind == "train" and j.label.startswith(clean + "/")
                }
            rob = read_robust(next(j.folders for j in jobs if j.kind == "robust"))
            parts.append(shortcut_section(sec, results, rob, doc))
        if sec.get("robust"):
            parts.append("### Test-time robustness\n\n" + robustness_section(sec, jobs, doc))
        if sec.get("ablations"):
            text, verdict_ctx.ablations = ablations_section(sec, planner, doc)
            parts.append(text)
        if sec.get("checks"):
            for c in sec["checks"]:
                for g in spec_groups(c):
                    if g not in results:  # a group of a section further down: read it now
                        gsec = next(s for s in plan["sections"] if any(x["id"] == g for x in s.get("groups") or []))
                        results[g] = {
                            j.label.split("/")[-1]: load_result(j.cfg)
                            for j in all_jobs[gsec["id"]]
                            if j.kind == "train" and j.label.startswith(g + "/")
                        }
                status_, detail, clear = judge(c, verdict_ctx)
                verdict_rows.append((c["id"], c["text"], status_, clear, detail))
            lines = ["| check | verdict | clear of seed noise | computed from the runs |", "|---|---|---|---|"]
            lines += [f"| {t} | **{s}** | {n} | {d} |" for _, t, s, n, d in verdict_rows]
            buf = io.StringIO()
            csv.writer(buf).writerows([("id", "check", "verdict", "clear_of_seed_noise", "detail")] + verdict_rows)
            link = doc.file("verdicts.csv", buf.getvalue())
            parts.append(
                "Verdict: PASS or FAIL compares means, as each check is worded; PENDING while a run the "
                "check needs has not finished (with the seeds it needs). *Clear of seed noise*: whether the paired "
                "difference behind the verdict (same seeds; mean ± 2 standard errors) lies wholly on the "
                "verdict's side of 0; 'no' means these seeds cannot tell the two sides apart. "
                "Baselines: "
                + ", ".join(f"`{m}`" for m in verdict_ctx.baselines)
                + "; proposed: "
                + ", ".join(f"`{m}`" for m in verdict_ctx.proposed)
                + ".\n\n"
                + "\n".join(lines)
                + f"\n\nCSV: [{link}]({link})\n"
            )
        if sec.get("include"):
            path = HERE.parent / sec["include"]
            parts.append(
                path.read_text(encoding="utf-8").strip() + "\n"
                if path.is_file()
                else f"(`{sec['include']}` does not exist yet.)\n"
            )
    parts.append(collapse_section(all_jobs))
    parts.append(provenance_section(all_jobs))
    if failures:
        parts.append("## Failed runs in the last invocation\n\n" + "\n".join(f"- {f}" for f in failures) + "\n")
    parts.append(f"\nLast invocation: {(time.time() - start) / 60:.1f} min (finished seeds are reused).\n")
    write_text(doc.path, "\n".join(parts))
    doc.prune()
    return verdict_rows


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
    code, vouched = {}, 0
    for job in _train_jobs_once(all_jobs):
        name = job.cfg.model["name"]
        if name not in code:
            code[name] = code_fingerprint(MODELS.get(name))
        keys = vouched_codes(job.folder, code[name])
        vouched += (
            sum(
                isinstance(c := json.loads(m.read_text(encoding="utf-8")).get("code"), dict) and code_key(c) in keys
                for m in finished(job.folder)
            )
            if keys
            else 0
        )
        by_files: dict[tuple[str, ...], list[str]] = {}
        for seed, files in stale_seeds(job.folder, code[name]).items():
            by_files.setdefault(tuple(files), []).append(seed)
        stale += [(job.label, tuple(sorted(seeds)), files) for files, seeds in by_files.items()]
    # After a change of shared code (a package restructure) every row would repeat the same long list
    # of files: name those once, and group the runs that differ in nothing else.
    common = set.intersection(*(set(f) for _, _, f in stale)) if len(stale) > 1 else set()
    groups: dict[tuple, list[str]] = {}
    for label, seeds, files in stale:
        groups.setdefault((seeds, tuple(f for f in files if f not in common)), []).append(label)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    ap.add_argument("--data-root", default=None)
    ap.add_argument(
        "--out",
        default=None,
        help="run folders and their records (default results, where git tracks the records; --quick: "
        "runs/results-quick)",
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
        help="per code version that trained stale seeds, train "
        "one seed again; identical metrics keep the others (recorded in the run folder's replays.json), "
        "different metrics retrain them",
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
    ap.add_argument(
        "--doc", default=None, help="Markdown to write (default docs/RESULTS.md; --quick: <out>/RESULTS.md)"
    )
    ap.add_argument("--plan-file", default=str(PLAN_FILE))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = time.time()
    try:
        plan = read_plan(Path(args.plan_file))
        refs = yaml.safe_load(REFS_FILE.read_text(encoding="utf-8")) or {}
        out = args.out or ("runs/results-quick" if args.quick else DEFAULT_OUT)
        doc_path = Path(args.doc or (Path(out) / "RESULTS.md" if args.quick else DEFAULT_DOC))
        if args.quick and doc_path.resolve() == DEFAULT_DOC.resolve():
            raise PlanError(f"--quick never writes {DEFAULT_DOC}; give another --doc")
        ids = [s["id"] for s in plan["sections"]]
        unknown = sorted(set(args.only or []) - set(ids))
        if unknown:
            raise PlanError(f"--only: unknown section(s) {unknown}; sections: {', '.join(ids)}")
        planner = Planner(plan, out, args.seeds, args.quick, args.data_root)
        every_job = build_jobs(plan, planner, ids, "plan")[0]  # the doc reads every section's folders
        unpack_records(every_job)
        if args.write_records:
            write_records(every_job)
            return 0
        jobs, skipped = build_jobs(plan, planner, args.only or ids, "plan" if args.plan else "run")
        jobs = skip_groups(jobs, args.skip, plan["_groups"])
        if args.plan:
            print_plan(jobs, skipped)
            return 0
        conflicts = [str(j.folder) for j in jobs if j.kind == "train" and status(j.cfg)[1]]
        if conflicts:
            raise PlanError(
                "these run folders hold runs with other settings (delete them and their records "
                "<folder>.json, or use another --out): " + ", ".join(conflicts)
            )
    except (PlanError, ConfigError, DataError, KeyError) as e:  # KeyError: registry.UnknownNameError
        print(f"error: {e}", file=sys.stderr)
        return 2
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
    rows = render(plan, planner, refs, Doc(doc_path), args, failures, skipped, start)
    print(f"\nwrote {doc_path}")
    for _, text, s, clear, detail in rows:
        print(f"[{s}] {text}\n         {detail}; clear of seed noise: {clear}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
