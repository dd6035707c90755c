"""Small media files for the extraction tests and benchmarks/extraction.py: tones, speech, videos of
a face whose position in every frame is known, a face-free video, broken files.

Loaded by its path (tests/conftest.py's `media` fixture, benchmarks/extraction.py), never imported
as part of a package, so it works whatever pytest's import mode or rootdir. Needs PyAV; the face
videos also need OpenCV and scikit-image; `speech` uses espeak-ng when it is installed.

Every compressed file goes through one PyAV writer (`write`); plain WAVs are written by the
standard library (`wav`), so decoding tests have a reference that no codec of ours touched.

The face is scikit-image's bundled astronaut photograph (public domain, NASA; no download), moved
and scaled by an affine warp, so where the face is in every frame is known exactly from the warp:
its centre in the 512 x 512 photo was read off the image by hand (between the eyes and the chin,
the eyes at y ~ 100 and the mouth at y ~ 145) and its width measured as the span from ear to ear,
not taken from any detector.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SR = 16000
# suffix -> (video codec, audio codec, audio sample rate) that PyAV's bundled FFmpeg writes
MEDIA_CODECS = {
    ".wav": (None, "pcm_s16le", SR),
    ".flac": (None, "flac", SR),
    ".mp3": (None, "libmp3lame", SR),
    ".m4a": (None, "aac", SR),
    ".mp4": ("libx264", "aac", SR),
    ".mkv": ("libx264", "aac", SR),
    ".webm": ("libvpx", "libopus", 48000),
    ".avi": ("mpeg4", "pcm_s16le", SR),
    ".mov": ("mpeg4", "aac", SR),
}
# The face videos: FFmpeg's own (LGPL) mpeg4 encoder at a high bit rate, so the frames stay sharp
# (the tests are about the detector, not the codec).
FACE_CODEC, FACE_BIT_RATE = "mpeg4", 4_000_000

# In the 512 x 512 astronaut photo, by hand: face centre (x, y) and width, in pixels.
FACE_CENTRE = (225.0, 115.0)
FACE_WIDTH = 93.0
# Over the clip the face centre moves from START to END (fractions of the frame width, height)
# and its width grows from WIDTHS[0] to WIDTHS[1] (fractions of the frame height).
START, END = (0.35, 0.45), (0.65, 0.55)
WIDTHS = (0.40, 0.50)


# ---- audio --------------------------------------------------------------------------------------
def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(seconds * sr)) / sr)).astype(np.float32)


def vibrato(seconds: float, hz: float, sr: int = SR) -> np.ndarray:
    """A tone with a slow vibrato (its pitch swings 6 Hz twice a second): voice-like frame-to-frame change."""
    t = np.arange(round(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * (hz * t + 3 * np.sin(2 * np.pi * 2 * t)))).astype(np.float32)


def wav(path, signal, sr: int = SR, channels: int = 1) -> Path:
    """16-bit PCM through the standard library (no codec of ours involved); samples are rounded."""
    pcm = np.round(np.clip(signal, -1, 1) * 32767).astype("<i2")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(np.repeat(pcm[:, None], channels, axis=1).tobytes())
    return path


def read_wav(path) -> tuple[np.ndarray, int]:
    """(mono float32 samples, sample rate) of a 16-bit PCM WAV."""
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2, f"{path}: expected 16-bit PCM"
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
        return (x.mean(axis=1) / 32768).astype(np.float32), w.getframerate()


def audio_only(path, seconds: float = 1.0, sample_rate: int = SR) -> Path:
    """A wav file: a valid media file without a video stream."""
    return wav(path, tone(440, seconds, sample_rate), sample_rate)


def speech_source() -> str:
    """What `speech` speaks with here, for reports."""
    if shutil.which("espeak-ng") is None:
        return "synthesized tones (espeak-ng not installed)"
    # "eSpeak NG text-to-speech: 1.51  Data at: ..."
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=False).stdout
    words = version.partition("text-to-speech:")[2].split()
    return f"espeak-ng {words[0]}" if words else "espeak-ng"


def speech(text: str, path, speed: int = 175) -> Path:
    """`text` spoken by espeak-ng (English voice, `speed` words per minute) as a 22.05 kHz mono WAV.

    Without espeak-ng (Debian package espeak-ng; CI installs it) this falls back to a synthesized
    tone as long as the text would take to say: a 140 Hz voice-like harmonic tone, on and off at a
    syllable rate, at 16 kHz. It has voiced frames and pauses but no consonants or formants, so
    tests of real-speech properties skip without espeak-ng instead of using it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("espeak-ng") is None:
        return wav(path, _speech_like_tone(text), SR)
    subprocess.run(["espeak-ng", "-v", "en", "-s", str(speed), "-w", str(path), text], check=True)
    return path


def speak(text: str, speed: int = 175) -> tuple[np.ndarray, int]:
    """(samples, sample rate) of `speech(text)`."""
    with tempfile.TemporaryDirectory() as tmp:
        return read_wav(speech(text, Path(tmp) / "speech.wav", speed))


def _speech_like_tone(text: str) -> np.ndarray:
    # about as long as espeak-ng at 175 words per minute takes for the text (~85 ms a character)
    t = np.arange(round(max(0.5, 0.085 * len(text)) * SR)) / SR
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in (1, 2, 3))
    syllables = np.sin(2 * np.pi * 4 * t) > -0.3  # ~4 syllables a second with short gaps
    return (0.2 * voice * syllables).astype(np.float32)


