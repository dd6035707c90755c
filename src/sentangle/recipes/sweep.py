"""Hyperparameter sweeps with Optuna over any config key (`sentangle sweep`, docs/scaling.md).

The space is a YAML file mapping dotted config keys to distributions:

    train.lr:        {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    model.hidden:    {type: int, low: 32, high: 256, step: 32}
    model.dropout:   {type: float, low: 0.0, high: 0.5}
    train.scheduler: {type: categorical, choices: [none, cosine]}
    train.aux_weights.cmd: [0.1, 0.3, 1.0]      # a plain list is categorical

Each trial resolves a config as `sentangle train` does with the sampled values as the last
overrides, trains it through the normal `run()` into <out>/<study>/trial_<n>/ (inspectable, and a
trial retried after its worker died resumes the seeds that finished) and reports the mean over seeds
of the validation selection score: never a test number. Optuna's RDB storage (sqlite for one
machine, PostgreSQL/MySQL for several) lets any number of workers share one study.
"""

from __future__ import annotations

import csv
import inspect
import io
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from sentangle.config import RunConfig, TrainConfig, dump_yaml, from_dict, make_config, parse_override, yaml_value
from sentangle.core.errors import SweepError, TrainingError
from sentangle.core.io import write_text
from sentangle.core.registry import DATASETS, MODELS, check_options, signature_options
from sentangle.data.named import READER_ARGUMENTS, load_dataset
from sentangle.data.synthetic import make_synthetic
from sentangle.models.base import DATA_ARGUMENTS
from sentangle.recipes.specfile import read_mapping
from sentangle.runs.folder import comparable_config, resolved_config
from sentangle.runs.runner import dataset_from_config, run
from sentangle.training.distributed import is_main
from sentangle.training.trainer import selection

KINDS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}, "categorical": {"choices"}}
SECTIONS = ("model", "dataset", "train")
# Seconds between a running trial's heartbeats, and without one before it counts as dead and is retried.
HEARTBEAT, GRACE = 60, 180


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise SweepError(
            "sentangle sweep needs Optuna, an optional dependency: pip install 'sentangle[sweep]' "
            "(or pip install 'optuna>=3')"
        ) from None
    return optuna


# ---- the space file -------------------------------------------------------------------------------


def read_space(path: str | Path) -> dict[str, dict]:
    """Read and check a space file's distributions: {dotted key: {"type": ..., ...}}."""
    path = Path(path)
    try:
        raw = read_mapping(path, "space file", error=SweepError)
    except SweepError as e:
        raise SweepError(
            f"{e}; expected a mapping of dotted config keys to distributions, "
            "e.g. 'train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}'"
        ) from None
    return check_space(raw, path)


def check_space(raw: dict, path: str | Path) -> dict[str, dict]:
    """A space given as a mapping (read from `path`, which messages name), checked."""
    return {str(key): _distribution(path, str(key), spec) for key, spec in raw.items()}


