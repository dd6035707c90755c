"""Tuned groups of a results plan: every model of the group gets the same Optuna budget, then the
protocol's seeds at its best config (the fair-comparison study of docs/RESULTS.md).

A group with a `tune` entry (recipes/plan.py)

    tune: {space: fair_spaces.yaml, trials: 20, seed: 2026, sampler_seed: 0, defaults: mosi_utt-frozen}

searches each model with `recipes.sweep.sweep`: `trials` trials over the model's space (the space
file maps a model to {dotted key: distribution}, as `sentangle sweep` reads them), each trained once
with the search seed, which is not one of the protocol's seeds, and scored on validation only. The
best trial's values then become the model's overrides and the group trains like any other into
<out>/<group>/<model>/. `defaults` names the group with the same models at their packaged defaults,
shown beside.

What a search did is kept in <out>/<group>/<model>.search.json (what git keeps: every trial's values,
validation score and seconds); its Optuna database and trial run folders stay in
<out>/<group>/<model>-search/. An interrupted search resumes from the database, or, on a machine
that has only the JSON, from the trials the JSON lists.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

from sentangle.config import RunConfig, make_config, yaml_value
from sentangle.core.errors import ConfigError, SweepError
from sentangle.core.io import write_json
from sentangle.recipes.specfile import read_mapping
from sentangle.recipes.sweep import check_space, import_optuna, sweep
from sentangle.runs.folder import finished, holds_other_config
from sentangle.runs.runner import run

TUNE_KEYS = {"space", "trials", "seed", "sampler_seed", "defaults"}
SEARCH_SUFFIX = ".search.json"


def read_spaces(path: Path, models: list[str], where: str) -> dict[str, dict]:
    """{model: space} from a spaces file: each model's space, checked as `sentangle sweep` checks one."""
    raw = read_mapping(path, "tuning spaces file", error=ConfigError)
    missing = [m for m in models if m not in raw]
    if missing:
        raise ConfigError(f"{where}: tuning spaces file {path} has no space for model(s) {missing}")
    spaces = {}
    for m in models:
        if not isinstance(raw[m], dict) or not raw[m]:
            raise ConfigError(
                f"{where}: tuning spaces file {path}: {m}: expected a mapping of dotted keys to distributions"
            )
        try:
            spaces[m] = check_space(raw[m], f"{path} ({m})")
        except SweepError as e:
            raise ConfigError(str(e)) from None
    return spaces


def check_tune(tune: object, where: str) -> dict:
    if not isinstance(tune, dict):
        raise ConfigError(f"{where}: tune: expected a mapping with keys {sorted(TUNE_KEYS)}, got {tune!r}")
    bad = sorted(set(tune) - TUNE_KEYS)
    missing = [k for k in ("space", "trials") if k not in tune]
    if bad or missing:
        raise ConfigError(
            f"{where}: tune: "
            + (f"unknown keys {bad}" if bad else f"missing {missing}")
            + f"; expected {sorted(TUNE_KEYS)}"
        )
    for key, low in (("trials", 1), ("seed", 1001), ("sampler_seed", 0)):
        v = tune.get(key, low)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(
                f"{where}: tune.{key}: expected an integer >= {low}"
                + (" (one search seed, outside the protocol's 1111..1115)" if key == "seed" else "")
                + f", got {v!r}"
            )
    return tune


# ---- the search -------------------------------------------------------------------------------------


def search_record_path(folder: Path) -> Path:
    """<out>/<group>/<model>.search.json for the run folder <out>/<group>/<model>."""
    return folder.parent / f"{folder.name}{SEARCH_SUFFIX}"


def search_folder(folder: Path) -> Path:
    return folder.parent / f"{folder.name}-search"


def read_search(folder: Path) -> dict | None:
    path = search_record_path(folder)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def search_done(record: dict | None, trials: int) -> bool:
    """The search has run the plan's budget (a record written for another budget is written again)."""
    return (
        record is not None and record["best"] is not None and record["complete"] >= trials == record["trials_planned"]
    )


