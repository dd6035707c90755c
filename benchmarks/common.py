"""Helpers shared by the check scripts in this folder (run as `python benchmarks/<script>.py`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import sentangle


def train_or_reuse(out: str, name: str, **kwargs) -> dict:
    """Train (or resume) run `name`; a folder another script made with other settings is reused as it is."""
    try:
        return sentangle.train(out=out, name=name, **kwargs)
    except FileExistsError:
        config = Path(out) / name / "config.yaml"
        print(f"{name}: reusing the settings stored in {config}")
        return sentangle.train(config=str(config), out=out, name=name, seeds=kwargs.get("seeds"),
                               data_root=kwargs.get("data_root"))


def seed_values(res: dict, split: str = "test", metric: str = "mae") -> list[float]:
    return [res["per_seed"][s][split][metric] for s in sorted(res["per_seed"], key=int)]


def epoch_seconds(folder: str) -> float:
    """Mean training seconds per epoch over the finished seeds of a run folder."""
    per = []
    for f in Path(folder).glob("seed_*/metrics.json"):
        m = json.loads(f.read_text())
        per.append(m["train_seconds"] / max(len(m["history"]), 1))
    return float(np.mean(per)) if per else float("nan")
