"""Experiments as data: the results plan, read, checked and turned into runs.

A plan (YAML; benchmarks/results_plan.yaml is the project's) lists sections, and documents that
render them. Every study is a section: groups of models trained on one dataset setting, groups of
other sections shown again, packaged ablations (`sentangle ablate` files), test-time robustness
of groups or ablation variants, per-seed diagnostics, and checks judged by `recipes.verdicts`.

    seeds, overrides, proposed, quick      defaults for every run (see the project's plan)
    references                             published numbers, a YAML file beside the plan
    documents: [{file, title, intro, sections, provenance}]
    sections:  [{id, title, note, needs, references, oracle, include,
                 groups:   [{id, title, dataset, models, overrides, model_options, model_overrides,
                             seeds, note, metric (the figure's; default MAE / accuracy),
                             tune: {space, trials, seed, sampler_seed, defaults}}],
                           (models: a list, all, text_capable, or {best_of: group, families, metric})
                 show:     [{group, models, title, note}],
                 analysis: {kind: shortcut, clean_group, controls, robust},
                 robust:   {group, models | ablation, variants, noise_levels, drop_rates, seed,
                            waveform: [{kind, level}] (data/waveform.py; audio-read datasets),
                            metric (of the table and curves; default the group's, else the task's)}
                           (or a list of them),
                 ablations: [{file, seeds, variants}], ablation_note,
                 diagnostics: [{title, runs: [{group, model} | {ablation, variant}], rows: {label: key}}],
                 checks:   [verdict specs]}]

A group with `tune` searches each model's space first (recipes/tune.py) and trains the best values.
Paths in a plan (include, references, tune.space) are relative to the plan file. `Planner` turns sections
into `Job`s (a run folder to train, or a robustness evaluation of run folders); `train_all` runs
them; `recipes.results` renders the documents from the run folders alone.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import dataclasses
import itertools
import json
import multiprocessing as mp
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from sentangle.config import RunConfig, build_config, make_config, parse_seeds, yaml_value
from sentangle.core.errors import ConfigError
from sentangle.core.io import exit_with_parent
from sentangle.core.registry import DATASETS, MODELS, check_options
from sentangle.data.dataset import MSADataset
from sentangle.data.named import READER_ARGUMENTS, find_file
from sentangle.data.synthetic import make_synthetic
from sentangle.evaluation.metrics import METRIC_DIRECTIONS
from sentangle.models import list_models
from sentangle.models.base import check_model_options
from sentangle.recipes.ablate import load_ablation, variant_configs
from sentangle.recipes.compare import seed_facts
from sentangle.recipes.robust import robust, waveform_conditions
from sentangle.recipes.specfile import read_mapping
from sentangle.recipes.tune import (
    check_tune,
    read_search,
    read_spaces,
    search_done,
    shown_values,
    tune_and_train,
    tuned_config,
)
from sentangle.recipes.verdicts import check_spec, spec_groups
from sentangle.runs.folder import FolderBusy, finished, holds_other_config
from sentangle.runs.provenance import (
    REPLACED,
    finish_replay,
    replay_groups,
    stale_seeds,
    start_replay,
)
from sentangle.runs.record import load_record, record_path, save_record
from sentangle.runs.runner import model_for, run, run_code, summarize

TOP_KEYS = {"seeds", "overrides", "proposed", "quick", "sections", "documents", "references"}
SECTION_KEYS = {
    "id",
    "title",
    "note",
    "needs",
    "references",
    "groups",
    "show",
    "analysis",
    "oracle",
    "robust",
    "ablations",
    "ablation_note",
    "diagnostics",
    "checks",
    "include",
}
GROUP_KEYS = {
    "id",
    "title",
    "dataset",
    "models",
    "overrides",
    "model_options",
    "model_overrides",
    "seeds",
    "note",
    "tune",
    "metric",
}
SHOW_KEYS = {"group", "models", "title", "note"}
DOCUMENT_KEYS = {"file", "title", "intro", "sections", "provenance"}
ROBUST_KEYS = {"group", "models", "ablation", "variants", "noise_levels", "drop_rates", "seed", "waveform", "metric"}
ABLATION_KEYS = {"file", "seeds", "variants"}
DIAGNOSTICS_KEYS = {"title", "runs", "rows", "note"}
LOAD_OPTIONS = ("root", "modalities", "normalize", "holdout_valid")  # load_dataset's own, not the reader's


class PlanError(ConfigError):
    """A plan that cannot be used: the message names the file, the entry and what was expected."""


# ---- the plan -------------------------------------------------------------------------------------


def _entries(value, where: str, keys: set, required: tuple = ()) -> list[dict]:
    """A list of mappings with known keys (a single mapping counts as a list of one)."""
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise PlanError(f"{where}: expected a list of mappings with keys {sorted(keys)}, got {value!r}")
    for k, e in enumerate(items):
        if not isinstance(e, dict):
            raise PlanError(f"{where}[{k}]: expected a mapping with keys {sorted(keys)}, got {e!r}")
        bad, missing = sorted(set(e) - keys), [r for r in required if r not in e]
        if bad or missing:
            raise PlanError(
                f"{where}[{k}]"
                + (f" ({e['id']})" if isinstance(e.get("id"), str) else "")
                + ": "
                + (f"unknown keys {bad}" if bad else f"missing key(s) {missing}")
                + "; "
                f"expected keys {sorted(keys)}"
            )
    return items


def robust_entries(sec: dict) -> list[dict]:
    """The section's robustness evaluations, as a list (the plan may give one mapping)."""
    r = sec.get("robust")
    return [] if not r else [r] if isinstance(r, dict) else list(r)


