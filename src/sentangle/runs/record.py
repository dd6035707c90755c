"""A run folder as one JSON record: what git keeps of a run, and what a resume rebuilds it from.

A run folder holds a few small files per run and two per seed; the record (`<folder>.json` beside
the folder, see `record_path`) holds their content in one file:

    format        RECORD_FORMAT
    config        config.yaml, parsed        environment   environment.json
    dataset       dataset.json               summary       summary.json
    summary_md    summary.md, as text        robust        robust.json (when the folder has one)
    replays       replays.json (idem)        confusion     confusion.csv, as text (classification)
    seeds         {"seed_<s>": {"metrics": metrics.json less its history and code hashes,
                                "code_version": index into code_versions,
                                "diagnostics": diagnostics.json (when written)}}, finished seeds only
    code_versions [{"code": ..., "code_structure": ...}]: the source hashes of metrics.json
                  (runs.provenance), once per distinct version, as the seeds of a run mostly share one

The per-epoch `history` stays in the run folder: it is most of a metrics.json, and nothing read from
a record needs it. Checkpoints and predictions are not recorded either. `unpack` writes a record back
into a run folder, which `runs.runner.run` then resumes like any other: the recorded seeds count as
finished and are not trained again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from sentangle.config import dump_yaml, read_yaml
from sentangle.core.errors import DataError
from sentangle.core.io import write_json, write_text
from sentangle.runs.folder import finished
from sentangle.runs.provenance import REPLACED

RECORD_FORMAT = 1
NOT_RECORDED = ("history",)  # metrics.json keys left in the run folder
CODE_KEYS = ("code", "code_structure")  # metrics.json keys recorded once per version, in code_versions
# record key -> file of the run folder; the first is required, the others are recorded when present
FILES = {
    "config": "config.yaml",
    "dataset": "dataset.json",
    "environment": "environment.json",
    "summary": "summary.json",
    "summary_md": "summary.md",
    "robust": "robust.json",
    "replays": "replays.json",
    "confusion": "confusion.csv",  # classification: test counts, seeds pooled (runs/confusion.py)
}
SEED_FILES = {"metrics": "metrics.json", "diagnostics": "diagnostics.json"}
# In the run folder: the digest of the record it was last in step with. A record that no longer
# matches it was changed from outside (a pull, a fresh clone) and is unpacked; one that matches
# leaves the folder as it is, so that work done in the folder since is recorded, not undone.
STAMP = ".record"


def record_path(folder: str | Path) -> Path:
    """Where the record of a run folder lives: `<parent>/<name>.json`, beside the folder."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}.json"


def _read(path: Path):
    if path.suffix == ".yaml":
        return read_yaml(path)
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else text


def _write(path: Path, value) -> None:
    if path.suffix == ".yaml":
        write_text(path, dump_yaml(value))
    elif path.suffix == ".json":
        write_json(path, value)
    else:
        write_text(path, value)


def pack(folder: str | Path) -> dict:
    """The record of a run folder (see the module docstring); a DataError when it is not a run folder."""
    folder = Path(folder)
    if not (folder / FILES["config"]).is_file():
        raise DataError(f"{folder}: not a run folder (it has no {FILES['config']})")
    record: dict = {"format": RECORD_FORMAT}
    try:
        for key, name in FILES.items():
            if (folder / name).is_file():
                record[key] = _read(folder / name)
        seeds = {}
        for done in finished(folder):
            metrics = json.loads(done.read_text(encoding="utf-8"))
            entry = {"metrics": {k: v for k, v in metrics.items() if k not in NOT_RECORDED}}
            for key, name in SEED_FILES.items():
                if key != "metrics" and (done.parent / name).is_file():
                    entry[key] = _read(done.parent / name)
            seeds[done.parent.name] = entry
    except ValueError as e:  # JSON or YAML that does not parse: written by hand or cut short
        raise DataError(f"{folder}: a file of the run folder cannot be read ({e})") from None
    record["seeds"], record["code_versions"] = _share_code(dict(sorted(seeds.items())))
    return record


def _share_code(seeds: dict) -> tuple[dict, list[dict]]:
    """Seed entries with their code hashes moved into a list of distinct versions."""
    versions: list[dict] = []
    out = {}
    for seed, entry in seeds.items():
        code = {k: entry["metrics"][k] for k in CODE_KEYS if k in entry["metrics"]}
        metrics = {k: v for k, v in entry["metrics"].items() if k not in CODE_KEYS}
        out[seed] = {"metrics": metrics, **{k: v for k, v in entry.items() if k != "metrics"}}
        if code:
            if code not in versions:
                versions.append(code)
            out[seed]["code_version"] = versions.index(code)
    return out, versions


def seed_entries(record: dict) -> dict:
    """{seed_<s>: {"metrics": metrics.json less its history, "diagnostics": ...}} of a checked record."""
    out = {}
    for seed, entry in record["seeds"].items():
        code = record["code_versions"][entry["code_version"]] if "code_version" in entry else {}
        out[seed] = {k: v for k, v in entry.items() if k != "code_version"}
        out[seed]["metrics"] = {**entry["metrics"], **code}
    return out


