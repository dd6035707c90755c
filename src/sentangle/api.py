"""The Python API; each function mirrors a `sentangle` subcommand."""
from __future__ import annotations

from typing import Any

from .config import RunConfig, build_config
from .data.named import describe, list_datasets, load_dataset
from .models import create_model, list_models
from .training.runs import load_checkpoint, run


def _flatten(prefix: str, d: dict) -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and k != "aux_weights":
            out += _flatten(f"{prefix}{k}.", v)
        else:
            out.append(f"{prefix}{k}={yaml_value(v)}")
    return out


def yaml_value(v: Any) -> str:
    """`v` as it is written after KEY= in a command-line override (YAML flow style)."""
    import yaml

    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def make_config(model: str | dict | None = None, dataset: str | dict | None = None, config: str | None = None,
                seeds: int | str | list[int] | None = None, out: str | None = None, name: str | None = None,
                data_root: str | None = None, overrides: list[str] | tuple[str, ...] = (),
                **sections: dict) -> RunConfig:
    """Resolve a config like `sentangle train` does.

    `model` and `dataset` are a registered name or a dict with a "name" and options (as in the YAML
    files); `sections` are further dicts such as train={"epochs": 5}.
    """
    extra = list(overrides)
    if isinstance(model, dict):
        model, sections["model"] = model.get("name"), {k: v for k, v in model.items() if k != "name"}
    if isinstance(dataset, dict):
        dataset, sections["dataset"] = dataset.get("name"), {k: v for k, v in dataset.items() if k != "name"}
    for section, values in sections.items():
        if not isinstance(values, dict):
            raise TypeError(f"{section}= must be a dict of settings, got {type(values).__name__}")
        extra += _flatten(f"{section}.", values)
    if seeds is not None:
        extra.append(f"seeds={yaml_value(seeds)}")
    if out is not None:
        extra.append(f"out={out}")
    if name is not None:
        extra.append(f"name={name}")
    if data_root is not None:
        extra.append(f"dataset.root={data_root}")
    return build_config(model, dataset, config, extra)


def train(model: str | dict | None = None, dataset: str | dict | None = None, overwrite: bool = False,
          **kwargs) -> dict:
    """Train over seeds and write a run folder; returns the summary (mean/std per split and metric).

    Example: `sentangle.train({"name": "lf_dnn", "hidden": 64}, "synthetic", seeds=5, train={"epochs": 20})`.
    """
    return run(make_config(model, dataset, **kwargs), overwrite=overwrite)


__all__ = ["train", "make_config", "create_model", "list_models", "load_dataset", "list_datasets", "describe",
           "load_checkpoint"]
