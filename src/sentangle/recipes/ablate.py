"""Ablations: one model, one dataset, named variants of its switches, one table.

An ablation YAML (packaged ones: configs/experiments/ablate-{tsda,rtil,irg_svr,dbr}.yaml):

    name: tsda-synthetic          # table in <out>/<name>/, each variant's run folder in <out>/<name>/<variant>/
    model: {name: tsda, hidden: 64}   # or just a name
    dataset: synthetic            # or {name: ..., options}
    config: null                  # optional base run config (a file or a packaged experiment), as `-c`
    overrides: {train.epochs: 12} # shared by every variant: dotted keys (or a list of "key=value")
    seeds: 3
    out: runs/ablations
    reference: full               # the row the others are compared with (default: `full`, else the first)
    variants:
      - name: full                # no overrides: the whole model
      - name: no-temporal
        overrides: {model.temporal: false}

Every variant is a normal run through `runs.runner.run` (the one trainer, selection on valid,
finished seeds reused), so an interrupted ablation resumes. The table: mean ± sample std over seeds
per metric with the best in bold, the reference row first, and the change from the reference paired
by seed (mean ± std of the per-seed differences over the seeds both have).
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from sentangle.config import make_config, resolve_config_file, yaml_value
from sentangle.core.errors import ConfigError
from sentangle.core.io import write_text
from sentangle.models.base import check_model_options
from sentangle.recipes.specfile import read_mapping
from sentangle.report.tables import LABELS, RAW_SCALE, aggregate, metric_order, results_table
from sentangle.runs.runner import run

__all__ = ["load_ablation", "ablate", "ablation_table"]

KEYS = {"name", "model", "dataset", "config", "overrides", "seeds", "out", "reference", "variants"}
DELTA_METRICS = {"regression": ("mae", "corr", "acc2_non0"), "classification": ("accuracy", "uar", "f1_macro")}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _overrides(value, where: str) -> list[str]:
    """A mapping of dotted keys, or a list of "key=value" strings -> override strings."""

    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{k}={yaml_value(v)}" for k, v in value.items()]
    if isinstance(value, list) and all(isinstance(v, str) and "=" in v for v in value):
        return list(value)
    raise ConfigError(
        f"{where}: expected a mapping of dotted keys (model.temporal: false) or a list of "
        f"'key=value' strings, got {value!r}"
    )


def variant_configs(spec: dict, seeds, root: str | Path, data_root: str | None, overrides: list[str]) -> dict:
    """One run config per variant of a loaded ablation, its run folder `<root>/<variant>`; `overrides`
    (dotted) after the file's and the variant's."""
    cfgs = {}
    for v in spec["variants"]:
        cfg = make_config(
            spec["model"],
            spec["dataset"],
            spec["config"],
            seeds,
            str(root),
            v["name"],
            data_root,
            spec["overrides"] + v["overrides"] + overrides,
        )
        check_model_options(cfg.model["name"], cfg.model, f"{spec['file']}: variant {v['name']!r}")
        cfgs[v["name"]] = cfg
    return cfgs


def load_ablation(path: str | Path) -> dict:
    """Read and check an ablation YAML (a path or a packaged name); errors name the file and field."""
    path = resolve_config_file(path)
    spec = read_mapping(path, "ablation file", KEYS)
    if "model" not in spec and "config" not in spec:
        raise ConfigError(f"ablation file {path}: needs 'model' (a name or a mapping with 'name') or a base 'config'")
    variants = spec.get("variants")
    if not isinstance(variants, list) or not variants:
        raise ConfigError(f"ablation file {path}: 'variants' must be a non-empty list of {{name, overrides}}")
    out = []
    for i, v in enumerate(variants):
        where = f"ablation file {path}: variants[{i}]"
        if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not _NAME.fullmatch(v["name"]):
            raise ConfigError(f"{where}: needs a 'name' usable as a folder name (letters, digits, - _ .), got {v!r}")
        extra = set(v) - {"name", "overrides", "note"}
        if extra:
            raise ConfigError(f"{where} ({v['name']}): unknown keys {sorted(extra)}; expected name, overrides, note")
        out.append(
            {
                "name": v["name"],
                "overrides": _overrides(v.get("overrides"), f"{where} ({v['name']}).overrides"),
                "note": v.get("note", ""),
            }
        )
    names = [v["name"] for v in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"ablation file {path}: variant name(s) {dupes} given twice")
    reference = spec.get("reference") or ("full" if "full" in names else names[0])
    if reference not in names:
        raise ConfigError(f"ablation file {path}: reference {reference!r} is not a variant; variants: {names}")
    return {
        "file": str(path),
        "name": str(spec.get("name") or path.stem),
        "model": spec.get("model"),
        "dataset": spec.get("dataset"),
        "config": spec.get("config"),
        "overrides": _overrides(spec.get("overrides"), f"ablation file {path}: overrides"),
        "seeds": spec.get("seeds", 5),
        "out": spec.get("out", "runs/ablations"),
        "reference": reference,
        "variants": out,
    }


def _paired_delta(per_seed: dict, ref: dict, split: str, metric: str) -> dict | None:
    common = [
        s for s in per_seed if s in ref and metric in per_seed[s].get(split, {}) and metric in ref[s].get(split, {})
    ]
    if not common:
        return None
    return aggregate([per_seed[s][split][metric] - ref[s][split][metric] for s in common])


def _fmt_delta(metric: str, d: dict | None) -> str:
    if d is None:
        return "n/a"
    scale, digits = (1.0, 3) if metric in RAW_SCALE else (100.0, 2)
    text = f"{d['mean'] * scale:+.{digits}f}"
    return text + (f" ± {d['std'] * scale:.{digits}f}" if d["n"] > 1 else "")


def ablation_table(
    results: dict[str, dict], reference: str, task: str, split: str = "test", switches: dict[str, str] | None = None
) -> str:
    """results: variant -> run summary (splits, per_seed); the reference row first."""
    order = [reference] + [v for v in results if v != reference]
    rows = {v: results[v]["splits"][split] for v in order if split in results[v]["splits"]}
    ref = results[reference]["per_seed"]
    extra = {}
    for m in DELTA_METRICS[task]:
        if any(m in r for r in rows.values()):
            extra[f"Δ {LABELS.get(m, m)}"] = {
                v: "—" if v == reference else _fmt_delta(m, _paired_delta(results[v]["per_seed"], ref, split, m))
                for v in rows
            }
    if switches:
        extra["switches"] = {v: switches.get(v) or "(none)" for v in rows}
    return results_table(rows, task, extra, label="variant")


def ablation_csv(results: dict[str, dict], reference: str, task: str, switches: dict[str, str]) -> str:
    metrics = metric_order(task, {m for r in results.values() for s in r["splits"].values() for m in s})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["variant", "split", "seeds", "overrides"]
        + [f"{m}_{k}" for m in metrics for k in ("mean", "std")]
        + [f"delta_{m}_{k}" for m in metrics for k in ("mean", "std")]
    )
    ref = results[reference]["per_seed"]
    for v in [reference] + [x for x in results if x != reference]:
        for split, stats in results[v]["splits"].items():
            deltas = {m: _paired_delta(results[v]["per_seed"], ref, split, m) or {} for m in metrics}
            w.writerow(
                [v, split, next(iter(stats.values()))["n"], switches.get(v, "")]
                + [f"{stats[m][k]:.6f}" if m in stats else "" for m in metrics for k in ("mean", "std")]
                + [f"{deltas[m][k]:.6f}" if deltas[m] else "" for m in metrics for k in ("mean", "std")]
            )
    return buf.getvalue()


def _per_seed_ints(per_seed: dict) -> dict[int, dict]:
    return {int(s): v for s, v in per_seed.items()}  # summary.json has string keys


def ablate(
    spec: str | Path | dict,
    seeds=None,
    out: str | None = None,
    data_root: str | None = None,
    overrides=(),
    only: list[str] | None = None,
) -> dict:
    """Train the variants of an ablation (module doc) and write `<out>/<name>/ablation.md|csv`.

    `seeds`, `out` and `overrides` (dotted, applied last) override the file's; `only` trains just
    those variants and tabulates every variant whose run folder already holds a summary.
    Returns {"folder", "markdown", "csv", "table", "results": variant -> summary}.
    """

    spec = load_ablation(spec) if not isinstance(spec, dict) else spec
    seeds = seeds if seeds is not None else spec["seeds"]
    root = Path(out or spec["out"]) / spec["name"]
    names = [v["name"] for v in spec["variants"]]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ConfigError(f"{spec['file']}: no variant(s) {unknown}; variants: {names}")
    cfgs = variant_configs(spec, seeds, root, data_root, list(overrides))
    results = {}
    for v in spec["variants"]:
        name = v["name"]
        if only and name not in only:
            summary = root / name / "summary.json"
            if summary.is_file():
                results[name] = json.loads(summary.read_text())
            continue
        results[name] = run(cfgs[name])
    if spec["reference"] not in results:
        raise ConfigError(
            f"{spec['file']}: the reference variant {spec['reference']!r} has no finished run in "
            f"{root / spec['reference']}; train it first"
        )
    for r in results.values():
        r["per_seed"] = _per_seed_ints(r["per_seed"])
    task = results[spec["reference"]]["task"]
    switches = {v["name"]: " ".join(f"`{o}`" for o in v["overrides"]) for v in spec["variants"]}
    first = cfgs[spec["reference"]]
    parts = [
        f"# Ablation {spec['name']}: `{first.model['name']}` on `{first.dataset['name']}`\n",
        f"From `{spec['file']}`. Mean ± sample std over seeds {first.seeds}; every variant trained by the same "
        f"trainer and selected on {first.train.select_split}; run folders `{root}/<variant>/`. Best mean per "
        f"column in bold; Δ is the change from `{spec['reference']}`, paired by seed (mean ± std of the "
        "per-seed differences; accuracies in points). Shared overrides: "
        + (" ".join(f"`{o}`" for o in spec["overrides"] + list(overrides)) or "none")
        + ".\n",
    ]
    for split in ("test", "valid"):
        if split in results[spec["reference"]]["splits"]:
            parts.append(f"## {split}\n\n" + ablation_table(results, spec["reference"], task, split, switches) + "\n")
    table = "\n".join(parts)
    md = write_text(root / "ablation.md", table)
    csv_path = write_text(root / "ablation.csv", ablation_csv(results, spec["reference"], task, switches))
    return {"folder": str(root), "markdown": str(md), "csv": str(csv_path), "table": table, "results": results}