def tuned_overrides(record: dict) -> list[str]:
    return [f"{k}={yaml_value(v)}" for k, v in record["best"]["params"].items()]


def shown_values(params: dict) -> list[str]:
    """The values as documents show them (3 significant digits; the run folders keep them whole)."""
    return [f"{k}={f'{v:.3g}' if isinstance(v, float) else yaml_value(v)}" for k, v in params.items()]


def tune_and_train(search: dict, progress: bool = True) -> dict:
    """The remaining trials of a model's search, then its best config over the protocol's seeds.
    `search` (plain data, for a worker process): model, dataset, seeds, out, data_root, overrides
    (the group's, as its runs get them), space, trials, seed, sampler_seed. Returns the run summary."""
    record = run_search(search, progress)
    if record["best"] is None:
        raise ConfigError(f"{search['out']}/{search['model']}: no trial of the search finished; nothing to train")
    cfg = tuned_config(search, record)
    folder = Path(cfg.out) / cfg.run_name
    # more trials found other best values: the run at the old ones no longer answers the plan
    replaced = bool(finished(folder)) and holds_other_config(folder, cfg)
    if replaced:
        print(f"{folder}: the search's best values changed; its runs train again at the new ones", file=sys.stderr)
    return run(cfg, overwrite=replaced)


def tuned_config(search: dict, record: dict | None) -> RunConfig:
    """The group's config of the model, with the search's best values when it has finished."""
    over = list(search["overrides"]) + (tuned_overrides(record) if record and record["best"] else [])
    return make_config(
        search["model"],
        search["dataset"],
        seeds=search["seeds"],
        out=search["out"],
        name=search["model"],
        data_root=search["data_root"],
        overrides=over,
    )


def run_search(search: dict, progress: bool = True) -> dict:
    """Trials until `search["trials"]` have finished (resumed from the database, or from the record
    on a machine without it); the record written again."""
    optuna = import_optuna()
    folder = Path(search["out"]) / search["model"]
    where = search_folder(folder)
    where.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{where / 'optuna.db'}"
    record = read_search(folder)
    name = where.name  # the study's name in its database, as `sweep` names it
    if record and _complete(optuna, storage, name) == 0:
        _restore(optuna, storage, name, record, search["space"])
    left = search["trials"] - _complete(optuna, storage, name)
    if left > 0:
        sweep(
            search["model"],
            search["dataset"],
            (f"the tuning space of {search['model']}", search["space"]),
            left,
            storage=storage,
            study=where.name,
            seeds=[search["seed"]],
            out=str(where.parent),
            data_root=search["data_root"],
            overrides=search["overrides"],
            progress=progress,
            sampler_seed=search["sampler_seed"],
        )
    return write_search(optuna, storage, name, folder, search)


def _complete(optuna, storage: str, name: str) -> int:
    try:
        st = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return 0
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in st.trials)


def _distribution(optuna, spec: dict):
    d = optuna.distributions
    if spec["type"] == "categorical":
        return d.CategoricalDistribution(spec["choices"])
    cls = d.FloatDistribution if spec["type"] == "float" else d.IntDistribution
    return cls(spec["low"], spec["high"], log=spec["log"], step=spec.get("step"))


def _restore(optuna, storage: str, name: str, record: dict, space: dict) -> None:
    """The record's finished trials in a new study, for a machine that has the record but not the
    database (the sampler then goes on from them; its later proposals need not be the ones an
    uninterrupted search would have made)."""
    st = optuna.create_study(storage=storage, study_name=name, direction=record["direction"], load_if_exists=True)
    dists = {k: _distribution(optuna, s) for k, s in space.items()}
    for t in record["trials"]:
        if t["state"] == "complete" and set(t["params"]) == set(dists):
            st.add_trial(
                optuna.trial.create_trial(
                    params=t["params"],
                    distributions=dists,
                    value=t["value"],
                    user_attrs={"seed_scores": t.get("seed_scores"), "seconds": t.get("seconds")},
                )
            )


