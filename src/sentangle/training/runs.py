"""Multi-seed runs and the run folder.

    runs/<name>/config.yaml        the resolved config (re-run it with --config)
    runs/<name>/environment.json   versions, git commit, platform
    runs/<name>/dataset.json       what was loaded (sizes, shapes, normalisation report)
    runs/<name>/seed_<s>/          metrics.json (per split + history), checkpoint.pt, predictions_<split>.csv
    runs/<name>/summary.json|md    mean and std over seeds, per split

A seed whose metrics.json exists (for the same config) is not trained again, so an interrupted
multi-seed run picks up where it stopped. Each seed records a hash of every source file that
trained it (`code_fingerprint`) and of their code without comments and docstrings (`code_structure`);
reusing a seed trained by other code is allowed (a resume after an upgrade) but warned about, naming
the files that differ; `stale_seeds` lists such seeds for reports. An edit of comments or
docstrings alone leaves seeds current.
    runs/<name>/replays.json       seeds trained again after a code change, and whether their metrics
                                   came out identical (then the other seeds of that code still count)
"""
from __future__ import annotations

import ast
import contextlib
import csv
import functools
import hashlib
import inspect
import io
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig, dump_yaml, from_dict, read_yaml
from ..data.dataset import MSADataset
from ..data.named import describe, load_dataset
from ..models.base import MODELS, MSAModel, create_model
from ..report.diagnose import diagnostics_markdown, summarize_run_diagnostics, write_seed_diagnostics
from ..report.tables import aggregate, split_table
from ..utils.io import atomic_write, versions, write_json, write_text
from .distributed import setup as distributed_setup
from .trainer import fit, predict, set_seed


class CheckpointError(ValueError):
    pass


def dataset_from_config(cfg: RunConfig, root=None) -> MSADataset:
    args = {k: v for k, v in cfg.dataset.items() if k != "name"}
    if root is not None:
        args["root"] = root
    return load_dataset(cfg.dataset["name"], **args)


def model_for(cfg: RunConfig, ds: MSADataset) -> MSAModel:
    args = {k: v for k, v in cfg.model.items() if k != "name"}
    return create_model(cfg.model["name"], ds.input_dims, ds.output_dim, ds.text_encoder, **args)


# Besides the model's own module(s): what every model's numbers depend on.
SHARED_SOURCES = ("models/base.py", "models/layers.py", "models/losses.py", "training/trainer.py",
                  "training/metrics.py")  # and every file under data/


_PACKAGE = Path(__file__).resolve().parents[1]


