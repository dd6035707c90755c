"""Shared fixtures. Real data is read from ../shared/data; tests that need it skip when it is absent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

# One intra-op thread: the suite's models are small, and on a loaded 2-core machine several
# spinning threads per process slow tests down many times over.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "mosi" / "label.csv").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (expected ../shared/data beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_synthetic():
    """A small unaligned synthetic dataset, shared by tests that only need something to train on."""
    from sentangle.data.synthetic import make_synthetic

    return make_synthetic(
        seed=0, scale=0.5, lengths={"text": 20, "audio": 40, "vision": 40}, dims={"text": 32, "audio": 5, "vision": 20}
    )


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Text encodings are cached on disk; keep test runs out of the user's cache folder but share
    # one folder across the session so the real corpus is encoded once.
    cache = tmp_path_factory.getbasetemp() / "sentangle-cache"
    monkeypatch.setenv("SENTANGLE_CACHE", str(cache))


@pytest.fixture
def beside_scripts():
    """Run Python code in a fresh interpreter working in benchmarks/, where the scripts import each
    other as they do when run, and return the JSON object it prints last: tests read the scripts'
    functions without importing anything from benchmarks/ into the test process."""

    def run(code: str) -> dict:
        r = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=Path(__file__).resolve().parents[1] / "benchmarks",
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 0, r.stderr[-4000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    return run
