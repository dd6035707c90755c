"""`sentangle report`: trained run folders -> tables, CSV and figures in one folder.

    from sentangle.recipes.report import report
    res = report(["runs/tsda-synthetic", "runs/dbr-synthetic"], out="runs/report")

writes into `out`:

    report.md                  test and valid tables (mean ± sample std over seeds, best per column in
                               bold in the metric's direction), branch diagnostics, gates, robustness
    report.csv                 the same numbers, one row per run and split (recipes.compare's format)
    pred_<run>.png             predicted vs true on test (regression), or the confusion matrix with
                               class names (classification), every seed's predictions pooled (from
                               seed_<s>/predictions.npz; a note instead where no seed has them)
    confusion_<run>.csv        classification: that confusion matrix as counts (rows true, columns
                               predicted), also shown in report.md
    gates_<run>.png            distributions of the gates / branch weights in ModelOutput.extras
                               (reloads the checkpoints and the dataset; skipped, saying why, if it cannot)
    robust_*.png               robustness curves, when the run folders hold robust.json (`sentangle robust`)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sentangle.core.errors import CheckpointError, ConfigError, DataError
from sentangle.core.io import write_text
from sentangle.recipes.compare import SPLITS_SHOWN, csv_table, seed_facts
from sentangle.recipes.robust import robust_table, run_labels
from sentangle.report import plots
from sentangle.report.confusion import confusion_counts, confusion_csv, confusion_markdown
from sentangle.report.diagnose import gate_values, shown_keys
from sentangle.report.tables import aggregate, results_table
from sentangle.runs.checkpoint import load_checkpoint
from sentangle.runs.predictions import FILE as PREDICTIONS
from sentangle.runs.predictions import read_csv_predictions, read_seed_predictions
from sentangle.runs.runner import dataset_from_config, dataset_key

__all__ = ["report", "read_predictions", "read_run"]


def read_run(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / "summary.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no summary.json; expected a run folder that `sentangle train` finished")
    summary = json.loads(path.read_text())
    summary["folder"] = str(folder)
    return summary


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """(prediction, label, class names) from a predictions CSV; class indices for classification."""
    return read_csv_predictions(path)


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _prediction_plot(label: str, summary: dict, out: Path, split: str = "test") -> Path | str:
    """The plot's PNG, or why there is none: the results store in git keeps no predictions."""
    folder = Path(summary["folder"])
    read = {s: read_seed_predictions(folder / f"seed_{s}", split) for s in summary["seeds"]}
    data = {s: d for s, d in read.items() if d is not None}
    if not data:
        return (
            f"`{label}`: no seed folder holds {split} predictions (seed_<s>/{PREDICTIONS} or "
            f"predictions_{split}.csv); a run folder from git has none, training its seeds again writes them"
        )
    seeds = list(data)
    title = f"{label}: {split}, seeds {seeds}"
    if summary["task"] == "regression":
        fig = plots.prediction_scatter({s: d[0] for s, d in data.items()}, {s: d[1] for s, d in data.items()}, title)
    else:
        names = next(iter(data.values()))[2]
        assert names is not None  # the predictions of a classifier name their classes
        fig = plots.confusion_matrix(
            np.concatenate([d[0] for d in data.values()]), np.concatenate([d[1] for d in data.values()]), names, title
        )
    return plots.save(fig, out / f"pred_{_safe(label)}.png")


def _confusion_section(label: str, summary: dict, out: Path, split: str = "test") -> str | None:
    """The pooled confusion counts of a classification run as Markdown (and confusion_<run>.csv)."""
    folder = Path(summary["folder"])
    read = [read_seed_predictions(folder / f"seed_{s}", split) for s in summary["seeds"]]
    data = [d for d in read if d is not None and d[2] is not None]
    if not data:
        return None
    names = list(data[0][2] or [])
    counts = confusion_counts(np.concatenate([d[0] for d in data]), np.concatenate([d[1] for d in data]), len(names))
    write_text(out / f"confusion_{_safe(label)}.csv", confusion_csv(counts, names))
    return f"`{label}`, {split}, {len(data)} seed(s) pooled:\n\n" + confusion_markdown(counts, names) + "\n"


def _gates(label: str, summary: dict, out: Path, data_root, cache: dict) -> tuple[Path | None, str]:
    """Gate distributions of every seed pooled; returns (PNG or None, a Markdown note or table)."""

    folder = Path(summary["folder"])
    ckpts = sorted(folder.glob("seed_*/checkpoint.pt"))
    if not ckpts:
        return None, "no checkpoints"
    try:
        model, cfg, _ = load_checkpoint(ckpts[0])
        key = dataset_key(cfg)
        if key not in cache:
            cache[key] = dataset_from_config(cfg, data_root)
        ds = cache[key]
        groups: dict[str, dict[str, list]] = {}
        for i, path in enumerate(ckpts):
            m = model if i == 0 else load_checkpoint(path)[0]
            for g, cols in gate_values(m, ds, "test").items():
                for c, v in cols.items():
                    groups.setdefault(g, {}).setdefault(c, []).append(v)
    except (CheckpointError, ConfigError, DataError, OSError) as e:
        return None, f"gate distributions skipped: {e}"
    if not groups:
        return None, "the model returns no gates or branch weights"
    pooled = {g: {c: np.concatenate(v) for c, v in cols.items()} for g, cols in groups.items()}
    png = plots.save(
        plots.distributions(pooled, f"{label}: test, {len(ckpts)} seeds pooled"), out / f"gates_{_safe(label)}.png"
    )
    lines = ["| extra | column | mean | std over samples | 5% | 95% |", "|---|---|---|---|---|---|"]
    for g, cols in pooled.items():
        for c, v in cols.items():
            lines.append(
                f"| `{g}` | {c} | {v.mean():.3f} | {v.std():.3f} | {np.quantile(v, 0.05):.3f} | "
                f"{np.quantile(v, 0.95):.3f} |"
            )
    return png, "\n".join(lines)