def read_plan(path: Path) -> dict:
    """The plan YAML, checked: errors name the file, the entry and what was expected."""
    plan = read_mapping(path, "plan file", TOP_KEYS, PlanError)
    if not isinstance(plan.get("sections"), list) or not plan["sections"]:
        raise PlanError(f"plan file {path}: 'sections' must be a non-empty list")
    ids, groups = [], {}
    for i, sec in enumerate(plan["sections"]):
        where = f"plan file {path}: sections[{i}]"
        if not isinstance(sec, dict) or not isinstance(sec.get("id"), str):
            raise PlanError(f"{where}: expected a mapping with an 'id'")
        where = f"{where} ({sec['id']})"
        bad = set(sec) - SECTION_KEYS
        if bad:
            raise PlanError(f"{where}: unknown keys {sorted(bad)}; expected {sorted(SECTION_KEYS)}")
        if sec["id"] in ids:
            raise PlanError(f"{where}: section id {sec['id']!r} given twice")
        ids.append(sec["id"])
        for j, g in enumerate(
            _entries(sec.get("groups") or [], f"{where}.groups", GROUP_KEYS, ("id", "dataset", "models"))
        ):
            if g["id"] in groups:
                raise PlanError(f"{where}.groups[{j}]: group id {g['id']!r} given twice")
            groups[g["id"]] = g
            if isinstance(g["models"], dict):
                _check_best_of(g["models"], f"{where}.groups[{j}] ({g['id']}).models")
            if "tune" in g:
                _read_tune(path, g, f"{where}.groups[{j}] ({g['id']})")
        _entries(sec.get("show") or [], f"{where}.show", SHOW_KEYS, ("group",))
        for r in _entries(sec.get("robust") or [], f"{where}.robust", ROBUST_KEYS):
            if ("group" in r) == ("ablation" in r):
                raise PlanError(f"{where}.robust: give either 'group' (with 'models') or 'ablation' (with 'variants')")
        _entries(sec.get("ablations") or [], f"{where}.ablations", ABLATION_KEYS, ("file",))
        for d in _entries(sec.get("diagnostics") or [], f"{where}.diagnostics", DIAGNOSTICS_KEYS, ("runs", "rows")):
            _entries(d["runs"], f"{where}.diagnostics.runs", {"group", "model", "ablation", "variant", "label"})
            if not isinstance(d["rows"], dict) or not d["rows"]:
                raise PlanError(f"{where}.diagnostics.rows: expected a mapping label -> diagnostics key")
    for sec in plan["sections"]:
        refs = [(g.get("tune") or {}).get("defaults") for g in sec.get("groups") or []]
        refs += [g["models"].get("best_of") for g in sec.get("groups") or [] if isinstance(g["models"], dict)]
        refs += [r.get("group") for r in robust_entries(sec)] + [(sec.get("analysis") or {}).get("clean_group")]
        refs += [s["group"] for s in sec.get("show") or []]
        refs += [r.get("group") for d in sec.get("diagnostics") or [] for r in d["runs"]]
        for k, c in enumerate(sec.get("checks") or []):
            check_spec(c, f"plan file {path}: section {sec['id']!r}, checks[{k}]")
            refs += spec_groups(c)
        missing = sorted({r for r in refs if r and r not in groups})
        if missing:
            raise PlanError(
                f"plan file {path}: section {sec['id']!r} refers to unknown group(s) {missing}; "
                f"groups: {sorted(groups)}"
            )
        for g in sec.get("groups") or []:
            if isinstance(g["models"], dict) and isinstance(groups[g["models"]["best_of"]]["models"], dict):
                raise PlanError(
                    f"plan file {path}: group {g['id']!r}: models.best_of {g['models']['best_of']!r} is a group "
                    "whose models are picked too; expected a group that lists its models"
                )
    docs = plan.get("documents") or [{"file": "RESULTS.md", "title": "Results", "sections": ids, "provenance": True}]
    placed: list[str] = []
    for k, d in enumerate(_entries(docs, f"plan file {path}: documents", DOCUMENT_KEYS, ("file", "title", "sections"))):
        strange = sorted(set(d["sections"]) - set(ids))
        if strange:
            raise PlanError(f"plan file {path}: documents[{k}] ({d['file']}): unknown section(s) {strange}")
        placed += d["sections"]
    twice = sorted({s for s in placed if placed.count(s) > 1})
    if twice or set(placed) != set(ids):
        raise PlanError(
            f"plan file {path}: every section belongs to exactly one document; "
            + (f"given twice: {twice}" if twice else f"in none: {sorted(set(ids) - set(placed))}")
        )
    plan["documents"] = docs
    plan["_groups"] = groups
    plan["_file"] = str(path)
    return plan


