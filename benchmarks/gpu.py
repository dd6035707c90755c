"""Every registered model's training epoch and inference rate on a GPU, at MOSI-unaligned and
MOSEI-aligned shapes, in fp32, bf16 and compiled fp32.

    python benchmarks/gpu.py --device cuda:0        # every model, both shapes -> docs/gpu.json + PERFORMANCE.md
    python benchmarks/gpu.py --device cuda:0 --models mult,tsda --settings bf16 --no-doc
    python benchmarks/gpu.py --device cpu --quick --no-doc   # smoke run on the CPU: lf_dnn, tiny shape

The measurement is benchmarks/performance.py's `measure_model` (the trainer's own step, with
train.device, train.precision and train.compile set; timed batches synchronise the GPU), so the
numbers read like that page's model tables. Each (model, shape) runs in a fresh subprocess, its
settings one after another; peak GPU memory is torch's max_memory_allocated, reset per setting.
The page's "GPU" section is re-rendered from docs/gpu.json (benchmarks/performance.py places it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JSON = ROOT / "docs" / "gpu.json"

# train settings per column, as config overrides
SETTINGS = {"fp32": [], "bf16": ["train.precision=bf16"], "compiled": ["train.compile=true"]}
# Untimed batches per setting: compilation happens in them (and its recompiles for a new length).
WARMUP = {"fp32": 1, "bf16": 1, "compiled": 3}
# --quick: a tiny unaligned shape (performance.SHAPES' format) that the CPU trains in seconds
QUICK_SHAPE = {
    "sizes": (24, 4, 12),
    "aligned": False,
    "lengths": {"text": 6, "audio": 9, "vision": 11},
    "dims": {"text": 8, "audio": 5, "vision": 4},
}


def measure(model: str, shape: str, device: str, settings: list[str], threads: int, batches: int, seconds: float):
    """One model at one shape in each setting; an error in one setting leaves the others."""
    import performance
    import torch

    spec = QUICK_SHAPE if shape == "quick" else shape
    out = []
    for setting in settings:
        overrides = [f"train.device={device}", *SETTINGS[setting]]
        if shape == "quick":
            overrides.append("train.batch_size=4")
        try:
            r = performance.measure_model(model, spec, threads, batches, seconds, overrides, warmup=WARMUP[setting])
        except Exception as e:  # an out-of-memory or a kernel missing on this GPU: the row says so
            r = {"model": model, "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"}
        out.append(r | {"shape": shape, "setting": setting})
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


def machine(device: str) -> dict:
    import performance
    import torch

    info = performance.machine()
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    return info


def render_section(numbers: dict) -> list[str]:
    """The "GPU" section of docs/PERFORMANCE.md."""
    m = numbers["machine"]
    where = f"{m['gpu']} ({m['gpu_memory_gib']} GiB), CUDA {m['cuda']}" if m.get("gpu") else numbers["device"]
    mm = numbers.get("matmul_tflops") or {}
    lines = [
        "## GPU",
        "",
        f"Measured by `python benchmarks/gpu.py --device {numbers['device']}` on {numbers['date']}: {where}, "
        f"torch {m['torch']}; raw numbers: [gpu.json](gpu.json). The trainer's own step (forward, losses, "
        "backward, clipping, AdamW; the batch gathered on the host and copied from pinned memory) of "
        "each model's default config, timed with the GPU synchronised after each batch; the epoch is "
        f"extrapolated from at most {numbers['settings']['batches'] or 'all'} batches or "
        f"{numbers['settings']['seconds']:.0f} s after {WARMUP['fp32']} untimed batch "
        f"({WARMUP['compiled']} when compiled). bf16 is `train.precision=bf16` (autocast); compiled is "
        "`train.compile=true` in fp32. Inference: eval mode, no gradients, `train.eval_batch_size`, "
        "same setting. Peak memory: torch's largest allocation during training and inference."
        + (
            " Dense matmul (8192 x 8192): "
            + ", ".join(f"{k} {v:,.1f} TFLOP/s" for k, v in mm.items() if v is not None)
            + " (float32 at torch's default matmul precision)."
            if mm
            else ""
        ),
        "",
    ]
    rows = numbers["results"]
    for shape in dict.fromkeys(r["shape"] for r in rows):
        settings = list(dict.fromkeys(r["setting"] for r in rows if r["shape"] == shape))
        lines += [
            f"### {shape.replace('_', ' ').replace('mosi', 'MOSI').replace('mosei', 'MOSEI')}",
            "",
            "| model | batch | "
            + " | ".join(f"{s} s / epoch" for s in settings)
            + " | "
            + " | ".join(f"{s} inference utt/s" for s in settings)
            + " | "
            + " | ".join(f"{s} peak MB" for s in settings)
            + " |",
            "|---|---:|" + "---:|" * (3 * len(settings)),
        ]
        for model in dict.fromkeys(r["model"] for r in rows if r["shape"] == shape):
            by = {r["setting"]: r for r in rows if r["shape"] == shape and r["model"] == model}
            ok = [r for r in by.values() if "error" not in r]
            batch = ok[0]["batch_size"] if ok else "-"

            def cell(s: str, key: str, digits: int) -> str:
                r = by.get(s)
                if r is None:
                    return "-"
                if "error" in r:
                    return f"error: {r['error'][:80]}"
                v = r.get(key)
                return "-" if v is None else f"{v:,.{digits}f}"

            lines.append(
                f"| `{model}` | {batch} | "
                + " | ".join(cell(s, "train_epoch_s", 2) for s in settings)
                + " | "
                + " | ".join(cell(s, "infer_utt_s", 0) for s in settings)
                + " | "
                + " | ".join(
                    cell(s, "gpu_peak_mb" if numbers["device"] != "cpu" else "peak_rss_mb", 0) for s in settings
                )
                + " |"
            )
        lines.append("")
    return lines


def _worker(args) -> None:
    model, shape = args.worker.split(":")
    out = measure(model, shape, args.device, args.settings.split(","), args.threads, args.batches, args.seconds)
    print("RESULT " + json.dumps(out), flush=True)


def _run_worker(model: str, shape: str, args) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, __file__, "--worker", f"{model}:{shape}", "--device", args.device]
    cmd += ["--settings", args.settings, "--threads", str(args.threads)]
    cmd += ["--batches", str(args.batches), "--seconds", str(args.seconds)] + (["--quick"] if args.quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        error = f"worker exited {proc.returncode}: " + " | ".join(tail)
        return [{"model": model, "shape": shape, "setting": s, "error": error} for s in args.settings.split(",")]
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv=None) -> int:
    import performance

    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda:0", help="cuda, cuda:N (default cuda:0), or cpu with --quick")
    ap.add_argument("--models", help="comma list (default: every registered model; --quick: lf_dnn)")
    ap.add_argument(
        "--shapes", help=f"comma list of {', '.join(performance.SHAPES)} (default both; --quick: a tiny one)"
    )
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {', '.join(SETTINGS)}")
    ap.add_argument("--batches", type=int, help="timed training batches per setting (default 30; --quick 2)")
    ap.add_argument("--seconds", type=float, help="stop timing a setting after this many seconds (default 30)")
    ap.add_argument("--threads", type=int, default=4, help="CPU threads for the host side (default 4)")
    ap.add_argument("--quick", action="store_true", help="smoke run: lf_dnn on a tiny shape, 2 batches")
    ap.add_argument("--json", default=str(JSON), help=f"where the numbers go (default {JSON.relative_to(ROOT)})")
    ap.add_argument("--no-doc", action="store_true", help="print the section; write no JSON and no page")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.batches = args.batches if args.batches is not None else (2 if args.quick else 30)
    args.seconds = args.seconds if args.seconds is not None else (5.0 if args.quick else 30.0)
    unknown = set(args.settings.split(",")) - set(SETTINGS)
    if unknown:
        print(f"--settings: unknown {sorted(unknown)}; expected some of {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    import torch

    from sentangle.core.errors import ConfigError
    from sentangle.training.distributed import resolve_device

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a build without CUDA"
        print(
            f"benchmarks/gpu.py: --device {args.device} needs CUDA, which is not available here (torch "
            f"{torch.__version__}, {build}); run it on a GPU machine, or pass --device cpu --quick for the smoke run",
            file=sys.stderr,
        )
        return 2
    try:
        device = resolve_device(args.device)
    except ConfigError as e:
        print(f"benchmarks/gpu.py --device {args.device}: {e}", file=sys.stderr)
        return 2
    if device.type == "cpu" and not args.quick:
        print(
            "benchmarks/gpu.py measures a GPU: expected --device cuda or cuda:N "
            "(--device cpu only with --quick, the smoke run)",
            file=sys.stderr,
        )
        return 2
    if args.worker:
        _worker(args)
        return 0
    import sentangle

    models = args.models.split(",") if args.models else (["lf_dnn"] if args.quick else sentangle.list_models())
    shapes = args.shapes.split(",") if args.shapes else (["quick"] if args.quick else list(performance.SHAPES))
    results = []
    for shape in shapes:
        for model in models:
            print(f"{model} {shape} ...", file=sys.stderr, flush=True)
            results += _run_worker(model, shape, args)
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": args.device,
        "machine": machine(args.device),
        "settings": {"batches": args.batches, "seconds": args.seconds, "threads": args.threads, "quick": args.quick},
        "matmul_tflops": None
        if device.type == "cpu"
        else {
            dt: performance.matmul_gflops(args.threads, n=8192, device=args.device, dtype=dt) / 1e3
            for dt in ("float32", "bfloat16")
        },
        "results": results,
    }
    print("\n".join(render_section(record)))
    if not args.no_doc:
        performance.publish(record, args.json, JSON)
    return 0


if __name__ == "__main__":
    sys.exit(main())
