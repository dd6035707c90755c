"""Speech recognition for clips without a transcript: `sentangle extract --asr NAME` and
`sentangle predict --asr NAME` fill in the text of a clip whose transcript is empty or not given.

- "pocketsphinx": CMU PocketSphinx 5 with the US English acoustic model, language model and
  pronunciation dictionary its wheel ships (`pip install 'sentangle[asr]'`; nothing is downloaded;
  BSD-2-Clause). Offline and light, but a 2000s-era statistical recogniser: on clean synthetic speech
  it gets most words of a short sentence and misses others ("what a wonderful film, I loved every
  minute of it" came out as "what a wonderful feel like that really gets on the"). Human transcripts,
  or a modern recogniser run beforehand into the CSV's text column, are much better input: this is
  for clips that have nothing else.

A transcriber is called on a 16 kHz mono float signal and returns the text; `spec` = {name, package,
version, settings} is recorded in the feature folder and keys the transcript cache.
"""

from __future__ import annotations

import functools

import numpy as np

from sentangle.core.errors import ConfigError
from sentangle.core.registry import ASR_ENGINES
from sentangle.data.extractors.audio import SAMPLE_RATE, Tool
from sentangle.data.media import optional_import


class Transcriber(Tool):
    """Base of the registered recognisers: subclasses set name, package, settings and `transcribe`."""

    def __call__(self, signal: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
        if sample_rate != SAMPLE_RATE:
            raise ConfigError(f"recogniser {self.name!r} takes {SAMPLE_RATE} Hz input; got {sample_rate} Hz")
        return " ".join(self.transcribe(np.asarray(signal, np.float32)).split())

    def transcribe(self, signal: np.ndarray) -> str:
        raise NotImplementedError


@ASR_ENGINES.register("pocketsphinx")
class PocketSphinx(Transcriber):
    """PocketSphinx 5, its bundled en-us models, one utterance per clip."""

    name = "pocketsphinx"
    package = "pocketsphinx"
    settings = {"model": "en-us (bundled)", "sample_rate": SAMPLE_RATE}

    def __init__(self) -> None:
        ps = optional_import("pocketsphinx", extra="asr")
        self._decoder = ps.Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")

    def transcribe(self, signal: np.ndarray) -> str:
        pcm = np.round(np.clip(signal, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        d = self._decoder
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        return "" if hyp is None else hyp.hypstr


@functools.cache
def transcriber(name: str) -> Transcriber:
    """The registered recogniser `name`, built once per process (its models load once)."""
    return ASR_ENGINES.get(name)()


def asr_engines() -> list[str]:
    return ASR_ENGINES.names()
