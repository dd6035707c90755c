"""benchmarks/gpu.py: refuses to run without CUDA, and its CPU smoke run measures every setting
through performance.py's measurement and renders the GPU section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_without_cuda_it_exits_2_with_the_way_out(tmp_path):
    out = tmp_path / "gpu.json"
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cuda:0", "--json", str(out)], capture_output=True, text=True
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--device cuda:0 needs CUDA" in r.stderr and "--device cpu --quick" in r.stderr
    assert not out.exists()
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 2 and "only with --quick" in r.stderr


def test_quick_cpu_run_measures_each_setting_and_renders_the_section(side_section, tmp_path):
    got = side_section("gpu", ["--device", "cpu", "--quick", "--threads", "1"], tmp_path / "gpu.json")
    assert got["code"] == 0
    rows = got["numbers"]["results"]
    assert [(r["model"], r["shape"], r["setting"]) for r in rows] == [
        ("lf_dnn", "quick", s) for s in ("fp32", "bf16", "compiled")
    ]
    assert all("error" not in r for r in rows), rows
    assert [(r["precision"], r["compile"], r["device"]) for r in rows] == [
        ("fp32", False, "cpu"),
        ("bf16", False, "cpu"),
        ("fp32", True, "cpu"),
    ]
    assert all(r["train_epoch_s"] > 0 and r["infer_utt_s"] > 0 and r["measured_batches"] == 2 for r in rows)
    page, plain = got["page"], got["plain"]
    section = page[page.index("## GPU") : page.index("## What was slow")]
    assert "## GPU" not in plain and page.replace(section, "") == plain  # the other sections are untouched
    assert "| `lf_dnn` | 4 |" in section and "error" not in section
