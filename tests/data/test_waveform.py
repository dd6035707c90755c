"""Waveform perturbations (data/waveform.py), measured on the output against what was asked for."""

from __future__ import annotations

import numpy as np
import pytest

from sentangle.core.errors import ConfigError
from sentangle.data.waveform import perturb, perturbation

SR = 16000


def tone(hz: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * hz * np.arange(round(seconds * SR)) / SR)).astype(np.float32)


def voice(seconds: float = 2.0) -> np.ndarray:
    """A harmonic tone switched on and off: loud parts and pauses, as speech has."""
    t = np.arange(round(seconds * SR)) / SR
    on = np.sin(2 * np.pi * 3 * t) > -0.2
    return (0.3 * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in (1, 2, 3)) * on).astype(np.float32)


def db(power_ratio: float) -> float:
    return 10 * np.log10(power_ratio)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def spec(kind: str, level=None, seed: int = 0) -> dict:
    value: dict = {"kind": kind, "seed": seed}
    if level is not None:
        value["level"] = level
    out = perturbation(value)
    assert out is not None
    return out


@pytest.mark.parametrize("snr", [20, 10, 5, 0])
def test_noise_has_the_signal_to_noise_ratio_asked_for(snr):
    x = voice()
    y = perturb(x, spec("noise", snr), SR, "a.wav")
    noise = y.astype(np.float64) - x
    assert db(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2)) == pytest.approx(snr, abs=0.01)
    # white: no frequency band holds much more of the noise than its share
    band_power = np.abs(np.fft.rfft(noise)) ** 2
    quarters = [q.sum() for q in np.array_split(band_power, 4)]
    assert max(quarters) / min(quarters) < 1.2
    assert y.dtype == np.float32 and y.shape == x.shape


@pytest.mark.parametrize("fraction", [0.1, 0.5, 1.0])
def test_clipping_bounds_the_signal_at_a_fraction_of_its_peak(fraction):
    x = voice()
    y = perturb(x, spec("clip", fraction), SR, "a.wav")
    limit = fraction * np.abs(x).max()
    assert np.abs(y).max() == pytest.approx(limit, rel=1e-6)
    below = np.abs(x) <= limit
    assert np.array_equal(y[below], x[below])  # what was under the limit is untouched
    assert np.array_equal(np.sign(y[~below]), np.sign(x[~below]))


def test_telephone_band_attenuates_tones_outside_it_and_keeps_one_inside():
    band = spec("band")
    assert band["level"] == [300.0, 3400.0]
    middle = slice(SR // 4, -SR // 4)  # away from the filter's start and end

    def gain_db(hz: float) -> float:
        x = tone(hz)
        return 20 * np.log10(rms(perturb(x, band, SR, "a.wav")[middle]) / rms(x[middle]))

    assert gain_db(1000) == pytest.approx(0.0, abs=0.5)
    assert gain_db(100) < -20
    assert gain_db(6000) < -20
    low_pass = spec("band", [0, 1000])
    x = tone(4000)
    assert 20 * np.log10(rms(perturb(x, low_pass, SR, "a.wav")[middle]) / rms(x[middle])) < -20


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_dropped_segments_zero_that_fraction_in_chunks(fraction):
    x = np.random.default_rng(1).uniform(0.1, 1.0, 3 * SR).astype(np.float32)  # no zero of its own
    y = perturb(x, spec("drop", fraction), SR, "a.wav")
    zero = y == 0
    assert zero.mean() == pytest.approx(fraction, abs=0.02)
    assert np.array_equal(y[~zero], x[~zero])
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], zero.astype(int), [0]]))))[::2]
    assert runs.min() >= 0.05 * SR  # whole chunks, not scattered samples


@pytest.mark.parametrize("kind,level", [("noise", 5), ("drop", 0.3)])
def test_same_seed_same_output_other_seed_or_clip_other_output(kind, level):
    x = voice()
    first = perturb(x, spec(kind, level, seed=0), SR, "a.wav")
    assert np.array_equal(first, perturb(x, spec(kind, level, seed=0), SR, "a.wav"))
    assert not np.array_equal(first, perturb(x, spec(kind, level, seed=1), SR, "a.wav"))
    assert not np.array_equal(first, perturb(x, spec(kind, level, seed=0), SR, "b.wav"))


@pytest.mark.parametrize(
    "value,expected",
    [
        ("noise", "expected a mapping"),
        ({"kind": "hiss", "level": 3}, "kind is 'hiss'; expected one of noise, clip, band, drop"),
        ({"kind": "noise"}, "level is None; expected a signal-to-noise ratio in dB"),
        ({"kind": "clip", "level": 1.5}, "expected the fraction of the peak to clip at, in (0, 1]"),
        ({"kind": "drop", "level": -0.1}, "in [0, 1]"),
        ({"kind": "band", "level": [3400, 300]}, "expected [low, high] in Hz"),
        ({"kind": "band", "level": [300, 9000]}, "high < 8000"),
        ({"kind": "noise", "level": 10, "seed": -1}, "seed is -1; expected an integer >= 0"),
        ({"kind": "noise", "level": 10, "snr": 3}, "unknown key(s) ['snr']"),
    ],
)
def test_bad_perturbations_name_the_field_and_what_was_expected(value, expected):
    with pytest.raises(ConfigError, match="dataset.perturb") as err:
        perturbation(value)
    assert expected in str(err.value)