def _check_model_names(names) -> None:
    list_models()  # registers every model
    for m in names:
        MODELS.get(m)  # an unknown name fails here, naming the registered ones


def _check_best_of(spec: dict, where: str) -> None:
    bad = set(spec) - {"best_of", "families", "metric"}
    families = spec.get("families")
    if bad or not isinstance(spec.get("best_of"), str):
        raise PlanError(
            f"{where}: expected {{best_of: a group id, families: [[model, ...], ...], metric}}, got {spec!r}"
        )
    if not isinstance(families, list) or not families or not all(isinstance(f, list) and f for f in families):
        raise PlanError(f"{where}.families: expected a list of non-empty lists of model names, got {families!r}")
    _check_model_names(m for f in families for m in f)
    if spec.get("metric") is not None and spec["metric"] not in METRIC_DIRECTIONS:
        raise PlanError(f"{where}.metric: {spec['metric']!r}; expected one of {sorted(METRIC_DIRECTIONS)}")


def _read_tune(path: Path, group: dict, where: str) -> None:
    """A tuned group (recipes/tune.py): its settings checked, each model's space read into `_spaces`."""
    try:
        check_tune(group["tune"], where)
        if not isinstance(group["models"], list) or group.get("model_options"):
            raise ConfigError(f"{where}: a tuned group lists its models by name and takes no model_options")
        group["_spaces"] = read_spaces(path.parent / str(group["tune"]["space"]), group["models"], where)
    except ConfigError as e:
        raise PlanError(f"plan file {path}: {e}") from None


def plan_path(plan: dict, rel: str) -> Path:
    """A path the plan names, relative to the plan file."""
    return Path(plan["_file"]).parent / rel


def dotted(mapping: dict | None) -> list[str]:
    return [f"{k}={yaml_value(v)}" for k, v in (mapping or {}).items()]


@dataclass
class Job:
    section: str
    kind: str  # train | robust
    label: str
    config: RunConfig | None = None  # train jobs
    shown: list[str] = field(default_factory=list)  # the overrides the plan adds, for --plan
    folders: list[Path] = field(default_factory=list)  # robust jobs: the run folders they read
    options: dict = field(default_factory=dict)
    dataset: str = ""  # as the plan gives it, for --plan
    metric: str | None = None  # robust jobs: the metric of their tables and curves (default: the task's)

    @property
    def cfg(self) -> RunConfig:
        if self.config is None:
            raise TypeError(f"{self.label}: a {self.kind} job has no run config")
        return self.config

    @property
    def folder(self) -> Path:
        return Path(self.cfg.out) / self.cfg.run_name


def neural_models() -> list[str]:
    """What `models: all` means: every registered model trained by gradient steps. The closed-form
    floor (`linear`, fitted by scikit-learn) is named where a plan wants it."""
    return [m for m in list_models() if not getattr(MODELS.get(m), "closed_form", False)]


