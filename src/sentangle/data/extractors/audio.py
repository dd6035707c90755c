"""Frame-level audio features of a 16 kHz mono signal, one registered extractor per tool.

Each extractor is called as `extractor(signal, sample_rate)` and returns (features (T, d) float32,
feature names, frames per second); `extractor.spec` = {name, package, version, settings} says what
made them (stored in the feature folder, and part of the cache key of every clip).

- "egemaps" (default): openSMILE eGeMAPSv02 low-level descriptors, 25 per 10 ms frame
  (Eyben et al. 2016, the minimal standard set for voice research and affective computing).
- "compare": openSMILE ComParE_2016 low-level descriptors, 65 per 10 ms frame.
- "egemaps_functionals", "compare_functionals": the same sets' functionals (statistics of the
  descriptors over the whole clip: 88 and 6,373 features), one frame per clip; frames_per_second
  is 0 for them (not a rate). The standard utterance-level baselines of speech emotion recognition.
- "librosa": 20 MFCCs, log F0 (YIN), RMS energy, zero-crossing rate, spectral centroid and roll-off
  per 10 ms frame, as MMSA-FET's librosa audio config computes them; permissively licensed (ISC).

openSMILE's licence allows research and education only (docs/own-data.md); librosa's allows any use.
"""

from __future__ import annotations

import functools
import importlib.metadata
import warnings
from typing import Any

import numpy as np

from sentangle.core.errors import ConfigError, DataError
from sentangle.core.registry import AUDIO_EXTRACTORS
from sentangle.data.media import optional_import

SAMPLE_RATE = 16000
DEFAULT = "egemaps"


@functools.cache  # read from the installed metadata once: every clip's cache key names it
def package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Tool:
    """A named tool from a pip package with settings: `spec` records what made a clip's features
    or transcript (stored in the feature folder, part of every cache key)."""

    name = ""
    package = ""
    settings: dict[str, Any] = {}

    @property
    def spec(self) -> dict:
        return {
            "name": self.name,
            "package": self.package,
            "version": package_version(self.package),
            "settings": dict(self.settings),
        }


class AudioExtractor(Tool):
    """Base of the registered extractors: subclasses set name, package, settings and `compute`."""

    frames_per_second = 100.0

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {"sample_rate": SAMPLE_RATE}

    def __call__(self, signal: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, list[str], float]:
        if sample_rate != SAMPLE_RATE:
            raise ConfigError(f"audio extractor {self.name!r} takes {SAMPLE_RATE} Hz input; got {sample_rate} Hz")
        signal = np.ascontiguousarray(signal, dtype=np.float32)
        if signal.ndim != 1 or signal.size == 0:
            raise DataError(f"audio extractor {self.name!r}: signal has shape {signal.shape}; expected (samples,) > 0")
        features, names = self.compute(signal)
        return np.ascontiguousarray(features, dtype=np.float32), names, self.frames_per_second

    def compute(self, signal: np.ndarray) -> tuple[np.ndarray, list[str]]:
        raise NotImplementedError


class _OpenSmile(AudioExtractor):
    package = "opensmile"
    feature_set = ""
    feature_level = "LowLevelDescriptors"

    def __init__(self) -> None:
        super().__init__()
        opensmile = optional_import("opensmile")
        self.smile = opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, self.feature_set),
            feature_level=getattr(opensmile.FeatureLevel, self.feature_level),
        )
        self.settings.update(feature_set=self.feature_set, feature_level=self.feature_level)
        if self.feature_level == "LowLevelDescriptors":
            self.settings["hop_s"] = 0.01

    def compute(self, signal: np.ndarray) -> tuple[np.ndarray, list[str]]:
        with warnings.catch_warnings():
            # "Segment too short, filling with NaN": the pipeline reports such a clip itself
            warnings.simplefilter("ignore", UserWarning)
            frame = self.smile.process_signal(signal, SAMPLE_RATE)
        return frame.to_numpy(dtype=np.float32), [str(c) for c in frame.columns]


@AUDIO_EXTRACTORS.register("egemaps")
class Egemaps(_OpenSmile):
    name = "egemaps"
    feature_set = "eGeMAPSv02"


@AUDIO_EXTRACTORS.register("compare")
class Compare(_OpenSmile):
    name = "compare"
    feature_set = "ComParE_2016"


@AUDIO_EXTRACTORS.register("egemaps_functionals")
class EgemapsFunctionals(_OpenSmile):
    name = "egemaps_functionals"
    feature_set = "eGeMAPSv02"
    feature_level = "Functionals"
    frames_per_second = 0.0


@AUDIO_EXTRACTORS.register("compare_functionals")
class CompareFunctionals(_OpenSmile):
    name = "compare_functionals"
    feature_set = "ComParE_2016"
    feature_level = "Functionals"
    frames_per_second = 0.0


@AUDIO_EXTRACTORS.register("librosa")
class Librosa(AudioExtractor):
    name = "librosa"
    package = "librosa"
    N_MFCC = 20

    def __init__(self) -> None:
        super().__init__()
        self.librosa = optional_import("librosa")
        # 10 ms hop (100 frames/s, as openSMILE), 32 ms windows; YIN needs a window of two periods
        # of the lowest F0 (60 Hz: 533 samples), hence 1024 samples for it.
        self.settings.update(
            n_mfcc=self.N_MFCC,
            n_mels=40,
            htk=True,
            n_fft=512,
            hop_length=160,
            f0={"method": "yin", "fmin": 60.0, "fmax": 500.0, "frame_length": 1024},
        )

    def compute(self, signal: np.ndarray) -> tuple[np.ndarray, list[str]]:
        lr, s = self.librosa, self.settings
        n_fft, hop = s["n_fft"], s["hop_length"]
        try:
            mfcc = lr.feature.mfcc(
                y=signal, sr=SAMPLE_RATE, n_mfcc=s["n_mfcc"], n_fft=n_fft, hop_length=hop, n_mels=s["n_mels"], htk=True
            )
            f0 = lr.yin(
                signal,
                fmin=s["f0"]["fmin"],
                fmax=s["f0"]["fmax"],
                sr=SAMPLE_RATE,
                frame_length=s["f0"]["frame_length"],
                hop_length=hop,
            )
            rows = [
                *mfcc,
                np.log(f0),
                lr.feature.rms(y=signal, frame_length=n_fft, hop_length=hop)[0],
                lr.feature.zero_crossing_rate(signal, frame_length=n_fft, hop_length=hop)[0],
                lr.feature.spectral_centroid(y=signal, sr=SAMPLE_RATE, n_fft=n_fft, hop_length=hop)[0],
                lr.feature.spectral_rolloff(y=signal, sr=SAMPLE_RATE, n_fft=n_fft, hop_length=hop)[0],
            ]
        except lr.util.exceptions.ParameterError as e:
            raise DataError(f"audio extractor 'librosa': {e} ({signal.size} samples)") from None
        names = [f"mfcc{i + 1}" for i in range(s["n_mfcc"])]
        names += ["log_f0", "rms", "zero_crossing_rate", "spectral_centroid", "spectral_rolloff"]
        return np.stack(rows, axis=1), names


@functools.cache
def audio_extractor(name: str) -> AudioExtractor:
    """The registered extractor `name`, built once per process (openSMILE loads its config once)."""
    return AUDIO_EXTRACTORS.get(name)()


def audio_extractors() -> list[str]:
    return AUDIO_EXTRACTORS.names()
