"""Several models, one dataset, the same protocol: one comparison table.

    compare(["lf_dnn", "tfn", "mult"], "mosi_utt", seeds=5, out="runs/compare")

trains every model over the seeds through `sentangle.train` (the one trainer, selection on valid),
one run folder per model, `<out>/<model>-<name>/`. A finished seed is never trained again, so an
interrupted comparison resumes where it stopped. It then writes

    <out>/<name>/comparison.md    test and valid tables, mean ± sample std over seeds, best in bold
    <out>/<name>/comparison.csv   the same numbers, one row per model and split, machine-readable

`name` defaults to the dataset name. `overrides` (dotted `key=value`) apply to every model; a model
given as a dict ({"name": "mult", "max_len": 50}) carries its own options.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from sentangle.config import make_config
from sentangle.core.errors import ConfigError
from sentangle.core.io import write_text
from sentangle.models import list_models
from sentangle.models.base import check_model_options
from sentangle.report.tables import aggregate, metric_order, results_table
from sentangle.runs.runner import run

SPLITS_SHOWN = ("test", "valid")


def _model_name(model: str | dict) -> str:
    if isinstance(model, dict):
        if "name" not in model:
            raise ConfigError(f"compare: a model given as a dict needs a 'name', got {model}")
        return model["name"]
    return model


def seed_facts(folder: str, seeds) -> dict[str, list[float]]:
    """Parameter count and training time per seed, from the run folder's metrics.json files."""
    params, seconds, epochs = [], [], []
    for seed in seeds:
        path = Path(folder) / f"seed_{seed}" / "metrics.json"
        if path.exists():
            data = json.loads(path.read_text())
            params.append(data.get("parameters", float("nan")))
            seconds.append(data.get("train_seconds", float("nan")))
            epochs.append(data.get("best_epoch", float("nan")))
    return {"parameters": params, "train_seconds": seconds, "best_epoch": epochs}


def markdown_table(rows: dict[str, dict[str, dict]], task: str, facts: dict[str, dict] | None = None) -> str:
    """rows: model -> metric -> {mean, std, n}. The best mean of each metric column is in bold."""
    extra: dict[str, dict] | None = None
    if facts:
        extra = {"params": {}, "s / seed": {}}
        for model in rows:
            f = facts.get(model, {})
            params, secs = f.get("parameters") or [], f.get("train_seconds") or []
            extra["params"][model] = f"{int(params[0]):,}" if params else "n/a"
            extra["s / seed"][model] = f"{aggregate(secs)['mean']:.0f}" if secs else "n/a"
    return results_table(rows, task, extra)


def csv_table(results: dict[str, dict], task: str, facts: dict[str, dict]) -> str:
    metrics = metric_order(task, {m for r in results.values() for s in r["splits"].values() for m in s})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["model", "split", "seeds"]
        + [f"{m}_{k}" for m in metrics for k in ("mean", "std")]
        + ["parameters", "train_seconds_mean"]
    )
    for model, res in results.items():
        f = facts.get(model, {})
        params = f.get("parameters") or [float("nan")]
        secs = f.get("train_seconds") or []
        for split in SPLITS_SHOWN:
            stats = res["splits"].get(split)
            if stats is None:
                continue
            n = next(iter(stats.values()))["n"]
            w.writerow(
                [model, split, n]
                + [f"{stats[m][k]:.6f}" if m in stats else "" for m in metrics for k in ("mean", "std")]
                + [params[0], f"{aggregate(secs)['mean']:.2f}" if secs else ""]
            )
    return buf.getvalue()


def compare(
    models: list[str | dict],
    dataset: str,
    seeds: int | str | list[int] = 5,
    out: str = "runs/compare",
    name: str | None = None,
    data_root: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict:
    """Train each model on `dataset` over `seeds` and write one comparison table (see module doc).

    Returns {"folder", "markdown", "csv": paths; "table": the Markdown text; "results": model ->
    the summary `sentangle.train` returned (splits -> metric -> {mean, std, n}, folder, ...)}.
    """

    if not models:
        raise ConfigError("compare: give at least one model")
    names = [_model_name(m) for m in models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"compare: model(s) {dupes} given twice; their run folders would collide")

    list_models()
    for model, label in zip(models, names):  # a typo in the last model must not surface after the others trained
        cfg = make_config(model, dataset, seeds=seeds, out=out, data_root=data_root, overrides=list(overrides))
        check_model_options(label, cfg.model, "compare")
    name = name or Path(dataset).stem
    results: dict[str, dict] = {}
    facts: dict[str, dict] = {}
    for model, label in zip(models, names):
        res = run(
            make_config(
                model,
                dataset,
                seeds=seeds,
                out=out,
                name=f"{label}-{name}",
                data_root=data_root,
                overrides=list(overrides),
            )
        )
        results[label] = res
        facts[label] = seed_facts(res["folder"], res["per_seed"])
    task = next(iter(results.values()))["task"]
    folder = Path(out) / name
    parts = [
        f"# {name}: {len(results)} models on `{dataset}`\n",
        f"Mean ± sample std over seeds; every model trained by the same trainer and selected on the "
        f"validation split; run folders `{out}/<model>-{name}/`. Best mean per column in bold."
        + (f" Overrides: `{' '.join(overrides)}`." if overrides else "")
        + "\n",
    ]
    for split in SPLITS_SHOWN:
        rows = {m: r["splits"][split] for m, r in results.items() if split in r["splits"]}
        if rows:
            parts.append(f"## {split}\n\n" + markdown_table(rows, task, facts if split == "test" else None) + "\n")
    references = next((r.get("references") for r in results.values() if r.get("references")), None)
    if references:
        parts.append("Reference predictors on the same test split (the synthetic oracle):\n\n" + references + "\n")
    table = "\n".join(parts)
    md_path = write_text(folder / "comparison.md", table)
    csv_path = write_text(folder / "comparison.csv", csv_table(results, task, facts))
    return {"folder": str(folder), "markdown": str(md_path), "csv": str(csv_path), "table": table, "results": results}


__all__ = ["compare", "markdown_table", "csv_table"]
