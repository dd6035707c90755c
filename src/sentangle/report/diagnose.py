"""Per-seed diagnostics for run folders: which models have them, and gate values for plots.

`runs.runner.run` calls `diagnose(name, model, dataset)` after each seed and writes
`seed_<s>/diagnostics.json` when it returns a dict. A model opts in either way:

    class MyModel(MSAModel):
        def diagnostics(self, dataset) -> dict | None: ...       # a method, or

    @DIAGNOSTICS.register("my_model")                           # a function registered by name
    def my_diagnostics(model, dataset) -> dict | None: ...

DBR has the branch diagnostics of report/diagnostics.py; TSDA, RTIL and IRG-SVR the statistics of
their gates. Numbers only (nested dicts), so `summarize_diagnostics` can average them over seeds.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sentangle.core.io import write_json
from sentangle.core.registry import Registry
from sentangle.report.diagnostics import run_diagnostics, summarize_diagnostics

__all__ = [
    "DIAGNOSTICS",
    "diagnose",
    "gate_values",
    "gate_diagnostics",
    "write_seed_diagnostics",
    "summarize_run_diagnostics",
    "diagnostics_markdown",
    "shown_keys",
]

DIAGNOSTICS: Registry[Callable[..., dict | None]] = Registry("diagnostics")


def diagnose(model_name: str, model, dataset) -> dict | None:
    method = getattr(model, "diagnostics", None)
    if callable(method):
        return method(dataset)
    if model_name in DIAGNOSTICS.names():
        return DIAGNOSTICS.get(model_name)(model, dataset)
    return None


def write_seed_diagnostics(seed_dir: str | Path, model_name: str, model, dataset) -> dict | None:
    """`diagnose` into seed_dir/diagnostics.json. A failure only warns: the seed's training is done
    and must not be lost to an analysis step."""
    (Path(seed_dir) / "diagnostics.json").unlink(missing_ok=True)  # never a stale file from an older config
    try:
        diag = diagnose(model_name, model, dataset)
    except Exception as e:
        warnings.warn(
            f"{seed_dir}: diagnostics of {model_name!r} failed ({type(e).__name__}: {e}); "
            "no diagnostics.json for this seed",
            stacklevel=2,
        )
        return None
    if diag:
        write_json(Path(seed_dir) / "diagnostics.json", diag)
    return diag


def summarize_run_diagnostics(folder: str | Path, seeds) -> dict | None:
    """Mean and sample std over the seeds that have a diagnostics.json (flat keys, e.g.
    `test.prediction_share.shared`); None when none has."""
    found = [Path(folder) / f"seed_{s}" / "diagnostics.json" for s in seeds]
    per_seed = [json.loads(p.read_text(encoding="utf-8")) for p in found if p.is_file()]
    return summarize_diagnostics(per_seed) if per_seed else None


def shown_keys(flat: dict, split: str = "test") -> list[str]:
    """The keys worth a table row: one split, no metrics of ablated heads, no sample counts or quartiles."""
    return [
        k
        for k in flat
        if k.startswith(f"{split}.") and "metrics" not in k and not k.endswith((".samples", ".q25", ".q75"))
    ]


def diagnostics_markdown(summary: dict, split: str = "test") -> str:
    """A short Markdown table of a run's summarised diagnostics on one split."""
    lines = [f"| diagnostic ({split}) | mean ± std over seeds |", "|---|---|"]
    for k in shown_keys(summary, split):
        v = summary[k]
        text = "n/a" if v["mean"] is None or math.isnan(v["mean"]) else f"{v['mean']:.3f} ± {v['std']:.3f}"
        lines.append(f"| {k[len(split) + 1 :].replace('_', ' ')} | {text} |")
    return "\n".join(lines)


def gate_values(model, dataset, split: str = "test", batch_size: int = 256) -> dict[str, dict[str, np.ndarray]]:
    """Per-sample gate and branch-weight values from the model's extras, as group -> column -> (N,):

    - `branch_weights` (B, 2) -> columns shared, private (DBR's BRF);
    - `gate_<m>` (B,) or (B, D) -> group `gate`, column m, the per-sample mean over D (TSDA, RTIL);
    - `<name>_gate` (B, M) with M modalities -> group `<name>_gate`, one column per modality (DBR).
    """
    mods = list(getattr(model, "modalities", ()))
    vals: dict[str, dict[str, list]] = {}
    model.eval()
    with torch.no_grad():
        for batch in dataset.batches(split, batch_size):
            n = len(batch)
            for k, v in model(batch).extras.items():
                if not torch.is_tensor(v) or v.ndim < 1 or v.shape[0] != n:
                    continue
                v = v.double().cpu()
                if k == "branch_weights" and v.ndim == 2 and v.shape[1] == 2:
                    cols = {"shared": v[:, 0], "private": v[:, 1]}
                elif k.startswith("gate_"):
                    cols = {k[5:]: v.reshape(n, -1).mean(1)}
                    k = "gate"
                elif k.endswith("_gate") and v.ndim == 2 and v.shape[1] == len(mods):
                    cols = {m: v[:, i] for i, m in enumerate(mods)}
                else:
                    continue
                for c, x in cols.items():
                    vals.setdefault(k, {}).setdefault(c, []).append(x.numpy())
    return {k: {c: np.concatenate(x) for c, x in cols.items()} for k, cols in vals.items()}


def gate_diagnostics(model, dataset, splits=("valid", "test")) -> dict | None:
    """Mean, std and quartiles of every gate (see gate_values) on each split; None without gates."""
    out = {}
    for split in splits:
        if split not in dataset.splits:
            continue
        groups = gate_values(model, dataset, split)
        if not groups:
            return None
        out[split] = {
            "gates": {
                g: {
                    c: {
                        "mean": float(v.mean()),
                        "std": float(v.std()),
                        "q25": float(np.quantile(v, 0.25)),
                        "q75": float(np.quantile(v, 0.75)),
                    }
                    for c, v in cols.items()
                }
                for g, cols in groups.items()
            }
        }
    return out or None


DIAGNOSTICS.register("dbr")(run_diagnostics)
for _name in ("tsda", "rtil", "irg_svr"):
    DIAGNOSTICS.register(_name)(gate_diagnostics)
