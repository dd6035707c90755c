"""Decoding audio and video files through PyAV, which bundles its own FFmpeg (no system ffmpeg).

`av` is an optional dependency (extra `sentangle[extract]`), imported where it is used. Every
failure of a file (missing, empty, corrupt, without the stream asked for) is a DataError naming the
file and the reason, so a pipeline can report it per clip instead of crashing.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np

from sentangle.core.errors import ConfigError, DataError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS
EXTRA = "extract"
# Decoding past `end` by this much lets the resampler's filter delay drain before the cut.
_TAIL_S = 0.5


def optional_import(module: str, package: str | None = None, extra: str = EXTRA) -> ModuleType:
    """`module`, or a ConfigError naming the pip package and the sentangle extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"this needs the optional package {package or module!r} ({e}): pip install 'sentangle[{extra}]'"
        ) from None


def _av() -> ModuleType:
    return optional_import("av")


def _check_cut(path: Path, start: float | None, end: float | None) -> None:
    for name, v in (("start", start), ("end", end)):
        if v is not None and (not math.isfinite(v) or v < 0):
            raise DataError(f"{path}: {name}={v!r}; expected a time in seconds >= 0")
    if start is not None and end is not None and end <= start:
        raise DataError(f"{path}: end={end} is not after start={start}; expected start < end (seconds)")


def _open(path: Path):
    av = _av()
    if not path.is_file():
        raise DataError(f"{path}: file not found" if not path.exists() else f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes); expected an audio or video file")
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise DataError(f"{path}: not a readable audio or video file ({_reason(e)})") from None


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)


def _is_picture(stream) -> bool:
    """Cover art of an mp3/m4a is a one-frame video stream; it is not video."""
    disposition = getattr(stream, "disposition", 0)
    try:
        return bool(disposition & _av().stream.Disposition.attached_pic)
    except (AttributeError, TypeError):
        return False


def _stream(container, kind: str, path: Path):
    streams = [s for s in container.streams if s.type == kind and not (kind == "video" and _is_picture(s))]
    if not streams:
        found = sorted({s.type for s in container.streams}) or ["none"]
        raise DataError(f"{path}: no {kind} stream (streams found: {', '.join(found)}); expected {kind}")
    return streams[0]


def _seek(container, stream, start: float | None) -> None:
    if start:  # backward: to the last keyframe at or before `start`; frames before it are skipped by time
        container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)


def _decoded(container, stream, path: Path, kind: str):
    av = _av()
    try:
        yield from container.decode(stream)
    except av.FFmpegError as e:
        raise DataError(f"{path}: cannot decode {kind} ({_reason(e)}); the file may be corrupt or truncated") from None


def probe(path: str | Path) -> dict:
    """{duration_s, has_audio, has_video} of a media file (duration None where the container has none)."""
    path = Path(path)
    with _open(path) as c:
        has = {kind: any(s.type == kind and not _is_picture(s) for s in c.streams) for kind in ("audio", "video")}
        duration = c.duration / 1e6 if c.duration else None
        if duration is None:
            lengths = [float(s.duration * s.time_base) for s in c.streams if s.duration and s.time_base]
            duration = max(lengths) if lengths else None
    if not (has["audio"] or has["video"]):
        raise DataError(f"{path}: neither audio nor video stream; expected an audio or video file")
    return {"duration_s": duration, "has_audio": has["audio"], "has_video": has["video"]}


def decode_audio(
    path: str | Path, sample_rate: int = 16000, start: float | None = None, end: float | None = None
) -> np.ndarray:
    """The first audio stream of `path` as float32 mono at `sample_rate`, from `start` to `end`
    seconds (the whole file when both are None; the file's end when only `end` is past it).

    A cut has round((end - start) * sample_rate) samples when the file covers it."""
    path = Path(path)
    _check_cut(path, start, end)
    if sample_rate <= 0:
        raise ConfigError(f"sample_rate={sample_rate}; expected a positive rate in Hz")
    av = _av()
    with _open(path) as c:
        stream = _stream(c, "audio", path)
        _seek(c, stream, start)
        # channels kept, then averaged: FFmpeg's own downmix adds equal channels at -3 dB each, so a
        # stereo file would come out 3 dB louder than its mono twin
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        parts: list[np.ndarray] = []
        first: float | None = None  # time of the first decoded sample: what the cut is counted from
        for frame in _decoded(c, stream, path, "audio"):
            if first is None:
                first = float(frame.time) if frame.time is not None else 0.0
            if end is not None and frame.time is not None and frame.time > end + _TAIL_S:
                break
            parts += [f.to_ndarray().mean(axis=0) for f in resampler.resample(frame)]
        parts += [f.to_ndarray().mean(axis=0) for f in resampler.resample(None)]
    signal = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
    if first is not None and (start is not None or end is not None):
        lo = max(round(((start or 0.0) - first) * sample_rate), 0)
        hi = None if end is None else max(round((end - first) * sample_rate), lo)
        signal = signal[lo:hi]
    if signal.size == 0 and start:
        raise DataError(f"{path}: no audio from start={start}s on; the file ends before it")
    if signal.size == 0:
        raise DataError(f"{path}: no audio samples decoded; expected a non-empty audio stream")
    return signal


def decode_video(
    path: str | Path, fps: float, start: float | None = None, end: float | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """(time in seconds, RGB uint8 (H, W, 3) frame) of the first video stream, at most `fps` frames
    per second: the first frame at or after each step of 1/fps from the first frame (or `start`),
    up to `end`. A generator: errors come when iterated."""
    path = Path(path)
    _check_cut(path, start, end)
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps={fps!r}; expected a positive number of frames per second")
    step = 1.0 / fps
    with _open(path) as c:
        stream = _stream(c, "video", path)
        stream.thread_type = "AUTO"
        _seek(c, stream, start)
        base: float | None = start
        due = start if start is not None else -math.inf
        for i, frame in enumerate(_decoded(c, stream, path, "video")):
            t = float(frame.time) if frame.time is not None else i / float(stream.average_rate or 25)
            if end is not None and t >= end:
                break
            if start is not None and t < start:
                continue
            if base is None:
                base = t
            if t < due - 1e-6:
                continue
            yield t, frame.to_ndarray(format="rgb24")
            due = base + step * (math.floor((t - base) / step + 1e-6) + 1)
