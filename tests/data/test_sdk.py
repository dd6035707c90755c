"""CMU-Multimodal-SDK computational sequences: tiny .csd files in the SDK layout, then the real MOSI labels."""

from __future__ import annotations

import csv
import warnings
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest

from sentangle.core.errors import DataError
from sentangle.data.readers.sdk import read_csd, read_sdk_dataset

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
MOSI_CSD = SHARED / "mosi" / "CMU_MOSI_Opinion_Labels.csd"
MOSI_CSV = SHARED / "mosi" / "label.csv"


def write_csd(path: Path, videos: dict[str, tuple], root: str = "Opinion Segment Labels") -> Path:
    """A computational sequence as the SDK writes it: root/data/<video>/{features,intervals} + root/metadata."""
    with h5py.File(path, "w") as f:
        g = f.create_group(root)
        data = g.create_group("data")
        for vid, (feats, intervals) in videos.items():
            v = data.create_group(vid)
            v.create_dataset("features", data=np.asarray(feats))
            v.create_dataset("intervals", data=np.asarray(intervals))
        meta = g.create_group("metadata")
        meta.create_dataset("root name", data=[root.encode()])
        meta.create_dataset("dimension names", data=[b'["x"]'])
    return path


def frames(start: float, stop: float, step: float, dim: int, offset: float = 0.0):
    """Back-to-back frames of length `step`; feature column 0 holds the frame's start time."""
    starts = np.arange(start, stop, step)
    feats = np.tile(starts[:, None], (1, dim)).astype(np.float32) + offset
    return feats, np.stack([starts, starts + step], axis=1)


@pytest.fixture
def tiny(tmp_path):
    labels = write_csd(
        tmp_path / "labels.csd",
        {
            "vidA": (np.array([[1.5], [-2.0], [0.0]], np.float32), np.array([[0.0, 1.0], [1.0, 2.5], [5.0, 6.0]])),
            "vidB": (np.array([[3.0]], np.float32), np.array([[0.2, 0.9]])),
            "vidC": (np.array([[-0.5]], np.float32), np.array([[0.0, 1.0]])),
        },
    )
    audio = write_csd(
        tmp_path / "covarep.csd",
        {"vidA": frames(0, 4, 0.5, 2), "vidB": frames(0, 1, 0.25, 2), "vidC": frames(0, 1, 0.5, 2)},
        root="COVAREP",
    )
    fa, ia = frames(0, 3, 1.0, 3)
    vision = write_csd(tmp_path / "facet.csd", {"vidA": (fa[::-1], ia[::-1])}, root="FACET")  # stored out of order
    folds = {"train": ["vidA"], "valid": ["vidB"], "test": ["vidC"]}
    return labels, {"audio": audio, "vision": vision}, folds


def test_read_csd(tiny):
    labels, feats, _ = tiny
    seq = read_csd(feats["audio"])
    assert sorted(seq) == ["vidA", "vidB", "vidC"]
    f, iv = seq["vidA"]
    assert f.dtype == np.float32 and iv.dtype == np.float64 and f.shape == (8, 2) and iv.shape == (8, 2)
    assert read_csd(labels)["vidA"][0][:, 0].tolist() == [1.5, -2.0, 0.0]


def test_segments_cut_by_overlap(tiny):
    labels, feats, folds = tiny
    with pytest.warns(UserWarning, match="no vision sequence"):
        ds = read_sdk_dataset(labels, feats, folds, name="tiny")
    tr = ds.splits["train"]
    assert tr.ids == ["vidA[0]", "vidA[1]", "vidA[2]"] and tr.labels.tolist() == [1.5, -2.0, 0.0]
    # audio frames start every 0.5 s; column 0 is the frame start
    a = tr.features["audio"][:, :, 0]
    assert tr.masks["audio"].sum(1).tolist() == [2, 3, 0]  # frames touching a boundary are out
    assert a[0, :2].tolist() == [0.0, 0.5] and a[1, :3].tolist() == [1.0, 1.5, 2.0]
    assert not tr.masks["audio"][2].any() and (tr.features["audio"][2] == 0).all()
    # vision frames [0,1), [1,2), [2,3) stored backwards come out in time order
    assert tr.masks["vision"].sum(1).tolist() == [1, 2, 0]
    assert tr.features["vision"][1, :2, 0].tolist() == [1.0, 2.0]
    # a segment inside frames: every 0.25 s frame that reaches into (0.2, 0.9) counts, partial ones too
    assert ds.splits["valid"].masks["audio"].sum() == 4
    assert ds.splits["valid"].features["audio"][0, :, 0].tolist() == [0.0, 0.25, 0.5, 0.75]
    # padded to the longest segment over all splits
    assert tr.features["audio"].shape == (3, 4, 2) and ds.splits["test"].features["audio"].shape[1] == 4
    assert ds.info["segments_without_frames"]["audio"] == {"train": 1, "valid": 0, "test": 0}
    assert ds.info["segments_without_frames"]["vision"] == {"train": 1, "valid": 1, "test": 1}
    assert ds.info["padded_length"] == {"audio": 4, "vision": 2}