# ---- the writer -----------------------------------------------------------------------------------
def write(
    path,
    signal=None,
    sr: int | None = None,
    frames=None,
    fps: float = 25,
    video_codec: str | None = None,
    bit_rate: int | None = None,
) -> Path:
    """A file of the kind its suffix names (MEDIA_CODECS), written by PyAV: `signal` (float in
    [-1, 1], at `sr`, default the codec's rate) as mono audio, `frames` (RGB uint8) as video at
    `fps`; either may be None. `video_codec` and `bit_rate` replace the suffix's defaults."""
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
            v = c.add_stream(video_codec or vcodec, rate=round(fps))
            v.height, v.width = frames[0].shape[:2]
            v.pix_fmt = "yuv420p"
            if bit_rate:
                v.bit_rate = bit_rate
            for f in frames:
                packets += v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24"))
            packets += v.encode(None)
        for p in packets:
            c.mux(p)
    return path


# ---- video ----------------------------------------------------------------------------------------
def astronaut(n: int, size: int = 64) -> list[np.ndarray]:
    """n (<= size) distinct RGB frames of size x size: a window panning one pixel a frame across
    scikit-image's bundled astronaut photo (scaled to 2 * size)."""
    from skimage import data

    img = data.astronaut()[:: 256 // size, :: 256 // size]
    assert n <= size, "the window would leave the photo"
    return [np.ascontiguousarray(img[size // 2 : size // 2 + size, i : i + size]) for i in range(n)]


@dataclass(frozen=True)
class FakeVideo:
    path: Path
    fps: float
    size: tuple[int, int]  # width, height
    centres: np.ndarray  # (n, 2) true face centre per frame, as fractions of the frame width, height
    widths: np.ndarray  # (n,) true face width per frame, as a fraction of the frame width

    def at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """True (centres, widths) of the frames showing at `times` (seconds)."""
        index = np.minimum(np.floor(np.asarray(times) * self.fps + 1e-6).astype(int), len(self.widths) - 1)
        return self.centres[index], self.widths[index]


def face_frames(n: int, size: tuple[int, int] = (160, 120)) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """n RGB frames of the astronaut moving right and down and coming closer, with the true face
    centres (n, 2) and widths (n,) as fractions of the frame."""
    import cv2
    from skimage import data

    photo = data.astronaut()
    width, height = size
    u = np.linspace(0.0, 1.0, n)
    centres = np.array(START) + u[:, None] * (np.array(END) - np.array(START))
    widths_px = height * (WIDTHS[0] + u * (WIDTHS[1] - WIDTHS[0]))
    frames = []
    for (cx, cy), w in zip(centres, widths_px):
        k = w / FACE_WIDTH
        warp = np.array([[k, 0, cx * width - k * FACE_CENTRE[0]], [0, k, cy * height - k * FACE_CENTRE[1]]])
        frames.append(cv2.warpAffine(photo, warp, (width, height), flags=cv2.INTER_AREA, borderValue=(128, 128, 128)))
    return frames, centres, widths_px / width


def face_video(
    path,
    seconds: float = 2.0,
    fps: float = 10,
    size: tuple[int, int] = (160, 120),
    audio: np.ndarray | None = None,
    sample_rate: int = SR,
) -> FakeVideo:
    """An mp4 of round(seconds * fps) frames of the moving astronaut (`face_frames`), with `audio`
    (a float array in [-1, 1] at `sample_rate`) as a mono AAC track when given."""
    frames, centres, widths = face_frames(round(seconds * fps), size)
    write(path, audio, sample_rate, frames, fps, FACE_CODEC, FACE_BIT_RATE)
    return FakeVideo(Path(path), fps, size, centres, widths)


def talking_face(path, text: str, fps: float = 10, size: tuple[int, int] = (160, 120)) -> FakeVideo:
    """A `face_video` as long as `speech(text)`, with that speech as its sound track."""
    signal, sr = speak(text)
    return face_video(path, len(signal) / sr, fps, size, signal, sr)


def blank_video(
    path,
    seconds: float = 2.0,
    fps: float = 10,
    size: tuple[int, int] = (160, 120),
    audio: np.ndarray | None = None,
    sample_rate: int = SR,
) -> Path:
    """An mp4 with no face: a smooth colour gradient sliding sideways; `audio` as in `face_video`."""
    width, height = size
    n = round(seconds * fps)
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    frames = [
        (255 * np.concatenate([(x + i / n) % 1 * np.ones_like(y), y * np.ones_like(x), 0.5 + 0 * x * y], -1)).astype(
            np.uint8
        )
        for i in range(n)
    ]
    return write(path, audio, sample_rate, frames, fps, FACE_CODEC, FACE_BIT_RATE)


def corrupt_video(path, kind: str = "truncated") -> Path:
    """A file named like a video that is not one: "truncated" (the first third of a real mp4,
    without its index), "garbage" (random bytes) or "empty" (zero bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        whole = face_video(path.with_name(path.stem + "-whole.mp4"), seconds=1.0)
        data = whole.path.read_bytes()
        whole.path.unlink()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        raise ValueError(f"kind={kind!r}; expected 'truncated', 'garbage' or 'empty'")
    return path
