"""Shared fixtures. Real data is read from ../shared/data; tests that need it skip when it is absent."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
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


@pytest.fixture(autouse=True)
def _seeded_global_state():
    # Models built in a test draw their initial weights from the global generators; without a
    # fixed start a test's outcome would depend on which tests ran before it.
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def _garbage_padding(batch, max_len: int, modalities=None, scale: float = 50.0):
    """Fill every padded frame of `batch` with large random values and append padded frames, as
    many as keep the window of `max_len`-frame downsampling (layers.masked_downsample) unchanged,
    so the real frames fall into the same windows (all modalities, or those named). Checks that
    downsampling is really reached."""
    gen = torch.Generator().manual_seed(1)
    for m in modalities or list(batch.features):
        x, mask = batch.features[m], batch.masks[m]
        t = x.shape[1]
        assert t > max_len, f"{m}: {t} frames never reach the {max_len}-frame downsampling"
        assert (~mask).any(), f"{m}: no padded frame to fill"
        stride = -(-t // max_len)
        extra = max_len * stride - t  # more would widen the windows
        x = torch.cat([x, torch.zeros(x.shape[0], extra, x.shape[2], dtype=x.dtype)], dim=1)
        mask = torch.cat([mask, torch.zeros(mask.shape[0], extra, dtype=torch.bool)], dim=1)
        noise = scale * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        batch.features[m] = torch.where(mask.unsqueeze(-1), x, noise)
        batch.masks[m] = mask
    return batch


@pytest.fixture
def garbage_padding():
    return _garbage_padding


def _cmd_numpy(x, y, moments):
    # Central Moment Discrepancy written out: norm of the mean gap plus norms of the central-moment gaps
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cx, cy = x - x.mean(0), y - y.mean(0)
    total = np.sqrt(((x.mean(0) - y.mean(0)) ** 2).sum())
    for k in range(2, moments + 1):
        total += np.sqrt((((cx**k).mean(0) - (cy**k).mean(0)) ** 2).sum())
    return total


def _orthogonality_numpy(x, y, eps=1e-6):
    # MISA's difference loss: mean squared entry of X^T Y over centred, row-normalised codes
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x, y = x - x.mean(0), y - y.mean(0)
    x = x / (np.sqrt((x**2).sum(1, keepdims=True)) + eps)
    y = y / (np.sqrt((y**2).sum(1, keepdims=True)) + eps)
    return ((x.T @ y) ** 2).mean()


@pytest.fixture
def numpy_losses():
    """The shared auxiliary losses written out in numpy, as references independent of models/losses.py."""
    return SimpleNamespace(cmd=_cmd_numpy, orthogonality=_orthogonality_numpy)


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


def _assert_same_predictions(got: str, stored: str, tol: float = 1e-5) -> None:
    """`sentangle predict` CSV text `got` against a seed's stored predictions (predictions_csv):
    same ids in the same order and, in every column the stored CSV has, the same value (numbers
    within `tol`: predict batches clips by length, the run by position). Extra columns of `got`
    (polarity, probabilities, diagnostics) are not compared."""
    a, b = list(csv.DictReader(io.StringIO(got))), list(csv.DictReader(io.StringIO(stored)))
    assert [r["id"] for r in a] == [r["id"] for r in b] and b
    for x, y in zip(a, b):
        for k, v in y.items():
            try:
                assert float(x[k]) == pytest.approx(float(v), abs=tol), (x["id"], k)
            except ValueError:
                assert x[k] == v, (x["id"], k)


@pytest.fixture
def same_predictions():
    return _assert_same_predictions


# ---- media files for the extraction tests (data/media.py, data/extract.py) ------------------------
# suffix -> (video codec, audio codec, audio sample rate) that PyAV's bundled FFmpeg writes
MEDIA_CODECS = {
    ".wav": (None, "pcm_s16le", 16000),
    ".flac": (None, "flac", 16000),
    ".mp3": (None, "libmp3lame", 16000),
    ".m4a": (None, "aac", 16000),
    ".mp4": ("libx264", "aac", 16000),
    ".mkv": ("libx264", "aac", 16000),
    ".webm": ("libvpx", "libopus", 48000),
    ".avi": ("mpeg4", "pcm_s16le", 16000),
    ".mov": ("mpeg4", "aac", 16000),
}


def _tone(freq: float, seconds: float, sr: int = 16000, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(seconds * sr)) / sr)).astype(np.float32)


def _write_wav(path, signal, sr: int = 16000, channels: int = 1) -> Path:
    """16-bit PCM through the standard library (no codec of ours involved)."""
    import wave

    pcm = np.round(np.clip(signal, -1, 1) * 32767).astype("<i2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(np.repeat(pcm[:, None], channels, axis=1).tobytes())
    return path


def _write_media(path, signal=None, sr: int | None = None, frames=None, fps: int = 25) -> Path:
    """A file of the kind its suffix names, written by PyAV: `signal` (float, at `sr`, default the
    codec's rate) as mono audio, `frames` (RGB uint8) as video; either may be None."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vcodec, acodec, rate = MEDIA_CODECS[path.suffix]
    sr = sr or rate
    kinds = {"s16": np.int16, "s32": np.int32, "flt": np.float32, "dbl": np.float64}
    with av.open(str(path), "w") as c:
        packets = []
        if signal is not None:
            a = c.add_stream(acodec, rate=sr, layout="mono")
            fmt = a.codec_context.format.name
            dtype = kinds[fmt.rstrip("p")]
            scale = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1
            frame = av.AudioFrame.from_ndarray(
                (np.asarray(signal) * scale).astype(dtype)[None], format=fmt, layout="mono"
            )
            frame.sample_rate = sr
            packets = [*a.encode(frame), *a.encode(None)]
        if frames is not None:
            v = c.add_stream(vcodec, rate=fps)
            v.height, v.width = frames[0].shape[:2]
            v.pix_fmt = "yuv420p"
            for f in frames:
                packets += v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24"))
            packets += v.encode(None)
        for p in packets:
            c.mux(p)
    return path


def _astronaut_frames(n: int, size: int = 64) -> list[np.ndarray]:
    """n (<= size) distinct RGB frames of size x size: a window panning one pixel a frame across
    scikit-image's bundled astronaut photo (scaled to 2 * size)."""
    from skimage import data

    img = data.astronaut()[:: 256 // size, :: 256 // size]
    assert n <= size, "the window would leave the photo"
    return [np.ascontiguousarray(img[size // 2 : size // 2 + size, i : i + size]) for i in range(n)]


@pytest.fixture(scope="session")
def media():
    """Writers of small audio/video files for the extraction tests (skipped without PyAV)."""
    pytest.importorskip("av", reason="PyAV not installed (pip install 'sentangle[extract]')")
    return SimpleNamespace(
        tone=_tone, wav=_write_wav, write=_write_media, astronaut=_astronaut_frames, codecs=MEDIA_CODECS
    )