class Planner:
    """Turns the plan into run configs; knows the output folder, the seeds and --quick."""

    def __init__(self, plan: dict, out: str, seeds: int, quick: bool, data_root: str | None):
        self.plan, self.out, self.quick, self.data_root = plan, out, quick, data_root
        self.q = plan.get("quick") or {}
        self.max_seeds = int(self.q.get("seeds", 1)) if quick else seeds
        self._text_capable: list[str] | None = None
        # A render builds each group's configs dozens of times (every section, table and check reads
        # them) and each build parses the packaged YAML files again: they are pure, so built once.
        self._built: dict[str, object] = {}

    def _once(self, key: object, build):
        k = json.dumps(key, sort_keys=True, default=str)
        if k not in self._built:
            self._built[k] = build()
        return copy.deepcopy(self._built[k])  # callers own their configs

    def seeds(self, wanted=None) -> list[int]:
        return parse_seeds(min(int(wanted or self.plan.get("seeds", 5)), self.max_seeds))

    def models(self, spec, where: str) -> list[str]:
        if spec == "all":
            return neural_models()
        if spec == "text_capable":
            return self.text_capable()
        if isinstance(spec, dict):
            return self.best_of(spec)
        if not isinstance(spec, list):
            raise PlanError(
                f"{where}: models must be a list, 'all', 'text_capable' or {{best_of, families}}, got {spec!r}"
            )
        _check_model_names(spec)
        return list(spec)

    def best_of(self, spec: dict) -> list[str]:
        """`models: {best_of: GROUP, families: [[model, ...], ...], metric}`: from each family, the model
        with the best mean validation `metric` in GROUP (selected on validation, never on test; metric
        default: GROUP's). A family joins once all of its models have finished their seeds there, so a
        costly protocol trains the families' best rather than a guess made before the runs."""
        source = self.plan["_groups"][spec["best_of"]]
        metric = spec.get("metric") or source.get("metric", "mae")
        results = {j.cfg.model["name"]: load_result(j.cfg) for j in self.group_jobs("", source)}
        picked = []
        for family in spec["families"]:
            done = {m: results.get(m) for m in family}
            if all(r and len(r["per_seed"]) == r["planned_seeds"] for r in done.values()):
                means = {m: r["splits"]["valid"][metric]["mean"] for m, r in done.items() if r}
                sign = 1 if METRIC_DIRECTIONS.get(metric, "max") == "max" else -1
                picked.append(max(family, key=lambda m: sign * means[m]))
        return picked

    def text_capable(self) -> list[str]:
        """Every model that builds and runs forward on a text-only batch (tried, not assumed)."""
        if self._text_capable is None:
            ds = make_synthetic(scale=0.01, lengths=4, dims=8)
            assert isinstance(ds, MSADataset)  # not the (dataset, factors) pair of return_factors
            ds.select_modalities(["text"])
            batch = next(iter(ds.batches("train", 4)))
            ok: list[str] = []
            for m in neural_models():
                try:
                    model_for(build_config(m, "synthetic"), ds)(batch)
                    ok.append(m)
                except Exception:
                    pass
            self._text_capable = ok
        return self._text_capable

    def extra(self, dataset_name: str) -> list[str]:
        """Overrides every run gets after its own: the plan's, then --quick's."""
        over = dotted(self.plan.get("overrides"))
        if self.quick:
            over += dotted(self.q.get("overrides"))
            if dataset_name == "synthetic":
                over += dotted(self.q.get("synthetic"))
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
            shown = dotted(group.get("overrides")) + dotted((group.get("model_overrides") or {}).get(m))
            if "tune" in group:
                jobs.append(self.tuned_job(section, group, m, shown))
                continue
            opts = (group.get("model_options") or {}).get(m)
            args = {
                "model": {"name": m, **opts} if opts else m,
                "dataset": ds,
                "seeds": self.seeds(group.get("seeds")),
                "out": f"{self.out}/{group['id']}",
                "name": m,
                "data_root": self.root_for(ds_name),
                "overrides": shown + self.extra(ds_name),
            }
            cfg = self._once(["group", args], lambda: make_config(**args))
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

    def tuned_job(self, section: str, group: dict, model: str, shown: list[str]) -> Job:
        """A model of a tuned group: its run at the search's best values once the search has finished,
        else a job that finishes the search first (options["search"], plain data for a worker)."""
        tune, ds = group["tune"], group["dataset"]
        ds_name = ds if isinstance(ds, str) else ds.get("name")
        search = {
            "model": model,
            "dataset": ds,
            "seeds": self.seeds(group.get("seeds")),
            "out": f"{self.out}/{group['id']}",
            "data_root": self.root_for(ds_name),
            "overrides": shown + self.extra(ds_name),
            "space": group["_spaces"][model],
            "trials": int(self.q.get("trials", 2)) if self.quick else int(tune["trials"]),
            "seed": int(tune.get("seed", 2026)),
            "sampler_seed": int(tune.get("sampler_seed", 0)),
        }
        record = read_search(Path(search["out"]) / model)
        done = search_done(record, search["trials"])
        cfg = tuned_config(search, record if done else None)
        _check_dataset_options(cfg, f"{self.plan['_file']}: group {group['id']!r}, model {model!r}")
        tuned = shown_values(record["best"]["params"]) if done and record else []
        return Job(
            section,
            "train",
            f"{group['id']}/{model}",
            cfg,
            shown + (tuned or [f"(search: {(record or {}).get('complete', 0)}/{search['trials']} trials)"]),
            options={} if done else {"search": search},
            dataset=yaml_value(ds),
        )

    def ablation(self, entry: dict) -> tuple[dict, dict[str, RunConfig]]:
        """The spec and one config per variant, exactly as recipes.ablate.ablate builds them."""
        return self._once(["ablation", entry], lambda: self._ablation(entry))

    def _ablation(self, entry: dict) -> tuple[dict, dict[str, RunConfig]]:
        spec = load_ablation(entry["file"])
        ds = spec["dataset"]
        ds_name = ds if isinstance(ds, str) else (ds or {}).get("name", "synthetic")
        cfgs = variant_configs(
            spec,
            self.seeds(entry.get("seeds", spec["seeds"])),
            f"{self.out}/ablations/{spec['name']}",
            self.root_for(ds_name),
            self.extra(ds_name),
        )
        return spec, cfgs

    def robust_options(self, opts: dict) -> dict:
        o: dict = {
            "seed": int(opts.get("seed", 0)),
            "noise_levels": tuple(opts.get("noise_levels", (0.25, 0.5, 1.0, 2.0))),
            "drop_rates": tuple(opts.get("drop_rates", (0.1, 0.3, 0.5, 0.7))),
            "waveform": tuple(opts.get("waveform", ())),
        }
        if self.quick:  # fewer levels; an empty list in the plan stays empty
            o["noise_levels"] = tuple(self.q.get("noise_levels", ())) if o["noise_levels"] else ()
            o["drop_rates"] = tuple(self.q.get("drop_rates", ())) if o["drop_rates"] else ()
            o["waveform"] = o["waveform"][:1]
        return o

    def section_jobs(self, sec: dict) -> list[Job]:
        """Every run the section trains or reads (a group shown again, an ablation variant a robustness
        evaluation or a diagnostics table reads), and its robustness evaluations."""
        groups = self.plan["_groups"]
        jobs = [j for g in sec.get("groups") or [] for j in self.group_jobs(sec["id"], g)]
        for s in sec.get("show") or []:
            jobs += self.group_jobs(sec["id"], groups[s["group"]], only_models=s.get("models"))
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
        for entry in sec.get("ablations") or []:
            jobs += self.ablation_jobs(sec["id"], entry)
        for r in robust_entries(sec):
            if "group" in r:
                deps = self.group_jobs(sec["id"], groups[r["group"]], only_models=r.get("models"))
                name = r["group"]
            else:
                deps = self.ablation_jobs(sec["id"], {"file": r["ablation"]}, r.get("variants"))
                name = "ablations-" + load_ablation(r["ablation"])["name"]
            jobs += deps
            jobs.append(
                Job(
                    sec["id"],
                    "robust",
                    f"robust {name}",
                    folders=[j.folder for j in deps],
                    options=self.robust_options(r),
                    metric=r.get("metric") or (groups[r["group"]].get("metric") if "group" in r else None),
                )
            )
        for d in sec.get("diagnostics") or []:
            for r in d["runs"]:
                if "group" in r:
                    jobs += self.group_jobs(sec["id"], groups[r["group"]], only_models=[r["model"]])
                else:
                    jobs += self.ablation_jobs(sec["id"], {"file": r["ablation"]}, [r["variant"]])
        return jobs

    def ablation_jobs(self, section: str, entry: dict, variants=None) -> list[Job]:
        spec, cfgs = self.ablation(entry)
        unknown = sorted(set(variants or []) - set(cfgs))
        if unknown:
            raise PlanError(
                f"{self.plan['_file']}: ablation {entry['file']!r} has no variant(s) {unknown}; it has {list(cfgs)}"
            )
        return [
            Job(
                section,
                "train",
                f"ablations/{spec['name']}/{v}",
                c,
                [f"(from {Path(spec['file']).name})"]
                + next(x["overrides"] for x in spec["variants"] if x["name"] == v),
                dataset=yaml_value(spec["dataset"]),
            )
            for v, c in cfgs.items()
            if variants is None or v in variants
        ]


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
    return done, bool(done) and holds_other_config(folder, cfg)


