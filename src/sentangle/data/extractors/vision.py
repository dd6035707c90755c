"""Per-frame face features from video files, for `sentangle extract` (docs/own-data.md, face features).

Two sources:
- a face detector run on frames decoded from the video (`extract_faces(path, detector="haar")`):
  detectors are registered by name (`FACE_DETECTORS`), each a `FaceDetector` whose `detect(rgb)`
  gives face boxes, a confidence in [0, 1], optional landmarks and optional per-face values; the
  first one is OpenCV's bundled Haar cascades (no download, no model hub);
- the CSV that OpenFace 2.x FeatureExtraction writes (`read_openface_csv`, or
  `extract_faces(path, detector="openface")`), for action units, gaze, head pose and landmarks.

Both give (features (T, d) float32, mask (T,) bool, feature names, ...) with T frames sampled at
`fps`; a frame without a face has mask False and all-zero features, never a made-up value.

cv2 and av are optional dependencies (extra `sentangle[extract]`), imported where they are used.
"""

from __future__ import annotations

import csv
import functools
import importlib
import io
import math
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, TypeVar

import numpy as np
from tqdm import tqdm

from sentangle.core.errors import ConfigError, DataError
from sentangle.core.registry import Registry
from sentangle.data.readers.labelcsv import read_text_file

EXTRA = "extract"
# Times within this many seconds count as equal: frame times are rounded by the container's time base.
_EPS = 1e-6
T = TypeVar("T")


