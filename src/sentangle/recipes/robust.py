"""Robustness of trained runs: every seed's checkpoint on a corrupted test split.

    from sentangle.recipes.robust import robust
    res = robust(["runs/tsda-synthetic", "runs/lf_dnn-synthetic"], out="runs/robust", seed=0)

For each run folder every `seed_<s>/checkpoint.pt` is reloaded with the dataset of its config (same
normalisation) and evaluated on the test split under these conditions (docs/robustness.md):

    clean                      the test split as is
    noise:<m>@<sigma>          Gaussian noise on modality m, sigma in units of m's per-column train std
    missing:<m>                modality m removed (the models' own missing-modality path)
    frame_drop@<rate>          each real frame of every sequence modality masked out with prob. rate
    shuffle:<m>                m's real frames permuted within each sample's valid positions
    wave:<kind>@<level>        (`waveform`, datasets read from audio: emodb, ravdess) the test clips'
                               waveforms changed before extraction (data/waveform.py: noise at an
                               SNR in dB, clip, band, drop), then extracted and normalised as the
                               clean ones; train and valid stay clean

The corrupted split is built once per condition from the full padded arrays, with a generator that
depends only on (seed, perturbation), so every model and seed sees identical corrupted data, and the
levels of one perturbation share their random draws (a frame dropped at 0.3 is dropped at 0.5 too).
What cannot apply is skipped with the reason (token ids cannot take Gaussian noise; one frame per
sample cannot be shuffled). Writes `<run>/robust.json` (mean and sample std over seeds per condition
and metric), and `robust.md` plus PNG curves under `out`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from sentangle.config import from_dict, read_yaml
from sentangle.core.errors import CheckpointError, ConfigError, DataError
from sentangle.core.io import write_json, write_text
from sentangle.core.registry import DATASETS, signature_options
from sentangle.data.dataset import MSADataset, Split, feature_stats
from sentangle.evaluation.metrics import METRIC_DIRECTIONS, compute_metrics
from sentangle.evaluation.perturb import drop_frames, feature_scale, gaussian_noise, generator_for, shuffle_frames
from sentangle.report.plots import robust_curves
from sentangle.report.tables import LABELS, aggregate, fmt
from sentangle.runs.checkpoint import load_checkpoint
from sentangle.runs.runner import dataset_from_config, dataset_key
from sentangle.training.trainer import predict

__all__ = [
    "robust",
    "robust_conditions",
    "perturb_split",
    "noisy_copy",
    "load_run",
    "robust_table",
    "main_metric",
    "NOISE_LEVELS",
    "DROP_RATES",
    "run_labels",
]

NOISE_LEVELS = (0.25, 0.5, 1.0, 2.0)  # 0 is the clean row
DROP_RATES = (0.1, 0.3, 0.5, 0.7)
TOKEN_TEXT = "text is token ids for a fine-tuned encoder: no features to perturb"


def main_metric(task: str) -> str:
    return "mae" if task == "regression" else "accuracy"


def _label(kind: str, modality: str | None, level: float | None) -> str:
    name = kind if modality is None else f"{kind}:{modality}"
    return name if level is None else f"{name}@{level:g}"


def robust_conditions(
    ds: MSADataset, noise_levels=NOISE_LEVELS, drop_rates=DROP_RATES, split: str = "test"
) -> tuple[list[dict], list[dict]]:
    """The conditions that apply to `ds` and the ones skipped, each skip with its reason.

    A condition is {"name", "family", "kind", "modality", "level"}; `family` groups the levels of
    one perturbation into a curve (its level 0 is the clean condition).
    """
    sp = ds.splits[split]
    conds: list[dict] = [{"name": "clean", "family": "clean", "kind": "clean", "modality": None, "level": None}]
    skipped = []
    seq = [m for m in sp.features if int(sp.masks[m].sum(1).max()) > 1]
    for m in ds.modalities:
        family = f"noise:{m}"
        if m not in sp.features:
            skipped.append({"name": family, "reason": TOKEN_TEXT})
            continue
        conds += [
            {"name": _label("noise", m, s), "family": family, "kind": "noise", "modality": m, "level": float(s)}
            for s in noise_levels
            if s > 0
        ]
    for m in ds.modalities:
        if len(ds.modalities) == 1:
            skipped.append({"name": f"missing:{m}", "reason": "the only modality: nothing would be left to read"})
        else:
            conds.append({"name": f"missing:{m}", "family": "missing", "kind": "missing", "modality": m, "level": None})
    if seq:
        conds += [
            {
                "name": _label("frame_drop", None, r),
                "family": "frame_drop",
                "kind": "frame_drop",
                "modality": None,
                "modalities": seq,
                "level": float(r),
            }
            for r in drop_rates
            if r > 0
        ]
        for m in ds.modalities:  # frame drop covers the sequence modalities only; say which are left out
            if m not in seq:
                skipped.append(
                    {
                        "name": f"frame_drop:{m}",
                        "reason": TOKEN_TEXT if m not in sp.features else "one frame per sample: no frame to drop",
                    }
                )
    else:
        skipped.append({"name": "frame_drop", "reason": "no modality has more than one frame per sample"})
    for m in ds.modalities:
        if m not in sp.features:
            skipped.append({"name": f"shuffle:{m}", "reason": TOKEN_TEXT})
        elif m not in seq:
            skipped.append({"name": f"shuffle:{m}", "reason": "one frame per sample: no order to shuffle"})
        else:
            conds.append({"name": f"shuffle:{m}", "family": "shuffle", "kind": "shuffle", "modality": m, "level": None})
    return conds, skipped


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def perturb_split(sp: Split, cond: dict, seed: int, scales: dict[str, np.ndarray] | None = None) -> Split:
    """A new Split with `cond` applied (the input is not modified). `scales`: per-modality (d,) train
    std for noise. Generators depend on (seed, family, modality) only, not on the level."""
    kind, m = cond["kind"], cond.get("modality") or ""  # "": a condition on every modality
    feats, masks, tokens = dict(sp.features), dict(sp.masks), sp.tokens
    if kind == "noise":
        if scales is None or m not in scales:
            raise ValueError(f"noise on {m!r} needs its train std in `scales`")
        x = gaussian_noise(
            _t(feats[m]), _t(masks[m]), cond["level"], torch.as_tensor(scales[m]), generator_for(seed, f"noise:{m}")
        )
        feats[m] = x.numpy()
    elif kind == "missing":
        feats.pop(m, None)
        masks.pop(m, None)
        if m == "text":
            tokens = None
    elif kind == "frame_drop":
        for k in feats:
            if int(masks[k].sum(1).max()) > 1:  # single-frame modalities: nothing could be dropped
                x, mk = drop_frames(_t(feats[k]), _t(masks[k]), cond["level"], generator_for(seed, f"frame_drop:{k}"))
                feats[k], masks[k] = x.numpy(), mk.numpy()
    elif kind == "shuffle":
        feats[m] = shuffle_frames(_t(feats[m]), _t(masks[m]), generator_for(seed, f"shuffle:{m}")).numpy()
    elif kind != "clean":
        raise ValueError(f"unknown perturbation kind {kind!r}")
    return Split(features=feats, masks=masks, labels=sp.labels, ids=sp.ids, texts=sp.texts, tokens=tokens)


def waveform_conditions(entries, seed: int) -> list[dict]:
    """Conditions from waveform perturbations [{kind, level}] (data/waveform.py checks them when the
    dataset loads). Numeric levels of one kind make a curve; a band [low, high] stands alone."""
    conds = []
    for e in entries or ():
        if not isinstance(e, dict) or set(e) - {"kind", "level"} or "kind" not in e:
            raise ConfigError(
                f"robust: waveform condition {e!r}; expected a mapping {{kind, level}} (data/waveform.py)"
            )
        level = e.get("level")
        numeric = isinstance(level, (int, float)) and not isinstance(level, bool)
        value = float(level) if isinstance(level, (int, float)) and numeric else None
        shown = f"{level:g}" if numeric else "-".join(f"{v:g}" for v in level) if isinstance(level, list) else "default"
        conds.append(
            {
                "name": f"wave:{e['kind']}@{shown}",
                "family": f"wave:{e['kind']}",
                "kind": "wave",
                "modality": "audio",
                "level": value,
                "perturb": {"kind": e["kind"], **({"level": level} if level is not None else {}), "seed": seed},
            }
        )
    return conds


def waveform_split(cfg, cond: dict, data_root: str | None) -> Split:
    """The test split of `cfg`'s dataset with `cond`'s waveform perturbation, read again from audio."""
    if "perturb" not in signature_options(DATASETS.get(cfg.dataset["name"]), ()):
        raise ConfigError(
            f"robust: waveform conditions re-extract the test clips' audio; dataset {cfg.dataset['name']!r} "
            "is not read from audio (emodb and ravdess are)"
        )
    changed = dataclasses.replace(cfg, dataset={**cfg.dataset, "perturb": cond["perturb"]})
    return as_seen(dataset_from_config(changed, data_root).splits["test"])


def as_seen(sp: Split) -> Split:
    """The split as the model sees it. Memory-mapped data keep raw values and normalise each batch as
    it is gathered (Split.transforms); perturbations and their noise unit must act on the normalised
    values, so apply the normalisation here and drop the transforms."""
    if not sp.transforms:
        return sp
    whole = sp.subset(np.arange(len(sp)))
    feats = {
        m: whole.transforms[m].apply(x, whole.masks[m])[0] if m in whole.transforms else x
        for m, x in whole.features.items()
    }
    return dataclasses.replace(whole, features=feats, transforms={})


def train_scales(ds: MSADataset) -> dict[str, np.ndarray]:
    tr = ds.splits["train"]
    if not tr.transforms:
        return {m: feature_scale(_t(x), _t(tr.masks[m])).numpy() for m, x in tr.features.items()}
    # Memory-mapped training data can be larger than memory: the chunked statistics of the normalised values.
    return {
        m: feature_stats(x, tr.masks[m], tr.transforms.get(m), ddof=1)[1].astype(np.float32)
        for m, x in tr.features.items()
    }


def noisy_copy(
    ds: MSADataset, sigma: float, modalities=("audio", "vision"), split: str = "test", seed: int = 0
) -> MSADataset:
    """A shallow copy of `ds` whose `split` has `robust`'s noise condition at level `sigma` on each of
    `modalities` it holds: N(0, (sigma * std_j)^2) on every real frame, std_j the training std of
    feature j as the model sees it. The draw depends on (seed, modality) only, so every sigma scales
    the same draw and every model compared reads the same noisy data."""
    if sigma == 0:
        return ds
    scales = train_scales(ds)
    sp = as_seen(ds.splits[split])
    for m in modalities:
        if m in sp.features:
            sp = perturb_split(sp, {"kind": "noise", "modality": m, "level": sigma}, seed, scales)
    out = copy.copy(ds)
    out.splits = {**ds.splits, split: sp}
    return out


def load_run(folder: str | Path) -> dict:
    """Config, task and the finished seeds' checkpoint paths of a run folder (clear errors if none)."""

    folder = Path(folder)
    if not (folder / "config.yaml").is_file():
        raise CheckpointError(
            f"{folder}: not a run folder (no config.yaml); expected the folder `sentangle train` wrote"
        )
    cfg = from_dict(read_yaml(folder / "config.yaml"))
    if cfg.train.protocol == "grouped_cv":
        raise ConfigError(
            f"{folder}: a grouped cross-validation run (train.protocol: grouped_cv) has one model per fold, each "
            "to be tested on its own fold's speakers; robustness evaluation reads one test split per run and "
            "supports train.protocol: fixed runs only"
        )
    ckpts = sorted(folder.glob("seed_*/checkpoint.pt"))
    if not ckpts:
        raise CheckpointError(f"{folder}: no seed_<s>/checkpoint.pt; train the run first")
    return {"folder": folder, "cfg": cfg, "checkpoints": ckpts}


