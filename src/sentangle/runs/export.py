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
from sentangle.data.text import describe_setting, text_setting
from sentangle.evaluation.metrics import METRIC_DIRECTIONS
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
    folds = sorted(p.parent for p in path.glob(f"folds/fold_*/{CHECKPOINT}")) or sorted(
        p.parent for p in path.glob(f"seed_*/folds/fold_*/{CHECKPOINT}")
    )
    if folds:
        raise CheckpointError(
            f"{path} is from a grouped cross-validation run: each seed has one model per fold, each trained "
            f"without its fold's speakers; expected one fold folder ({', '.join(map(str, folds[:3]))})"
        )
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


# What the card says of the data behind a model trained on a named dataset: its language and
# where its clips come from, the first limit of any model trained on it.
MOSI_DOMAIN = "English; CMU-MOSI: opinion videos (mostly movie reviews) from YouTube, one speaker talking to the camera"
DOMAINS = {
    "mosi": MOSI_DOMAIN,
    "mosi_utt": MOSI_DOMAIN,
    "mosei": "English; CMU-MOSEI: monologue videos from YouTube, one speaker giving an opinion to the camera "
    "(reviews, debates, commentary on a few hundred topics)",
    "mintrec": "English; MIntRec: scripted dialogue from a TV sitcom",
    "urfunny": "English; UR-FUNNY: TED talks",
}


def _seed_rank(seed: int | None, metrics: dict, summary: dict | None) -> str:
    """Where this seed's selection score stands among the run's seeds: a seed picked as the best
    on the selection split looks a little better there than the run does."""
    split, metric = metrics.get("select_split", "valid"), metrics.get("select_metric")
    per_seed = (summary or {}).get("per_seed") or {}
    scores = {int(s): m.get(split, {}).get(metric) for s, m in per_seed.items()}
    if seed is None or metric not in METRIC_DIRECTIONS or len(scores) < 2 or None in scores.values():
        return ""
    sign = 1 if METRIC_DIRECTIONS[metric] == "min" else -1
    order = sorted(scores, key=lambda s: sign * scores[s])
    if seed not in order:
        return ""
    rank = order.index(seed) + 1
    place = "the best" if rank == 1 else f"number {rank}"
    return (
        f"Seed {seed} is {place} of the run's {len(order)} seeds by {split} {metric}, the selection score"
        + (f": its {split} numbers are a little optimistic, the run's mean is the fairer estimate" if rank == 1 else "")
        + ".\n"
    )


def _metric_tables(seed: int | None, seed_dir: Path, task: str) -> str:
    metrics = _read_json(seed_dir / "metrics.json")
    summary = _read_json(seed_dir.parent / "summary.json")
    if metrics is None and summary is None:
        return "No metrics were found beside the checkpoint (metrics.json, ../summary.json).\n"
    out = ""
    if metrics is not None:
        table = {s: {k: aggregate([v]) for k, v in m.items()} for s, m in metrics["metrics"].items()}
        epoch = f", epoch {metrics['best_epoch']}" if metrics.get("best_epoch") is not None else ""
        out += f"This model (seed {seed}{epoch}), selected on {metrics.get('select_split', 'valid')}:\n\n"
        out += split_table(table, task) + "\n"
        flags = [k for k in ("constant_predictions", "no_better_than_constant") if metrics.get(k)]
        if flags:
            out += f"\nWarning: the run flagged this seed ({', '.join(f'{k}: {metrics[k]}' for k in flags)}).\n"
        rank = _seed_rank(seed, metrics, summary)
        out += f"\n{rank}" if rank else ""
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
        f"- task: {features['task']}"
        + (f", classes {features['class_names']}" if features.get("class_names") else "")
        + (
            f": one score, trained on labels in [{features['label_range'][0]:g}, {features['label_range'][1]:g}]"
            if features["task"] == "regression" and features.get("label_range")
            else ""
        ),
        f"- trained with seed {seed}, sentangle {payload.get('versions', {}).get('sentangle', '?')}: at most "
        f"{cfg.train.epochs} epochs (patience {cfg.train.patience}), batch {cfg.train.batch_size}, lr {cfg.train.lr:g}",
        "",
        "## Data",
        "",
        f"- dataset `{dataset['name']}`"
        + (f" with {', '.join(f'{k}={v!r}' for k, v in dataset.items() if k != 'name')}" if len(dataset) > 1 else ""),
    ]
    if dataset["name"] in DOMAINS:
        lines.append(f"- language and domain: {DOMAINS[dataset['name']]}")
    if sizes:
        lines.append("- samples: " + ", ".join(f"{s} {v.get('samples')}" for s, v in sizes.items()))
    if dataset.get("holdout_valid"):
        lines.append(
            "- valid and test are the two halves of the data's validation split, cut by video (dataset.holdout_valid): "
            "epochs and seeds are chosen on valid only, so test is data no choice looked at; it is not the "
            "dataset's official test split"
        )
    lines.append(
        (
            f"- normalisation: {', '.join(norm)} standardised with the training split's statistics, stored "
            "in preprocessing.json and applied to any input"
            if norm
            else "- normalisation: none (no audio or vision features to standardise)"
        )
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
        *_model_limits(features, dataset["name"]),
        "- Features from other extractors or settings are not comparable, even at the same sizes.",
        "- A modality missing from the input is read as absent (zeros, masked out): a robustness condition, "
        "not the trained model's accuracy.",
        "",
    ]
    return "\n".join(lines)


def _model_limits(features: dict, dataset: str) -> list[str]:
    lines = []
    if dataset in DOMAINS:
        lines.append(
            f"- Trained on {DOMAINS[dataset].split('; ', 1)[1]}; text in another language or domain is outside it."
        )
    modalities = list(features.get("modalities") or features["input_dims"])
    unread = [m for m in ("text", "audio", "vision") if m not in modalities]
    if unread:
        lines.append(f"- Reads {', '.join(modalities)} only: it has no {' or '.join(unread)} input.")
    if features.get("text_encoder"):
        text = text_setting(features["text_encoder"])
        frozen = " is frozen (only the layers above it were trained)" if text["finetune"] == 0 else ""
        lines.append(f"- The text encoder {text['name']}{frozen}; text beyond {text['max_length']} tokens is cut.")
    return lines


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
