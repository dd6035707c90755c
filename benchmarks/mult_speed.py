"""MulT side by side: sentangle's exact MulT against a reference, training steps in one process.

    python benchmarks/mult_speed.py --mmsa PATH      # PATH: a local checkout of thuiar/MMSA (never committed)
    python benchmarks/mult_speed.py                  # the reference is the plain implementation below
    python benchmarks/mult_speed.py --quick --no-doc # smoke run: tiny shapes, two steps

The reference is MMSA's MULT, built from that checkout's source with its MOSI regression config, or,
without a checkout, sentangle's MulT with every attention computed the plain way (weights
materialised, softmax, torch's dropout, matmul): the same architecture and parameters, without
layers.attend's kernels. Both train on the same batch at
MOSI's unaligned shapes (batch 16; text 50x768, audio 375x5, vision 500x20, every frame real, as
MMSA's fixed-length arrays are attended in full): forward, L1 loss, backward, gradient value
clipping at 0.6, an Adam step. Steps alternate between the models, so a disturbance of the
machine falls on both; the median step of each is reported, with FLOPs of one step
(FlopCounterMode, forward and backward) and the achieved fraction of the machine's float32 matmul
rate. Also measured: sentangle's MulT windowed (`max_len: 50` for audio and vision, the former
default) and inference (eval mode, no gradients) of each.

Writes docs/mult_speed.json and re-renders docs/PERFORMANCE.md's "MulT side by side" section.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import platform
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import performance  # noqa: E402 (a sibling script)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MOSI = {
    "batch": 16,
    "lengths": {"text": 50, "audio": 375, "vision": 500},
    "dims": {"text": 768, "audio": 5, "vision": 20},
}
QUICK = {"batch": 4, "lengths": {"text": 8, "audio": 20, "vision": 24}, "dims": {"text": 16, "audio": 5, "vision": 20}}


def plain_attend(q, k, v, mask=None, dropout=0.0, training=False):
    """Attention the plain way: materialised weights, softmax, torch's dropout."""
    s = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.matmul(F.dropout(s.softmax(-1), dropout, training), v)


@contextlib.contextmanager
def plain_attention():
    from sentangle.models import layers

    fused = layers.attend
    layers.attend = plain_attend
    try:
        yield
    finally:
        layers.attend = fused


def load_mmsa(checkout: Path, dims: dict[str, int]) -> tuple[torch.nn.Module, dict, str]:
    """MMSA's MULT with the checkout's own MOSI regression config. Only the model's modules are
    imported (empty parent packages stand in for MMSA's, whose __init__ pulls in its whole runner)."""
    src = checkout / "src" / "MMSA"
    if not (src / "models" / "singleTask" / "MULT.py").exists():
        raise SystemExit(
            f"--mmsa {checkout}: expected a checkout of thuiar/MMSA with src/MMSA/models/singleTask/MULT.py"
        )
    for name, path in (
        ("MMSA", src),
        ("MMSA.models", src / "models"),
        ("MMSA.models.singleTask", src / "models" / "singleTask"),
    ):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(path)]
        sys.modules[name] = pkg
    mult = importlib.import_module("MMSA.models.singleTask.MULT")
    config = json.loads((src / "config" / "config_regression.json").read_text())["mult"]
    args = {**config["commonParams"], **config["datasetParams"]["mosi"]}
    args.update(feature_dims=[dims["text"], dims["audio"], dims["vision"]], train_mode="regression", num_classes=1)
    args.update(use_bert=False, use_finetune=False)
    try:
        commit = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown commit"
    return mult.MULT(types.SimpleNamespace(**args)), args, commit


def make_batch(spec: dict, seed: int = 0):
    from sentangle.data.batch import Batch

    g = torch.Generator().manual_seed(seed)
    b = spec["batch"]
    feats = {m: torch.randn(b, spec["lengths"][m], d, generator=g) for m, d in spec["dims"].items()}
    masks = {m: torch.ones(b, spec["lengths"][m], dtype=torch.bool) for m in feats}
    labels = torch.rand(b, generator=g) * 6 - 3
    return Batch(features=feats, masks=masks, labels=labels, ids=[str(i) for i in range(b)]), feats, labels


class Runner:
    """One model's training step and inference on the fixed batch."""

    def __init__(self, name: str, model: torch.nn.Module, forward: Callable, labels, context=contextlib.nullcontext):
        self.name, self.model, self.forward, self.labels, self.context = name, model, forward, labels, context
        self.opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        self.steps: list[float] = []
        self.inference: list[float] = []

    def step(self) -> float:
        with self.context():
            self.model.train()
            start = time.perf_counter()
            loss = F.l1_loss(self.forward().view(-1), self.labels)
            loss.backward()
            torch.nn.utils.clip_grad_value_(self.model.parameters(), 0.6)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            return time.perf_counter() - start

    def infer(self) -> float:
        with self.context(), torch.no_grad():
            self.model.eval()
            start = time.perf_counter()
            self.forward()
            return time.perf_counter() - start

    def flops(self) -> float:
        with self.context():
            self.model.train()
            with FlopCounterMode(display=False) as counter:
                F.l1_loss(self.forward().view(-1), self.labels).backward()
            self.model.zero_grad(set_to_none=True)
            return counter.get_total_flops()