def run_labels(folders: list[Path]) -> list[str]:
    names = [f.name for f in folders]
    return [f"{f.parent.name}/{f.name}" if names.count(f.name) > 1 else f.name for f in folders]


def robust(
    run_folders,
    out: str | Path | None = None,
    seed: int = 0,
    noise_levels=NOISE_LEVELS,
    drop_rates=DROP_RATES,
    data_root: str | None = None,
    batch_size: int = 256,
    plots: bool = True,
    waveform=(),
) -> dict:
    """Evaluate every run's seeds under every condition (module doc); write the files; return
    {"results": label -> robust.json content, "table": Markdown, "markdown", "plots": paths}."""

    runs = [load_run(f) for f in run_folders]
    if not runs:
        raise ConfigError("robust: give at least one run folder")
    labels = run_labels([r["folder"] for r in runs])
    # Runs on the same dataset config share one loaded dataset and so the same corrupted splits.
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(dataset_key(r["cfg"]), []).append(i)
    results: dict[str, dict] = {}
    for _key, members in groups.items():
        ds = dataset_from_config(runs[members[0]]["cfg"], data_root)
        if "test" not in ds.splits:
            raise DataError(
                f"{runs[members[0]]['folder']}: dataset {ds.name!r} has no test split; it has {sorted(ds.splits)}"
            )
        conds, skipped = robust_conditions(ds, noise_levels, drop_rates)
        conds += waveform_conditions(waveform, seed)
        scales = train_scales(ds)
        models = {i: [load_checkpoint(p) for p in runs[i]["checkpoints"]] for i in members}
        per: dict[int, dict[str, dict[int, dict[str, float]]]] = {i: {c["name"]: {} for c in conds} for i in members}
        clean = as_seen(ds.splits["test"])
        for c in conds:
            test = (
                waveform_split(runs[members[0]]["cfg"], c, data_root)
                if c["kind"] == "wave"
                else perturb_split(clean, c, seed, scales)
            )
            view = dataclasses.replace(ds, splits={**ds.splits, "test": test})
            for i in members:
                for model, _, payload in models[i]:
                    pred, label, _ = predict(model, view, "test", batch_size)
                    per[i][c["name"]][int(payload["seed"])] = compute_metrics(ds.task, pred, label, ds.num_classes)
        for i in members:
            cfg = runs[i]["cfg"]
            rows = []
            for c in conds:
                seeds = per[i][c["name"]]
                metric_names = next(iter(seeds.values()))
                rows.append(
                    {
                        **c,
                        "metrics": {k: aggregate([v[k] for v in seeds.values()]) for k in metric_names},
                        "per_seed": {str(s): v for s, v in seeds.items()},
                    }
                )
            res = {
                "run": labels[i],
                "folder": str(runs[i]["folder"]),
                "model": cfg.model["name"],
                "dataset": cfg.dataset["name"],
                "task": ds.task,
                "split": "test",
                "seeds": sorted(int(p["seed"]) for _, _, p in models[i]),
                "perturbation_seed": seed,
                "main_metric": main_metric(ds.task),
                "noise_unit": "per-column std of the real train frames",
                "std": "sample (ddof=1) over seeds",
                "conditions": rows,
                "skipped": skipped,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            write_json(runs[i]["folder"] / "robust.json", res)
            results[labels[i]] = res
    results = {lab: results[lab] for lab in labels}  # input order
    out = (
        Path(out) if out is not None else (runs[0]["folder"] if len(runs) == 1 else runs[0]["folder"].parent / "robust")
    )
    table = robust_table(results)
    md = write_text(out / "robust.md", "# Robustness on the test split\n\n" + table + "\n")
    pngs = []
    if plots:
        pngs = robust_curves(results, out)
    return {
        "results": results,
        "table": table,
        "markdown": str(md),
        "plots": [str(p) for p in pngs],
        "folder": str(out),
    }


def robust_table(results: dict[str, dict], metric: str | None = None) -> str:
    """Rows: conditions; columns: runs; cells: mean ± std over seeds of the main metric and its change
    from clean in brackets. The best mean of each row is in bold (the metric's direction)."""
    first = next(iter(results.values()))
    metric = metric or first["main_metric"]
    better = min if METRIC_DIRECTIONS.get(metric, "max") == "min" else max
    names = list(dict.fromkeys(c["name"] for r in results.values() for c in r["conditions"]))
    by = {lab: {c["name"]: c["metrics"].get(metric) for c in r["conditions"]} for lab, r in results.items()}
    lines = [
        f"Test {LABELS.get(metric, metric)} (mean ± sample std over seeds; in brackets the change from clean; best per row in bold; "
        f"noise sigma in units of the modality's train std). Perturbation seed "
        f"{first['perturbation_seed']}.",
        "",
        "| condition | " + " | ".join(f"`{lab}`" for lab in results) + " |",
        "|---" * (len(results) + 1) + "|",
    ]
    for name in names:
        stats = {lab: by[lab].get(name) for lab in results}
        means = [s["mean"] for s in stats.values() if s is not None and not math.isnan(s["mean"])]
        best = better(means) if means else None
        cells = []
        for lab, s in stats.items():
            if s is None:
                cells.append("n/a")
                continue
            text = fmt(metric, s)
            if name != "clean" and by[lab].get("clean"):
                d = s["mean"] - by[lab]["clean"]["mean"]
                text += f" ({d:+.3f})" if metric in ("mae", "corr") else f" ({100 * d:+.2f})"
            cells.append(f"**{text}**" if len(results) > 1 and s["mean"] == best else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    skips: dict[tuple[str, str], list[str]] = {}
    for lab, r in results.items():
        for s in r["skipped"]:
            skips.setdefault((s["name"], s["reason"]), []).append(lab)
    if skips:
        lines += ["", "Skipped (does not apply):"]
        lines += [
            f"- `{n}`: {why}" + (f" ({', '.join(labs)})" if len(results) > 1 and len(labs) < len(results) else "")
            for (n, why), labs in skips.items()
        ]
    return "\n".join(lines)
