"""Regenerate docs/baselines_checks.md: the five baselines through the one trainer, via compare().

    python benchmarks/baselines_checks.py [--data-root ../shared/data] [--out runs/checks]
                                          [--only timing,mosi_utt,synthetic_aligned,synthetic_unaligned]

1. Timing: seconds per full-size synthetic training epoch for every baseline (extrapolated from a
   few batches), which decides how far the synthetic runs below are reduced.
2. Real MOSI text + audio (`mosi_utt`, frozen MiniLM token features, 5 seeds): LF-DNN, TFN, LMF,
   MulT, MISA, Self-MM and the text-only model, each with its published defaults.
3. The synthetic benchmark, aligned and unaligned, reduced (SYNTH below), against the mean
   predictor of the same test split.

Everything goes through `sentangle.recipes.compare.compare` (run folders `<out>/<model>-<name>/`,
tables `<out>/<name>/comparison.md`); finished seeds and the timing file are reused, so a rerun
only trains what is missing and rewrites the Markdown. The doc is rewritten after every section
(sections run in the order mosi_utt, timing, synthetic, and appear in the order listed above).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sentangle.config import build_config
from sentangle.core.io import versions, write_json, write_text
from sentangle.data.named import load_dataset
from sentangle.recipes.compare import compare
from sentangle.runs.runner import model_for
from sentangle.training.trainer import make_optimizer, task_loss

BASELINES = ["tfn", "lmf", "mult", "misa", "self_mm"]
MOSI_MODELS = ["lf_dnn", "tfn", "lmf", "mult", "misa", "self_mm", "text_only"]
# The synthetic runs, reduced to fit two shared CPU cores (the timing section says why).
SYNTH = {"seeds": 1, "scale": 0.5, "epochs": 12, "patience": 4}
# MulT attends over at most this many (window-averaged) frames per modality on unaligned data:
# MMSA's aligned length. Full unaligned MulT (375 / 500 frames) is in the timing table.
MULT_UNALIGNED_MAX_LEN = 50
TIMED_BATCHES = 2


def synthetic_overrides(aligned: bool) -> list[str]:
    return [
        f"dataset.aligned={str(aligned).lower()}",
        f"dataset.scale={SYNTH['scale']}",
        f"train.epochs={SYNTH['epochs']}",
        f"train.patience={SYNTH['patience']}",
        "train.threads=1",
    ]


def time_epochs(path: Path) -> dict:
    """Seconds per full-size training epoch, from TIMED_BATCHES batches after one warm-up batch."""
    times = json.loads(path.read_text()) if path.exists() else {}
    for aligned in (True, False):
        setting = "aligned" if aligned else "unaligned"
        variants = [(m, []) for m in BASELINES]
        if not aligned:
            variants.append(("mult", [f"model.max_len={MULT_UNALIGNED_MAX_LEN}"]))
        ds = None
        for model, extra in variants:
            key = f"{model}{'' if not extra else ' ' + extra[0]} ({setting})"
            if key in times:
                continue
            cfg = build_config(model, "synthetic", overrides=[f"dataset.aligned={str(aligned).lower()}", *extra])
            if ds is None:
                ds = load_dataset("synthetic", aligned=aligned)
            torch.manual_seed(0)
            net = model_for(cfg, ds).train()
            opt = make_optimizer(net, cfg.train)
            seen, spent = 0, 0.0
            for i, batch in enumerate(
                ds.batches("train", cfg.train.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
            ):
                start = time.perf_counter()
                out = net(batch)
                loss = task_loss(out.prediction, batch.labels, ds.task) + sum(out.aux_losses.values())
                opt.zero_grad()
                loss.backward()
                opt.step()
                if i > 0:  # the first batch pays for allocation
                    seen, spent = seen + len(batch), spent + time.perf_counter() - start
                if i == TIMED_BATCHES:
                    break
            times[key] = round(spent / seen * len(ds.splits["train"]), 1)
            write_json(path, times)
            print(f"{key}: {times[key]} s per training epoch", flush=True)
    return times


def timing_section(times: dict) -> str:
    lines = ["| model | aligned | unaligned |", "|---|---:|---:|"]
    for model in BASELINES:
        cells = [times.get(f"{model} ({s})") for s in ("aligned", "unaligned")]
        lines.append(f"| `{model}` | " + " | ".join("-" if c is None else f"{c:.0f}" for c in cells) + " |")
    capped = times.get(f"mult model.max_len={MULT_UNALIGNED_MAX_LEN} (unaligned)")
    if capped is not None:
        lines.append(f"| `mult`, max_len={MULT_UNALIGNED_MAX_LEN} | - | {capped:.0f} |")
    return "\n".join(lines)


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default="runs/checks")
    ap.add_argument("--doc", default="docs/baselines_checks.md")
    ap.add_argument("--only", default="timing,mosi_utt,synthetic_aligned,synthetic_unaligned")
    args = ap.parse_args()
    todo = set(args.only.split(","))
    start = time.time()
    sections: dict[str, str] = {}

    def write_doc() -> None:
        head = [
            "# Baseline checks\n",
            "Generated by `python benchmarks/baselines_checks.py`; do not edit by hand. Every model is "
            "trained by the one trainer through `sentangle.recipes.compare.compare` and selected on the "
            "validation split; mean ± sample std over seeds (seeds 1111, 1112, ...). Model defaults are "
            "MMSA's published MOSI settings (see each `configs/models/<model>.yaml` and docs/baselines.md).\n",
            f"Versions: {versions()}\n",
        ]
        order = ["timing", "mosi_utt", "synthetic_aligned", "synthetic_unaligned"]
        tail = [f"\nTotal time of the last run: {(time.time() - start) / 60:.1f} min (finished seeds are reused).\n"]
        write_text(Path(args.doc), "\n".join(head + [sections[k] for k in order if k in sections] + tail))

    if "mosi_utt" in todo:
        res = compare(
            MOSI_MODELS,
            "mosi_utt",
            seeds=5,
            out=args.out,
            name="mosi_utt",
            data_root=args.data_root,
            overrides=["train.threads=1"],
        )
        info = json.loads((Path(res["results"]["lf_dnn"]["folder"]) / "dataset.json").read_text())
        sizes = " / ".join(str(v["samples"]) for v in info["splits"].values())
        sections["mosi_utt"] = (
            f"## Real MOSI text + audio (`mosi_utt`)\n\nThe bc-LSTM release's split ({sizes}): frozen "
            "MiniLM token features for text, one 73-d openSMILE vector per utterance for audio (a length-1 "
            "sequence), no vision. Five seeds per model, each model's published MOSI defaults, nothing tuned "
            "here. `text_only` reads the text only.\n\nCommand: `compare(" + repr(MOSI_MODELS) + ", 'mosi_utt', "
            "seeds=5, out='" + args.out + "', name='mosi_utt')`\n\n" + _tables(res["table"]) + "\n"
        )
        write_doc()

    if "timing" in todo:
        times = time_epochs(Path(args.out) / "epoch_times.json")
        sections["timing"] = (
            "## Cost on two shared CPU cores\n\nSeconds per training epoch on the full-size synthetic "
            f"benchmark (1284 training samples), extrapolated from {TIMED_BATCHES} batches after a warm-up "
            "batch, with each model's default batch size, one thread, other jobs sharing the machine. "
            "This is why the synthetic runs below are reduced.\n\n" + timing_section(times) + "\n"
        )
        write_doc()

    for aligned in (True, False):
        key = "synthetic_aligned" if aligned else "synthetic_unaligned"
        if key not in todo:
            continue
        models: list = list(BASELINES)
        if not aligned:
            models[models.index("mult")] = {"name": "mult", "max_len": MULT_UNALIGNED_MAX_LEN}
        over = synthetic_overrides(aligned)
        res = compare(models, "synthetic", seeds=SYNTH["seeds"], out=args.out, name=key, overrides=over)
        ds = load_dataset("synthetic", aligned=aligned, scale=SYNTH["scale"])
        mean_mae = ds.info["oracle"]["mean_mae"]
        verdicts = []
        for model, r in res["results"].items():
            mae = r["splits"]["test"]["mae"]["mean"]
            verdicts.append(
                f"| `{model}` | {mae:.3f} | {mean_mae:.3f} | {100 * (1 - mae / mean_mae):.1f}% | "
                f"{'yes' if mae < mean_mae else '**no**'} |"
            )
        title = "aligned (one length, 50 frames)" if aligned else "unaligned (50 / 375 / 500 frames)"
        note = (
            ""
            if aligned
            else f" MulT runs unaligned with `max_len={MULT_UNALIGNED_MAX_LEN}`: its keys and "
            "queries are window averages of real frames (layers.masked_downsample), at most "
            f"{MULT_UNALIGNED_MAX_LEN} per modality."
        )
        sections[key] = (
            f"## Synthetic benchmark, {title}\n\nReduced to fit the machine, on purpose: dataset.scale="
            f"{SYNTH['scale']} (train / valid / test {'/'.join(str(len(s)) for s in ds.splits.values())}), "
            f"at most {SYNTH['epochs']} epochs with patience {SYNTH['patience']}, {SYNTH['seeds']} seed. "
            f"Target: test MAE below predicting the training mean ({mean_mae:.3f} on this test split)."
            + note
            + "\n\n| model | test MAE | mean predictor | below it by | beats it |\n|---|---:|---:|---:|---|\n"
            + "\n".join(verdicts)
            + "\n\n"
            + _tables(res["table"])
            + "\n"
        )
        write_doc()
    print(f"wrote {args.doc}")


def _tables(md: str) -> str:
    """compare()'s Markdown without its title line, its headings one level down for this page."""
    body = md.split("\n", 1)[1].strip()
    return "\n".join("#" + line if line.startswith("## ") else line for line in body.splitlines())


if __name__ == "__main__":
    main()
