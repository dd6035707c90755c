"""Small video files with a known face, for the vision tests (tests/data/conftest.py hands this
module to tests as the `fake_media` fixture, whatever pytest's import mode).

The face is scikit-image's bundled astronaut photograph (public domain, NASA; no download),
moved and scaled by an affine warp, so where the face is in every frame is known exactly from
the warp: its centre in the 512 x 512 photo was read off the image by hand (between the eyes and
the chin, the eyes at y ~ 100 and the mouth at y ~ 145) and its width measured as the span from
ear to ear, not taken from any detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# In the 512 x 512 astronaut photo, by hand: face centre (x, y) and width, in pixels.
FACE_CENTRE = (225.0, 115.0)
FACE_WIDTH = 93.0
# Over the clip the face centre moves from START to END (fractions of the frame width, height)
# and its width grows from WIDTHS[0] to WIDTHS[1] (fractions of the frame height).
START, END = (0.35, 0.45), (0.65, 0.55)
WIDTHS = (0.40, 0.50)


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


def _codec() -> str:
    import av

    # mpeg4 is FFmpeg's own (LGPL) encoder; libx264 only if a build lacks it
    return next(c for c in ("mpeg4", "libx264") if c in av.codecs_available)


def _write(path, frames: list[np.ndarray], fps: float, audio: np.ndarray | None, sample_rate: int) -> Path:
    import av

    path = Path(path)
    with av.open(str(path), "w") as out:
        video = out.add_stream(_codec(), rate=round(fps))
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        video.bit_rate = 4_000_000  # sharp frames: the tests are about the detector, not the codec
        packets = []
        if audio is not None:
            sound = out.add_stream("aac", rate=sample_rate, layout="mono")
            frame = av.AudioFrame.from_ndarray(np.asarray(audio, np.float32)[None], format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            packets += [*sound.encode(frame), *sound.encode(None)]
        for f in frames:
            packets += video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24"))
        packets += video.encode(None)
        for p in packets:
            out.mux(p)
    return path


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
    sample_rate: int = 16000,
) -> FakeVideo:
    """An mp4 of round(seconds * fps) frames of the moving astronaut (`face_frames`), with `audio`
    (a float array in [-1, 1] at `sample_rate`) as a mono AAC track when given."""
    frames, centres, widths = face_frames(round(seconds * fps), size)
    return FakeVideo(_write(path, frames, fps, audio, sample_rate), fps, size, centres, widths)


def blank_video(path, seconds: float = 2.0, fps: float = 10, size: tuple[int, int] = (160, 120)) -> Path:
    """An mp4 with no face: a smooth colour gradient sliding sideways."""
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
    return _write(path, frames, fps, None, 16000)


def corrupt_video(path, kind: str = "truncated") -> Path:
    """A file named like a video that is not one: "truncated" (the first third of a real mp4,
    without its index) or "garbage" (random bytes)."""
    path = Path(path)
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        whole = face_video(path.with_name(path.stem + "-whole.mp4"), seconds=1.0).path.read_bytes()
        path.write_bytes(whole[: len(whole) // 3])
    else:
        raise ValueError(f"kind={kind!r}; expected 'truncated' or 'garbage'")
    return path


def audio_only(path, seconds: float = 1.0, sample_rate: int = 16000) -> Path:
    """A wav file: a valid media file without a video stream."""
    import av

    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(round(seconds * sample_rate)) / sample_rate)).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray((tone * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for p in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(p)
    return Path(path)