def _require(module: str, package: str) -> ModuleType:
    """`module`, or a ConfigError naming the pip package and the sentangle extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"face features need the optional package {package!r} ({e}): pip install 'sentangle[{EXTRA}]'"
        ) from None


# ---- detectors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """One face in a frame, in pixels of the frame given to `FaceDetector.detect`."""

    box: tuple[float, float, float, float]  # x, y (top left), width, height
    confidence: float  # in [0, 1]; how each detector maps its own score is in its docstring
    landmarks: np.ndarray | None = None  # (k, 2) x, y in the detector's `landmark_names` order
    extra: tuple[float, ...] = ()  # per-face values in the detector's `extra_names` order


class FaceDetector(ABC):
    """Finds faces in one RGB uint8 (H, W, 3) frame. Subclasses register with `FACE_DETECTORS`."""

    name: ClassVar[str]
    package: ClassVar[str]  # the pip package that does the work, for the spec
    landmark_names: ClassVar[tuple[str, ...]] = ()
    extra_names: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def detect(self, rgb: np.ndarray) -> list[Detection]: ...

    @abstractmethod
    def settings(self) -> dict[str, Any]: ...

    @abstractmethod
    def version(self) -> str: ...


FACE_DETECTORS: Registry[type[FaceDetector]] = Registry("face detector")


def face_detectors() -> list[str]:
    """Names `extract_faces(detector=...)` accepts: the registered detectors, and "openface"."""
    return sorted([*FACE_DETECTORS.names(), "openface"])


@dataclass(frozen=True)
class _Cascade:
    classifier: Any  # cv2.CascadeClassifier
    threshold: float  # of the last stage
    top: float  # the highest sum the last stage can give


@functools.cache
def _cascade(name: str) -> _Cascade:
    """OpenCV's bundled `haarcascade_<name>.xml`, with its last stage's threshold and top score."""
    cv2 = _cv2()
    file = Path(cv2.data.haarcascades) / f"haarcascade_{name}.xml"
    if not file.is_file() or not hasattr(cv2, "CascadeClassifier"):
        raise ConfigError(
            f"the 'haar' face detector needs OpenCV 4.x with its bundled Haar cascades; OpenCV {cv2.__version__} "
            f"has no {file.name} (OpenCV 5 dropped them): pip install 'opencv-python-headless>=4.5,<5'"
        )
    last = ET.parse(file).getroot().findall("./cascade/stages/_")[-1]
    leaves = [np.array(w.findtext("leafValues", "").split(), float) for w in last.findall("./weakClassifiers/_")]
    return _Cascade(
        cv2.CascadeClassifier(str(file)),
        float(last.findtext("stageThreshold", "nan")),
        float(sum(v.max() for v in leaves)),
    )


def _cv2() -> ModuleType:
    return _require("cv2", "opencv-python-headless")


@FACE_DETECTORS.register("haar")
class HaarDetector(FaceDetector):
    """OpenCV's Viola-Jones Haar cascades: frontal faces, then (if none) profiles facing either way.

    Confidence: `detectMultiScale3(..., outputRejectLevels=True)` gives, per face, the score of the
    cascade's last stage (its sum of weak-classifier votes, grouped over neighbouring windows by
    their maximum); a face is kept only when that score passes the stage threshold. The confidence
    is how far above the threshold it is, as a fraction of the way to the highest score that stage
    can give (read from the cascade file), clipped to [0, 1]. It ranks faces of one detector; it is
    not a probability: real faces and false faces in face-free photos can score alike (docs/own-data.md,
    face features).

    Per face (`extra_names`): eyes (0, 0.5, 1: no, one, two or more eyes found in the upper part
    of the face), smile (1 when the smile cascade fires in the lower half), profile (1 when only
    the profile cascade found it). No landmarks.
    """

    name = "haar"
    package = "opencv-python-headless"
    extra_names = ("eyes", "smile", "profile")
    FACE_WIDTH = 120  # eyes and smiles are searched in the face resized to this width: steady, bounded cost

    def __init__(
        self,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_face: float = 0.1,
        max_side: int = 480,
        profile: bool = True,
        smile_neighbors: int = 20,
    ):
        if not scale_factor > 1:
            raise ConfigError(f"haar detector: scale_factor={scale_factor}; expected a number > 1")
        if not 0 < min_face < 1:
            raise ConfigError(f"haar detector: min_face={min_face}; expected a fraction of the frame in (0, 1)")
        self.scale_factor, self.min_neighbors, self.min_face = scale_factor, min_neighbors, min_face
        self.max_side, self.profile, self.smile_neighbors = max_side, profile, smile_neighbors
        self._cv2 = _cv2()
        self._face = _cascade("frontalface_default")
        self._side = _cascade("profileface") if profile else None
        self._eye, self._smile = _cascade("eye"), _cascade("smile")

    def settings(self) -> dict[str, Any]:
        return {
            "cascades": ["frontalface_default", *(["profileface"] if self.profile else []), "eye", "smile"],
            "scale_factor": self.scale_factor,
            "min_neighbors": self.min_neighbors,
            "min_face": self.min_face,
            "max_side": self.max_side,
            "smile_neighbors": self.smile_neighbors,
        }

    def version(self) -> str:
        return str(self._cv2.__version__)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        cv2 = self._cv2
        gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        # Faces are searched in a frame shrunk to max_side (the cost grows with the pixel count),
        # eyes and smiles in the full-resolution face.
        shrink = min(1.0, self.max_side / max(gray.shape))
        small = gray if shrink == 1.0 else cv2.resize(gray, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
        small = cv2.equalizeHist(small)
        found = [(box, conf, 0.0) for box, conf in self._search(self._face, small)]
        if not found and self._side is not None:
            width = small.shape[1]
            found = [(box, conf, 1.0) for box, conf in self._search(self._side, small)]
            found += [
                ((width - x - w, y, w, h), conf, 1.0) for (x, y, w, h), conf in self._search(self._side, small[:, ::-1])
            ]
        out = []
        for box, conf, profile in found:
            x, y, w, h = (v / shrink for v in box)
            eyes, smile = self._features(gray, (x, y, w, h))
            out.append(Detection((x, y, w, h), conf, None, (eyes, smile, profile)))
        return out

    def _search(self, cascade: _Cascade, gray: np.ndarray, min_size: int | None = None, neighbors: int | None = None):
        """(box, confidence) of each object `cascade` finds in `gray`."""
        side = min_size if min_size is not None else max(1, round(self.min_face * min(gray.shape)))
        boxes, _, weights = cascade.classifier.detectMultiScale3(
            np.ascontiguousarray(gray),
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors if neighbors is None else neighbors,
            minSize=(side, side),
            outputRejectLevels=True,
        )
        span = cascade.top - cascade.threshold
        return [
            (tuple(float(v) for v in b), float(np.clip((w - cascade.threshold) / span, 0.0, 1.0)))
            for b, w in zip(boxes, np.ravel(weights))
        ]

    def _features(self, gray: np.ndarray, box: tuple[float, float, float, float]) -> tuple[float, float]:
        """(eyes, smile) found inside the face `box` of the full-resolution gray frame."""
        cv2 = self._cv2
        x, y, w, h = (round(v) for v in box)
        face = gray[max(y, 0) : y + h, max(x, 0) : x + w]
        if face.size == 0:
            return 0.0, 0.0
        face = cv2.equalizeHist(
            cv2.resize(face, (self.FACE_WIDTH, round(self.FACE_WIDTH * face.shape[0] / face.shape[1])))
        )
        rows = face.shape[0]
        eyes = self._search(self._eye, face[: round(0.6 * rows)], min_size=self.FACE_WIDTH // 8, neighbors=3)
        smiles = self._search(
            self._smile, face[rows // 2 :], min_size=self.FACE_WIDTH // 5, neighbors=self.smile_neighbors
        )
        return min(len(eyes), 2) / 2, float(bool(smiles))


# ---- sampling at a fixed rate ---------------------------------------------------------------------


def _hold(
    items: Iterable[tuple[float, T]], fps: float, start: float | None, end: float | None, tail: float
) -> Iterator[T]:
    """At each time start + k / fps before `end`: the last item whose time is not after it.

    `items` are (time in seconds, item) in time order; the last one lasts `tail` seconds. Times
    before the first item get the first item (a stream whose first frame is a little late).
    """
    step, t0, k = 1.0 / fps, start or 0.0, 0
    prev: T | None = None
    last = -math.inf

    def due(until: float) -> bool:
        s = t0 + k * step
        return s < until - _EPS and (end is None or s < end - _EPS)

    for t, item in items:
        while due(t):
            yield item if prev is None else prev
            k += 1
        if end is not None and t0 + k * step >= end - _EPS:
            return
        prev, last = item, t
    while prev is not None and due(last + tail):
        yield prev
        k += 1


def _check_times(path: Path, fps: float, start: float | None, end: float | None) -> None:
    if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"{path}: fps={fps!r}; expected frames per second > 0")
    for name, v in (("start", start), ("end", end)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise DataError(f"{path}: {name}={v!r}; expected a time in seconds >= 0")
    if start is not None and end is not None and end <= start:
        raise DataError(f"{path}: end={end} is not after start={start}; expected start < end (seconds)")


def _cut(start: float | None, end: float | None) -> str:
    return f"between start={start or 0.0} s and end={'the end' if end is None else f'{end} s'}"


def video_frames(
    path: str | Path, fps: float, start: float | None = None, end: float | None = None
) -> Iterator[np.ndarray]:
    """RGB uint8 (H, W, 3) frames of the video at `path`, one per 1 / fps seconds from `start` to `end`.

    Each sample is the frame showing at that time. The only place this module decodes video (PyAV),
    so another decoder can replace it. A missing, unreadable or video-less file is a DataError.
    """
    path = Path(path)
    _check_times(path, fps, start, end)
    av = _require("av", "av")
    if not path.is_file():
        raise DataError(f"{path}: file not found" if not path.exists() else f"{path}: not a regular file")
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise DataError(f"{path}: not a readable video file ({e})") from None
    with container:
        streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not streams:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise DataError(f"{path}: no video stream (streams found: {', '.join(kinds)}); expected a video")
        stream = streams[0]
        tail = 1.0 / float(stream.average_rate) if stream.average_rate else 1.0 / fps
        frames = 0
        try:
            if start:
                container.seek(int(start / stream.time_base), stream=stream)  # the key frame at or before start
            decoded = ((float(f.time), f) for f in container.decode(stream) if f.time is not None)
            for frame in _hold(decoded, fps, start, end, tail):
                frames += 1
                yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as e:
            raise DataError(f"{path}: video cannot be decoded after {frames} frames ({e})") from None
        if not frames:
            raise DataError(f"{path}: no video frames {_cut(start, end)}; expected a cut inside the video")


# ---- features -------------------------------------------------------------------------------------

BOX_NAMES = ("face", "x", "y", "w", "h", "x_rel", "y_rel", "scale_rel", "confidence")


def _detector(detector: str | FaceDetector) -> FaceDetector:
    return detector if isinstance(detector, FaceDetector) else FACE_DETECTORS.get(detector)()


def cache_identity(path: str | Path, detector: str) -> dict[str, Any]:
    """What decides a clip's face features besides the video, the cut and the frame rate: the
    detector's version and settings, or, for "openface", the CSV file that is read instead of the
    video (a rerun of OpenFace changes it). Extraction caches key on it (data/extract.py)."""
    if detector == "openface":
        try:
            csv_file = openface_csv_for(Path(path))
        except DataError:  # extract_faces says so; an audio file has none and needs none
            return {"openface_csv": None}
        st = csv_file.stat()
        return {"openface_csv": str(csv_file.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    det = _detector(detector)
    return {"version": det.version(), "settings": det.settings()}


def without_video(detector: str, fps: float) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, Any]]:
    """What `extract_faces` gives for a clip that has no picture (an audio file in a folder of videos):
    one padding frame (mask False) with the detector's feature names and spec, so the clip keeps its
    audio and text and its vision reads as missing, as a clip without any face does."""
    if detector == "openface":
        names = list(OPENFACE_NAMES)
        spec: dict[str, Any] = {"name": "openface", "package": "OpenFace 2.x (FeatureExtraction CSV)", "version": "2.x"}
        spec["settings"] = {"fps": fps, "min_confidence": MIN_CONFIDENCE}
    else:
        det = _detector(detector)
        names, spec = detector_feature_names(det), detector_spec(det, fps)
    return np.zeros((1, len(names)), np.float32), np.zeros(1, bool), names, spec


def detector_spec(det: FaceDetector, fps: float) -> dict[str, Any]:
    return {
        "name": det.name,
        "package": det.package,
        "version": det.version(),
        "settings": {"fps": fps, **det.settings()},
    }


def detector_feature_names(detector: FaceDetector) -> list[str]:
    return [*BOX_NAMES, *detector.extra_names, *(f"{n}_{a}" for n in detector.landmark_names for a in "xy")]


def face_row(detection: Detection, width: int, height: int, n_landmarks: int) -> np.ndarray:
    """One frame's values: box and landmarks normalised, clip-relative columns still 0."""
    x, y, w, h = detection.box
    lm = np.zeros(2 * n_landmarks)
    if n_landmarks and detection.landmarks is not None:
        # relative to the face box: (0, 0) its top left corner, (1, 1) its bottom right
        lm = ((np.asarray(detection.landmarks, float) - (x, y)) / (w, h)).ravel()
    return np.concatenate(
        [
            [1.0, (x + w / 2) / width, (y + h / 2) / height, w / width, h / height, 0.0, 0.0, 0.0],
            [detection.confidence],
            detection.extra,
            lm,
        ]
    )


