"""The results browser (`sentangle serve --runs DIR`): the run folders under DIR with their summary
tables (mean ± sample std over seeds, runs/runner.py's summary.json), one comparison table per
dataset and split, and the files `sentangle report` / `compare` write (Markdown, CSV, plots),
served from inside DIR only."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePath

from sentangle.core.errors import ConfigError
from sentangle.recipes.compare import SPLITS_SHOWN
from sentangle.report.tables import LABELS, best_mean, fmt, metric_order

# Shown in the browser as they are; no SVG or HTML, which could carry scripts.
MEDIA_TYPES = {".png": "image/png", ".md": "text/plain; charset=utf-8", ".csv": "text/plain; charset=utf-8"}
MAX_DEPTH = 4  # DIR/group/run/report/file: deeper folders are seeds' internals
MAX_FILES = 500


def check_root(root: str | os.PathLike) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise ConfigError(f"--runs {root}: not a folder; expected a folder holding run folders (sentangle train --out)")
    return path.resolve()


def _walk(root: Path):
    """(folder, file names) under root, at most MAX_DEPTH deep, skipping seed folders and hidden
    ones; links are not followed."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        depth = len(Path(folder).relative_to(root).parts)
        dirs[:] = [] if depth >= MAX_DEPTH else sorted(d for d in dirs if not d.startswith((".", "seed_")))
        yield Path(folder), sorted(files)


def _run(root: Path, folder: Path) -> dict | None:
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        splits = summary["splits"]
        task = str(summary.get("task", "regression"))
        runs = {
            split: {m: {**stat, "text": fmt(m, stat)} for m, stat in metrics.items()}
            for split, metrics in splits.items()
        }
        cols = metric_order(task, {m for metrics in splits.values() for m in metrics})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # not a summary `sentangle train` wrote: not a run
    name = folder.relative_to(root).as_posix() or folder.name
    return {
        "name": name,
        "model": str(summary.get("model", "?")),
        # a feature file or folder is recorded by its path: its name says as much without this machine's folders
        "dataset": PurePath(str(summary.get("dataset", "?"))).name,
        "task": task,
        "seeds": summary.get("seeds", []),
        "finished": summary.get("finished"),
        "splits": runs,
        # the summary table as summary.md has it: a row per split, the metrics in the usual order
        "table": {
            "columns": [LABELS.get(c, c) for c in cols],
            "rows": [[split, *(ms[c]["text"] if c in ms else "n/a" for c in cols)] for split, ms in runs.items()],
        },
        "raw": splits,
        "summary_md": f"{name}/summary.md" if (folder / "summary.md").is_file() else None,
    }


def comparisons(runs: list[dict]) -> list[dict]:
    """One table per (dataset, task, split): the runs as rows, best mean per column flagged."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["task"]), []).append(r)
    tables = []
    for (dataset, task), members in sorted(groups.items()):
        for split in SPLITS_SHOWN:
            rows = {r["name"]: r["raw"][split] for r in members if split in r["raw"]}
            if not rows:
                continue
            cols = metric_order(task, {m for stats in rows.values() for m in stats})
            best = {c: best_mean(rows, c) for c in cols}
            tables.append(
                {
                    "dataset": dataset,
                    "task": task,
                    "split": split,
                    "columns": [LABELS.get(c, c) for c in cols],
                    "rows": [
                        {
                            "run": name,
                            "seeds": next((s.get("n", 0) for s in stats.values()), 0),
                            "cells": [
                                {
                                    "text": fmt(c, stats[c]) if c in stats else "n/a",
                                    "best": c in stats and best[c] is not None and stats[c]["mean"] == best[c],
                                }
                                for c in cols
                            ],
                        }
                        for name, stats in rows.items()
                    ],
                }
            )
    return tables


def overview(root: Path) -> dict:
    """What /v1/runs answers: runs, comparisons and the report files, paths relative to root."""
    runs: list[dict] = []
    files: list[dict] = []
    for folder, names in _walk(root):
        if "summary.json" in names:
            run = _run(root, folder)
            if run is not None:
                runs.append(run)
        for n in names:
            if Path(n).suffix.lower() in MEDIA_TYPES and n != "summary.md" and len(files) < MAX_FILES:
                rel = (folder / n).relative_to(root).as_posix()
                files.append({"path": rel, "folder": Path(rel).parent.as_posix(), "kind": Path(n).suffix.lower()[1:]})
    tables = comparisons(runs)
    for r in runs:
        del r["raw"]
    return {"root": root.name, "runs": runs, "comparisons": tables, "files": files}


def safe_file(root: Path, relative: str) -> Path | None:
    """The file `relative` names inside root, or None: outside root (.., absolute, a link leading
    out), not a file, or of a kind not served."""
    if not relative or "\x00" in relative:
        return None
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or path.suffix.lower() not in MEDIA_TYPES or not path.is_file():
        return None
    return path
