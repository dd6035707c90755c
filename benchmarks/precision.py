"""Mixed precision and compilation on the CPU: what train.precision=bf16 and train.compile=true do
to the metrics and to the time per epoch, next to plain fp32, on the synthetic benchmark.

    python benchmarks/precision.py                     # lf_dnn, text_only, tsda; 3 seeds; 2 threads
    python benchmarks/precision.py --models lf_dnn --seeds 2 --epochs 3 --no-doc   # a short look
    python benchmarks/precision.py --quick --no-doc    # smoke run: lf_dnn, tiny data, 2 seeds, 2 epochs

Writes docs/precision.json and re-renders docs/PERFORMANCE.md (benchmarks/performance.py places the
"Precision and compilation" section; its other sections are shown from their JSON, not re-measured).

Every (model, setting) runs in a fresh subprocess, its seeds one after another as `sentangle train`
runs them (a compiled model's later seeds reuse the compiled code). Each seed trains for a fixed
number of epochs (patience = epochs, so every setting does the same work) with selection on the
validation split; the metrics are the test split's at the selected epoch. An epoch's seconds are
those between two ends of training epochs: one epoch's training plus the previous epoch's
validation pass. The first two epochs of a process carry the compilation (training, then
evaluation) and are reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JSON = ROOT / "docs" / "precision.json"

MODELS = ("lf_dnn", "text_only", "tsda")
# train settings per column; "compiled fp32" is the fp32 computation through torch.compile
SETTINGS = {"fp32": {}, "bf16": {"precision": "bf16"}, "compiled fp32": {"compile": True}}
# 15 % of the MOSI-shaped synthetic benchmark (193 / 34 / 103 samples) at MOSI's feature sizes, its
# sequences cut to 30-40 frames, 6 epochs: the 27 runs took 7.5 minutes on 2 idle cores (21 while
# other processes took half of them), most of it TSDA in bf16 (a CPU without bf16 instructions
# emulates it) and compiling TSDA.
DATA = {"seed": 0, "scale": 0.15, "lengths": {"text": 30, "audio": 40, "vision": 40}}
QUICK_DATA = {"seed": 0, "scale": 0.05, "lengths": 8, "dims": {"text": 16, "audio": 5, "vision": 8}}
METRICS = (("valid", "mae"), ("test", "mae"), ("test", "corr"), ("test", "acc2_has0"))


def measure(model_name: str, setting: str, seeds: list[int], data: dict, epochs: int, threads: int) -> dict:
    """Train `model_name` once per seed at `setting`; metrics and epoch times per seed."""
    import warnings

    import torch

    import sentangle
    from sentangle.data.named import load_dataset
    from sentangle.runs.runner import model_for
    from sentangle.training.trainer import fit, set_seed

    torch.set_num_threads(threads)
    ds = load_dataset("synthetic", **data)
    runs = []
    for seed in seeds:
        train = {"epochs": epochs, "patience": epochs, "progress": False, "threads": threads, **SETTINGS[setting]}
        cfg = sentangle.make_config(model_name, "synthetic", train=train)
        set_seed(seed)
        model = model_for(cfg, ds)
        stamps = [time.perf_counter()]
        hook = getattr(model, "on_epoch_end", None)

        def timed(epoch: int, hook=hook, stamps=stamps) -> None:
            if hook is not None:
                hook(epoch)
            stamps.append(time.perf_counter())

        model.on_epoch_end = timed  # fit calls it after each training epoch, before validation
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit(model, ds, cfg.train, seed=seed)
        runs.append(
            {
                "seed": seed,
                "best_epoch": result.best_epoch,
                "metrics": {f"{split}_{m}": result.metrics[split][m] for split, m in METRICS},
                "epoch_seconds": [b - a for a, b in zip(stamps, stamps[1:])],
                "fit_seconds": result.seconds,
                "fallback": [str(w.message) for w in caught if "train.compile" in str(w.message)],
            }
        )
    return {"model": model_name, "setting": setting, "runs": runs}


def summarize(job: dict) -> dict:
    """Means and standard deviations over seeds, and the epoch times (first two epochs apart)."""
    runs = job["runs"]
    out: dict = {"model": job["model"], "setting": job["setting"], "seeds": len(runs)}
    for key in runs[0]["metrics"]:
        values = [r["metrics"][key] for r in runs]
        out[key] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    later = [s for r in runs for s in r["epoch_seconds"][2:]]
    out["epoch_s"] = statistics.median(later) if later else None
    out["first_two_epochs_s"] = sum(runs[0]["epoch_seconds"][:2])
    out["eager_fallback"] = any(r["fallback"] for r in runs)
    return out


def within_noise(row: dict, ref: dict, key: str = "test_mae") -> bool:
    """The difference of the means is within the two settings' seed spreads (the check the tests make)."""
    return abs(row[key]["mean"] - ref[key]["mean"]) <= row[key]["std"] + ref[key]["std"]