def write_search(optuna, storage: str, name: str, folder: Path, search: dict) -> dict:
    """The record of the model's search: every trial's values, validation score and seconds."""
    st = optuna.load_study(study_name=name, storage=storage)
    done = [t for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE]

    def seconds(t) -> float | None:
        if "seconds" in t.user_attrs:  # restored from an earlier record
            return t.user_attrs["seconds"]
        if t.datetime_start is None or t.datetime_complete is None:
            return None
        return round((t.datetime_complete - t.datetime_start).total_seconds(), 1)

    rows = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "params": t.params,
            "seed_scores": t.user_attrs.get("seed_scores"),
            "seconds": seconds(t),
        }
        for t in st.trials
    ]
    # the same budget for every model: the best of the first `trials` finished trials, even where a
    # study holds more (a budget lowered after some searches had run further)
    budget = done[: search["trials"]]
    pick = min if st.direction == optuna.study.StudyDirection.MINIMIZE else max
    best = pick(budget, key=lambda t: t.value) if budget else None
    record = {
        "model": search["model"],
        "dataset": search["dataset"],
        "space": search["space"],
        "trials_planned": search["trials"],
        "complete": len(done),
        "budget_trials": [t.number for t in budget],
        "search_seed": search["seed"],
        "sampler_seed": search["sampler_seed"],
        "direction": st.direction.name.lower(),
        "metric": (st.user_attrs.get("sentangle") or {}).get("metric"),
        "seconds": round(sum(r["seconds"] or 0.0 for r in rows), 1),
        "written": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "trials": rows,
        "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params},
    }
    write_json(search_record_path(folder), record)
    return record


# ---- the document ----------------------------------------------------------------------------------


def _space_text(spec: dict) -> str:
    if spec["type"] == "categorical":
        return "{" + ", ".join(str(c) for c in spec["choices"]) + "}"
    scale = ", log" if spec["log"] else (f", step {spec['step']}" if "step" in spec else "")
    return f"{spec['type']} [{spec['low']}, {spec['high']}{scale}]"


