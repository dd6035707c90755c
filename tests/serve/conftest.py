"""Tiny audio+text models for the server's tests: clips extracted from generated WAVs, trained for an
epoch and exported (as tests/cli/test_predict_clips.py does), and a report over their run folders."""

from __future__ import annotations

import csv
import wave
from pathlib import Path

import numpy as np
import pytest

from sentangle.cli import main

SECONDS = [0.6, 1.4, 0.9, 1.7, 0.7, 1.2, 1.5, 0.8, 1.1, 1.3]
TEXTS = [
    "what a wonderful film",
    "i hated it",
    "fine",
    "superb acting",
    "boring",
    "lovely",
    "awful",
    "good",
    "bad",
    "ok",
]


def write_wav(path: Path, seconds: float, hz: float, sr: int = 16000) -> Path:
    """A tone with a slow vibrato, as 16-bit PCM written by the standard library."""
    t = np.arange(round(seconds * sr)) / sr
    signal = 0.3 * np.sin(2 * np.pi * (hz * t + 3 * np.sin(2 * np.pi * 2 * t)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(np.round(signal * 32767).astype("<i2").tobytes())
    return path


def run(*args) -> int:
    return main([*map(str, args)])


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """Two exported models on the same clips: rtil (per-modality gates) and mult; their run
    folders and a `sentangle report` over them (the results browser's input)."""
    pytest.importorskip("av", reason="PyAV not installed (pip install 'sentangle[extract]')")
    pytest.importorskip("opensmile", reason="opensmile not installed (pip install 'sentangle[extract]')")
    root = tmp_path_factory.mktemp("serve")
    clips = root / "clips"
    modes = ["train"] * 6 + ["valid"] * 2 + ["test"] * 2
    rows = []
    for i, (s, text, mode) in enumerate(zip(SECONDS, TEXTS, modes)):
        write_wav(clips / f"v{i}" / "0.wav", s, 120 + 25 * i)
        rows.append([f"v{i}", "0", text, f"{(-1) ** i * (1 + i % 3) * 0.9:.2f}", mode])
    with open(root / "label.csv", "w", newline="") as f:
        csv.writer(f).writerows([["video_id", "clip_id", "text", "label", "mode"], *rows])
    assert run("extract", clips, root / "label.csv", root / "feat", "--no-progress", "--cache-dir", root / "cache") == 0
    models = {}
    for name, extra in (("rtil", ["model.hidden=16"]), ("mult", [])):
        args = ["train", "-d", root / "feat", "-m", name, "--seeds", "1", "--out", root / "runs", "--no-progress"]
        assert run(*args, "train.epochs=1", *extra) == 0
        models[name] = root / "models" / name
        assert run("export", root / "runs" / f"{name}-feat" / "seed_1111", models[name]) == 0
    runs = [root / "runs" / f"{name}-feat" for name in models]
    assert run("report", *runs, "--out", root / "runs" / "report", "--no-gates") == 0
    return {"root": root, "clips": clips, "models": models, "runs": root / "runs", "write_wav": write_wav}
