"""Branch diagnostics for shared/private models: how much of the prediction each branch carries,
and how redundant the two branches are.

DBR's claim is about "branch imbalance": the shared branch accumulating redundant evidence and
shared information leaking into the private channel. These numbers make the claim checkable per
run. They read only the model's extras, so any model that exposes them is diagnosed the same way:

    extras["shared_summary"], extras["private_summary"]   (B, D) what each branch gives the head
    extras["shared_pre"], extras["private_pre"]           (B, D) optional: the same before fusion
    extras["branch_weights"]                              (B, 2) optional: [shared, private]
    extras["<name>_gate"]                                 (B, M) optional: per-modality gates
    model.branch_head(shared, private) -> (prediction, weights)   optional: enables the shares

    from sentangle.report.diagnostics import run_diagnostics
    diag = run_diagnostics(model, dataset)        # None when the model has no branches
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sentangle.evaluation.metrics import compute_metrics
from sentangle.models.losses import hsic

__all__ = ["linear_cka", "branch_diagnostics", "run_diagnostics", "summarize_diagnostics"]


def linear_cka(x, y) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019) between (N, D1) and (N, D2).

    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred Xc, Yc: 1 when one is an
    orthogonal transform (times a scale) of the other, near 0 when they share no linear structure.
    NaN when either side is constant over the samples (undefined, as a correlation would be).
    """
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).double()
    y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).double()
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"linear_cka needs (N, D1) and (N, D2) with the same N; got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    x, y = x - x.mean(0), y - y.mean(0)
    den = torch.linalg.matrix_norm(x.t() @ x) * torch.linalg.matrix_norm(y.t() @ y)
    if den <= 0:
        return math.nan
    return float(torch.linalg.matrix_norm(y.t() @ x).pow(2) / den)


def _collect(model, dataset, split: str, batch_size: int, device: str):
    preds, labels = [], []
    extras: dict[str, list[torch.Tensor]] = {}
    model.eval()
    with torch.no_grad():
        for batch in dataset.batches(split, batch_size):
            out = model(batch.to(device))
            n = len(batch)
            preds.append(out.prediction.double().cpu())
            labels.append(batch.labels)
            for k, v in out.extras.items():
                if torch.is_tensor(v) and v.ndim >= 1 and v.shape[0] == n:
                    extras.setdefault(k, []).append(v.double().cpu())
    return torch.cat(preds), torch.cat(labels), {k: torch.cat(v) for k, v in extras.items()}


def _redundancy(s: torch.Tensor, p: torch.Tensor, max_samples: int) -> dict[str, float | None]:
    k = min(len(s), max_samples)  # HSIC is O(N^2) in memory; the first rows of a split suffice
    return {"linear_cka": _finite(linear_cka(s, p)), "hsic": _finite(float(hsic(s[:k], p[:k])))}


def _finite(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _change(task: str, a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean change of the prediction: |difference| for regression, total variation of the class
    probabilities for classification."""
    if task == "regression":
        return float((a - b).abs().mean())
    return float(0.5 * (a.softmax(-1) - b.softmax(-1)).abs().sum(-1).mean())


def branch_diagnostics(
    model, dataset, split: str = "test", batch_size: int = 256, device: str = "cpu", max_samples: int = 2000
) -> dict | None:
    """Per-branch share of the prediction and shared/private redundancy on one split.

    Returns None when the model exposes no `shared_summary` / `private_summary` extras. Keys:
    - redundancy: linear CKA and HSIC between the shared and private summaries the head sees
      (redundancy_before_fusion: the same for `shared_pre` / `private_pre` when present);
    - branch_weights: mean (and std) of the per-sample weights [shared, private];
    - prediction_share: with `model.branch_head`, each branch is replaced by its mean over the
      split (mean ablation) and the mean change of the prediction is measured; the shares are those
      changes normalised to sum to 1, and metrics_without holds the metrics of each ablated model;
    - gates: mean of every `*_gate` extra, per modality.
    """
    if split not in dataset.splits:
        raise ValueError(f"branch_diagnostics: dataset has no split {split!r}; it has {sorted(dataset.splits)}")
    pred, label, ex = _collect(model, dataset, split, batch_size, device)
    if "shared_summary" not in ex or "private_summary" not in ex:
        return None
    s, p = ex["shared_summary"], ex["private_summary"]
    task = dataset.task
    out: dict = {
        "split": split,
        "samples": int(len(s)),
        "metrics": compute_metrics(task, pred.numpy(), label.numpy(), dataset.num_classes),
        "redundancy": _redundancy(s, p, max_samples),
    }
    if "shared_pre" in ex and "private_pre" in ex:
        out["redundancy_before_fusion"] = _redundancy(ex["shared_pre"], ex["private_pre"], max_samples)
    if "branch_weights" in ex:
        w = ex["branch_weights"]
        out["branch_weights"] = {
            "shared": float(w[:, 0].mean()),
            "private": float(w[:, 1].mean()),
            "shared_std": float(w[:, 0].std()),
        }
    head = getattr(model, "branch_head", None)
    if head is not None:
        dtype = next(model.parameters()).dtype
        with torch.no_grad():
            base, _ = head(s.to(device, dtype), p.to(device, dtype))
            no_s, _ = head(s.mean(0, keepdim=True).expand_as(s).to(device, dtype), p.to(device, dtype))
            no_p, _ = head(s.to(device, dtype), p.mean(0, keepdim=True).expand_as(p).to(device, dtype))
        base, no_s, no_p = base.double().cpu(), no_s.double().cpu(), no_p.double().cpu()
        ds, dp = _change(task, base, no_s), _change(task, base, no_p)
        total = ds + dp
        out["prediction_change"] = {"shared": ds, "private": dp}
        out["prediction_share"] = (
            {"shared": ds / total, "private": dp / total} if total > 0 else {"shared": None, "private": None}
        )
        out["metrics_without"] = {
            "shared": compute_metrics(task, no_s.numpy(), label.numpy(), dataset.num_classes),
            "private": compute_metrics(task, no_p.numpy(), label.numpy(), dataset.num_classes),
        }
    mods = list(getattr(model, "modalities", ()))
    gates = {}
    for k, v in ex.items():
        if k.endswith("_gate") and v.ndim == 2:
            names = mods if v.shape[1] == len(mods) else [str(i) for i in range(v.shape[1])]
            gates[k] = {n: float(v[:, i].mean()) for i, n in enumerate(names)}
    if gates:
        out["gates"] = gates
    return _clean(out)


def _clean(d):
    if isinstance(d, dict):
        return {k: _clean(v) for k, v in d.items()}
    if isinstance(d, float):
        return _finite(d)
    return d


def run_diagnostics(
    model, dataset, splits=("valid", "test"), batch_size: int = 256, device: str = "cpu"
) -> dict | None:
    """`branch_diagnostics` for each split the dataset has; None for models without branches
    (so a generic hook writes diagnostics.json only where it means something)."""
    out = {}
    for split in splits:
        if split in dataset.splits:
            d = branch_diagnostics(model, dataset, split, batch_size, device)
            if d is None:
                return None
            out[split] = d
    return out or None


def _flatten(d: dict, prefix: str = "") -> dict[str, float]:
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[key] = float(v)
    return flat


def summarize_diagnostics(per_seed: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and sample std over seeds of every number in a list of diagnostics dicts (flat keys)."""
    flats = [_flatten(d) for d in per_seed]
    keys = [k for k in flats[0] if all(k in f for f in flats)]
    out = {}
    for k in keys:
        a = np.asarray([f[k] for f in flats], dtype=float)
        out[k] = {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": int(a.size)}
    return out
