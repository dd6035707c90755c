"""What a trained model needs to read new data as its training data was read, as plain JSON.

    {"format": "sentangle-preprocessing-1",
     "normalization": {modality: {mean, scale, dropped, clip}} (dataset.Standardize.to_json), or
                      null when unknown (checkpoints written before it was stored),
     "features": {modalities, input_dims, task, class_names, label_range, text_encoder (the setting,
                  by name), dataset (its config, without machine paths), and, for data from
                  `sentangle extract`, extractors and max_frames: what `predict --audio/--video`
                  extracts new clips with}}

Checkpoints (runs/checkpoint.py) and model folders (models/portable.py) store it; `sentangle
predict` applies its statistics to the input instead of the input's own (`MSADataset.normalize_with`).
"""

from __future__ import annotations

import os
from pathlib import PurePath

from sentangle.data.dataset import MSADataset, Standardize, statistics_from_json, statistics_to_json
from sentangle.data.text import text_setting

PREPROCESSING_FORMAT = "sentangle-preprocessing-1"


def preprocessing(ds: MSADataset, text_encoder: dict | str | None = None, dataset: dict | None = None) -> dict:
    """The preprocessing of `ds` (normalised as it is now) for a model with text encoder setting
    `text_encoder`, trained on the dataset config `dataset`."""
    features: dict = {
        "modalities": list(ds.modalities),
        "input_dims": ds.input_dims,
        "task": ds.task,
        "class_names": None if ds.class_names is None else list(ds.class_names),
        "text_encoder": encoded_with(ds) or (None if text_encoder is None else text_setting(text_encoder)),
        "dataset": None if dataset is None else dataset_spec(dataset),
        "label_range": None if ds.label_range is None else [float(v) for v in ds.label_range],
    }
    if "extractors" in ds.info:  # how raw media became these features (written by the extract step)
        features["extractors"] = ds.info["extractors"]
        features["max_frames"] = ds.info.get("max_frames")
    return {"format": PREPROCESSING_FORMAT, "normalization": statistics_to_json(ds.normalizers), "features": features}


def encoded_with(ds: MSADataset) -> dict | None:
    """The text encoder setting that turned the raw texts of `ds` into its text (text.prepare_text)."""
    if "text_encoder" not in ds.info:
        return None
    return text_setting(
        {"name": ds.info["text_encoder"], "finetune": ds.info["finetune"], "max_length": ds.info["max_length"]}
    )


def dataset_spec(dataset: dict) -> dict:
    """A dataset config without what belongs to one machine: the data root is dropped and a path
    keeps its file name only (a named dataset reloads from its name and options anywhere). Pickle
    trust is dropped too: a model folder from elsewhere must not open pickles on its own say-so."""
    return {
        k: (PurePath(v).name if isinstance(v, str) and os.path.isabs(v) else v)
        for k, v in dataset.items()
        if k not in ("root", "trusted")
    }


def preprocessing_statistics(value: dict | None, where: str) -> dict[str, Standardize] | None:
    """The normalisation statistics of a preprocessing dict, or None when it has none (old
    checkpoints); DataError naming `where` when they cannot be read."""
    if value is None or value.get("normalization") is None:
        return None
    return statistics_from_json(value["normalization"], f"{where}: normalization")