def measure(checkout: Path | None, spec: dict, steps: int, threads: int) -> dict:
    from sentangle.models.base import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch, feats, labels = make_batch(spec)
    dims = spec["dims"]
    exact = create_model("mult", dims)
    windowed = create_model("mult", dims, max_len={"audio": 50, "vision": 50})
    runners = [
        Runner("sentangle exact", exact, lambda: exact(batch).prediction, labels),
        Runner("sentangle windowed", windowed, lambda: windowed(batch).prediction, labels),
    ]
    reference: dict = {}
    if checkout is not None:
        mmsa, args, commit = load_mmsa(checkout, dims)
        text, audio, vision = feats["text"], feats["audio"], feats["vision"]
        runners.append(Runner("MMSA MULT", mmsa, lambda: mmsa(text, audio, vision)["M"], labels))
        reference = {
            "kind": "MMSA",
            "commit": commit,
            "config": {k: args[k] for k in sorted(args) if k != "pretrained"},
        }
    else:
        plain = create_model("mult", dims)
        plain.load_state_dict(exact.state_dict())
        runners.append(Runner("plain reference", plain, lambda: plain(batch).prediction, labels, plain_attention))
        reference = {"kind": "plain", "commit": None, "config": None}
    params = {r.name: sum(p.numel() for p in r.model.parameters()) for r in runners}
    flops = {r.name: r.flops() for r in runners}
    for r in runners:  # warm-up: one-off allocations
        r.step()
        r.infer()
    for _ in range(steps):
        for r in runners:
            r.steps.append(r.step())
        for r in runners:
            r.inference.append(r.infer())
    peak = performance.matmul_gflops(threads)
    ref_name = runners[-1].name
    ref_step = statistics.median(runners[-1].steps)
    rows = []
    for r in runners:
        step = statistics.median(r.steps)
        rows.append(
            {
                "model": r.name,
                "params": params[r.name],
                "step_s": step,
                "step_min_s": min(r.steps),
                "ratio_to_reference": step / ref_step,
                "gflop_per_step": flops[r.name] / 1e9,
                "achieved": flops[r.name] / step / (peak * 1e9),
                "inference_utt_s": spec["batch"] / statistics.median(r.inference),
            }
        )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": threads, "torch": torch.__version__},
        "matmul_gflops": peak,
        "shape": spec,
        "steps": steps,
        "reference": reference,
        "reference_name": ref_name,
        "rows": rows,
    }


def render_section(res: dict) -> list[str]:
    ref = res["reference"]
    who = (
        f"MMSA's MULT (thuiar/MMSA {ref['commit']}, its MOSI regression config, from a local checkout)"
        if ref["kind"] == "MMSA"
        else "the plain reference (the same architecture with materialised attention and torch's dropout)"
    )
    spec = res["shape"]
    lengths = ", ".join(f"{m} {spec['lengths'][m]}x{spec['dims'][m]}" for m in spec["dims"])
    lines = [
        "## MulT side by side",
        "",
        f"Measured by `python benchmarks/mult_speed.py` on {res['date']} ({res['machine']['threads']} threads, "
        f"torch {res['machine']['torch']}; float32 matmul {res['matmul_gflops']:.1f} GFLOP/s): sentangle's MulT "
        f"against {who}. One batch of {spec['batch']} ({lengths}; every frame real), a training step = forward, "
        "L1 loss, backward, gradient value clipping, Adam; steps of the models alternate, median of "
        f"{res['steps']} each. Inference: eval mode, no gradients, the same batch. Raw numbers: "
        "[mult_speed.json](mult_speed.json).",
        "",
        f"| model | parameters | step s | x {res['reference_name']} | GFLOP / step | achieved | inference utt/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['step_s']:.2f} | {r['ratio_to_reference']:.2f} | "
            f"{r['gflop_per_step']:.1f} | {100 * r['achieved']:.1f}% | {r['inference_utt_s']:.0f} |"
        )
    lines += [
        "",
        "Achieved: FLOPs of the step (FlopCounterMode; matmuls and attention, not elementwise work) per "
        "second, over the matmul rate (attention counted as torch counts its fused kernel, every weight "
        "of T_q x T_k, though the kernel skips the keys a future mask hides). The goal for the exact "
        'MulT is a step at most 0.25x MMSA\'s; how the step got there is under "What was slow" below.',
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mmsa", type=Path, help="a local checkout of thuiar/MMSA to time its MULT (never committed)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per model (default 5)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny shapes, two steps (smoke run)")
    ap.add_argument("--no-doc", action="store_true", help="print the JSON; write nothing")
    args = ap.parse_args(argv)
    res = measure(args.mmsa, QUICK if args.quick else MOSI, 2 if args.quick else args.steps, args.threads)
    print(json.dumps(res, indent=1))
    if not args.no_doc:
        performance.publish(res, DOCS / "mult_speed.json", DOCS / "mult_speed.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
