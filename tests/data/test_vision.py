"""Face features from video (data/extractors/vision.py), checked against what the test videos are
made of: the face's true position in every frame (tests/media.py builds it by a known warp of the
astronaut photo), the generated frames themselves, and OpenFace CSVs with hand-written values.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from sentangle.core.errors import ConfigError, DataError, UnknownNameError, UserError
from sentangle.data.extractors import vision
from sentangle.data.extractors.vision import (
    FACE_DETECTORS,
    Detection,
    FaceDetector,
    HaarDetector,
    _hold,
    extract_faces,
    read_openface_csv,
    video_frames,
)


@pytest.fixture(scope="module")
def face(media, tmp_path_factory):
    """2 s at 10 fps, 160 x 120: the astronaut moving right and down and coming closer."""
    return media.face_video(tmp_path_factory.mktemp("video") / "face.mp4", seconds=2.0, fps=10)


class FixedDetector(FaceDetector):
    """Always the same two faces (the larger one second), with two landmarks and one value."""

    name, package = "fixed", "none"
    landmark_names = ("left", "right")
    extra_names = ("score",)

    def detect(self, rgb):
        small = Detection((0, 0, 4, 4), 0.9)
        big = Detection((40, 30, 20, 10), 0.5, np.array([[45, 32], [55, 38]]), (0.7,))
        return [small, big]

    def settings(self):
        return {}

    def version(self):
        return "1"


# ---- the detector ---------------------------------------------------------------------------------


def test_haar_finds_the_astronaut_and_nothing_in_a_blank_frame(media):
    from skimage import data

    faces = HaarDetector().detect(data.astronaut())
    largest = max(faces, key=lambda d: d.box[2] * d.box[3])
    x, y, w, h = largest.box
    # the face centre and width read off the photo by hand (media.FACE_CENTRE, FACE_WIDTH)
    assert abs(x + w / 2 - 225) < 10 and abs(y + h / 2 - 115) < 10
    assert abs(w - 93) < 0.15 * 93
    assert 0 < largest.confidence <= 1
    assert largest.extra == (1.0, 1.0, 0.0)  # both eyes, the smile, a frontal face
    assert HaarDetector().detect(np.full((120, 160, 3), 128, np.uint8)) == []


def test_haar_confidence_is_the_last_stage_margin_over_its_range(media):
    import cv2
    from skimage import data

    cascade = vision._cascade("frontalface_default")
    # read by hand from haarcascade_frontalface_default.xml: the last stage's stageThreshold, and
    # the sum over its stumps of the larger leaf value
    threshold, top = -2.9928278923034668, 72.207
    assert cascade.threshold == threshold and cascade.top == pytest.approx(top, abs=1e-3)
    photo = data.astronaut()  # 512 x 512: searched unshrunk with max_side=512
    gray = cv2.equalizeHist(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY))
    _, _, weights = cascade.classifier.detectMultiScale3(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(51, 51), outputRejectLevels=True
    )
    (face,) = HaarDetector(max_side=512).detect(photo)
    assert face.confidence == pytest.approx((float(np.ravel(weights)[0]) - threshold) / (top - threshold), rel=1e-4)


def test_unknown_detector_and_missing_packages_are_user_errors(monkeypatch, tmp_path):
    with pytest.raises(UnknownNameError, match="unknown face detector 'hair'.*'haar'"):
        extract_faces(tmp_path / "x.mp4", detector="hair")
    extra = "pip install 'sentangle\\[extract\\]'"
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "cv2", None)  # the import fails as if it were not installed
        with pytest.raises(ConfigError, match=f"'opencv-python-headless'.*{extra}"):
            HaarDetector()
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "av", None)
        with pytest.raises(ConfigError, match=f"'av'.*{extra}"):
            list(video_frames(tmp_path / "x.mp4", 5))


def test_registry_gives_the_detector_by_name():
    assert FACE_DETECTORS.get("haar") is HaarDetector
    assert "openface" in vision.face_detectors() and "haar" in vision.face_detectors()


# ---- sampling -------------------------------------------------------------------------------------


def test_hold_takes_the_frame_showing_at_each_sample_time():
    items = [(0.0, "a"), (0.1, "b"), (0.2, "c")]  # 10 fps, the last lasting 0.1 s
    assert list(_hold(items, 4, None, None, 0.1)) == ["a", "c"]  # at 0 and 0.25; 0.5 is past the end
    assert list(_hold(items, 20, None, None, 0.1)) == ["a", "a", "b", "b", "c", "c"]
    assert list(_hold(items, 20, 0.05, 0.15, 0.1)) == ["a", "b"]
    assert list(_hold([(0.04, "late")], 50, None, None, 0.04)) == ["late"] * 4  # before the first frame: the first


@pytest.mark.parametrize(
    ("fps", "start", "end", "expected"),
    [(5, None, None, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]), (4, 0.5, 1.5, [5, 7, 10, 12])],
)
def test_video_frames_are_the_frames_showing_at_the_sample_times(face, media, fps, start, end, expected):
    truth, _, _ = media.face_frames(20, face.size)
    frames = list(video_frames(face.path, fps, start, end))
    # which generated frame each decoded one is: the nearest in mean squared difference
    nearest = [int(np.argmin([np.mean((f.astype(float) - t) ** 2) for t in truth])) for f in frames]
    assert nearest == expected
    assert frames[0].shape == (120, 160, 3) and frames[0].dtype == np.uint8


@pytest.mark.parametrize(("fps", "count"), [(5, 10), (10, 20), (4, 8), (2.5, 5)])
def test_frame_count_is_seconds_times_fps(face, fps, count):
    features, mask, names, _ = extract_faces(face.path, fps=fps, detector=FixedDetector())
    assert features.shape == (count, len(names)) and mask.shape == (count,)


def test_largest_face_with_its_box_and_landmarks_normalised(face):
    features, mask, names, spec = extract_faces(face.path, fps=5, start=0.4, end=1.0, detector=FixedDetector())
    assert mask.tolist() == [True, True, True]
    assert names == [*vision.BOX_NAMES, "score", "left_x", "left_y", "right_x", "right_y"]
    # box (40, 30, 20, 10) in a 160 x 120 frame; landmarks (45, 32), (55, 38) relative to it
    row = [1, 50 / 160, 35 / 120, 20 / 160, 10 / 120, 0, 0, 0, 0.5, 0.7, 0.25, 0.2, 0.75, 0.8]
    np.testing.assert_allclose(features, np.tile(row, (3, 1)), rtol=1e-6)
    assert features.dtype == np.float32
    assert spec == {"name": "fixed", "package": "none", "version": "1", "settings": {"fps": 5}}


def test_clip_relative_position_and_scale():
    features = np.zeros((4, len(vision.BOX_NAMES)))
    features[:, 0] = [1, 1, 0, 1]
    features[:, 1] = [0.2, 0.4, 0, 0.3]  # x: median of the face frames 0.3
    features[:, 2] = [0.5, 0.5, 0, 0.8]  # y: median 0.5
    features[:, 3] = [0.1, 0.2, 0, 0.1]  # w: median 0.1
    features[:, 4] = [0.1, 0.1, 0, 0.3]  # h: median 0.1
    vision.relative_to_clip(features, features[:, 0] == 1)
    np.testing.assert_allclose(features[:, 5], [-1, 1, 0, 0])
    np.testing.assert_allclose(features[:, 6], [0, 0, 0, 3])
    np.testing.assert_allclose(features[:, 7], [0, np.log(2), 0, 0])


# ---- the Haar features of the test videos ---------------------------------------------------------


def test_face_box_follows_the_generated_motion(face):
    features, mask, names, spec = extract_faces(face.path, fps=5)
    assert len(mask) == 10 and mask.sum() >= 9
    col = {n: i for i, n in enumerate(names)}
    centres, widths = face.at(np.arange(10) / 5)
    found = features[mask]
    # within a twentieth of the frame of the true centre, and moving with it
    assert np.abs(found[:, [col["x"], col["y"]]] - centres[mask]).max() < 0.05
    assert np.corrcoef(found[:, col["x"]], centres[mask, 0])[0, 1] > 0.95
    assert np.corrcoef(found[:, col["w"]], widths[mask])[0, 1] > 0.8
    assert found[-1, col["x_rel"]] > 0 > found[0, col["x_rel"]] and found[-1, col["scale_rel"]] > 0
    assert ((found[:, col["confidence"]] > 0) & (found[:, col["confidence"]] <= 1)).all()
    assert (features[~mask] == 0).all()
    assert spec["name"] == "haar" and spec["package"] == "opencv-python-headless" and spec["settings"]["fps"] == 5


def test_blank_video_has_no_face(media, tmp_path):
    features, mask, _, _ = extract_faces(media.blank_video(tmp_path / "blank.mp4"), fps=5)
    assert mask.shape == (10,) and not mask.any() and not features.any()


def test_face_video_with_audio_keeps_its_frames(media, tmp_path):
    import av

    clip = media.face_video(tmp_path / "talk.mp4", seconds=1.0, fps=10, audio=np.zeros(16000, np.float32))
    with av.open(str(clip.path)) as c:
        assert sorted(s.type for s in c.streams) == ["audio", "video"]
    assert len(list(video_frames(clip.path, 10))) == 10


# ---- bad files and cuts ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_corrupt_file_is_a_data_error_naming_it(media, tmp_path, kind):
    bad = media.corrupt_video(tmp_path / f"{kind}.mp4", kind)
    with pytest.raises(DataError, match=f"{kind}.mp4: not a readable video file"):
        extract_faces(bad)


def test_missing_and_video_less_files(media, tmp_path):
    with pytest.raises(DataError, match="nothere.mp4: file not found"):
        extract_faces(tmp_path / "nothere.mp4", detector=FixedDetector())
    wav = media.audio_only(tmp_path / "voice.wav")
    with pytest.raises(DataError, match=r"voice.wav: no video stream \(streams found: audio\)"):
        extract_faces(wav, detector=FixedDetector())


def test_bad_cuts(face):
    with pytest.raises(DataError, match="end=1.0 is not after start=1.5"):
        extract_faces(face.path, start=1.5, end=1.0, detector=FixedDetector())
    with pytest.raises(DataError, match="no video frames between start=5.0 s"):
        extract_faces(face.path, start=5.0, detector=FixedDetector())
    with pytest.raises(ConfigError, match="fps=0"):
        extract_faces(face.path, fps=0, detector=FixedDetector())


# ---- OpenFace CSV ---------------------------------------------------------------------------------

COLUMNS = ["frame", "face_id", "timestamp", "confidence", "success", *vision.GAZE, "eye_lmk_x_0"]
COLUMNS += [*vision.POSE, *(f"{a}_{i}" for a in "xy" for i in range(68))]
COLUMNS += [*vision.AU_INTENSITY, *vision.AU_PRESENCE]


def openface_csv(path, rows, drop=()):
    """A CSV laid out as OpenFace 2.x FeatureExtraction writes it: ', ' between names."""
    names = [c for c in COLUMNS if c not in drop]
    lines = [", ".join(names)] + [", ".join(str(r.get(c, 0)) for c in names) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def openface_row(frame, t, conf, success, level):
    row = {"frame": frame, "face_id": 0, "timestamp": t, "confidence": conf, "success": success}
    row |= {f"x_{i}": 100 + i * level for i in range(68)} | {f"y_{i}": 200 + 2 * i for i in range(68)}
    row |= {"AU12_r": level, "AU12_c": 1, "gaze_angle_x": 0.25, "pose_Tz": 500.0, "pose_Ry": -0.1}
    return row


@pytest.fixture
def openface(tmp_path):
    rows = [
        openface_row(1, 0.0, 0.98, 1, 1.5),
        openface_row(2, 0.033, 0.97, 1, 2.0),
        openface_row(2, 0.033, 0.40, 1, 9.0),  # a second, less certain face in frame 2: dropped
        openface_row(3, 0.067, 0.0, 0, 0.0),  # OpenFace lost the face
        openface_row(4, 0.1, 0.5, 1, 1.0),  # found, but below the confidence threshold
    ]
    return openface_csv(tmp_path / "talk.csv", rows)


def test_openface_csv_values_mask_and_fps(openface):
    features, mask, names, fps = read_openface_csv(openface)
    assert mask.tolist() == [True, True, False, False]
    assert fps == pytest.approx(3 / 0.1)
    assert len(names) == features.shape[1] == 17 + 18 + 8 + 6 + 136
    expected = np.zeros((4, len(names)))
    for r, level in ((0, 1.5), (1, 2.0)):
        expected[r, names.index("AU12_r")] = level
        expected[r, names.index("AU12_c")] = 1
        expected[r, names.index("gaze_angle_x")] = 0.25
        expected[r, names.index("pose_Tz")] = 500
        expected[r, names.index("pose_Ry")] = -0.1
        # x_i = 100 + i * level and y_i = 200 + 2 i span their box evenly: both i / 67
        expected[r, names.index("lm0_x") :: 2] = np.arange(68) / 67
        expected[r, names.index("lm0_y") :: 2] = np.arange(68) / 67
    np.testing.assert_allclose(features, expected, atol=1e-7)
    assert features.dtype == np.float32


def test_openface_missing_columns_are_named(tmp_path):
    bad = openface_csv(tmp_path / "bad.csv", [openface_row(1, 0, 1, 1, 1)], drop=("AU45_c", "pose_Rz"))
    with pytest.raises(DataError, match=r"bad.csv: missing OpenFace column\(s\) AU45_c, pose_Rz") as e:
        read_openface_csv(bad)
    assert isinstance(e.value, UserError)


def test_openface_through_extract_faces(openface):
    # the CSV found beside the video by name; sampled at 10 fps: the frames at 0 s and 0.1 s
    features, mask, names, spec = extract_faces(openface.with_suffix(".mp4"), fps=10, detector="openface")
    full, full_mask, _, _ = read_openface_csv(openface)
    np.testing.assert_array_equal(features, full[[0, 3]])
    assert mask.tolist() == [True, False] and spec["name"] == "openface"
    assert spec["settings"] == {"fps": 10, "min_confidence": 0.8, "source_fps": 30.0}
    with pytest.raises(DataError, match="no OpenFace CSV found"):
        extract_faces(openface.with_name("other.mp4"), detector="openface")