def render_section(numbers: dict) -> list[str]:
    """The "Precision and compilation" section of docs/PERFORMANCE.md (benchmarks/performance.py places it)."""
    s, m = numbers["settings"], numbers["machine"]
    data = s["data"]
    lines = [
        "## Precision and compilation",
        "",
        f"Measured by `python benchmarks/precision.py` on {numbers['date']} ({m['cpu']}, {m['logical_cores']} "
        f"logical cores, **{s['threads']} threads**, torch {m['torch']}; load average {m['load_average_start'][0]:.1f} "
        f"at start, {m['load_average_end'][0]:.1f} at end); raw numbers: [precision.json](precision.json). "
        f"The synthetic benchmark at scale {data.get('scale')} (seed {data.get('seed')}; at most "
        f"{_per_modality(data.get('lengths'))} frames, "
        f"{_per_modality(data['dims']) + ' features' if data.get('dims') else 'MOSI feature sizes'}), each model's default "
        f"config, {s['epochs']} epochs (patience = epochs), seeds {', '.join(map(str, s['seeds']))}: mean +- std "
        "over the seeds of the selected epoch's metrics. `train.precision=bf16` runs the forward passes under "
        "CPU autocast (losses and metrics in float32); `compiled fp32` is `train.compile=true`. Seconds per "
        "epoch: the median of the epochs after the first two (one training epoch plus a validation pass); "
        "the first two epochs of the first seed carry the compilation. *Within seed noise*: the test MAE "
        "means differ by at most the sum of the two standard deviations. *Other processes*: the share of "
        "the cores that processes other than this benchmark used while the setting ran (from /proc/stat; "
        "near 0 % for undisturbed timings).",
        "",
        f"This CPU's oneDNN has bfloat16 kernels: **{'yes' if m.get('onednn_bf16') else 'no'}**"
        + (
            " (no AVX-512 BF16 or AMX), so bf16 matrix products are emulated and slower than float32 here; "
            "the trainer runs LSTMs outside oneDNN in float32 on such CPUs."
            if not m.get("onednn_bf16")
            else "."
        ),
        "",
        "| model | setting | valid MAE | test MAE | test Corr | test Acc-2 | within seed noise | s / epoch | "
        "vs fp32 | first two epochs s | other processes |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    rows = numbers["results"]
    for r in rows:
        if "error" in r:
            lines.append(f"| `{r['model']}` | {r['setting']} | error: {r['error'][:200]} |" + " |" * 8)
            continue
        ref = next((x for x in rows if x["model"] == r["model"] and x["setting"] == "fp32" and "error" not in x), None)
        pm = lambda k, d=3: f"{r[k]['mean']:.{d}f} +- {r[k]['std']:.{d}f}"  # noqa: E731
        noise = "-" if ref is None or ref is r else ("yes" if within_noise(r, ref) else "**no**")
        ratio = f"{r['epoch_s'] / ref['epoch_s']:.2f}x" if ref and r["epoch_s"] and ref["epoch_s"] else "-"
        fell_back = " (ran eagerly: compilation failed)" if r["eager_fallback"] else ""
        lines.append(
            f"| `{r['model']}` | {r['setting']}{fell_back} | {pm('valid_mae')} | {pm('test_mae')} | {pm('test_corr')} | "
            f"{pm('test_acc2_has0')} | {noise} | {_fmt_s(r['epoch_s'])} | {ratio} | {_fmt_s(r['first_two_epochs_s'])} | "
            f"{_fmt_share(r.get('other_processes'))} |"
        )
    return [*lines, ""]


def _per_modality(value) -> str:
    return ", ".join(f"{m} {v}" for m, v in value.items()) if isinstance(value, dict) else str(value)


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _fmt_share(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def _worker(args) -> None:
    model, setting = args.worker.split(":", 1)
    out = measure(model, setting, args.seed_list, args.data, args.epochs, args.threads)
    print("RESULT " + json.dumps(out), flush=True)


def _cpu_seconds() -> tuple[float | None, float]:
    """Busy seconds of this machine's CPUs since boot, by anyone, and those of this script's finished
    workers: over a job, their difference is what other processes took."""
    import resource

    from extraction import _busy_s

    own = resource.getrusage(resource.RUSAGE_CHILDREN)
    return _busy_s(sorted(os.sched_getaffinity(0))), own.ru_utime + own.ru_stime


def _run_worker(model: str, setting: str, args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    busy0, own0 = _cpu_seconds()
    t0 = time.perf_counter()
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        f"{model}:{setting}",
        "--threads",
        str(args.threads),
        "--epochs",
        str(args.epochs),
        "--seeds",
        ",".join(map(str, args.seed_list)),
        "--data",
        json.dumps(args.data),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    busy1, own1 = _cpu_seconds()
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"model": model, "setting": setting, "error": f"exited {proc.returncode}: " + " | ".join(tail)}
    raw = json.loads(lines[-1][len("RESULT ") :])
    cores = len(os.sched_getaffinity(0))
    other = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall * cores)
    return summarize(raw) | {"wall_s": wall, "other_processes": other, "raw": raw}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", help=f"comma list (default {','.join(MODELS)}; --quick: lf_dnn)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {', '.join(SETTINGS)}")
    ap.add_argument("--seeds", help="a count (default 3; --quick 2) or a comma list of seeds")
    ap.add_argument("--epochs", type=int, help="epochs per seed (default 6; --quick 2)")
    ap.add_argument("--threads", type=int, default=2, help="torch/OMP/MKL threads (default 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: lf_dnn on tiny data, 2 seeds, 2 epochs")
    ap.add_argument("--json", default=str(JSON), help=f"where the numbers go (default {JSON.relative_to(ROOT)})")
    ap.add_argument("--no-doc", action="store_true", help="print the section; write no JSON and no page")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from sentangle.config import parse_seeds

    args.seed_list = parse_seeds(args.seeds or (2 if args.quick else 3), "--seeds")
    args.epochs = args.epochs or (2 if args.quick else 6)
    args.data = json.loads(args.data) if args.data else (QUICK_DATA if args.quick else DATA)
    if args.worker:
        _worker(args)
        return 0
    unknown = set(args.settings.split(",")) - set(SETTINGS)
    if unknown:
        print(f"--settings: unknown {sorted(unknown)}; expected some of {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    import performance
    import torch

    models = args.models.split(",") if args.models else (["lf_dnn"] if args.quick else list(MODELS))
    machine = performance.machine() | {"onednn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}
    results = []
    for model in models:
        for setting in args.settings.split(","):
            print(f"{model} {setting} ...", file=sys.stderr, flush=True)
            results.append(_run_worker(model, setting, args))
    machine["load_average_end"] = list(os.getloadavg())
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine,
        "settings": {"threads": args.threads, "epochs": args.epochs, "seeds": args.seed_list, "data": args.data},
        "results": results,
    }
    print("\n".join(render_section(record)))
    if not args.no_doc:
        performance.publish(record, args.json, JSON)
    return 0


if __name__ == "__main__":
    sys.exit(main())
