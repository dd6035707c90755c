"""The Python API; each function mirrors a `sentangle` subcommand."""

from __future__ import annotations

from sentangle.config import make_config
from sentangle.data.extract import extract
from sentangle.data.named import describe, list_datasets, load_dataset
from sentangle.models import create_model, list_models, load_model
from sentangle.runs.checkpoint import load_checkpoint
from sentangle.runs.export import export
from sentangle.runs.runner import run


def train(
    model: str | dict | None = None, dataset: str | dict | None = None, overwrite: bool = False, **kwargs
) -> dict:
    """Train over seeds and write a run folder; returns the summary (mean/std per split and metric).

    Example: `sentangle.train({"name": "lf_dnn", "hidden": 64}, "synthetic", seeds=5, train={"epochs": 20})`.
    """
    return run(make_config(model, dataset, **kwargs), overwrite=overwrite)


__all__ = [
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
