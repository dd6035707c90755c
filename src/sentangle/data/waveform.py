"""Perturbations of a mono waveform, applied before feature extraction (data/extract.py).

A perturbation is a checked mapping {kind, level, seed} (`perturbation`), applied to one clip by
`perturb(signal, spec, sample_rate, key)`. Its randomness comes from a generator seeded with the
seed and `key` (the clip's file name), so every clip gets its own noise, the same on every run and
machine.

    noise  level: SNR in dB     white Gaussian noise scaled so that signal power / noise power over
                                the whole clip (pauses included) is exactly 10^(level/10)
    clip   level: fraction      samples clipped at +-level * the clip's peak (0 < level <= 1)
    band   level: [low, high]   zero-phase Butterworth band-pass in Hz (default [300, 3400], the
                                telephone band); low 0 is a low-pass
    drop   level: fraction      that fraction of the clip's 50 ms chunks, picked at random, set to 0

These are waveform changes of what the extractor hears; evaluation/perturb.py changes features a
model reads. scipy comes with scikit-learn, a core dependency.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from sentangle.core.errors import ConfigError

KINDS = ("noise", "clip", "band", "drop")
TELEPHONE_BAND = (300.0, 3400.0)
DROP_CHUNK_S = 0.05
BAND_ORDER = 4  # per edge; filtered forwards and backwards, so the roll-off is twice as steep


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(x.size)
    power = float(np.mean(np.square(x, dtype=np.float64)))
    noise *= math.sqrt(power / 10 ** (snr_db / 10) / float(np.mean(noise**2)))
    return (x + noise).astype(np.float32)


def clip_peaks(x: np.ndarray, fraction: float) -> np.ndarray:
    limit = fraction * float(np.max(np.abs(x)))
    return np.clip(x, -limit, limit).astype(np.float32)


def band_limit(x: np.ndarray, low_hz: float, high_hz: float, sample_rate: int) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    if low_hz > 0:
        sos = butter(BAND_ORDER, [low_hz, high_hz], btype="bandpass", fs=sample_rate, output="sos")
    else:
        sos = butter(BAND_ORDER, high_hz, btype="lowpass", fs=sample_rate, output="sos")
    if x.size <= 3 * 2 * len(sos):  # shorter than filtfilt's edge padding: nothing to filter on
        return x.astype(np.float32)
    return sosfiltfilt(sos, x).astype(np.float32)


def drop_segments(x: np.ndarray, fraction: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    chunk = max(1, round(DROP_CHUNK_S * sample_rate))
    starts = np.arange(0, x.size, chunk)
    out = x.astype(np.float32)
    for s in rng.choice(starts, size=round(fraction * len(starts)), replace=False):
        out[s : s + chunk] = 0.0
    return out


def _number(value: Any, where: str, expected: str, ok) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise ConfigError(f"{where} is {value!r}; expected {expected}")
    return float(value)


def perturbation(value: Any, where: str = "dataset.perturb", sample_rate: int = 16000) -> dict | None:
    """`value` checked and completed ({kind, level, seed}), or None for none; ConfigError naming
    `where` and what was expected otherwise."""
    if value is None:
        return None
    shape = "a mapping {kind: noise|clip|band|drop, level: ..., seed: int}"
    if not isinstance(value, dict):
        raise ConfigError(f"{where} is {value!r}; expected {shape}, or none")
    unknown = sorted(set(value) - {"kind", "level", "seed"})
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {unknown}; expected {shape}")
    kind = value.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}.kind is {kind!r}; expected one of {', '.join(KINDS)}")
    seed = value.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{where}.seed is {seed!r}; expected an integer >= 0")
    level = value.get("level", list(TELEPHONE_BAND) if kind == "band" else None)
    at = f"{where}.level"
    if kind == "noise":
        level = _number(level, at, "a signal-to-noise ratio in dB (e.g. 20, 10, 5, 0)", lambda v: True)
    elif kind == "clip":
        level = _number(level, at, "the fraction of the peak to clip at, in (0, 1]", lambda v: 0 < v <= 1)
    elif kind == "drop":
        level = _number(level, at, "the fraction of the signal to set to 0, in [0, 1]", lambda v: 0 <= v <= 1)
    else:
        band = f"[low, high] in Hz with 0 <= low < high < {sample_rate / 2:g} (default {list(TELEPHONE_BAND)})"
        if not isinstance(level, (list, tuple)) or len(level) != 2:
            raise ConfigError(f"{at} is {level!r}; expected {band}")
        low, high = (_number(v, at, band, lambda v: 0 <= v < sample_rate / 2) for v in level)
        if not low < high:
            raise ConfigError(f"{at} is {level!r}; expected {band}")
        level = [low, high]
    return {"kind": kind, "level": level, "seed": seed}


def perturb(x: np.ndarray, spec: dict, sample_rate: int, key: str) -> np.ndarray:
    """`x` (float, mono) perturbed as `spec` (from `perturbation`) says; `key` names the clip."""
    rng = np.random.default_rng([spec["seed"], zlib.crc32(key.encode())])
    kind, level = spec["kind"], spec["level"]
    if kind == "noise":
        return add_noise(x, level, rng)
    if kind == "clip":
        return clip_peaks(x, level)
    if kind == "band":
        return band_limit(x, level[0], level[1], sample_rate)
    return drop_segments(x, level, rng, sample_rate)
