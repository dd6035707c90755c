"""The run folder on disk: finished seeds, leftovers of killed writes, config and data checks,
and the one-writer lock."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import warnings
from pathlib import Path

from sentangle.config import RunConfig, from_dict, read_yaml
from sentangle.core.errors import ConfigError
from sentangle.data.dataset import MSADataset
from sentangle.data.named import describe
from sentangle.data.text import text_setting
from sentangle.models.base import model_options


def finished(folder: Path) -> list[Path]:
    """The metrics.json of every finished seed of a run folder (its presence marks the seed done)."""
    return sorted(folder.glob("seed_*/metrics.json"))


def finished_folds(folder: Path) -> list[Path]:
    """The metrics.json of every finished fold of a cross-validation run (runs/protocol.py), also of
    seeds not finished yet: finished work that a resume keeps, like finished seeds."""
    return sorted(folder.glob("seed_*/folds/fold_*/metrics.json"))


def finished_metrics(done: Path) -> dict | None:
    """The metrics of a finished seed, or None when it has to be (re)trained."""
    if not done.exists():
        return None
    try:
        return json.loads(done.read_text(encoding="utf-8"))["metrics"]
    except (OSError, ValueError, KeyError, TypeError) as e:  # written by hand or by a broken disk
        warnings.warn(f"{done} cannot be read ({type(e).__name__}: {e}); training that seed again", stacklevel=2)
        return None


def prepare_folder(folder: Path, resolved: dict) -> None:
    """Before writing config.yaml: drop leftovers of killed writes, and when the config changed
    (--overwrite, or nothing had finished) forget the old results, so a later resume can never mix
    seeds of two configs into one summary."""
    for tmp in [*folder.glob(".*.tmp"), *folder.glob("seed_*/.*.tmp"), *folder.glob("seed_*/folds/fold_*/.*.tmp")]:
        tmp.unlink(missing_ok=True)
    old = folder / "config.yaml"
    if old.exists() and comparable_config(read_yaml(old)) != comparable_config(resolved):
        for path in [*finished(folder), *finished_folds(folder), folder / "summary.json", folder / "summary.md"]:
            path.unlink(missing_ok=True)


def _data_fingerprint(description: dict) -> dict:
    """What a run's numbers depend on in `describe(ds)`: sizes, shapes, label statistics (not the
    path the data was found under)."""
    keep = {k: description.get(k) for k in ("task", "modalities", "input_dims", "classes", "splits")}
    return json.loads(json.dumps(keep, default=str))


def check_same_data(folder: Path, ds: MSADataset) -> None:
    """Finished seeds are only reused on the data they were trained on: a feature file regenerated
    under the same name would otherwise mix old and new results in one summary."""
    old = folder / "dataset.json"
    if not old.exists() or not (finished(folder) or finished_folds(folder)):
        return
    before, now = _data_fingerprint(json.loads(old.read_text(encoding="utf-8"))), _data_fingerprint(describe(ds))
    if before != now:
        diff = sorted(k for k in now if before.get(k) != now[k])
        raise FileExistsError(
            f"{folder}: the data differ from those its finished seeds were trained on "
            f"(dataset.json: {', '.join(diff)}); pass --overwrite or another --name"
        )


def resolved_config(cfg: RunConfig) -> RunConfig:
    """`cfg` with every option of its model written out, from the model's constructor defaults:
    what config.yaml and checkpoints record, so they say which model was built."""
    return dataclasses.replace(cfg, model=model_options(cfg.model["name"], cfg.model))


def comparable_config(config: dict) -> dict:
    """What decides a run's results: the config with defaults filled in (settings added in later
    versions count as their defaults, or as the model's `options_added` values where those differ),
    less the seed list and display-only settings.

    `config` is a config as written to a run folder, or one passed through `resolved_config`
    first: a model option it lacks is taken to predate that option.
    """
    d = from_dict(config).to_dict()
    d["model"] = model_options(d["model"]["name"], d["model"], saved=True)
    d.pop("seeds")
    # absent, partly given or spelt the old way (dataset.finetune_text): the same encoder setting
    d["model"]["text_encoder"] = text_setting(d["model"].get("text_encoder"))
    for k in ("progress", "threads"):
        d["train"].pop(k)
    if d["train"]["protocol"] == "fixed":
        # the default protocol, and folds that only grouped_cv reads, leave a config as it was
        # before they existed (a sweep study's stored identity included)
        for k in ("protocol", "folds"):
            d["train"].pop(k)
    # Where the files lie does not decide the results (a clone elsewhere passes --data-root; a run
    # folder moved, or its --out spelt another way); the data themselves are compared separately
    # (sizes, shapes, label statistics: check_same_data).
    d["dataset"].pop("root", None)
    d.pop("out", None)
    return d


def holds_other_config(folder: Path, cfg: RunConfig) -> bool:
    """`folder` has a config.yaml whose results `cfg` would not reproduce (`comparable_config` differs;
    one that cannot be read counts as other): `run` refuses such a folder without overwrite."""
    stored = Path(folder) / "config.yaml"
    if not stored.is_file():
        return False
    try:
        return comparable_config(read_yaml(stored)) != comparable_config(resolved_config(cfg).to_dict())
    except (ConfigError, TypeError, KeyError):
        return True


def differences(a: dict, b: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """Dotted keys whose values differ between two nested config dicts (absent keys as None)."""
    out = []
    for k in sorted(set(a) | set(b), key=str):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append((f"{prefix}{k}", x, y))
    return out


class FolderBusy(FileExistsError):
    """Another process holds the run folder's lock (folder_lock): a plan run leaves it to that one."""


@contextlib.contextmanager
def folder_lock(folder: Path):
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
            raise FolderBusy(
                f"{folder} is being written by another process ({f.read().strip() or 'pid unknown'}); "
                "wait for it to finish or use another --name"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)  # gone after a normal end; a killed holder leaves it unlocked
            fcntl.flock(f, fcntl.LOCK_UN)