def relative_to_clip(features: np.ndarray, mask: np.ndarray) -> None:
    """Fill x_rel, y_rel (centre minus the clip's median centre, in median face widths / heights)
    and scale_rel (log of the width over the clip's median width) on the frames with a face."""
    if not mask.any():
        return
    x, y, w, h = (features[mask, BOX_NAMES.index(n)] for n in "xywh")
    mx, my, mw, mh = (float(np.median(v)) for v in (x, y, w, h))
    features[mask, 5] = (x - mx) / mw
    features[mask, 6] = (y - my) / mh
    features[mask, 7] = np.log(w / mw)


def extract_faces(
    path: str | Path,
    fps: float = 5.0,
    start: float | None = None,
    end: float | None = None,
    detector: str | FaceDetector = "haar",
    openface_csv: str | Path | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, Any]]:
    """(features (T, d) float32, mask (T,) bool, feature names, spec) of the face in the video at `path`.

    T frames sampled at `fps` from `start` to `end` (seconds; None: the start / end of the video).
    With a registered detector (`face_detectors()`), the largest face of each frame gives
    `detector_feature_names(detector)`: face (1), x, y (box centre / frame width, height), w, h
    (box size / frame width, height), x_rel, y_rel, scale_rel (relative to this clip: see
    `relative_to_clip`), confidence, the detector's own values and landmarks relative to the box.
    With detector="openface" the features are read from OpenFace's CSV for this video
    (`openface_csv`, by default `<video stem>.csv` beside it or in `processed/` beside it) and
    sampled at `fps` the same way (`read_openface_csv`); the video itself is not opened.
    Frames without a face: mask False, features 0. spec: {name, package, version, settings}.
    """
    path = Path(path)
    _check_times(path, fps, start, end)
    if detector == "openface":
        return _openface_faces(path, fps, start, end, openface_csv)
    if openface_csv is not None:
        raise ConfigError(
            f"{path}: openface_csv is given but detector={detector!r}; it is read only with detector='openface'"
        )
    det = _detector(detector)
    names = detector_feature_names(det)
    rows: list[np.ndarray] = []
    frames: Iterable[np.ndarray] = video_frames(path, fps, start, end)
    if progress:
        frames = tqdm(frames, desc=f"faces {path.name}", unit="frame")
    for rgb in frames:
        faces = det.detect(rgb)
        if faces:
            largest = max(faces, key=lambda d: d.box[2] * d.box[3])
            rows.append(face_row(largest, rgb.shape[1], rgb.shape[0], len(det.landmark_names)))
        else:
            rows.append(np.zeros(len(names)))
    features = np.stack(rows).astype(np.float64)
    mask = features[:, 0] == 1.0
    relative_to_clip(features, mask)
    return features.astype(np.float32), mask, names, detector_spec(det, fps)