def check_record(record: object, where: str) -> dict:
    """`record` if it has the shape `pack` writes, else a DataError naming `where` and what is wrong."""
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise DataError(f'{where}: not a run record (expected a JSON object with "format": {RECORD_FORMAT})')
    if not isinstance(record.get("config"), dict):
        raise DataError(f"{where}: 'config' must be the run's config, a mapping")
    seeds = record.get("seeds")
    if not isinstance(seeds, dict) or not all(
        isinstance(s, str) and s.startswith("seed_") and isinstance(e, dict) and isinstance(e.get("metrics"), dict)
        for s, e in seeds.items()
    ):
        raise DataError(f"{where}: 'seeds' must map seed_<s> to an object with 'metrics'")
    versions = record.get("code_versions")
    if not isinstance(versions, list) or not all(
        type(e["code_version"]) is int and 0 <= e["code_version"] < len(versions)
        for e in seeds.values()
        if "code_version" in e
    ):
        raise DataError(f"{where}: 'code_versions' must be a list holding every seed's code_version")
    unknown = sorted(set(record) - {"format", "seeds", "code_versions", *FILES})
    if unknown:
        raise DataError(f"{where}: unknown keys {unknown}; expected {['format', *FILES, 'seeds', 'code_versions']}")
    return record


def _recorded_metrics(path: Path) -> dict | None:
    """A seed's metrics.json as a record holds it (None when absent or unreadable)."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {k: v for k, v in metrics.items() if k not in NOT_RECORDED} if isinstance(metrics, dict) else None


def unpack(record: dict, folder: str | Path) -> list[str]:
    """Write `record` into the run folder `folder` (created if needed); return the seeds written.

    The record wins where the two differ. A finished seed whose metrics equal the record's is left as
    it is (its history stays). A seed the record holds that the folder lacks, or holds with other
    metrics (trained again elsewhere), is written from the record, and its other files (checkpoint,
    predictions) are deleted: they came from another training than the recorded metrics. A seed being
    replayed (`runs.provenance.start_replay`) is left to the replay. What the record does not hold
    (other seeds, checkpoints of unchanged seeds) is kept.
    """
    folder = Path(folder)
    check_record(record, str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in FILES.items():
        if key in record:
            _write(folder / name, record[key])
    written = []
    for seed, entry in seed_entries(record).items():
        seed_dir = folder / seed
        if (seed_dir / REPLACED).exists():
            continue
        if _recorded_metrics(seed_dir / SEED_FILES["metrics"]) == entry["metrics"]:
            for key, name in SEED_FILES.items():
                if key != "metrics" and key in entry:
                    _write(seed_dir / name, entry[key])
            continue
        if seed_dir.exists():
            shutil.rmtree(seed_dir)
        seed_dir.mkdir(parents=True)
        # metrics.json last: its presence marks the seed as finished
        for key, name in sorted(SEED_FILES.items(), key=lambda kv: kv[0] == "metrics"):
            if key in entry:
                _write(seed_dir / name, entry[key])
        written.append(seed)
    return written


def read_record(path: str | Path) -> dict:
    """A record file, checked (DataError naming the file when it is not one)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    return check_record(record, str(path))


def write_record(record: dict, path: str | Path) -> bool:
    """Write `record` to `path` unless the file already holds it; True when written."""
    path = Path(path)
    try:
        if json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(record)):
            return False
    except (OSError, ValueError):
        pass
    write_text(path, json.dumps(record, indent=1, allow_nan=False) + "\n")
    return True


def in_step(record: dict, folder: str | Path) -> bool:
    """Whether the run folder holds what `record` holds (then unpacking it changes nothing)."""
    folder = Path(folder)
    if not (folder / FILES["config"]).is_file():
        return False
    try:
        current = pack(folder)
    except DataError:
        return False
    if any(current.get(k) != record.get(k) for k in FILES if k in record):
        return False
    have = seed_entries(current)
    return all(have.get(s) == e for s, e in seed_entries(record).items())


def digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def save_record(folder: str | Path) -> bool:
    """Write the record of the run folder beside it (True when that changed the file) and stamp the
    folder as in step with it."""
    folder = Path(folder)
    record = pack(folder)
    written = write_record(record, record_path(folder))
    write_text(folder / STAMP, digest(record) + "\n")
    return written


def load_record(folder: str | Path) -> list[str] | None:
    """Unpack the record beside the run folder into it when the record changed since the folder was
    last in step with it (see STAMP); return the seeds written, None when the folder was left alone
    (no record, or an unchanged one)."""
    folder, path = Path(folder), record_path(folder)
    if not path.is_file():
        return None
    record = read_record(path)
    stamp = folder / STAMP
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == digest(record):
        return None
    seeds = None if in_step(record, folder) else unpack(record, folder)
    write_text(stamp, digest(record) + "\n")
    return seeds