def test_max_len_truncates(tiny):
    labels, feats, folds = tiny
    ds = read_sdk_dataset(labels, {"audio": feats["audio"]}, folds, max_len={"audio": 2})
    tr = ds.splits["train"]
    assert tr.features["audio"].shape == (3, 2, 2) and tr.masks["audio"].sum(1).tolist() == [2, 2, 0]
    assert tr.features["audio"][1, :, 0].tolist() == [1.0, 1.5]  # the first frames are kept
    assert ds.info["truncated_segments"]["audio"] == 2  # vidA[1] (3 frames) and vidB[0] (4 frames)


def test_neg_inf_audio_replaced(tmp_path, tiny):
    labels, _, folds = tiny
    fa, ia = frames(0, 4, 0.5, 2)
    fa[1, 0] = -np.inf
    audio = write_csd(
        tmp_path / "a.csd", {"vidA": (fa, ia), "vidB": frames(0, 1, 0.5, 2), "vidC": frames(0, 1, 0.5, 2)}
    )
    with pytest.warns(UserWarning, match="replaced 1 -inf"):
        ds = read_sdk_dataset(labels, {"audio": audio}, folds)
    assert ds.info["replaced_neg_inf"] == {"audio": 1}
    assert ds.splits["train"].features["audio"][0, 1, 0] == 0.0
    with pytest.raises(DataError, match=r"a\.csd.*'vidA'.*'features'.*NaN/inf"):
        read_sdk_dataset(labels, {"vision": audio}, folds)  # -inf is only tolerated in audio
    with pytest.raises(DataError, match=r"a\.csd.*'vidA'.*'features'"):
        read_csd(audio)


@pytest.mark.parametrize(
    "videos,root,expected",
    [
        ({"v": (np.zeros((2, 1)), np.zeros((3, 2)))}, "X", ["'v'", "'intervals'", "(3, 2)"]),
        ({"v": (np.array([[np.nan], [0.0]]), [[0, 1], [1, 2]])}, "X", ["'v'", "'features'", "NaN"]),
        ({"v": (np.zeros(2), [[0, 1], [1, 2]])}, "X", ["'v'", "'features'", "(n, d)"]),
        ({"v": (np.zeros((1, 1)), [[2.0, 1.0]])}, "X", ["'v'", "'intervals'", "end < start"]),
        ({"v": (np.zeros((1, 1)), [[0, 1]]), "w": (np.zeros((1, 2)), [[0, 1]])}, "X", ["'w'", "2 columns"]),
        ({"v": (np.array([[b"word"]]), [[0, 1]])}, "X", ["'v'", "'features'", "numbers"]),
    ],
)
def test_read_csd_bad(tmp_path, videos, root, expected):
    path = write_csd(tmp_path / "bad.csd", videos, root=root)
    with pytest.raises(DataError) as e:
        read_csd(path)
    msg = str(e.value)
    assert str(path) in msg
    for part in expected:
        assert part in msg