def _distribution(path: str | Path, key: str, spec: Any) -> dict:
    where = f"space file {path}: {key}"
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        raise SweepError(
            f"{where}: expected a mapping with type float, int or categorical (or a list of choices), got {spec!r}"
        )
    kind = spec["type"]
    extra = set(spec) - KINDS[kind] - {"type"}
    if extra:
        raise SweepError(f"{where}: {kind} takes {sorted(KINDS[kind])}, not {sorted(extra)}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SweepError(f"{where}: categorical needs a non-empty list 'choices'")
        if any(not isinstance(c, (str, int, float, bool)) and c is not None for c in choices):
            raise SweepError(f"{where}: choices must be numbers, strings, booleans or null, got {choices!r}")
        return {"type": kind, "choices": choices}
    number = (int,) if kind == "int" else (int, float)
    for bound in ("low", "high"):
        v = spec.get(bound)
        if isinstance(v, str):  # YAML reads 1e-4 (without a dot) as a string
            try:
                v = float(v) if kind == "float" else v
            except ValueError:
                pass
        if not isinstance(v, number) or isinstance(v, bool):
            raise SweepError(
                f"{where}: {kind} needs a numeric '{bound}' ({'an integer' if kind == 'int' else 'a number'}), got {spec.get(bound)!r}"
            )
        spec = {**spec, bound: v}
    if not spec["low"] < spec["high"]:
        raise SweepError(f"{where}: needs low < high, got low={spec['low']}, high={spec['high']}")
    log = spec.get("log", False)
    if not isinstance(log, bool) or (log and spec["low"] <= 0):
        raise SweepError(f"{where}: log must be true or false, and a log scale needs low > 0")
    step = spec.get("step")
    if step is not None and (not isinstance(step, number) or step <= 0 or log):
        raise SweepError(f"{where}: step must be a positive {kind} and cannot be combined with log")
    out = {"type": kind, "low": spec["low"], "high": spec["high"], "log": log}
    if step is not None:
        out["step"] = step
    return out


# A sweep names one setting per key; its message names the key and the section's settings.
SETTING_ERROR = "{what} has no setting {names}; known: {valid}{hint}"


def check_keys(path: str | Path, space: dict[str, dict], cfg: RunConfig) -> None:
    """Every key must name a setting of this model, dataset or trainer (unknown ones would only fail
    at the first trial, or not at all)."""

    for key in space:
        parts = key.split(".")
        where = f"space file {path}: {key}"
        if len(parts) < 2 or parts[0] not in SECTIONS:
            raise SweepError(
                f"{where}: expected a dotted key under {', '.join(SECTIONS)} (e.g. train.lr, model.hidden)"
            )
        section, name = parts[0], parts[1]
        if section == "dataset" and name == "name":
            raise SweepError(f"{where}: the dataset itself is not a hyperparameter; run one sweep per dataset")
        if section == "dataset" and Path(str(cfg.dataset["name"])).suffix:
            continue  # a feature file: its reader checks its options when loading
        owner, fn, skip = {
            "train": ("train", TrainConfig, ()),
            "model": (cfg.model["name"], MODELS.get(cfg.model["name"]), DATA_ARGUMENTS),
            "dataset": ("dataset", None, ()),
        }[section]
        valid = _dataset_options(cfg.dataset["name"]) if section == "dataset" else None
        check_options(fn, [name], f"{where}: {owner}", skip=skip, valid=valid, error=SweepError, message=SETTING_ERROR)
        if section == "train" and len(parts) > 2 and name != "aux_weights":
            raise SweepError(f"{where}: train.{name} is not a section")
    if any(k.startswith("train.select_") for k in space):
        raise SweepError(f"space file {path}: the selection metric/split defines the objective; it cannot be swept")


def _dataset_options(name: str) -> list[str]:
    """What `load_dataset` takes for a registered dataset: its own options and its reader's."""
    reader = make_synthetic if name == "synthetic" else DATASETS.get(name)  # synthetic passes its options on
    own = signature_options(load_dataset, ("name",))
    return own + [k for k in signature_options(reader, READER_ARGUMENTS) if k not in own]


def suggest(trial, key: str, spec: dict) -> Any:
    if spec["type"] == "categorical":
        return trial.suggest_categorical(key, spec["choices"])
    fn = trial.suggest_float if spec["type"] == "float" else trial.suggest_int
    kwargs = {"log": spec["log"]}
    if "step" in spec:
        kwargs["step"] = spec["step"]
    return fn(key, spec["low"], spec["high"], **kwargs)


# ---- the study ------------------------------------------------------------------------------------


def sweep(
    model: str | None,
    dataset: str | None,
    space_file: str | Path | tuple[str, dict],
    trials: int,
    storage: str | None = None,
    study: str | None = None,
    config: str | None = None,
    seeds=1,
    out: str = "runs/sweeps",
    data_root: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
    sampler_seed: int | None = None,
) -> dict:
    """Run `trials` more trials of a (possibly shared) study; write best.yaml and the trials table.
    `space_file`: a space file, or (its name in messages, a space `check_space` returned)."""

    if not is_main():
        raise SweepError(
            "sentangle sweep runs one trial at a time per process; for more throughput start "
            "several sweep workers on the same --storage instead of torchrun"
        )
    optuna = import_optuna()
    if trials < 1:
        raise SweepError(f"--trials must be at least 1, got {trials}")
    if isinstance(space_file, tuple):  # (what messages call it, an already checked space)
        space_file, space = space_file
    else:
        space = read_space(space_file)
    base = make_config(model, dataset, config, seeds, None, None, data_root, overrides)
    check_keys(space_file, space, base)
    if base.train.select_split == "test":
        raise SweepError("train.select_split=test: a sweep selects on validation data, never on test")
    study = study or f"{base.model['name']}-{Path(str(base.dataset['name'])).stem}"
    folder = Path(out) / study
    # One dataset for all trials unless the space changes the data itself.
    shared = dataset_from_config(base) if not any(k.startswith("dataset.") for k in space) else None
    task = shared.task if shared is not None else dataset_from_config(base).task
    metric, direction = selection(base.train, task)
    if storage is None:
        folder.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{folder / 'optuna.db'}"
    identity = _identity(base, space, metric)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A trial whose worker died is failed after the grace period and retried with the same values
    # (into the same run folder, so its finished seeds are reused). Optuna 4.9 renamed the hook.
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", optuna.storages.RetryFailedTrialCallback)
    hook = (
        "heartbeat_stale_trial_callback"
        if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
        else "failed_trial_callback"
    )
    with warnings.catch_warnings():  # heartbeats and retries are "experimental" in every Optuna since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(
            storage, heartbeat_interval=HEARTBEAT, grace_period=GRACE, **{hook: retry(max_retry=2)}
        )
    st = optuna.create_study(
        storage=rdb,
        study_name=study,
        load_if_exists=True,
        direction="minimize" if direction == "min" else "maximize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
    )
    _check_identity(st, identity, storage)

    def objective(trial) -> float:
        values = {key: suggest(trial, key, spec) for key, spec in space.items()}
        # A retry of a trial whose worker died (see RDBStorage below) trains into the first try's folder.
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            number = retry.retried_trial_number(frozen)
        number = trial.number if number is None else number
        cfg = make_config(
            model,
            dataset,
            config,
            seeds,
            str(folder),
            f"trial_{number:04d}",
            data_root,
            [*overrides, *(f"{k}={yaml_value(v)}" for k, v in values.items())],
        )
        cfg.train.progress = progress
        trial.set_user_attr("run_folder", str(Path(cfg.out) / cfg.run_name))
        summary = run(cfg, dataset=shared)
        scores = [summary["per_seed"][s][cfg.train.select_split][metric] for s in summary["per_seed"]]
        trial.set_user_attr("seed_scores", scores)
        score = float(sum(scores) / len(scores))
        print(
            f"trial {trial.number}: {cfg.train.select_split} {metric} {score:.4f}  "
            f"{' '.join(f'{k}={v}' for k, v in values.items())}  -> {cfg.out}/{cfg.run_name}",
            file=sys.stderr,
        )
        return score

    # A trial that diverges (NaN loss at a large learning rate) fails on its own; config errors stop the sweep.
    st.optimize(objective, n_trials=trials, catch=(TrainingError,))
    return write_results(st, folder, base, space, metric)


