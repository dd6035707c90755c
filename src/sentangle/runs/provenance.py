"""Code provenance of finished seeds: which source files trained them, and replays that vouch for
seeds of older code whose numbers a retrained seed repeats bit for bit."""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

from sentangle.core.io import write_json
from sentangle.runs.folder import finished

# Where every run's numbers come from besides the model's module(s): the training loop, the ranks
# of a distributed run, the config dataclasses (defaults), and the loading of named datasets
# (readers, text encoding). Their imports inside sentangle, followed transitively, complete the set.
TRAINING_PATH = ("training/trainer.py", "training/distributed.py", "config.py", "data/named.py")


_PACKAGE = Path(__file__).resolve().parents[1]


def _code_only(source: str) -> str:
    """The module's syntax tree without its docstrings, as text: comments, docstrings, blank lines and
    layout do not change what the code computes, so editing them must not make finished seeds stale."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _short_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def read_sources(package: Path) -> dict[str, bytes]:
    """{file relative to `package`, as posix: bytes} for every Python file of the package."""
    return {f.relative_to(package).as_posix(): f.read_bytes() for f in sorted(Path(package).rglob("*.py"))}


def _module_file(module: str, texts: dict[str, bytes]) -> str | None:
    """The file (a key of `texts`) of a dotted module name inside the package, or None."""
    parts = module.split(".")
    if parts[0] != _PACKAGE.name:
        return None
    stem = "/".join(parts[1:])
    for name in (f"{stem}.py", f"{stem}/__init__.py" if stem else "__init__.py"):
        if name in texts:
            return name
    return None


def _imports(name: str, texts: dict[str, bytes]) -> set[str]:
    """The package files that `name`'s import statements name, wherever they stand (a function-level
    import counts as much as one at the top). Only the named module itself is followed, not the
    __init__ of the packages above it: those re-export (sentangle/__init__.py imports the whole API),
    and counting them would make every seed depend on every file."""
    package = name.split("/")[:-1]  # where a relative import starts
    found: set[str] = set()
    for node in ast.walk(ast.parse(texts[name], filename=name)):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = package[: len(package) - node.level + 1]
                base = ".".join([_PACKAGE.name, *up, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # `from a import b` imports a, and a.b too when b is a module rather than a name in a
            modules = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {f for f in (_module_file(m, texts) for m in modules) if f is not None}
    return found


def import_closure(roots, texts: dict[str, bytes], imports=None) -> set[str]:
    """The files of `roots` and every package file they import, directly or through others
    (`imports(name)`: those of one file; default: parsed from `texts`)."""
    imports = imports or (lambda name: _imports(name, texts))
    seen, todo = set(), [r for r in roots if r in texts]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imports(name) - seen)
    return seen


# Read once, when this module is imported (with the rest of the package): a process keeps the code
# it loaded, so files edited while it trains must not be credited to its seeds.
_TEXTS = read_sources(_PACKAGE)


def model_files(model_class: type) -> set[str]:
    """The package files that define `model_class` and its sentangle base classes."""
    return {
        Path(inspect.getfile(c)).resolve().relative_to(_PACKAGE).as_posix()
        for c in model_class.__mro__
        if c.__module__.split(".")[0] == _PACKAGE.name
    }


def fingerprint(roots, texts: dict[str, bytes], imports=None) -> dict[str, str]:
    """{file: SHA-256 (16 hex digits)} over `import_closure(roots, texts, imports)`."""
    return {f: _short_hash(texts[f]) for f in sorted(import_closure(roots, texts, imports))}


@functools.cache
def _imports_loaded(name: str) -> frozenset[str]:
    # every model's closure shares most files: each is parsed once per process
    return frozenset(_imports(name, _TEXTS))


@functools.cache
def _fingerprint_of(roots: frozenset[str]) -> tuple[tuple[str, str], ...]:
    return tuple(fingerprint(roots, _TEXTS, _imports_loaded).items())


def code_fingerprint(model_class: type, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """{source file: SHA-256 (16 hex digits)} for the files that `model_class`'s module(s) (its
    sentangle base classes included) and the training path (`TRAINING_PATH`) import, transitively,
    as they were when the package was imported. Config equality alone cannot tell that a seed was
    trained before a code change; this can, without git, and names the files that changed: a model
    that borrows another's layers (LMF imports TFN's) depends on that file too. `extra`: further
    package files the run's numbers depend on (runs/protocol.py for cross-validation)."""
    return dict(_fingerprint_of(frozenset(model_files(model_class)) | frozenset(TRAINING_PATH) | frozenset(extra)))


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


def record_changes(record: dict, code: dict[str, str]) -> list[str]:
    """The source files that differ between a finished seed's (or fold's) metrics.json and `code`;
    [] when only comments, docstrings or layout changed."""
    changed = code_changes(record.get("code"), code)
    structure = record.get("code_structure")
    if changed and isinstance(structure, dict) and not code_changes(structure, code_structure(code)):
        return []
    return changed


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
            recorded, changed = record.get("code"), record_changes(record, code)
        except (OSError, ValueError, AttributeError):
            continue  # unreadable: run() trains it again anyway
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
    keys: set[str] = set()
    frontier = {now}
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
    identical = (
        json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) and old.get("best_epoch") == new["best_epoch"]
    )
    entry = {
        "seed": seed_dir.name,
        "old": code_key(old["code"]) if isinstance(old.get("code"), dict) else None,
        "new": code_key(new["code"]),
        "files": code_changes(old.get("code"), new["code"]),
        "identical": identical,
        "max_abs_diff": max(diffs, default=None),
        "best_epoch": [old.get("best_epoch"), new["best_epoch"]],
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
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
