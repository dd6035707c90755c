"""The Python API; each function mirrors a `sentangle` subcommand."""

from __future__ import annotations

import os

from sentangle.config import make_config
from sentangle.data.extract import extract
from sentangle.data.named import describe, list_datasets, load_dataset
from sentangle.models import create_model, list_models, load_model
from sentangle.runs.checkpoint import load_checkpoint
from sentangle.runs.export import export
from sentangle.runs.inference import default_model_dir, load_trained, predict_input
from sentangle.runs.runner import run


def train(
    model: str | dict | None = None, dataset: str | dict | None = None, overwrite: bool = False, **kwargs
) -> dict:
    """Train over seeds and write a run folder; returns the summary (mean/std per split and metric).

    Example: `sentangle.train({"name": "lf_dnn", "hidden": 64}, "synthetic", seeds=5, train={"epochs": 20})`.
    """
    return run(make_config(model, dataset, **kwargs), overwrite=overwrite)


def pretrained_model() -> str:
    """The folder of the model that ships with sentangle (text only, trained on CMU-MOSEI): what
    `predict` uses when no model is given; `load_model(pretrained_model())` loads it."""
    return str(default_model_dir())


def predict(
    model: str | os.PathLike | None = None, data: str | None = None, allow_unverified: bool = False, **kwargs
) -> list[dict]:
    """Predictions of `model` (a model folder or checkpoint.pt; None: the bundled text model,
    `pretrained_model()`), as `sentangle predict` writes them:
    one dict per clip (id, prediction, label if any, polarity or class probabilities, gates), and
    {"id", "error"} for a clip that could not be read.

    Inputs: `text=`, `audio=`, `video=` (one clip), `data="clips.csv", media="DIR"` (a CSV of clips),
    or `data` a dataset name, feature file or folder (`split=`, default "test"). Also
    `allow_missing=("audio",)`, `workers=`, `progress=`, `root=`, `trusted=`.
    Examples: `sentangle.predict(text="what a wonderful film")` (the bundled model),
    `sentangle.predict("my-model", text="what a wonderful film", audio="clip.wav")`.
    """
    return predict_input(load_trained(model, allow_unverified=allow_unverified), data, **kwargs)


__all__ = [
    "predict",
    "pretrained_model",
    "train",
    "make_config",
    "create_model",
    "list_models",
    "load_dataset",
    "list_datasets",
    "describe",
    "extract",
    "load_checkpoint",
    "load_model",
    "export",
]