def _code_only(source: str) -> str:
    """The module's syntax tree without its docstrings, as text: comments, docstrings, blank lines and
    layout do not change what the code computes, so editing them must not make finished seeds stale."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _short_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# Read once, when this module is imported (with the rest of the package): a process keeps the code
# it loaded, so files edited while it trains must not be credited to its seeds.
_TEXTS = {f.relative_to(_PACKAGE).as_posix(): f.read_bytes() for f in sorted(_PACKAGE.rglob("*.py"))}
_SOURCES = {f: _short_hash(b) for f, b in _TEXTS.items()}


def code_fingerprint(model_class: type) -> dict[str, str]:
    """{source file: SHA-256 (16 hex digits)} for the files that define `model_class` (its
    sentangle base classes included) and the shared training and data code, as they were when the
    package was imported. Config equality alone cannot tell that a seed was trained before a code
    change; this can, without git, and names the files that changed."""
    own = {Path(inspect.getsourcefile(c)).resolve().relative_to(_PACKAGE).as_posix() for c in model_class.__mro__
           if c.__module__.split(".")[0] == "sentangle"}
    return {f: h for f, h in _SOURCES.items() if f in own or f in SHARED_SOURCES or f.startswith("data/")}


@functools.cache
def _structure_hash(name: str) -> str:
    return _short_hash(_code_only(_TEXTS[name].decode("utf-8")).encode())


def code_structure(code: dict[str, str]) -> dict[str, str]:
    """For the files of a `code_fingerprint`: the hash of their code without comments, docstrings and
    layout (`_code_only`), as imported. Seeds record it beside the file hashes, so that a later edit
    of comments or documentation alone leaves them current."""
    return {f: _structure_hash(f) for f in code if f in _TEXTS}


def code_changes(recorded: dict | None, current: dict[str, str]) -> list[str]:
    """The source files that differ between a seed's recorded code and `current` (["not recorded"]
    for seeds of versions that did not record it)."""
    if not isinstance(recorded, dict):
        return ["not recorded"]
    return sorted(f for f in set(recorded) | set(current) if recorded.get(f) != current.get(f))


def stale_seeds(folder: Path, code: dict[str, str], seeds=None) -> dict[str, list[str]]:
    """{seed folder name: files that differ} for the finished seeds of `folder` (those in `seeds`
    when given) trained by code other than `code` (this checkout's) and not vouched for by a replay
    (`vouched_codes`); a seed whose recorded `code_structure` matches is current (only comments,
    docstrings or layout changed)."""
    out, vouched = {}, vouched_codes(folder, code)
    for done in finished(Path(folder)):
        if seeds is not None and int(done.parent.name.split("_", 1)[1]) not in seeds:
            continue
        try:
            record = json.loads(done.read_text(encoding="utf-8"))
            recorded, structure = record.get("code"), record.get("code_structure")
        except (OSError, ValueError, AttributeError):
            continue  # unreadable: run() trains it again anyway
        changed = code_changes(recorded, code)
        if changed and isinstance(structure, dict) and not code_changes(structure, code_structure(code)):
            continue  # the files differ in comments, docstrings or layout only
        if changed and not (isinstance(recorded, dict) and code_key(recorded) in vouched):
            out[done.parent.name] = changed
    return out


# Replays: after a code change, one seed per recorded code version is trained again; when its
# metrics come out identical, the change did not touch what this run folder computes, and the other
# seeds of that version stand for this code too (a deterministic CPU run repeats bit for bit).
REPLAYS = "replays.json"
REPLACED = "metrics.replaced.json"  # a replayed seed's old metrics.json while the seed trains again


def code_key(code: dict) -> str:
    return hashlib.sha256(json.dumps(code, sort_keys=True).encode()).hexdigest()[:16]


def _replays(folder: Path) -> list[dict]:
    path = Path(folder) / REPLAYS
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except ValueError as e:
        warnings.warn(f"{path} cannot be read ({e}); no seed of {folder} is vouched for by a replay", stacklevel=2)
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def vouched_codes(folder: Path, code: dict[str, str]) -> set[str]:
    """Keys (`code_key`) of the recorded code versions whose seeds count as trained by `code`: a
    replay from that version gave identical metrics, directly or through a chain of such replays."""
    entries = [e for e in _replays(folder) if e.get("identical") is True and e.get("old")]
    now = code_key(code)
    keys, frontier = set(), {now}
    while frontier:
        frontier = {e["old"] for e in entries if e.get("new") in frontier} - keys - {now}
        keys |= frontier
    return keys


def replay_groups(folder: Path, code: dict[str, str], seeds=None) -> list[list[str]]:
    """The stale seeds of `folder` (seed folder names) grouped by the code that trained them; a seed
    that recorded no code is a group of its own (nothing says which code it was)."""
    def key(path: Path, seed: str) -> str:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("code")
        return code_key(recorded) if isinstance(recorded, dict) else seed

    # a code version with a replay under way (an interrupted run) needs no second one
    pending = {key(p, p.parent.name) for p in Path(folder).glob(f"seed_*/{REPLACED}")}
    groups: dict[str, list[str]] = {}
    for seed in sorted(stale_seeds(folder, code, seeds)):
        groups.setdefault(key(Path(folder) / seed / "metrics.json", seed), []).append(seed)
    return [g for k, g in groups.items() if k not in pending]


def start_replay(seed_dir: Path) -> None:
    """Mark a finished seed for training again: its metrics.json is kept aside for `finish_replay`."""
    os.replace(seed_dir / "metrics.json", seed_dir / REPLACED)


def finish_replay(seed_dir: Path) -> dict | None:
    """After a seed started by `start_replay` trained again: compare the two metrics.json, append
    the verdict to the folder's replays.json and return it (None while the seed has not trained).
    When the metrics differ, the other seeds of the old code are unmarked as finished, to be
    trained again by the next run (their numbers came from code that computes differently)."""
    seed_dir = Path(seed_dir)
    if not (seed_dir / "metrics.json").exists():
        return None
    old = json.loads((seed_dir / REPLACED).read_text(encoding="utf-8"))
    new = json.loads((seed_dir / "metrics.json").read_text(encoding="utf-8"))
    a, b = _flat(old.get("metrics", {})), _flat(new["metrics"])
    diffs = [abs(a[k] - b[k]) for k in a.keys() & b.keys() if np.isfinite(a[k]) and np.isfinite(b[k])]
    # bit for bit, NaN included (a collapsed model's correlation), and the same selected epoch
    identical = (json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
                 and old.get("best_epoch") == new["best_epoch"])
    entry = {"seed": seed_dir.name, "old": code_key(old["code"]) if isinstance(old.get("code"), dict) else None,
             "new": code_key(new["code"]), "files": code_changes(old.get("code"), new["code"]),
             "identical": identical, "max_abs_diff": max(diffs, default=None), "best_epoch": [old.get("best_epoch"), new["best_epoch"]],
             "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    folder = seed_dir.parent
    write_json(folder / REPLAYS, [*_replays(folder), entry])
    (seed_dir / REPLACED).unlink()
    if not identical and entry["old"] is not None:
        for done in finished(folder):
            recorded = json.loads(done.read_text(encoding="utf-8")).get("code")
            if isinstance(recorded, dict) and code_key(recorded) == entry["old"]:
                done.unlink()
    return entry


def _flat(metrics: dict) -> dict[str, float]:
    return {f"{split}/{k}": v for split, values in metrics.items() for k, v in values.items()}


def save_checkpoint(path: Path, model: MSAModel, cfg: RunConfig, ds: MSADataset, seed: int) -> None:
    payload = {
        "format": "sentangle-checkpoint-1",
        "state_dict": model.state_dict(),
        "config": cfg.to_dict(),
        "seed": seed,
        "versions": versions(),
        "data": {"input_dims": ds.input_dims, "output_dim": ds.output_dim, "task": ds.task,
                 "class_names": ds.class_names, "text_encoder": ds.text_encoder},
    }
    payload["sha256"] = checkpoint_digest(payload)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _digest_matches(payload: dict) -> bool:
    try:
        return checkpoint_digest(payload) == payload["sha256"]
    except Exception:  # corrupt metadata can make a "tensor" that cannot even be hashed
        return False


def checkpoint_digest(payload: dict) -> str:
    """SHA-256 of the weights, config, data facts and seed. torch.load does not check the zip CRCs,
    so a flipped byte inside a tensor would otherwise load as silently different weights."""
    h = hashlib.sha256(json.dumps([payload.get(k) for k in ("config", "data", "seed")], sort_keys=True,
                                  default=str).encode())
    for name in sorted(payload["state_dict"]):
        t = payload["state_dict"][name].detach().cpu().contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_checkpoint(path: str | Path) -> tuple[MSAModel, RunConfig, dict]:
    """Rebuild the model of a checkpoint. Loads tensors and plain data only (no code runs)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # a foreign pickle also draws a protocol warning: one error is enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt, truncated or not a sentangle checkpoint "
                              f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != "sentangle-checkpoint-1":
        raise CheckpointError(f"checkpoint {path}: missing 'format: sentangle-checkpoint-1'; not written by sentangle")
    missing = [k for k in ("state_dict", "config", "data") if not isinstance(payload.get(k), dict)]
    if missing:
        raise CheckpointError(f"checkpoint {path}: no {missing} entries; expected a state_dict, config and data dicts")
    # Checkpoints written before the digest existed carry none; every later one is verified.
    if "sha256" in payload and not _digest_matches(payload):
        raise CheckpointError(f"checkpoint {path} is corrupt: its weights/config do not match the SHA-256 stored "
                              "in it (flipped or overwritten bytes); retrain or restore the file")
    cfg = from_dict(payload["config"])
    data = payload["data"]
    args = {k: v for k, v in cfg.model.items() if k != "name"}
    args = {**{k: v for k, v in MODELS.get(cfg.model["name"]).options_added.items() if k not in args}, **args}
    model = create_model(cfg.model["name"], data["input_dims"], data["output_dim"], data["text_encoder"], **args)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: weights do not fit model {cfg.model['name']!r}: {str(e)[:300]}") from None
    model.eval()
    return model, cfg, payload


def write_predictions(path: Path, ds: MSADataset, pred: np.ndarray, label: np.ndarray, ids: list[str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    if ds.task == "regression":
        w.writerow(["id", "prediction", "label"])
        w.writerows((i, f"{p:.6f}", f"{y:.6f}") for i, p, y in zip(ids, pred, label))
    else:
        names = ds.class_names or []
        w.writerow(["id", "prediction", "label"] + [f"logit_{c}" for c in names])
        w.writerows([i, names[int(np.argmax(p))], names[int(y)]] + [f"{v:.5f}" for v in p]
                    for i, p, y in zip(ids, pred, label))
    write_text(path, buf.getvalue())


def constant_predictions(pred: np.ndarray, label: np.ndarray, task: str) -> bool:
    """Whether a split's predictions are (nearly) constant while its labels are not: regression
    predictions whose std is below 1% of the labels' std, or one class predicted for every sample
    of a split with several classes. Such a model scores like the mean (or majority) predictor;
    its MAE alone does not show it."""
    if len(label) < 2:
        return False
    if task == "regression":
        spread = float(np.std(label))
        return spread > 0 and float(np.std(pred)) < 0.01 * spread
    return len(np.unique(label)) > 1 and len(np.unique(np.argmax(pred, -1))) == 1


# no_better_than_constant's bar: on MOSEI text, diverged DBR seeds were at 0.95-1.03 times the best
# constant's test MAE and healthy models at 0.78-0.83 (the runs of docs/dbr.md, "Encoder output scale").
NO_GAIN_MARGIN = 0.9


def no_better_than_constant(pred: np.ndarray, label: np.ndarray, train_label: np.ndarray, task: str,
                            margin: float = NO_GAIN_MARGIN) -> bool:
    """Whether a split's error is above `margin` times that of the best constant predictor fitted
    on the training labels (their mean or median for MAE, their majority class for the error
    rate). A model that has learned (almost) nothing scores there without being constant."""
    if len(label) == 0 or len(train_label) == 0:
        return False
    if task == "regression":
        error = float(np.mean(np.abs(pred - label)))
        base = min(float(np.mean(np.abs(c - label))) for c in (np.mean(train_label), np.median(train_label)))
    else:
        majority = np.bincount(train_label.astype(int)).argmax()
        error = float(np.mean(np.argmax(pred, -1) != label))
        base = float(np.mean(label != majority))
    return base > 0 and error > margin * base


def summarize(per_seed: dict[int, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict]]:
    splits = next(iter(per_seed.values()))
    return {s: {m: aggregate([per_seed[seed][s][m] for seed in per_seed]) for m in splits[s]} for s in splits}


def finished(folder: Path) -> list[Path]:
    """The metrics.json of every finished seed of a run folder (its presence marks the seed done)."""
    return sorted(folder.glob("seed_*/metrics.json"))


def _finished_metrics(done: Path) -> dict | None:
    """The metrics of a finished seed, or None when it has to be (re)trained."""
    if not done.exists():
        return None
    try:
        return json.loads(done.read_text(encoding="utf-8"))["metrics"]
    except (OSError, ValueError, KeyError, TypeError) as e:  # written by hand or by a broken disk
        warnings.warn(f"{done} cannot be read ({type(e).__name__}: {e}); training that seed again", stacklevel=2)
        return None


def _prepare_folder(folder: Path, resolved: dict) -> None:
    """Before writing config.yaml: drop leftovers of killed writes, and when the config changed
    (--overwrite, or nothing had finished) forget the old results, so a later resume can never mix
    seeds of two configs into one summary."""
    for tmp in [*folder.glob(".*.tmp"), *folder.glob("seed_*/.*.tmp")]:
        tmp.unlink(missing_ok=True)
    old = folder / "config.yaml"
    if old.exists() and comparable_config(read_yaml(old)) != comparable_config(resolved):
        for path in [*finished(folder), folder / "summary.json", folder / "summary.md"]:
            path.unlink(missing_ok=True)


def _data_fingerprint(description: dict) -> dict:
    """What a run's numbers depend on in `describe(ds)`: sizes, shapes, label statistics (not the
    path the data was found under)."""
    keep = {k: description.get(k) for k in ("task", "modalities", "input_dims", "classes", "splits")}
    return json.loads(json.dumps(keep, default=str))


def _check_same_data(folder: Path, ds: MSADataset) -> None:
    """Finished seeds are only reused on the data they were trained on: a feature file regenerated
    under the same name would otherwise mix old and new results in one summary."""
    old = folder / "dataset.json"
    if not old.exists() or not finished(folder):
        return
    before, now = _data_fingerprint(json.loads(old.read_text(encoding="utf-8"))), _data_fingerprint(describe(ds))
    if before != now:
        diff = sorted(k for k in now if before.get(k) != now[k])
        raise FileExistsError(f"{folder}: the data differ from those its finished seeds were trained on "
                              f"(dataset.json: {', '.join(diff)}); pass --overwrite or another --name")


def comparable_config(config: dict) -> dict:
    """What decides a run's results: the config with defaults filled in (settings added in later
    versions count as their defaults), less the seed list and display-only settings."""
    d = from_dict(config).to_dict()
    d.pop("seeds")
    for k in ("progress", "threads"):
        d["train"].pop(k)
    return d


def _differences(a: dict, b: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """Dotted keys whose values differ between two nested config dicts (absent keys as None)."""
    out = []
    for k in sorted(set(a) | set(b), key=str):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append((f"{prefix}{k}", x, y))
    return out


def run(cfg: RunConfig, overwrite: bool = False, dataset: MSADataset | None = None) -> dict:
    """Train `cfg.model` on `cfg.dataset` once per seed; write the run folder; return the summary."""
    folder = Path(cfg.out) / cfg.run_name
    resolved = cfg.to_dict()
    # Under torchrun (training/distributed.py) rank 0 alone reads and writes the run folder and
    # tells the other ranks what it found, so they also work on a node without a shared disk.
    ddp = distributed_setup(cfg.train.device)

    def check_folder() -> None:
        if (folder / "config.yaml").exists() and not overwrite and finished(folder):
            old, new = comparable_config(read_yaml(folder / "config.yaml")), comparable_config(resolved)
            if old != new:
                diff = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in _differences(old, new)[:5])
                raise FileExistsError(f"{folder} holds a run with a different config ({diff}); "
                                      "pass --overwrite or another --name")

    ddp.on_main(check_folder)
    ds = dataset or dataset_from_config(cfg)
    code = code_fingerprint(type(model_for(cfg, ds)))  # a bad model name or option fails here, before anything is written
    if not overwrite:
        ddp.on_main(lambda: _check_same_data(folder, ds))
        stale = ddp.on_main(lambda: stale_seeds(folder, code, cfg.seeds))
        if stale:
            warnings.warn(f"{folder}: reusing {len(stale)} finished seed(s) trained by other code than this "
                          f"checkout's (source files that differ: {stale}); pass --overwrite to retrain them",
                          stacklevel=2)
    with contextlib.ExitStack() as stack:
        # rank 0 holds the lock; on_main stops every rank if it cannot (no rank waits on a dead one)
        ddp.on_main(lambda: stack.enter_context(_folder_lock(folder)))
        return _train_and_write(cfg, ds, folder, resolved, code, overwrite, ddp)


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """One writer per run folder: a second process on the same folder stops at once instead of
    training the same seeds and interleaving its files with the first one's."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform (Windows): unguarded
        yield
        return
    lock = folder.parent / f".{folder.name}.lock"  # beside the folder: the folder's files stay the run's
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise FileExistsError(f"{folder} is being written by another process ({f.read().strip() or 'pid unknown'}); "
                                  "wait for it to finish or use another --name") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)  # gone after a normal end; a killed holder leaves it unlocked
            fcntl.flock(f, fcntl.LOCK_UN)


def _train_and_write(cfg: RunConfig, ds: MSADataset, folder: Path, resolved: dict, code: dict, overwrite: bool,
                     ddp) -> dict:
    if ddp.main:
        _prepare_folder(folder, resolved)
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "config.yaml", dump_yaml(resolved))
        write_json(folder / "environment.json", versions())
        write_json(folder / "dataset.json", {**describe(ds), "info": ds.info})
    per_seed: dict[int, dict] = {}
    for seed in cfg.seeds:
        seed_dir = folder / f"seed_{seed}"
        done = seed_dir / "metrics.json"
        kept = ddp.on_main(lambda: None if overwrite else _finished_metrics(done))
        if kept is not None:
            per_seed[seed] = kept
            continue
        set_seed(seed)  # initialisation belongs to the seed too
        model = model_for(cfg, ds)
        result = fit(model, ds, cfg.train, seed, desc=f"{cfg.model['name']} seed {seed}")
        per_seed[seed] = result.metrics
        if not ddp.main:
            continue
        outputs = {}
        for split in ds.splits:
            pred, label, ids = predict(model, ds, split, cfg.train.eval_batch_size, cfg.train.device)
            write_predictions(seed_dir / f"predictions_{split}.csv", ds, pred, label, ids)
            outputs[split] = pred, label
        constant = [s for s, (pred, label) in outputs.items() if constant_predictions(pred, label, ds.task)]
        train_label = outputs["train"][1] if "train" in outputs else None
        no_gain = [s for s, (pred, label) in outputs.items() if s not in constant and train_label is not None
                   and no_better_than_constant(pred, label, train_label, ds.task)]
        if constant:
            warnings.warn(f"{seed_dir}: the selected model gives (nearly) the same prediction for every sample of "
                          f"{', '.join(constant)}: it has collapsed to a constant predictor, and its metrics are "
                          "those of a constant; look at the loss history in metrics.json", stacklevel=2)
        if no_gain:
            warnings.warn(f"{seed_dir}: on {', '.join(no_gain)} the selected model's error is above "
                          f"{100 * NO_GAIN_MARGIN:.0f}% of that of the "
                          "best constant predictor fitted on the training labels: it has learned (almost) nothing; "
                          "look at the loss history in metrics.json", stacklevel=2)
        save_checkpoint(seed_dir / "checkpoint.pt", model, cfg, ds, seed)
        write_seed_diagnostics(seed_dir, cfg.model["name"], model, ds)  # report/diagnose.py: opt-in per model
        # metrics.json last: its presence marks the seed as finished for resuming.
        write_json(done, {"seed": seed, "code": code, "code_structure": code_structure(code), "best_epoch": result.best_epoch, "select_metric": result.select_metric,
                          "select_split": cfg.train.select_split, "best_score": result.best_score,
                          "constant_predictions": constant, "no_better_than_constant": no_gain,
                          "train_seconds": round(result.seconds, 2), "parameters": sum(p.numel() for p in model.parameters()),
                          "metrics": result.metrics, "history": result.history})
    summary = summarize(per_seed)
    if not ddp.main:
        ddp.barrier()  # return when rank 0 has written the summary
        return {"folder": str(folder), "task": ds.task, "splits": summary, "per_seed": per_seed, "references": None}
    diagnostics = summarize_run_diagnostics(folder, per_seed)  # over the seeds that wrote diagnostics.json
    write_json(folder / "summary.json", {"model": cfg.model["name"], "dataset": cfg.dataset["name"],
                                         "task": ds.task, "seeds": list(per_seed), "std": "sample (ddof=1)",
                                         "splits": summary, "per_seed": per_seed,
                                         **({"diagnostics": diagnostics} if diagnostics else {}),
                                         "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    md = (f"# {cfg.run_name}\n\nModel `{cfg.model['name']}` on `{cfg.dataset['name']}`, seeds {list(per_seed)}; "
          f"selected on {cfg.train.select_split} ({cfg.train.select_metric}); mean ± sample std over seeds.\n\n"
          + split_table(summary, ds.task) + "\n")
    references = None
    if "oracle" in ds.info:  # the synthetic benchmark knows what is achievable
        from ..data.synthetic import oracle_table

        references = oracle_table(ds)
        md += "\nReference predictors on the same test split:\n\n" + references + "\n"
    if diagnostics:
        md += "\nBranch / gate diagnostics (seed_<s>/diagnostics.json):\n\n" + diagnostics_markdown(diagnostics) + "\n"
    write_text(folder / "summary.md", md)
    ddp.barrier()
    return {"folder": str(folder), "task": ds.task, "splits": summary, "per_seed": per_seed,
            "references": references}
