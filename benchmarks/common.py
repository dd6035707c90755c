"""Helpers shared by the check scripts in this folder (run as `python benchmarks/<script>.py`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import sentangle
from sentangle.report.tables import fmt

_reported: dict[str, set] = {}  # run folder -> the seeds a check document reports from it


def record(res: dict) -> dict:
    """Note the run folder and seeds of a training result, for `time_line`."""
    _reported.setdefault(res["folder"], set()).update(res["per_seed"])
    return res


def train_or_reuse(out: str, name: str, **kwargs) -> dict:
    """Train (or resume) run `name`; a folder another script made with other settings is reused as it is."""
    print(f"{time.strftime('%H:%M:%S')} {out}/{name}", flush=True)  # the runs train without a bar (progress off)
    try:
        return record(sentangle.train(out=out, name=name, **kwargs))
    except FileExistsError as e:
        config = Path(out) / name / "config.yaml"
        # the message names the settings that differ: a reader of the doc must be able to see them
        print(f"{name}: {e}\n  -> reusing the settings stored in {config}")
        return record(
            sentangle.train(
                config=str(config), out=out, name=name, seeds=kwargs.get("seeds"), data_root=kwargs.get("data_root")
            )
        )


def time_line(start: float) -> str:
    """The closing line of a check document. Reused seeds make this invocation's wall time say little about
    the cost of regenerating the doc from scratch, so the recorded training time of every reported seed is
    given beside it."""
    seconds = sum(
        json.loads((Path(folder) / f"seed_{seed}" / "metrics.json").read_text())["train_seconds"]
        for folder, seeds in _reported.items()
        for seed in seeds
    )
    return (
        f"\nTraining time of every run above, all seeds: {seconds / 60:.1f} min on one thread; this invocation "
        f"took {(time.time() - start) / 60:.1f} min (finished seeds are reused). The shared machine was busy "
        "with other jobs, so the times are upper bounds.\n"
    )


def seed_values(res: dict, split: str = "test", metric: str = "mae") -> list[float]:
    return [res["per_seed"][s][split][metric] for s in sorted(res["per_seed"], key=int)]


def epoch_seconds(folder: str) -> float:
    """Mean training seconds per epoch over the finished seeds of a run folder."""
    per = []
    for f in Path(folder).glob("seed_*/metrics.json"):
        m = json.loads(f.read_text())
        per.append(m["train_seconds"] / max(len(m["history"]), 1))
    return float(np.mean(per)) if per else float("nan")


def foundation_reference(dataset: str) -> str:
    """A line citing the order-blind baseline on `dataset` (mosi_utt: LF-DNN, mosi: text-only), from the
    foundation checks' runs if they are here, else from the tracked results store; "" if neither is."""
    model = "lf_dnn" if dataset == "mosi_utt" else "text_only"
    store = Path("results") / ("mosi_utt-frozen" if dataset == "mosi_utt" else "mosi-text") / model
    folder = next(
        (f for f in (Path("runs/foundation") / f"{model}-{dataset}", store) if (f / "summary.json").exists()), None
    )
    if folder is None:
        return ""
    r = json.loads((folder / "summary.json").read_text())
    t = r["splits"]["test"]
    return (
        f"For reference, `{model}` on `{dataset}`, run folder `{folder}` ({len(r['seeds'])} seeds): test MAE "
        f"{fmt('mae', t['mae'])}, Corr {fmt('corr', t['corr'])}, Acc-2 non0 {fmt('acc2_non0', t['acc2_non0'])}.\n"
    )