def tune_section(
    group: dict, tuned: dict[str, dict | None], defaults: dict[str, dict | None], proposed: list[str], out: str
) -> str:
    """Defaults beside tuned, the paired margin of the best proposed model over the best baseline, the
    searches (spaces, trials, time), from the run folders and the search records alone."""
    from sentangle.report.tables import LABELS, RAW_SCALE, aggregate, fmt, interval_text

    tune = group["tune"]
    records = {m: read_search(Path(out) / group["id"] / m) for m in group["models"]}
    task = next((r["task"] for r in tuned.values() if r), None) or next(
        (r["task"] for r in defaults.values() if r), None
    )
    metric = "mae" if task != "classification" else "accuracy"
    extra = ("corr", "acc2_non0") if metric == "mae" else ("f1_macro",)
    name = LABELS.get(metric, metric)
    scale, digits = (1.0, 3) if metric in RAW_SCALE else (100.0, 2)
    lines = [
        f"#### Defaults beside tuned (`{group['id']}` against `{tune.get('defaults')}`)\n",
        f"Test {name}: mean ± sample std over the protocol's seeds. *Tuned minus default*: the paired per-seed "
        "difference, mean with [± 2 standard errors]. *Search*: trials finished / planned, the best trial's "
        f"validation {name} (seed {tune.get('seed', 2026)}, the search's only seed), and the search's time.\n",
        f"| model | default test {name} | tuned test {name} | tuned minus default | "
        + " | ".join(f"tuned {LABELS.get(k, k)}" for k in extra)
        + " | search | tuned values |",
        "|---|---:|---:|---:|" + "---:|" * len(extra) + "---|---|",
    ]
    for m in group["models"]:
        t, d, rec = tuned.get(m), defaults.get(m), records.get(m)
        diff = "-"
        if t and d:
            common = sorted(s for s in t["per_seed"] if s in d["per_seed"])
            if common:
                st = aggregate([t["per_seed"][s]["test"][metric] - d["per_seed"][s]["test"][metric] for s in common])
                diff = f"{st['mean'] * scale:+.{digits}f} {interval_text(metric, st)}"
        search = "not started"
        if rec:
            best = f", best {rec['best']['value'] * scale:.{digits}f}" if rec["best"] else ""
            search = f"{rec['complete']}/{rec['trials_planned']}{best}, {rec['seconds'] / 60:.0f} min"
        values = ", ".join(f"`{v}`" for v in shown_values(rec["best"]["params"])) if rec and rec["best"] else "-"
        cells = [
            fmt(metric, d["splits"]["test"][metric]) if d else "-",
            fmt(metric, t["splits"]["test"][metric]) if t else "-",
            diff,
            *(fmt(k, t["splits"]["test"][k]) if t and k in t["splits"]["test"] else "-" for k in extra),
            search,
            values,
        ]
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    lines += ["", margin_text(tuned, proposed, metric), "", "#### Search spaces\n"]
    lines.append(
        f"Each model: {tune['trials']} trials of Optuna's TPE sampler (seed {tune.get('sampler_seed', 0)}), "
        f"one training run each with seed {tune.get('seed', 2026)}, scored on validation {name} (never on "
        "test); the same budget for every model. Keys are config settings (`model.*`: the model's options, "
        "`train.*`: the trainer's; `train.aux_scale` multiplies every auxiliary-loss weight).\n"
    )
    lines += ["| model | space |", "|---|---|"]
    for m in group["models"]:
        lines.append(
            f"| `{m}` | " + "; ".join(f"`{k}` {_space_text(s)}" for k, s in group["_spaces"][m].items()) + " |"
        )
    total = sum((r or {}).get("seconds", 0.0) for r in records.values())
    lines.append(
        f"\nThe searches took {total / 3600:.1f} h of training in all (one thread per run; the sum of the "
        "trials' wall times), the tuned runs the training time their run folders record."
    )
    return "\n".join(lines) + "\n"


def margin_text(tuned: dict[str, dict | None], proposed: list[str], metric: str) -> str:
    """The paired per-seed margin of the best proposed model over the best baseline (by test mean)."""
    from sentangle.evaluation.metrics import METRIC_DIRECTIONS
    from sentangle.report.tables import LABELS, RAW_SCALE, aggregate, interval_text

    done = {m: r for m, r in tuned.items() if r}
    prop = [m for m in done if m in proposed]
    base = [m for m in done if m not in proposed]
    if not prop or not base:
        return "The margin of the best proposed model over the best baseline needs both to have finished."
    lower = METRIC_DIRECTIONS.get(metric, "max") == "min"
    pick = min if lower else max
    mean = lambda m: done[m]["splits"]["test"][metric]["mean"]  # noqa: E731
    p, b = pick(prop, key=mean), pick(base, key=mean)
    common = sorted(s for s in done[p]["per_seed"] if s in done[b]["per_seed"])
    # the margin is positive when the proposed model is better
    sign = -1.0 if lower else 1.0
    per = [sign * (done[p]["per_seed"][s]["test"][metric] - done[b]["per_seed"][s]["test"][metric]) for s in common]
    scale, digits = (1.0, 3) if metric in RAW_SCALE else (100.0, 2)
    rows = " | ".join(f"{s}: {v * scale:+.{digits}f}" for s, v in zip(common, per))
    st = aggregate(per) if per else None
    head = (
        f"**Margin of the best proposed model `{p}` over the best baseline `{b}`** (both tuned; best by test "
        f"mean, {LABELS.get(metric, metric)}; positive = `{p}` better), paired by seed: "
    )
    if not st:
        return head + "no seed in common yet."
    return head + f"{st['mean'] * scale:+.{digits}f}, ± 2 SE {interval_text(metric, st)} over {st['n']} seeds ({rows})."
