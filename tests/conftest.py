"""Shared fixtures. Real data is read from ../shared/data; tests that need it skip when it is absent."""

from __future__ import annotations

import csv
import importlib.util
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


@pytest.fixture
def side_section(beside_scripts):
    """Run benchmarks/<script>.py's main(argv) (its stdout swallowed), which writes its numbers to
    `out`; return {"code", "numbers", "page": the performance page rendered with them as section
    `script`, "plain": the page without them}."""

    def run(script: str, argv: list[str], out) -> dict:
        return beside_scripts(
            f"""
            import contextlib, io, json
            import performance, {script}

            with contextlib.redirect_stdout(io.StringIO()):
                code = {script}.main({[*argv, "--json", str(out)]!r})
            numbers = json.load(open({str(out)!r}))
            res = json.loads(performance.DOC.with_name("performance.json").read_text())
            print(json.dumps({{"code": code, "numbers": numbers,
                              "page": performance.render(res, **{{{script!r}: numbers}}),
                              "plain": performance.render(res)}}))
            """
        )

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
MEDIA_MODULE = Path(__file__).with_name("media.py")


def load_media_module():
    """tests/media.py as a module, loaded from its path so that it does not depend on pytest's
    import mode or rootdir (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("sentangle_test_media", MEDIA_MODULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def media():
    """Writers of small audio/video files for the extraction tests (tests/media.py). Skips without
    PyAV, OpenCV or scikit-image."""
    for module, package in (("av", "av"), ("cv2", "opencv-python-headless"), ("skimage", "scikit-image")):
        pytest.importorskip(module, reason=f"{package} not installed (pip install 'sentangle[extract,dev]')")
    return load_media_module()


# ---- small models trained on generated clips, for predict and serve ---------------------------------
# Ten clips of unequal lengths (so padded widths differ from file to file), their texts and labels.
OWN_SECONDS = [0.6, 1.4, 0.9, 1.7, 0.7, 1.2, 1.5, 0.8, 1.1, 1.3]
OWN_TEXTS = ["what a wonderful film", "i hated it", "fine", "superb acting", "boring"]
OWN_TEXTS += ["lovely", "awful", "good", "bad", "ok"]


@pytest.fixture(scope="session")
def own_models(tmp_path_factory, media):
    """Clips (tones with vibrato, MMSA Raw layout), their extracted folder and two audio+text models
    trained on it for an epoch and exported: a windowed mult (`max_len` 50: it averages frames in
    windows of the padded length) and rtil (per-modality gates). {root, clips, cache, runs, models: {name: folder}, texts}."""
    pytest.importorskip("opensmile", reason="opensmile not installed (pip install 'sentangle[extract]')")
    from sentangle.cli import main

    def run(*args) -> int:
        return main([*map(str, args)])

    root = tmp_path_factory.mktemp("own")
    clips, cache = root / "clips", root / "cache"
    modes = ["train"] * 6 + ["valid"] * 2 + ["test"] * 2
    rows = [["video_id", "clip_id", "text", "label", "mode"]]
    for i, (seconds, text, mode) in enumerate(zip(OWN_SECONDS, OWN_TEXTS, modes)):
        media.wav(clips / f"v{i}" / "0.wav", media.vibrato(seconds, 120 + 25 * i))
        rows.append([f"v{i}", "0", text, f"{(-1) ** i * (1 + i % 3) * 0.9:.2f}", mode])
    with open(root / "label.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    assert run("extract", clips, root / "label.csv", root / "feat", "--no-progress", "--cache-dir", cache) == 0
    models = {}
    for name, extra in (("rtil", ["model.hidden=16"]), ("mult", ["model.max_len=50"])):
        args = ["train", "-d", root / "feat", "-m", name, "--seeds", "1", "--out", root / "runs", "--no-progress"]
        assert run(*args, "train.epochs=1", *extra) == 0
        models[name] = root / "models" / name
        assert run("export", root / "runs" / f"{name}-feat" / "seed_1111", models[name]) == 0
    return {"root": root, "clips": clips, "cache": cache, "runs": root / "runs", "models": models, "texts": OWN_TEXTS}