def _diagnostics_table(runs: dict[str, dict], split: str = "test") -> str | None:
    """The numbers of summary.json's `diagnostics` on one split (branch shares, redundancy, weights,
    gates; not the metrics of ablated heads), one column per run."""
    diags = {lab: s["diagnostics"] for lab, s in runs.items() if s.get("diagnostics")}
    if not diags:
        return None

    prefix = f"{split}."
    keys = list(dict.fromkeys(k for d in diags.values() for k in shown_keys(d, split)))
    if not keys:
        return None
    lines = ["| diagnostic | " + " | ".join(f"`{lab}`" for lab in diags) + " |", "|---" * (len(diags) + 1) + "|"]
    for k in keys:
        cells = []
        for d in diags.values():
            v = d.get(k)
            cells.append(
                "n/a"
                if v is None or v["mean"] is None or math.isnan(v["mean"])
                else f"{v['mean']:.3f} ± {v['std']:.3f}"
            )
        lines.append(f"| {k[len(prefix) :]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(run_folders, out: str | Path | None = None, data_root: str | None = None, gates: bool = True) -> dict:
    """Write the report (module doc); returns {"folder", "markdown", "csv", "table", "plots"}."""

    folders = [Path(f) for f in run_folders]
    if not folders:
        raise ConfigError("report: give at least one run folder")
    labels = run_labels(folders)
    runs = {lab: read_run(f) for lab, f in zip(labels, folders)}
    tasks = {s["task"] for s in runs.values()}
    if len(tasks) > 1:
        raise ConfigError(
            f"report: runs mix tasks {sorted(tasks)}; report regression and classification runs separately"
        )
    task = tasks.pop()
    out = (
        Path(out) if out is not None else (folders[0] / "report" if len(folders) == 1 else folders[0].parent / "report")
    )
    facts = {lab: seed_facts(s["folder"], s["seeds"]) for lab, s in runs.items()}
    extra = {
        "model": {lab: f"`{s['model']}`" for lab, s in runs.items()},
        "params": {lab: f"{int(f['parameters'][0]):,}" if f["parameters"] else "n/a" for lab, f in facts.items()},
        "s / seed": {
            lab: f"{aggregate(f['train_seconds'])['mean']:.0f}" if f["train_seconds"] else "n/a"
            for lab, f in facts.items()
        },
    }
    datasets = sorted({str(s["dataset"]) for s in runs.values()})
    parts = [
        f"# Report: {len(runs)} run(s) on {', '.join(f'`{d}`' for d in datasets)}\n",
        "Mean ± sample std over seeds; best mean per column in bold (lower MAE, higher everything else).\n",
    ]
    for split in SPLITS_SHOWN:
        rows = {lab: s["splits"][split] for lab, s in runs.items() if split in s["splits"]}
        if rows:
            parts.append(
                f"## {split}\n\n" + results_table(rows, task, extra if split == "test" else None, label="run") + "\n"
            )
    table = "\n".join(parts)
    csv_path = write_text(out / "report.csv", csv_table(runs, task, facts))
    pngs = []
    parts.append("## Predictions (test)\n")
    for lab, s in runs.items():
        p = _prediction_plot(lab, s, out)
        if isinstance(p, str):
            parts.append(p + "\n")
        else:
            pngs.append(p)
            parts.append(f"![{lab}]({p.name})")
        confusion = _confusion_section(lab, s, out) if task == "classification" else None
        if confusion:
            parts.append(confusion)
    diag = _diagnostics_table(runs)
    if diag:
        parts.append("\n## Branch diagnostics (test; mean ± std over seeds, from summary.json)\n\n" + diag + "\n")
    if gates:
        parts.append("\n## Gates and branch weights (test, per sample, seeds pooled)\n")
        cache: dict = {}
        for lab, s in runs.items():
            png, note = _gates(lab, s, out, data_root, cache)
            parts.append(f"### `{lab}`\n\n" + note + (f"\n\n![{lab} gates]({png.name})" if png else "") + "\n")
            if png:
                pngs.append(png)
    robust = {
        lab: json.loads((Path(s["folder"]) / "robust.json").read_text())
        for lab, s in runs.items()
        if (Path(s["folder"]) / "robust.json").is_file()
    }
    if robust:
        curves = plots.robust_curves(robust, out)
        pngs += curves
        parts.append(
            "\n## Robustness (from robust.json)\n\n"
            + robust_table(robust)
            + "\n\n"
            + "\n".join(f"![{p.stem}]({p.name})" for p in curves)
            + "\n"
        )
    md = write_text(out / "report.md", "\n".join(parts) + "\n")
    return {
        "folder": str(out),
        "markdown": str(md),
        "csv": str(csv_path),
        "table": table,
        "plots": [str(p) for p in pngs],
    }