def test_read_csd_bad_layout(tmp_path):
    no_data = tmp_path / "nodata.csd"
    with h5py.File(no_data, "w") as f:
        f.create_group("COVAREP").create_group("metadata")
    with pytest.raises(DataError, match=r"nodata\.csd.*'data'"):
        read_csd(no_data)
    two_roots = tmp_path / "two.csd"
    with h5py.File(two_roots, "w") as f:
        f.create_group("A")
        f.create_group("B")
    with pytest.raises(DataError, match=r"two\.csd.*exactly one"):
        read_csd(two_roots)
    missing_field = tmp_path / "nofeat.csd"
    with h5py.File(missing_field, "w") as f:
        f.create_group("A/data/vid1").create_dataset("intervals", data=np.zeros((1, 2)))
    with pytest.raises(DataError, match=r"nofeat\.csd.*'vid1'.*'features'"):
        read_csd(missing_field)
    not_hdf5 = tmp_path / "text.csd"
    not_hdf5.write_text("hello")
    with pytest.raises(DataError, match=r"text\.csd.*HDF5"):
        read_csd(not_hdf5)


def test_fold_errors(tiny):
    labels, feats, folds = tiny
    with pytest.raises(DataError, match=r"labels\.csd.*'vidZ'.*'test'"):
        read_sdk_dataset(labels, feats, {**folds, "test": ["vidZ"]})
    with pytest.raises(DataError, match=r"'vidA'.*both"):
        read_sdk_dataset(labels, feats, {**folds, "test": ["vidA"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=r"labels\.csd.*'test' is empty"):
            read_sdk_dataset(labels, feats, {**folds, "test": []})


# ---- the real CMU-MOSI label file ------------------------------------------------------------
def real_files():
    if not (MOSI_CSD.is_file() and MOSI_CSV.is_file()):
        pytest.skip(f"real MOSI files not available under {SHARED} (../shared/data relative to the project root)")
    with MOSI_CSV.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return rows


def test_real_mosi_label_file_matches_label_csv():
    rows = real_files()
    seq = read_csd(MOSI_CSD)
    assert len(seq) == 93 and sum(len(f) for f, _ in seq.values()) == 2199
    # label.csv's clip_id is 1-based: clip k is row k - 1 of the video's sequence.
    one_based = [abs(seq[r["video_id"]][0][int(r["clip_id"]) - 1, 0] - float(r["label"])) < 1e-4 for r in rows]
    assert all(one_based)
    zero_based = [
        int(r["clip_id"]) < len(seq[r["video_id"]][0])
        and abs(seq[r["video_id"]][0][int(r["clip_id"]), 0] - float(r["label"])) < 1e-4
        for r in rows
    ]
    assert sum(zero_based) < len(rows) // 2
    starts = [abs(seq[r["video_id"]][1][int(r["clip_id"]) - 1, 0] - float(r["start"])) < 1e-3 for r in rows]
    assert all(starts)


def test_real_mosi_standard_folds(tmp_path):
    rows = real_files()
    folds = defaultdict(list)
    for r in rows:
        if r["video_id"] not in folds[r["mode"]]:
            folds[r["mode"]].append(r["video_id"])
    # A feature sequence of 0.1 s frames over each real video, so segment cutting runs on real intervals.
    seq = read_csd(MOSI_CSD)
    audio = write_csd(
        tmp_path / "audio.csd",
        {v: frames(0, iv[:, 1].max() + 0.1, 0.1, 2) for v, (_, iv) in seq.items()},
        root="COVAREP",
    )
    ds = read_sdk_dataset(MOSI_CSD, {"audio": audio}, dict(folds), name="mosi", max_len={"audio": 50})
    assert {s: len(sp) for s, sp in ds.splits.items()} == {"train": 1284, "valid": 229, "test": 686}
    by_id = {i: y for sp in ds.splits.values() for i, y in zip(sp.ids, sp.labels)}
    assert len(by_id) == 2199
    assert all(abs(by_id[f"{r['video_id']}[{int(r['clip_id']) - 1}]"] - float(r["label"])) < 1e-4 for r in rows)
    # every segment is covered by the frame grid, so every one gets frames; the one segment of zero
    # duration (2WGyTLYerpo[43] at 127.213 s) gets the single frame that contains its instant
    assert ds.info["segments_without_frames"]["audio"] == {"train": 0, "valid": 0, "test": 0}
    split = next(s for s, vids in folds.items() if "2WGyTLYerpo" in vids)
    sp = ds.splits[split]
    assert sp.masks["audio"][sp.ids.index("2WGyTLYerpo[43]")].sum() == 1
    assert ds.info["truncated_segments"]["audio"] > 0 and sp.features["audio"].shape[1] == 50
