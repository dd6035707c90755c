"""Speed and memory of every registered model on MOSI- and MOSEI-shaped synthetic data.

    python benchmarks/performance.py              # every model, both shapes, 2 threads -> docs/PERFORMANCE.md
    python benchmarks/performance.py --quick      # smoke run: lf_dnn only, 3 batches, small lazy file
    python benchmarks/performance.py --models mult,misa --set model.max_len=0 --no-doc
    python benchmarks/performance.py --models misa,tfn --no-lazy --merge   # these rows again, the rest kept

Every model runs with its default config, resolved as `sentangle train -m MODEL` resolves it
(configs/datasets/synthetic.yaml < configs/models/<model>.yaml), so batch sizes are the models' own.
Each (model, shape) is measured in a fresh subprocess: its peak resident memory is its own, and a
slow model cannot slow the next one down through a fragmented heap.

Measured per model and shape: seconds per training epoch (gathering the batch and the trainer's step:
forward, task plus weighted auxiliary losses, backward, clipping, AdamW; one untimed warm-up batch, then batches until
`--batches` or `--seconds` is reached, extrapolated to the epoch when fewer than all), inference
utterances per second (eval mode, no gradients, train.eval_batch_size), peak resident memory
(VmHWM reset after the data and the model are built, so it is what training adds), parameters, and
FLOPs per sample of one batch (torch.utils.flop_counter.FlopCounterMode: forward, and forward plus
backward). The achieved fraction compares the training FLOP rate with a large float32 matmul on
the same threads. A memory-mapped MOSEI-sized feature folder (data/lazy.py) is trained for one
epoch to compare peak memory with the file size.

The page's Extraction section shows docs/extraction.json, which benchmarks/extraction.py writes
(and then re-renders the page from docs/performance.json); this script never re-measures it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "PERFORMANCE.md"

# Train / valid / test sizes, lengths and feature sizes of the two shapes.
SHAPES = {
    # MOSI unaligned as MMSA distributes it: make_synthetic's defaults.
    "mosi_unaligned": {"sizes": (1284, 229, 686), "aligned": False, "lengths": None, "dims": None},
    # MOSEI aligned (MMSA aligned_50.pkl): BERT text 768, COVAREP audio 74, Facet vision 35, 50 steps.
    # An epoch is extrapolated from at most `max_batches` batches: generating 2.9 GB per model costs more
    # than it tells.
    "mosei_aligned": {
        "sizes": (16326, 1871, 4659),
        "aligned": True,
        "lengths": 50,
        "dims": {"text": 768, "audio": 74, "vision": 35},
        "max_batches": 30,
    },
}
# Models that run attention over the frames of the text sequence (a "text transformer"): the
# inference target of >= 1000 utterances/s applies to the others.
TEXT_TRANSFORMER = {
    "text_only": "Transformer over text tokens",
    "tsda": "temporal Transformer per modality",
    "dbr": "Transformer encoder per modality",
    "mult": "crossmodal Transformers with text queries and keys",
}
TARGET_EPOCH_S, TARGET_UTT_S = 60.0, 1000.0


# ---- measurements inside one subprocess ----------------------------------------------------
def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _rss_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so later peaks are this phase's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    hwm = _rss_kb("VmHWM")
    kb = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def _sync(device) -> None:
    """Wait for the work queued on a GPU, so that the clock reads what it cost (nothing on the CPU)."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def matmul_gflops(threads: int, n: int = 4096, reps: int = 5, device: str = "cpu", dtype: str = "float32") -> float:
    import torch

    _set_threads(threads)
    dev = torch.device(device)
    a, b = (torch.randn(n, n, device=dev, dtype=getattr(torch, dtype)) for _ in range(2))
    torch.mm(a, b)
    _sync(dev)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def measure_model(
    model_name: str,
    shape: str | dict,
    threads: int,
    batches: int,
    seconds: float,
    overrides: list[str] = (),
    warmup: int = 1,
) -> dict:
    """One model on one shape (a name in SHAPES, or a spec dict like theirs for tests).

    `overrides` may set train.device, train.precision and train.compile: the steps then run as
    `fit` runs them there. `warmup` untimed batches come first (a compiled model compiles in them)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import sentangle
    from sentangle.data.named import load_dataset
    from sentangle.runs.runner import model_for
    from sentangle.training.distributed import resolve_device
    from sentangle.training.trainer import (
        autocast,
        forward_for,
        grad_scaler,
        make_optimizer,
        set_seed,
        to_device,
        train_step,
        training_loss,
    )

    _set_threads(threads)
    spec = SHAPES[shape] if isinstance(shape, str) else shape
    cfg = sentangle.make_config(model_name, "synthetic", overrides=list(overrides))
    tc = cfg.train
    device = resolve_device(tc.device)
    bs, ebs = tc.batch_size, tc.eval_batch_size
    n_train, _, n_test = spec["sizes"]
    epoch_batches = math.ceil(n_train / bs)
    want = min(epoch_batches, batches) if batches > 0 else epoch_batches
    want = min(want, spec.get("max_batches") or want)
    t0 = time.perf_counter()
    # Only the samples the measurement reads are generated: the warm-up batches, the timed batches and
    # at most four inference batches; an epoch longer than that is extrapolated.
    ds = load_dataset(
        "synthetic",
        seed=0,
        n_train=min(n_train, (want + warmup) * bs),
        n_valid=2,
        n_test=min(n_test, 4 * ebs),
        aligned=spec["aligned"],
        lengths=spec["lengths"],
        dims=spec["dims"],
    )
    data_s = time.perf_counter() - t0
    gen = set_seed(1111)
    model = model_for(cfg, ds).to(device)
    params = sum(p.numel() for p in model.parameters())
    weights = {**model.default_aux_weights, **tc.aux_weights}
    rss_before = (_rss_kb("VmRSS") or 0) / 1024
    peak_reset = _reset_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # FLOPs of one full training batch
    first = to_device(next(ds.batches("train", bs)), device)
    model.train()
    fwd = fwd_bwd = None
    try:
        # Forward with autograd on: the counter's module tracker fails under no_grad for models
        # that feed learned tensors (queries, anchors) into submodules (DBR, TSDA).
        with FlopCounterMode(display=False) as fc:
            loss, _ = training_loss(model(first), first.labels, ds.task, tc, weights)
        fwd = fc.get_total_flops() / len(first)
        with FlopCounterMode(display=False) as fc:
            loss.backward()
        fwd_bwd = fwd + fc.get_total_flops() / len(first)
    except Exception as e:  # some autograd functions cannot be traced by the counter; timing still counts
        flop_error = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__
    else:
        flop_error = None
    model.zero_grad(set_to_none=True)

    # training: the clock covers gathering the batch too, as an epoch of `fit` pays for it
    opt = make_optimizer(model, tc)
    forward, scaler = forward_for(model, tc.compile), grad_scaler(tc.precision, device)
    times, sizes, warm = [], [], None
    batches_ = ds.batches("train", bs, shuffle=True, generator=gen)
    for i in range(epoch_batches + warmup):
        start = time.perf_counter()
        batch = next(batches_, None)
        if batch is None:
            break
        # fit's step, without its bookkeeping
        train_step(model, to_device(batch, device), opt, tc, weights, ds.task, forward=forward, scaler=scaler)
        _sync(device)
        if i >= warmup:  # the first batches pay one-off allocations (and compilation)
            times.append(time.perf_counter() - start)
            sizes.append(len(batch))
        else:
            warm = (time.perf_counter() - start, len(batch))
        if len(times) >= want or (times and sum(times) >= seconds):
            break
    if not times:  # a one-batch epoch: only the warm-up batch exists
        times, sizes = [warm[0]], [warm[1]]
    per_sample = sum(times) / sum(sizes)
    epoch_s = per_sample * n_train

    # inference, gathering included
    model.eval()
    done, spent = 0, 0.0
    with torch.no_grad(), autocast(tc.precision, device):
        forward(to_device(next(ds.batches("test", ebs)), device))
        batches_ = ds.batches("test", ebs)
        while spent < seconds / 2:
            start = time.perf_counter()
            batch = next(batches_, None)
            if batch is None:
                break
            forward(to_device(batch, device))
            _sync(device)
            spent += time.perf_counter() - start
            done += len(batch)
    utt_s = done / spent
    lengths = {m: x.shape[1] for m, x in ds.splits["train"].features.items()}
    dims = ds.input_dims
    full_data_mb = sum(spec["sizes"]) * sum(lengths[m] * (dims[m] * 4 + 1) for m in dims) / 2**20
    return {
        "model": model_name,
        "shape": shape if isinstance(shape, str) else "custom",
        "threads": threads,
        "device": str(device),
        "precision": tc.precision,
        "compile": tc.compile,
        "batch_size": bs,
        "eval_batch_size": ebs,
        "overrides": list(overrides),
        "params": params,
        "epoch_batches": epoch_batches,
        "measured_batches": len(times),
        "train_epoch_s": epoch_s,
        "train_utt_s": 1 / per_sample,
        "infer_utt_s": utt_s,
        "infer_samples": done,
        "flops_fwd_per_sample": fwd,
        "flops_fwd_bwd_per_sample": fwd_bwd,
        "flop_error": flop_error,
        "rss_before_mb": rss_before,
        "peak_rss_mb": _peak_mb(),
        "peak_is_phase_only": peak_reset,
        "gpu_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "full_data_mb": full_data_mb,
        "data_seconds": data_s,
        "text_transformer": TEXT_TRANSFORMER.get(model_name),
    }


def write_mosei_lazy(folder: Path, scale: float, chunk: int = 512) -> Path:
    """A MOSEI-aligned-sized feature folder, written chunk by chunk (never whole in memory)."""
    from tqdm.auto import tqdm

    from sentangle.data.lazy import LazyWriter
    from sentangle.data.synthetic import make_synthetic

    spec = SHAPES["mosei_aligned"]
    sizes = {s: max(2, round(n * scale)) for s, n in zip(("train", "valid", "test"), spec["sizes"])}
    w = LazyWriter(
        folder,
        "mosei_shaped_synthetic",
        source="benchmarks/performance.py",
        overwrite=True,
        info={"note": "synthetic, MOSEI aligned shapes"},
    )
    try:
        bar = tqdm(total=sum(sizes.values()), unit="utt", desc="writing MOSEI-sized folder", unit_scale=True)
        for k, (s, n) in enumerate(sizes.items()):
            w.add_split(s, n, {m: (spec["lengths"], d) for m, d in spec["dims"].items()})
            for i in range(0, n, chunk):
                c = min(chunk, n - i)
                part = make_synthetic(
                    seed=1000 * k + i // chunk,
                    n_train=c,
                    n_valid=2,
                    n_test=2,
                    aligned=True,
                    lengths=spec["lengths"],
                    dims=spec["dims"],
                ).splits["train"]
                part.ids = [f"{s}-{i + j:06d}" for j in range(c)]
                w.write(s, i, part)
                bar.update(c)
        bar.close()
    except BaseException:
        w.abort()
        raise
    return w.close()


def measure_lazy(folder: str, threads: int, model_name: str = "lf_dnn") -> dict:
    """Train one epoch of `model_name` from a memory-mapped folder; peak RSS of this process."""
    import numpy as np

    import sentangle
    from sentangle.data.named import load_dataset
    from sentangle.runs.runner import model_for
    from sentangle.training.trainer import fit

    _set_threads(threads)
    _reset_peak()  # a child starts with its parent's high-water mark (the parent may just have written the folder)
    t0 = time.perf_counter()
    ds = load_dataset(folder)
    load_s = time.perf_counter() - t0
    cfg = sentangle.make_config(model_name, "synthetic", train={"epochs": 1, "progress": False, "threads": threads})
    model = model_for(cfg, ds)
    t0 = time.perf_counter()
    fit(model, ds, cfg.train, seed=1111)
    size = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    features = sum(f.stat().st_size for f in Path(folder).rglob("*.npy") if "_mask" not in f.name)
    return {
        "model": model_name,
        "folder_mb": size / 2**20,
        "features_mb": features / 2**20,
        "train_samples": len(ds.splits["train"]),
        "batch_size": cfg.train.batch_size,
        "load_and_normalise_s": load_s,
        "epoch_plus_eval_s": time.perf_counter() - t0,
        "peak_rss_mb": _peak_mb(),
        "mapped": all(isinstance(x, np.memmap) for sp in ds.splits.values() for x in sp.features.values()),
    }


# ---- the driver --------------------------------------------------------------------------------
def _worker(args) -> None:
    if args.worker == "matmul":
        out = {"gflops": matmul_gflops(args.threads)}
    elif args.worker == "lazy":
        out = measure_lazy(args.lazy_dir, args.threads)
    else:
        model, shape = args.worker.split(":")
        out = measure_model(model, shape, args.threads, args.batches, args.seconds, args.set)
    print("RESULT " + json.dumps(out), flush=True)


def _run_worker(spec: str, args, extra_env: dict | None = None) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
        **(extra_env or {}),
    }
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        spec,
        "--threads",
        str(args.threads),
        "--batches",
        str(args.batches),
        "--seconds",
        str(args.seconds),
        "--lazy-dir",
        str(args.lazy_dir),
    ] + [f"--set={s}" for s in args.set]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"error": f"worker {spec} exited {proc.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1][len("RESULT ") :])


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    import torch

    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "memory_gib": round(mem, 1) if mem else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_config": "MKL" if torch.backends.mkl.is_available() else "no MKL",
        "load_average_start": list(os.getloadavg()),
    }


def run(args) -> dict:
    from tqdm.auto import tqdm

    import sentangle

    models = args.models.split(",") if args.models else (["lf_dnn"] if args.quick else sentangle.list_models())
    shapes = args.shapes.split(",")
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "threads": args.threads,
        "machine": machine(),
        "settings": {
            "batches": args.batches,
            "seconds": args.seconds,
            "overrides": args.set,
            "quick": args.quick,
            "note": args.note,
        },
        "matmul_gflops": [],
        "results": [],
        "lazy": None,
    }
    jobs = [("matmul", None)] + [(f"{m}:{s}", (m, s)) for s in shapes for m in models] + [("matmul", None)]
    if not args.no_lazy:
        jobs.append(("lazy", None))
    bar = tqdm(jobs, desc="benchmark", unit="job")
    for spec, _ in bar:
        bar.set_postfix_str(spec)
        if spec == "lazy":
            folder = Path(args.lazy_dir)
            from sentangle.data.lazy import is_lazy_folder

            scale = 0.05 if args.quick else 1.0
            if not is_lazy_folder(folder) or json.loads((folder / "sentangle-features.json").read_text())["splits"][
                "train"
            ]["samples"] != max(2, round(SHAPES["mosei_aligned"]["sizes"][0] * scale)):
                write_mosei_lazy(folder, scale)
            result["lazy"] = _run_worker("lazy", args)
            continue
        out = _run_worker(spec, args)
        if spec == "matmul":
            result["matmul_gflops"].append(out.get("gflops"))
        else:
            result["results"].append(
                out if "error" not in out else {"model": spec.split(":")[0], "shape": spec.split(":")[1], **out}
            )
    result["machine"]["load_average_end"] = list(os.getloadavg())
    return result


# ---- the page ---------------------------------------------------------------------------------
def _fmt(x, digits=0):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:,.{digits}f}"


# Sections other scripts measure: (their JSON beside the page, the script that writes and renders it)
SIDE_SECTIONS = (
    ("mult_speed.json", "mult_speed"),
    ("extraction.json", "extraction"),
    ("serving.json", "serving"),
    ("precision.json", "precision"),
    ("gpu.json", "gpu"),
)


def _matmul_rate(row: dict, ref: float) -> float:
    """The matmul rate a row's achieved fraction uses: its own run's for a merged row (see merge),
    else the page's."""
    return row.get("matmul_gflops") or ref