def _identity(base: RunConfig, space: dict, metric: str) -> dict:
    """What must agree between the workers of one study for their scores to be comparable: the
    config (less machine-specific settings: data folder, device, threads, display), the seeds, the
    objective and the space."""
    import json

    cfg = comparable_config(resolved_config(base).to_dict())
    cfg["dataset"].pop("root", None)
    cfg["train"].pop("device", None)
    for k in ("out", "name"):
        cfg.pop(k, None)
    ident = {"config": cfg, "seeds": base.seeds, "metric": metric, "space": space}
    return json.loads(json.dumps(ident, default=str))  # as the storage gives it back


def _check_identity(st, identity: dict, storage: str) -> None:
    have = st.user_attrs.get("sentangle")
    if have is None:
        st.set_user_attr("sentangle", identity)
    elif have != identity:
        diff = [k for k in identity if have.get(k) != identity[k]]
        shown = {k: have.get(k) for k in diff if k in ("seeds", "metric")}
        raise SweepError(
            f"study {st.study_name!r} in {storage} was created with a different {', '.join(diff)}"
            f"{f' {shown}' if shown else ''} than this sweep; its trials would not be comparable, "
            "so pass another --study (or the same settings)"
        )


def write_results(st, folder: Path, base: RunConfig, space: dict, metric: str) -> dict:
    """best.yaml (a config for `sentangle train -c`), trials.md and trials.csv over the whole study
    (every worker's trials)."""
    import optuna

    done = [t for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE]
    keys = list(space)
    full = [
        [t.number, t.state.name.lower(), t.value, *(t.params.get(k) for k in keys), t.user_attrs.get("run_folder", "")]
        for t in st.trials
    ]
    header = ["trial", "state", f"{base.train.select_split} {metric}", *keys, "run folder"]
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *([("" if v is None else v) for v in row] for row in full)])  # full precision
    rows = [[_cell(v) for v in row] for row in full]
    write_text(folder / "trials.csv", buf.getvalue())
    best = st.best_trial if done else None
    md = [
        f"# Sweep {st.study_name}",
        "",
        f"`{base.model['name']}` on `{base.dataset['name']}`: {len(st.trials)} trials ({len(done)} complete), "
        f"objective {base.train.select_split} {metric} ({st.direction.name.lower()}), mean over seeds {base.seeds}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for t, row in zip(st.trials, rows):
        cells = [str(c) for c in row]
        if best is not None and t.number == best.number:
            cells = [f"**{c}**" if c else c for c in cells]
        md.append("| " + " | ".join(cells) + " |")
    result = {
        "study": st.study_name,
        "trials": len(st.trials),
        "complete": len(done),
        "csv": str(folder / "trials.csv"),
        "markdown": str(folder / "trials.md"),
        "best": None,
        "table": "\n".join(md[4:]),
    }
    if best is not None:
        cfg = best_config(base, best.params)
        head = (
            f"# Best of sweep {st.study_name}: trial {best.number}, {base.train.select_split} {metric} "
            f"{best.value:.6g}\n# {', '.join(f'{k}={yaml_value(v)}' for k, v in best.params.items())}\n"
            "# Train it over the protocol's seeds: sentangle train -c best.yaml\n"
        )
        write_text(folder / "best.yaml", head + dump_yaml(cfg))
        md += ["", f"Best: trial {best.number}; config `best.yaml` (`sentangle train -c {folder / 'best.yaml'}`)."]
        result.update(
            best={"number": best.number, "value": best.value, "params": best.params},
            best_yaml=str(folder / "best.yaml"),
        )
    write_text(folder / "trials.md", "\n".join(md) + "\n")
    return result


def best_config(base: RunConfig, params: dict) -> dict:
    """The resolved base config with `params` applied, less seeds, out and name, so that
    `sentangle train -c best.yaml` trains it over the standard seeds into runs/<model>-<dataset>."""

    d = base.to_dict()
    for key, value in params.items():
        keys, parsed = parse_override(f"{key}={yaml_value(value)}")
        node = d
        for k in keys[:-1]:
            if node.get(k) is None:
                node[k] = {}
            node = node[k]
        node[keys[-1]] = parsed
    out = from_dict(d).to_dict()  # checked, defaults filled
    for k in ("seeds", "out", "name"):
        out.pop(k)
    return out


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.5g}" if math.isfinite(v) else str(v)
    return "" if v is None else str(v)