# ---- OpenFace 2.x CSV -----------------------------------------------------------------------------

AU_INTENSITY = tuple(f"AU{n:02d}_r" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45))
AU_PRESENCE = tuple(f"AU{n:02d}_c" for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 28, 45))
GAZE = (*(f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"), "gaze_angle_x", "gaze_angle_y")
POSE = ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz")
LANDMARKS = 68
OPENFACE_COLUMNS = (
    "timestamp",
    "confidence",
    "success",
    *AU_INTENSITY,
    *AU_PRESENCE,
    *GAZE,
    *POSE,
    *(f"{a}_{i}" for a in "xy" for i in range(LANDMARKS)),
)
OPENFACE_NAMES = [*AU_INTENSITY, *AU_PRESENCE, *GAZE, *POSE, *(f"lm{i}_{a}" for i in range(LANDMARKS) for a in "xy")]
MIN_CONFIDENCE = 0.8


def _openface_table(path: Path) -> tuple[list[str], np.ndarray]:
    """Column names (stripped of OpenFace's leading spaces) and the values as float64 rows."""
    lines = list(csv.reader(io.StringIO(read_text_file(path))))
    if not lines:
        raise DataError(f"{path}: empty file; expected an OpenFace FeatureExtraction CSV with a header row")
    header = [h.strip() for h in lines[0]]
    missing = [c for c in OPENFACE_COLUMNS if c not in header]
    if missing:
        shown = ", ".join(missing[:12]) + (f" ... ({len(missing)} in all)" if len(missing) > 12 else "")
        raise DataError(f"{path}: missing OpenFace column(s) {shown}; expected OpenFace 2.x FeatureExtraction output")
    values = np.empty((len(lines) - 1, len(header)))
    for i, line in enumerate(lines[1:]):
        if len(line) != len(header):
            raise DataError(f"{path}: line {i + 2}: {len(line)} values; expected {len(header)} as in the header")
        try:
            values[i] = [float(v) for v in line]
        except ValueError:
            bad = next(j for j, v in enumerate(line) if not _is_number(v))
            raise DataError(f"{path}: line {i + 2}, column {header[bad]!r}: {line[bad]!r} is not a number") from None
    return header, values


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def read_openface_csv(
    path: str | Path, min_confidence: float = MIN_CONFIDENCE
) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    """(features (T, 171) float32, mask (T,) bool, feature names, fps) of an OpenFace 2.x CSV.

    Kept: the 17 action-unit intensities (AU*_r, 0 to 5), the 18 presences (AU*_c, 0 or 1), gaze
    (two eye vectors and two angles in radians), head pose (pose_T* in mm, pose_R* in radians) as
    OpenFace writes them, and the 68 2D landmarks relative to their own bounding box (lm<i>_x =
    (x_i - min x) / (max x - min x), same for y: 0 to 1, free of where the face is and how big).
    mask = success == 1 and confidence >= min_confidence; other rows are all 0. With several faces
    in a frame (FaceLandmarkVidMulti) the most confident one is kept. fps = frames per second of
    the timestamps ((T - 1) / (last - first)).
    """
    features, mask, names, fps, _ = _read_openface(Path(path), min_confidence)
    return features, mask, names, fps


def _read_openface(path: Path, min_confidence: float) -> tuple[np.ndarray, np.ndarray, list[str], float, np.ndarray]:
    """`read_openface_csv`, and the timestamps (T,) of its frames."""
    header, values = _openface_table(path)
    col = {name: i for i, name in enumerate(header)}
    if "frame" in col:  # one row per frame: the most confident face
        order = np.lexsort((-values[:, col["confidence"]], values[:, col["frame"]]))
        values = values[order]
        values = values[np.unique(values[:, col["frame"]], return_index=True)[1]]
    times = values[:, col["timestamp"]]
    if len(times) < 2:
        raise DataError(f"{path}: {len(times)} frame(s); expected at least 2 to know the frame rate")
    if not (np.diff(times) > 0).all():
        raise DataError(f"{path}: column 'timestamp' does not increase from frame to frame; expected frame times")
    fps = (len(times) - 1) / float(times[-1] - times[0])
    mask = (values[:, col["success"]] == 1) & (values[:, col["confidence"]] >= min_confidence)
    keep = values[:, [col[c] for c in (*AU_INTENSITY, *AU_PRESENCE, *GAZE, *POSE)]]
    xs = values[:, [col[f"x_{i}"] for i in range(LANDMARKS)]]
    ys = values[:, [col[f"y_{i}"] for i in range(LANDMARKS)]]
    features = np.zeros((len(values), len(OPENFACE_NAMES)))
    features[:, : keep.shape[1]] = keep
    with np.errstate(divide="ignore", invalid="ignore"):  # failed frames have all-zero landmarks
        for j, v in enumerate((xs, ys)):
            low, high = v.min(1, keepdims=True), v.max(1, keepdims=True)
            features[:, keep.shape[1] + j :: 2] = (v - low) / (high - low)
    features[~mask] = 0.0
    if not np.isfinite(features).all():
        bad = np.flatnonzero(~np.isfinite(features).all(1))[0]
        raise DataError(f"{path}: frame at {times[bad]} s has non-finite values or landmarks of zero extent")
    return features.astype(np.float32), mask, list(OPENFACE_NAMES), fps, times


def openface_csv_for(video: Path) -> Path:
    """Where OpenFace's FeatureExtraction puts the CSV of `video`: <stem>.csv beside it or in processed/."""
    for candidate in (video.with_suffix(".csv"), video.parent / "processed" / f"{video.stem}.csv"):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{video}: no OpenFace CSV found (looked for {video.stem}.csv beside it and in processed/); "
        "run OpenFace FeatureExtraction on it or pass openface_csv"
    )


def _openface_faces(
    video: Path, fps: float, start: float | None, end: float | None, csv_path: str | Path | None
) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, Any]]:
    file = Path(csv_path) if csv_path is not None else openface_csv_for(video)
    features, mask, names, source_fps, times = _read_openface(file, MIN_CONFIDENCE)
    index = np.fromiter(_hold(((float(t), i) for i, t in enumerate(times)), fps, start, end, 1.0 / source_fps), int)
    if not len(index):
        raise DataError(f"{file}: no frames {_cut(start, end)}; the CSV ends at {times[-1]} s")
    spec = {
        "name": "openface",
        "package": "OpenFace 2.x (FeatureExtraction CSV)",
        "version": "2.x",
        "settings": {"fps": fps, "min_confidence": MIN_CONFIDENCE, "source_fps": round(source_fps, 6)},
    }
    return features[index], mask[index], names, spec
