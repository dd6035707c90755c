"""Per-seed diagnostics for run folders: which models have them, and gate values for plots.

`training.runs.run` calls `diagnose(name, model, dataset)` after each seed and writes
`seed_<s>/diagnostics.json` when it returns a dict. A model opts in either way:

    class MyModel(MSAModel):
        def diagnostics(self, dataset) -> dict | None: ...       # a method, or

    @DIAGNOSTICS.register("my_model")                           # a function registered by name
    def my_diagnostics(model, dataset) -> dict | None: ...

DBR has the branch diagnostics of report/diagnostics.py; TSDA, RTIL and IRG-SVR the statistics of
their gates. Numbers only (nested dicts), so `summarize_diagnostics` can average them over seeds.
"""
from __future__ import annotations

import numpy as np
import torch

from ..registry import Registry
from .diagnostics import run_diagnostics

__all__ = ["DIAGNOSTICS", "diagnose", "gate_values", "gate_diagnostics"]

DIAGNOSTICS = Registry("diagnostics")


def diagnose(model_name: str, model, dataset) -> dict | None:
    method = getattr(model, "diagnostics", None)
    if callable(method):
        return method(dataset)
    if model_name in DIAGNOSTICS.names():
        return DIAGNOSTICS.get(model_name)(model, dataset)
    return None


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
        out[split] = {"gates": {g: {c: {"mean": float(v.mean()), "std": float(v.std()),
                                        "q25": float(np.quantile(v, 0.25)), "q75": float(np.quantile(v, 0.75))}
                                    for c, v in cols.items()} for g, cols in groups.items()}}
    return out or None


DIAGNOSTICS.register("dbr")(run_diagnostics)
for _name in ("tsda", "rtil", "irg_svr"):
    DIAGNOSTICS.register(_name)(gate_diagnostics)
