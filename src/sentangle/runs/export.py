"""`sentangle export RUN/seed_S DIR`: one trained seed as a portable model folder (models/portable.py).

The folder carries the training data's normalisation statistics: from the checkpoint, or for a
checkpoint written before they were stored, recomputed from the run's dataset (its stored config).
Its README.md is a model card built from the run folder: data, metrics of this seed and over the
run's seeds, intended use, limits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sentangle.config import RunConfig
from sentangle.core.errors import CheckpointError, UserError
from sentangle.core.io import check_new_folder
from sentangle.data.preprocessing import dataset_spec, preprocessing
from sentangle.data.text import describe_setting
from sentangle.models.base import MSAModel
from sentangle.models.portable import is_model_folder
from sentangle.report.tables import aggregate, split_table
from sentangle.runs.checkpoint import load_checkpoint
from sentangle.runs.runner import dataset_from_config

CHECKPOINT = "checkpoint.pt"


def checkpoint_of(source: str | os.PathLike) -> Path:
    """The checkpoint of a seed folder (RUN/seed_S), or `source` itself when it is a checkpoint file."""
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; expected a seed folder (RUN/seed_S) or its {CHECKPOINT}")
    if path.is_file():
        return path
    if (path / CHECKPOINT).is_file():
        return path / CHECKPOINT
    seeds = sorted(p.parent for p in path.glob(f"seed_*/{CHECKPOINT}"))
    if seeds:
        raise CheckpointError(
            f"{path} is a run folder; expected one of its seed folders ({', '.join(map(str, seeds[:3]))})"
        )
    raise CheckpointError(f"{path} is not a seed folder (no {CHECKPOINT} in it); expected RUN/seed_S or a {CHECKPOINT}")


def recompute_preprocessing(checkpoint: Path, cfg: RunConfig, model: MSAModel, root=None) -> dict:
    """The preprocessing of a checkpoint written before it was stored, from its run's dataset."""
    try:
        ds = dataset_from_config(cfg, root)
    except UserError as e:
        raise CheckpointError(
            f"checkpoint {checkpoint} carries no normalisation statistics (written before they were stored), "
            f"and its dataset {cfg.dataset['name']!r} cannot be loaded to recompute them: {e}"
        ) from None
    return preprocessing(ds, model.text_setting, cfg.dataset)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _metric_tables(seed: int | None, seed_dir: Path, task: str) -> str:
    metrics = _read_json(seed_dir / "metrics.json")
    summary = _read_json(seed_dir.parent / "summary.json")
    if metrics is None and summary is None:
        return "No metrics were found beside the checkpoint (metrics.json, ../summary.json).\n"
    out = ""
    if metrics is not None:
        table = {s: {k: aggregate([v]) for k, v in m.items()} for s, m in metrics["metrics"].items()}
        out += f"This model (seed {seed}), selected on {metrics.get('select_split', 'valid')}:\n\n"
        out += split_table(table, task) + "\n"
        flags = [k for k in ("constant_predictions", "no_better_than_constant") if metrics.get(k)]
        if flags:
            out += f"\nWarning: the run flagged this seed ({', '.join(f'{k}: {metrics[k]}' for k in flags)}).\n"
    if summary is not None:
        out += f"\nThe run, mean ± sample std over seeds {summary['seeds']}:\n\n"
        out += split_table(summary["splits"], task) + "\n"
    return out


def model_card(checkpoint: Path, cfg: RunConfig, payload: dict, prep: dict, recomputed: bool) -> str:
    """README.md of the exported folder. Names no path of this machine (dataset_spec)."""
    features, seed = prep["features"], payload.get("seed")
    dataset = dataset_spec(cfg.dataset)
    options = ", ".join(f"{k}={v!r}" for k, v in cfg.model.items() if k not in ("name", "text_encoder"))
    sizes = (_read_json(checkpoint.parent.parent / "dataset.json") or {}).get("splits", {})
    norm = prep["normalization"] or {}
    text = features.get("text_encoder")
    lines = [
        f"# {cfg.model['name']} on {dataset['name']}",
        "",
        "A sentangle model folder: `sentangle.load_model(DIR)` in Python, or `sentangle predict DIR DATA`.",
        "",
        "## Model",
        "",
        f"- model `{cfg.model['name']}`: {options or 'default options'}",
        f"- inputs: {', '.join(f'{m} ({d})' for m, d in features['input_dims'].items())}"
        + (f"; text encoder: {describe_setting(text)}" if text else ""),
        f"- task: {features['task']}" + (f", classes {features['class_names']}" if features.get("class_names") else ""),
        f"- trained with seed {seed}, sentangle {payload.get('versions', {}).get('sentangle', '?')}",
        "",
        "## Data",
        "",
        f"- dataset `{dataset['name']}`"
        + (f" with {', '.join(f'{k}={v!r}' for k, v in dataset.items() if k != 'name')}" if len(dataset) > 1 else ""),
    ]
    if sizes:
        lines.append("- samples: " + ", ".join(f"{s} {v.get('samples')}" for s, v in sizes.items()))
    lines.append(
        f"- normalisation: {', '.join(norm) or 'none'} standardised with the training split's statistics, stored "
        "in preprocessing.json and applied to any input"
        + (
            " (recomputed from the run's dataset at export: the checkpoint predates stored statistics)"
            if recomputed
            else ""
        )
    )
    if features.get("extractors"):
        lines.append(f"- feature extractors: {json.dumps(features['extractors'], sort_keys=True)}")
    lines += [
        "",
        "## Metrics",
        "",
        _metric_tables(seed, checkpoint.parent, features["task"]).rstrip("\n"),
        "",
        "## Intended use",
        "",
        "Research on multimodal sentiment analysis: predictions for clips whose features come from the same "
        "extractors, with the same feature sizes, as the training data above.",
        "",
        "## Limits",
        "",
        "- The metrics hold for the splits above; other speakers, recording conditions or domains may score lower.",
        "- Features from other extractors or settings are not comparable, even at the same sizes.",
        "- A modality missing from the input is read as absent (zeros, masked out): a robustness condition, "
        "not the trained model's accuracy.",
        "",
    ]
    return "\n".join(lines)


def export(
    source: str | os.PathLike,
    out: str | os.PathLike,
    data_root=None,
    allow_unverified: bool = False,
    overwrite: bool = False,
) -> dict:
    """Write the model of `source` (a seed folder or its checkpoint.pt) as the new model folder `out`
    (`overwrite`: or in place of the model folder there); returns {"folder", "checkpoint",
    "recomputed"} (recomputed: the statistics were not stored in the checkpoint and were computed
    from the run's dataset)."""
    check_new_folder(out, "model folder", is_model_folder if overwrite else None)  # before anything is loaded
    checkpoint = checkpoint_of(source)
    model, cfg, payload = load_checkpoint(checkpoint, allow_unverified=allow_unverified)
    prep = payload.get("preprocessing")
    recomputed = prep is None
    if prep is None:
        prep = recompute_preprocessing(checkpoint, cfg, model, data_root)
    card = model_card(checkpoint, cfg, payload, prep, recomputed)
    model.save_pretrained(out, preprocessing=prep, card=card, overwrite=overwrite)
    return {"folder": str(out), "checkpoint": str(checkpoint), "recomputed": recomputed}