def load_result(cfg: RunConfig) -> dict | None:
    """The finished seeds of the plan's seeds, summarised (None when none finished or the config differs),
    with what the checks read besides: per-seed diagnostics summary, the synthetic oracle, robust.json."""
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
    info = _read_json(folder / "dataset.json") or {}
    return {
        "folder": str(folder),
        "model": cfg.model["name"],
        "task": task,
        "splits": summarize(per_seed),
        "per_seed": per_seed,
        "facts": seed_facts(str(folder), per_seed),
        "diagnostics": diagnostics,
        "planned_seeds": len(cfg.seeds),
        "oracle": (info.get("info") or {}).get("oracle"),  # synthetic data: the reference predictors
        "robust": _read_json(folder / "robust.json"),
    }


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


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


def unpack_plan(plan: dict, planner: Planner, selected: list[str]) -> list[Job]:
    """Every run folder of the selected sections unpacked from its record; returns their jobs. A
    `best_of` group's models are known only once its source group's folders are there, so the jobs are
    built again until no new folder appears (twice: a best_of never reads another best_of group)."""
    done: set[Path] = set()
    while True:
        jobs = build_jobs(plan, planner, selected, "plan")[0]
        new = [j for j in jobs if j.kind == "train" and j.folder not in done]
        if not new:
            return jobs
        unpack_records(new)
        done |= {j.folder for j in new}


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
    waves = sorted(c["name"] for c in r["conditions"] if c["kind"] == "wave")
    return (
        r.get("seeds") == seeds
        and waves == sorted(c["name"] for c in waveform_conditions(opts.get("waveform"), opts["seed"]))
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
        except FolderBusy as e:  # a second `sentangle results` on the plan trains it: not a failure here
            tqdm.write(f"left to the other process: {job.label}: {e}")
        except Exception as e:
            failures.append(f"{job.label}: {type(e).__name__}: {e}")
            tqdm.write(f"FAILED {job.label}:\n{traceback.format_exc()}")

    def pending(job: Job) -> bool:
        if "search" in job.options:  # an unfinished search: its run's config is not known yet
            tqdm.write(f"searching {job.label}: {job.shown[-1]}")
            return True
        done, _ = status(job.cfg)
        if len(done) < len(job.cfg.seeds):
            tqdm.write(f"training {job.label}: seeds {job.cfg.seeds}, {len(done)} finished")
            return True
        return False

    def train(job: Job) -> dict:
        return tune_and_train(job.options["search"]) if "search" in job.options else run(job.cfg)

    def robust_job(job: Job) -> None:
        # only the folders whose robust.json is out of date: the others may have no checkpoints here
        stale = [f for f in job.folders if _finished_seeds(f) and not robust_fresh(f, job.options)]
        if stale:
            tqdm.write(f"{job.label}: {len(stale)} run folders")
            robust(stale, out=Path(out) / "robust" / job.label.split()[-1], plots=False, **job.options)

    if workers > 1:
        with cf.ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=exit_with_parent, initargs=(os.getpid(),)
        ) as pool:
            # `run` itself (importable in the worker), without bars; threads come from the plan (1).
            quiet = lambda cfg: dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, progress=False))  # noqa: E731
            futures = {
                (
                    pool.submit(tune_and_train, j.options["search"], False)
                    if "search" in j.options
                    else pool.submit(run, quiet(j.cfg))
                ): j
                for j in jobs
                if j.kind == "train" and pending(j)
            }
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
        attempt(job, (lambda: pending(job) and train(job)) if job.kind == "train" else (lambda: robust_job(job)))
        bar.update(1)
    bar.close()
    return failures


# ---- Markdown ------------------------------------------------------------------------------------
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
        for seed in stale_seeds(job.folder, run_code(job.cfg), job.cfg.seeds):
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
        for group in replay_groups(job.folder, run_code(job.cfg), job.cfg.seeds):
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
                f"(noise {list(j.options['noise_levels'])}, drop {list(j.options['drop_rates'])}"
                + (f", {len(j.options['waveform'])} waveform conditions" if j.options.get("waveform") else "")
                + "), "
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
        stale = 0 if conflict else len(stale_seeds(j.folder, run_code(j.cfg), done))
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