def render(res: dict, **side: dict | None) -> str:
    """The page; `side` holds the numbers of the SIDE_SECTIONS by script name (extraction=
    docs/extraction.json from benchmarks/extraction.py, serving=, precision=, gpu=), each section
    shown as its script left it."""
    mm = [g for g in res["matmul_gflops"] if g]
    ref = max(mm) if mm else float("nan")
    m = res["machine"]
    lines = [
        "# Performance",
        "",
        f"Generated by `python benchmarks/performance.py` on {res['date']}; do not edit by hand "
        "(the prose around the tables is in the script). Raw numbers: [performance.json](performance.json).",
        "",
    ]
    if res["settings"].get("note"):
        lines += [f"**{res['settings']['note']}**", ""]
    for m_ in res.get("merges", []):
        lines += [
            f"**Measured again on {m_['date']} and merged (`{m_['command']}`): "
            f"{', '.join(m_['rows'])}; matmul rate then {', '.join(_fmt(g, 1) for g in m_['matmul_gflops'])} "
            f"GFLOP/s, their achieved fractions use the larger.{' ' + m_['note'] if m_.get('note') else ''}**",
            "",
        ]
    lines += [
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['logical_cores']} logical cores, {m['memory_gib']} GiB memory; {m['platform']}",
        f"- Python {m['python']}, torch {m['torch']} ({m['torch_config']}); **{res['threads']} threads** "
        "(torch intra-op, OMP and MKL)",
        f"- float32 matmul (4096 x 4096, best of 5): {', '.join(_fmt(g, 1) for g in mm)} GFLOP/s "
        "(before and after the models); the achieved fractions below use the larger",
        f"- load average at start {m['load_average_start'][0]:.1f}, at end {m['load_average_end'][0]:.1f}",
        "",
        "## How to regenerate",
        "",
        "```bash",
        "python benchmarks/performance.py                  # all models, both shapes, --threads 2",
        "python benchmarks/performance.py --quick          # smoke run (lf_dnn, 3 batches, small lazy file)",
        "python benchmarks/performance.py --models mult --set model.max_len=0 --no-doc   # one model, an override",
        "python benchmarks/performance.py --models misa,tfn --no-lazy --merge   # these rows again, the rest kept",
        "python benchmarks/extraction.py                  # the Extraction section only (docs/extraction.json)",
        "```",
        "",
        "Each model runs with its default config (`configs/models/<model>.yaml` over the synthetic dataset "
        "layer, as `sentangle train -m MODEL` resolves it) in a fresh subprocess. Data: the synthetic "
        "benchmark (docs/synthetic.md) in two shapes: **MOSI unaligned** (1284 training samples; text "
        "50x768, audio 375x5, vision 500x20) and **MOSEI aligned** (16,326 training samples; 50 steps of "
        "text 768, audio 74, vision 35). Only the samples the measurement reads are generated: one "
        f"untimed warm-up batch, then training batches until {res['settings']['batches'] or 'all'} batches "
        f"(MOSEI: at most {SHAPES['mosei_aligned']['max_batches']}) or {res['settings']['seconds']:.0f} s; the epoch time is the measured time per sample times the "
        "epoch's samples (**extrapolated** wherever `batches` is fewer than the epoch's). Inference: eval "
        "mode, no gradients, `train.eval_batch_size`, up to 4 batches. Peak RSS: the kernel's VmHWM "
        "reset after the data and the model exist, so it is what training and inference add on top of "
        "`RSS before` (the generated part of the data plus the model); `full data` is what the whole "
        "dataset occupies in memory when loaded eagerly. FLOPs: FlopCounterMode over one training "
        "batch (matmuls, convolutions and attention; elementwise work and recurrent cells are not "
        "counted, so LSTM-based models read low). Achieved = training FLOP/s / matmul FLOP/s.",
        "",
    ]
    for shape in SHAPES:
        rows = [r for r in res["results"] if r.get("shape") == shape]
        if not rows:
            continue
        lines += [
            f"## {shape.replace('_', ' ').replace('mosi', 'MOSI').replace('mosei', 'MOSEI')}",
            "",
            "| model | batch | train s / epoch | measured batches | train utt/s | inference utt/s | "
            "peak RSS MB (before) | full data MB | params | GFLOP / sample fwd | fwd+bwd | achieved |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            if "error" in r:
                lines.append(f"| `{r['model']}` | error: {r['error'][:200]} |" + " |" * 10)
                continue
            achieved = (r["flops_fwd_bwd_per_sample"] or float("nan")) * r["train_utt_s"] / (_matmul_rate(r, ref) * 1e9)
            gf = lambda v: "-" if v is None else f"{v / 1e9:.3f}"  # noqa: E731
            lines.append(
                f"| `{r['model']}` | {r['batch_size']} | {_fmt(r['train_epoch_s'], 1)} | "
                f"{r['measured_batches']} / {r['epoch_batches']} | {_fmt(r['train_utt_s'])} | {_fmt(r['infer_utt_s'])} | "
                f"{_fmt(r['peak_rss_mb'])} ({_fmt(r['rss_before_mb'])}) | {_fmt(r['full_data_mb'])} | "
                f"{r['params']:,} | {gf(r['flops_fwd_per_sample'])} | {gf(r['flops_fwd_bwd_per_sample'])} | "
                f"{_fmt(100 * achieved, 1)}% |"
            )
        lines.append("")
    lines += [
        "## Targets",
        "",
        f"Two CPU cores, default configs, MOSI-sized unaligned data: a training epoch under "
        f"{TARGET_EPOCH_S:.0f} s for every model, and inference at >= {TARGET_UTT_S:.0f} utterances/s for "
        "every model that does not run a text transformer.",
        "",
        "| model | train s / epoch | epoch target | inference utt/s | inference target |",
        "|---|---:|---|---:|---|",
    ]
    bounds: list[str] = []
    for r in [r for r in res["results"] if r.get("shape") == "mosi_unaligned" and "error" not in r]:
        ep = "met" if r["train_epoch_s"] < TARGET_EPOCH_S else "**missed**"
        if r["text_transformer"]:
            inf = f"n/a ({r['text_transformer']})"
        else:
            inf = "met" if r["infer_utt_s"] >= TARGET_UTT_S else "**missed**"
        lines.append(f"| `{r['model']}` | {_fmt(r['train_epoch_s'], 1)} | {ep} | {_fmt(r['infer_utt_s'])} | {inf} |")
        if r["train_epoch_s"] >= TARGET_EPOCH_S and r["flops_fwd_bwd_per_sample"]:
            # what the epoch's counted work allows at the matmul rate: whether any code could meet the target
            rate = _matmul_rate(r, ref)
            flop = r["flops_fwd_bwd_per_sample"] * SHAPES["mosi_unaligned"]["sizes"][0]
            bounds += [
                f"`{r['model']}`'s epoch is {flop / 1e12:.1f} TFLOP as counted above (every attention weight, "
                f"masked or not), {flop / (rate * 1e9):.0f} s at 100% of the matmul rate ({_fmt(rate, 1)} "
                f"GFLOP/s): the {TARGET_EPOCH_S:.0f} s target asks for "
                f"{100 * flop / (rate * 1e9 * TARGET_EPOCH_S):.0f}% of it.",
                "",
            ]
    lines += ["", *bounds]
    lz = res.get("lazy")
    if lz and "error" not in lz:
        lines += [
            "## Large data read lazily",
            "",
            f"A MOSEI-aligned-sized synthetic feature folder (`sentangle data convert` format, data/lazy.py): "
            f"{lz['train_samples']:,} training samples, {_fmt(lz['folder_mb'])} MB on disk "
            f"({_fmt(lz['features_mb'])} MB of features). One epoch of `{lz['model']}` (batch {lz['batch_size']}) "
            "through `fit`, with validation and the final evaluation of every split, in a fresh process:",
            "",
            "| features memory-mapped | load + validate + normalise | epoch + evaluation | peak RSS | file size | peak / file |",
            "|---|---:|---:|---:|---:|---:|",
            f"| {'yes' if lz['mapped'] else 'no'} | {lz['load_and_normalise_s']:.1f} s | {lz['epoch_plus_eval_s']:.1f} s | "
            f"{_fmt(lz['peak_rss_mb'])} MB | {_fmt(lz['folder_mb'])} MB | {lz['peak_rss_mb'] / lz['folder_mb']:.1%} |",
            "",
            "Peak RSS is the kernel's high-water mark (VmHWM, reset when the process starts) of the whole process (Python, torch, the model, the in-memory masks, "
            "labels and ids). Pages read through the mapping are dropped from the process after each "
            "gather (`madvise(MADV_DONTNEED)`; the kernel keeps them in its page cache), otherwise they "
            "would count towards RSS until memory ran short. Loaded eagerly, the same data needs at "
            "least the file size, plus a normalised float32 copy of audio and vision while normalising.",
            "",
        ]
    elif lz:
        lines += ["## Large data read lazily", "", f"error: {lz['error']}", ""]
    for _, script in SIDE_SECTIONS:
        if side.get(script):
            lines += importlib.import_module(script).render_section(side[script])
    lines += [NOTES]
    return "\n".join(lines)


NOTES = """## What was slow, and what changed

Profiled at small scale (cProfile / torch.profiler, one thread; shares of time are meaningful on a
busy machine even where seconds are not). Before/after pairs below were measured back to back on
the same machine, 1 thread, MOSI-unaligned shape, other jobs running; the relative change is what
they show. "Before" ran the previous commit's source (`PYTHONPATH=<old src> python
benchmarks/performance.py --worker MODEL:mosi_unaligned --threads 1 --batches 6`).

| model | change | train s / epoch before | after | inference utt/s before | after | can results change? |
|---|---|---:|---:|---:|---:|---|
| `misa` | `layers.RealFrameLSTM` without packed sequences | 82.9 | 9.2 | 362 | 513 | no: same outputs and gradients (tests/benchmarks/test_performance.py, test_baselines.py) |
| `self_mm` | the same | 27.6 | 2.3 | 873 | 1,311 | no |
| `tfn` | the same (its LSTM reads only the 50 text frames) | 15.4 | 19.3 | 562 | 496 | no; the difference is noise |
| `mult` | default `max_len: {audio: 50, vision: 50}` (was 0) | 2,241 (1 batch) | 97.7 | 3 | 63 | **yes**: audio/vision are window averages (below) |
| `mult` | the exact MMSA architecture at full length again (`max_len: 0`), every attention through `layers.attend` | see "MulT side by side" | | | | **yes**: another architecture (docs/baselines.md) |
| `mult` | every attention through `kernels.attention_cpu` (2 threads, a quiet machine; before: 3 of 81 batches, after: 8; peak RSS 5,236 MB before, 3,262 MB after) | 856.3 | 239.5 | 6.6 | 9.8 | in distribution, no; a seed's dropout draws differ (Philox instead of torch's generator), so its numbers do |
| `misa` | `RealFrameLSTM` without gradients through `kernels.lstm_cpu` (2 threads, `--batches 6 --seconds 20`, two pairs: 525 / 1,562 and 527 / 1,577 utt/s) | 6.9 | 6.8 | 525 | 1,562 | evaluation: within float32 rounding (about 1e-6), not bit for bit; training: no, it keeps torch's LSTM |
| `tfn` | the same (its text LSTM's 768-wide input projected by one matrix product first) | 7.7 | 9.3 | 1,241 | 1,348 | the same; the training difference is noise (unchanged code) |
| `lmf` | the same | 1.7 | 1.9 | 2,092 | 2,603 | the same |
| `self_mm` | the same | 1.8 | 1.8 | 2,558 | 3,362 | the same |

- **Packed LSTMs were quadratic in the length on the CPU.** MISA spent half of its time in
  `aten::fill_` under `SliceBackward0`: the backward pass of a packed LSTM slices its input once
  per time step, and each slice's gradient fills a zero tensor the size of the whole input, so
  375-500 frames cost 375-500 full-size fills per layer and direction. `RealFrameLSTM` now runs each
  direction unpacked over the real frames moved to the front (the backward direction over them
  reversed), with the same `nn.LSTM` weights (checkpoints load as before), and gets the same
  outputs and gradients as an LSTM run on each sample's frames alone. TFN, LMF, MISA and Self-MM use it.
- **MulT's full-length attention** (375 audio x 500 vision frames, 4-layer crossmodal stacks in six
  directions and self-attention over 500 frames) took 37 min per epoch and 6.5 GB here when it was
  last the default; its step was a third drawing attention-dropout masks (`aten::bernoulli_`) and a
  third the attention matmuls with 5-dimensional heads. A first rewrite made the exact architecture
  the default again (`max_len: 0`), with torch's fused kernel where there is no attention dropout
  and, with dropout, the weights materialised and a mask drawn as 32-bit halves of 64-bit draws: a
  step of 0.71x MMSA's. Profiled, 80% of that step was still attention: batched matrix products
  with inner dimensions of 5 and 10, the mask's draws from torch's single-threaded Mersenne
  Twister (a fifth of the step), a dozen passes over every (B, heads, T_q, T_k) tensor, and torch's
  flash CPU kernel itself at about 5 ns per weight for these narrow heads.
- **MulT's float32 CPU attention now runs in `kernels.attention_cpu`**, compiled with numba (which
  librosa required already; BSD-2-Clause, with its own LLVM, so no compiler is needed). For each
  query row it computes scores, softmax (with a vectorised exp), dropout and the weighted sum in one
  pass over the keys, which stays in cache, and keeps the row's log-sum-exp. Keys past a row's last
  allowed one are never read: MulT's future mask hides 40% of its weights at MOSI's lengths, and
  trailing padding is skipped too.
  - Dropout bits come from Philox-4x32-10 counters (torch's CUDA dropout generator), keyed by one
    seed per call from torch's generator, so `torch.manual_seed` repeats a run. Each weight is
    dropped with probability p resolved to 2^-32, and the kept ones are scaled by 1 / (1 - p).
  - The decisions are kept as bits (1/32 of a byte mask) for the backward pass, which recomputes
    the weights from the log-sum-exp instead of storing them.
  - Tests: outputs and gradients equal the plain computation with the same decisions; the rate,
    the independence of neighbours and the mean over draws are checked
    (tests/models/test_attention.py).
  - Only where it measured faster (`layers._kernel_wins`): heads up to 8 wide at any length and
    10-15 wide over 100 keys or more. MulT's 5-wide crossmodal heads always qualify, and its 10-wide
    self-attention heads do at full length. Wider heads (RTIL 16, TSDA and DBR 32, MISA 64, over at
    most 50 frames) keep torch's kernels and `layers._DropoutAttention`, where the kernel was as
    fast or slower; their numbers and random draws are unchanged.
  - bf16/fp16 autocast, float64 and CUDA keep torch's kernels (CUDA's fused kernels do dropout
    themselves).
  - The exact MulT's step is now the table's "MulT side by side"; the rows above marked
    `attention_cpu` were measured as described at the top of this section, with 2 threads.
  Windowing (`max_len`) stays an option, documented in docs/baselines.md.
- **The LSTMs' inference now runs in `kernels.lstm_cpu`** (TFN, LMF, MISA and Self-MM, through
  `layers.RealFrameLSTM`, wherever no gradient is wanted: evaluation, prediction, serving). MISA
  was the one model without a text transformer under 1,000 utterances/s at inference: 81% of its
  time was oneDNN's LSTM (`aten::mkldnn_rnn_layer`, about 90 us per step of a batch of 256 at
  hidden sizes 5 and 20, so large batches did not help), the rest gathers that move real frames
  to the front and flip them for the backward direction.
  - The kernel runs each sample's real frames only, both directions, one sample at a time, the
    samples split over `torch.get_num_threads()` threads (the attention kernel's pool). Per frame:
    the gates from the input and the previous state (four rows of the weights per pass, so the
    gates stay in registers), sigmoids through the same vectorised exp as the attention kernel
    (tanh(x) = 2 sigmoid(2x) - 1), and the state update.
  - Inputs up to 64 wide are projected inside the kernel, frame by frame; precomputing their
    projections for every frame wrote and read a (256, 500, 160) tensor that cost more than the
    products (MISA's batch: 0.22 s against 0.17 s). Wider inputs (768-wide text) are projected by
    one matrix product first.
  - It compiles with `error_model="numpy"`: numba's default checks every float division for zero
    to raise an exception, which kept the sigmoids' divisions from vectorising.
  - Training keeps torch's LSTM (the kernel has no backward), as do float64, autocast and CUDA.
  - Tests: outputs and final states equal torch's `nn.LSTM` run on each sample's real frames alone,
    within float32 rounding, for one and two layers, one and two directions, widths that leave
    remainders, inputs projected in and before the kernel; and TFN, LMF, MISA and Self-MM predict
    the same in eval mode with gradients on and off (tests/models/test_baselines.py).
- **The other models' attention** (TSDA, text-only, RTIL/IRG-SVR, MISA through `layers.EncoderLayer`,
  torch's encoder layer with its self-attention through `layers.attend`; DBR, RTIL and TSDA's
  cross-attention through `layers.MultiheadAttention`): the same outputs and gradients
  (tests/models/test_attention.py) and, measured in one process with the same weights (1 thread,
  batch 64, MOSI shapes, best of 4), the same speed: TSDA's training step 1.039 s with torch's layer
  against 1.046 s, evaluation 0.327 / 0.337 s; text-only 0.119 / 0.120 s and 0.026 / 0.027 s. Their
  sequences are short or windowed, and torch's layer already used the fused kernel without dropout.
- **Checked and not a problem:** batches are gathered by index from pre-padded arrays and trimmed
  to the longest real sequence (no per-sample Python loops or re-padding); text is encoded once per
  load and cached on disk by content hash, never per epoch; normalisation computes in float64 but
  stores float32, and every model runs in float32.
- `dbr` was not edited for speed; in the tables above it is not among
  the slow models: its encoders window long audio/vision to `max_frames: 50` before attention.
- `tfn` is slow at inference for its size: its fusion layer reads a 33 x 33 x 129 outer product
  per sample (MMSA's published sizes).
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=2, help="torch/OMP/MKL threads (default 2)")
    ap.add_argument("--models", help="comma list (default: every registered model; --quick: lf_dnn)")
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of {', '.join(SHAPES)}")
    ap.add_argument(
        "--batches",
        type=int,
        default=None,
        help="timed training batches per model (0 = the whole "
        "epoch; default 0, --quick 3); the epoch is extrapolated from fewer",
    )
    ap.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="stop timing a model's training after this many seconds and extrapolate (default 60, --quick 10)",
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every model")
    ap.add_argument("--quick", action="store_true", help="smoke run: lf_dnn, 3 batches, a 5%% lazy file")
    ap.add_argument("--no-lazy", action="store_true", help="skip the memory-mapped MOSEI-sized run")
    ap.add_argument(
        "--lazy-dir",
        help="where the MOSEI-sized feature folder is written, reused when its size "
        "matches (default: sentangle-perf-mosei[-quick] in the temp folder)",
    )
    ap.add_argument("--json", help="write the raw results here (default: docs/performance.json unless --no-doc)")
    ap.add_argument("--doc", default=str(DOC), help="Markdown page to write (default docs/PERFORMANCE.md)")
    ap.add_argument("--no-doc", action="store_true", help="print the tables, write no page")
    ap.add_argument("--note", default="", help="a line shown at the top of the page (e.g. the machine was busy)")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="replace only the measured rows (and the lazy run, unless --no-lazy) in the page's JSON, "
        "keep the rest, and write the page again",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.batches is None:
        args.batches = 3 if args.quick else 0
    if args.seconds is None:
        args.seconds = 10.0 if args.quick else 60.0
    if args.lazy_dir is None:
        args.lazy_dir = str(Path(tempfile.gettempdir()) / ("sentangle-perf-mosei" + ("-quick" if args.quick else "")))
    if args.worker:
        _worker(args)
        return 0
    json_path = args.json or (None if args.no_doc else str(Path(args.doc).with_name("performance.json")))
    if args.merge and not (json_path and Path(json_path).is_file()):
        print(
            f"error: --merge: no earlier results at {json_path or '(none: --no-doc without --json)'}", file=sys.stderr
        )
        return 2
    res = run(args)
    if args.merge:
        given = sys.argv[1:] if argv is None else argv
        res = merge(
            json.loads(Path(json_path).read_text()), res, " ".join(["python benchmarks/performance.py", *given])
        )
    page = render(res, **side_numbers(Path(args.doc).parent))
    if args.no_doc:
        print(page)
    else:
        from sentangle.core.io import write_text

        write_text(args.doc, page)
        print(f"wrote {args.doc}")
    if json_path:
        from sentangle.core.io import write_json

        write_json(json_path, res)
        print(f"wrote {json_path}")
    return 0


def merge(old: dict, new: dict, command: str) -> dict:
    """`old` with the rows `new` measured replaced (or added), each carrying its run's matmul rate,
    and the lazy run too when `new` has one; `merges` lists what came from which run."""
    rate = max((g for g in new["matmul_gflops"] if g), default=None)
    rows = {(r["model"], r["shape"]): {**r, "matmul_gflops": rate} for r in new["results"]}
    kept = [r for r in old["results"] if (r["model"], r["shape"]) not in rows]
    entry = {
        "date": new["date"],
        "command": command,
        "rows": [f"{m}:{s}" for m, s in rows] + (["lazy"] if new["lazy"] else []),
        "matmul_gflops": new["matmul_gflops"],
        "load_average": [new["machine"]["load_average_start"][0], new["machine"]["load_average_end"][0]],
        "note": new["settings"]["note"],
    }
    order = {(m, s): i for i, (m, s) in enumerate((r["model"], r["shape"]) for r in old["results"])}
    results = sorted([*kept, *rows.values()], key=lambda r: order.get((r["model"], r["shape"]), len(order)))
    return {
        **old,
        "results": results,
        "lazy": new["lazy"] or old["lazy"],
        "merges": [*old.get("merges", []), entry],
    }


def side_numbers(docs: Path) -> dict[str, dict]:
    """The other scripts' numbers lying beside the page ({"extraction": ..., "serving": ...}, by
    SIDE_SECTIONS), never re-measured here."""
    return {script: json.loads((docs / f).read_text()) for f, script in SIDE_SECTIONS if (docs / f).exists()}


def publish(record: dict, path: str | Path, usual: Path) -> None:
    """Write a side section's numbers to `path` and, when that is their usual file (`usual`, which
    the page reads), the page again."""
    from sentangle.core.io import write_json

    write_json(path, record)
    print(f"wrote {path}")
    if Path(path) == usual and rerender():
        print(f"wrote {DOC}")


def rerender(doc: str | Path = DOC) -> Path | None:
    """Write the page again from docs/performance.json and the side sections' JSON (what the other
    scripts call after measuring); None when performance.json is missing."""
    from sentangle.core.io import write_text

    doc = Path(doc)
    perf = doc.with_name("performance.json")
    if not perf.exists():
        return None
    return write_text(doc, render(json.loads(perf.read_text()), **side_numbers(doc.parent)))


if __name__ == "__main__":
    raise SystemExit(main())
