"""`sentangle extract` (data/extract.py): clips found, cut, extracted, cached, padded and written."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import sentangle
from sentangle.core.errors import ConfigError, DataError, MissingFileError, UnknownNameError
from sentangle.data.extract import (
    VISION_MODULE,
    Clip,
    Job,
    capped_length,
    clip_labels,
    extract_clip,
    locate,
    read_clips,
    to_mmsa_pickle,
    window_average,
)
from sentangle.data.extractors.audio import Egemaps, audio_extractor
from sentangle.data.lazy import read_lazy
from sentangle.data.readers.mmsa import read_mmsa_pickle
from sentangle.models.layers import masked_downsample

pytest.importorskip("av", reason="PyAV not installed (pip install 'sentangle[extract]')")
pytest.importorskip("opensmile", reason="opensmile not installed (pip install 'sentangle[extract]')")

SR = 16000
HEADER = ["video_id", "clip_id", "text", "label", "mode", "start", "end", "file"]
# video_id, clip_id, text, label, mode, start, end, file; the signal each good clip holds
ROWS = [
    ["v1", "c1", "a low tone", "1.5", "train", "", "", ""],  # MMSA Raw layout: v1/c1.wav
    ["v1", "c2", "a higher tone", "-1.0", "train", "", "", ""],  # v1/c2.flac
    ["v2", "c1", "flat layout", "0.5", "train", "", "", ""],  # v2_c1.wav
    ["v4", "c1", "gone", "0.0", "train", "", "", "missing.wav"],  # broken: no such file
    ["v4", "c2", "noise bytes", "0.0", "train", "", "", ""],  # broken: v4/c2.wav is not audio
    ["v2", "c2", "a video", "-2.0", "valid", "", "", ""],  # v2_c2.mp4, with frames
    ["v3", "c1", "first half", "2.0", "valid", "0.2", "1.4", "long/v3.wav"],  # cut from a longer file
    ["v3", "c2", "second half", "-0.5", "test", "1.5", "2.9", "long/v3.wav"],
    ["v5", "c1", "an m4a", "1.0", "test", "", "", ""],  # v5/c1.m4a
]
GOOD = 7


def write_csv(path: Path, rows, header=HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def pcm(x: np.ndarray) -> np.ndarray:
    """What a 16-bit WAV of `x` holds (tests/media.py's `wav` rounds)."""
    return (np.round(np.clip(x, -1, 1) * 32767) / 32768).astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, media):
    """A media folder with 7 good clips in every layout and 2 broken ones, and its CSV."""
    root = tmp_path_factory.mktemp("media")
    signals = {
        "v1/c1": media.tone(150, 1.0),
        "v2_c1": media.tone(250, 1.3),
        "long/v3": np.concatenate([media.tone(180, 1.5), media.tone(360, 1.5)]),
    }
    for name, x in signals.items():
        media.wav(root / f"{name}.wav", x)
    media.write(root / "v1/c2.flac", media.tone(300, 0.8))
    media.write(root / "v2_c2.mp4", media.tone(220, 1.2), frames=media.astronaut(30))
    media.write(root / "v5/c1.m4a", media.tone(400, 1.1))
    (root / "v4").mkdir()
    (root / "v4/c2.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    return SimpleNamespace(root=root, csv=write_csv(root / "label.csv", ROWS), signals=signals)


@pytest.fixture(scope="module")
def extracted(clips, tmp_path_factory):
    """One full run (module-wide), with its own cache."""
    base = tmp_path_factory.mktemp("extract")
    report = sentangle.extract(clips.root, clips.csv, base / "out", cache_dir=base / "cache", progress=False)
    return SimpleNamespace(out=base / "out", cache=base / "cache", report=report)


def arrays(folder: Path) -> dict:
    ds = read_lazy(folder)
    return {
        (s, m): (np.array(sp.features[m]), np.array(sp.masks[m])) for s, sp in ds.splits.items() for m in sp.features
    }


# ---- the run --------------------------------------------------------------------------------------
def test_broken_clips_are_reported_with_their_reasons(extracted):
    r = extracted.report
    assert r["clips"] == {
        "rows": 9,
        "extracted": GOOD,
        "failed": 2,
        "cut_by_start_end": 2,
        "per_split": {"train": 3, "valid": 2, "test": 2},
    }
    reasons = {f["id"]: f["reason"] for f in r["failures"]}
    assert reasons["v4$_$c1"] == "file not found: missing.wav"
    assert reasons["v4$_$c2"].startswith("v4/c2.wav: not a readable audio or video file")  # relative to MEDIA_DIR
    on_disk = json.loads((extracted.out / "report.json").read_text())
    assert on_disk["failures"] == r["failures"] and on_disk["clips"] == r["clips"]
    md = (extracted.out / "report.md").read_text()
    assert "7 extracted of 9 (2 failed)" in md and "| 6 | v4$_$c2 |" in md
    # seconds of media: the decoded audio of every good clip (1.0 + 0.8 + 1.3 + 1.2 + 1.2 + 1.4 + 1.1,
    # plus the few priming samples the lossy mp4/m4a add)
    assert r["seconds"] == pytest.approx(8.0, abs=0.2)


def test_folder_holds_each_clip_as_extracted_directly(extracted, clips):
    ds = read_lazy(extracted.out)
    assert ds.task == "regression" and ds.label_range == (-3.0, 3.0)
    assert ds.splits["train"].ids == ["v1$_$c1", "v1$_$c2", "v2$_$c1"]
    assert ds.splits["valid"].texts == ["a video", "first half"]
    np.testing.assert_array_equal(ds.splits["test"].labels, np.array([-0.5, 1.0], np.float32))
    extractor = audio_extractor("egemaps")
    references = {
        ("train", 0): extractor(pcm(clips.signals["v1/c1"]), SR)[0],
        ("train", 2): extractor(pcm(clips.signals["v2_c1"]), SR)[0],
        ("valid", 1): extractor(pcm(clips.signals["long/v3"])[round(0.2 * SR) : round(1.4 * SR)], SR)[0],
        ("test", 0): extractor(pcm(clips.signals["long/v3"])[round(1.5 * SR) : round(2.9 * SR)], SR)[0],
    }
    for (split, row), ref in references.items():
        sp = ds.splits[split]
        mask = np.asarray(sp.masks["audio"][row])
        assert mask.sum() == len(ref) and mask[: len(ref)].all()  # real frames first, then padding
        np.testing.assert_array_equal(np.asarray(sp.features["audio"][row])[: len(ref)], ref)
        assert not np.asarray(sp.features["audio"][row])[len(ref) :].any()
    for split, sp in ds.splits.items():  # padded to the longest clip of each split
        assert sp.masks["audio"].shape[1] == sp.masks["audio"].sum(1).max(), split


def test_metadata_names_extractor_versions_rates_and_no_machine_path(extracted):
    text = (extracted.out / "sentangle-features.json").read_text()
    meta = json.loads(text)
    info = meta["info"]
    assert info["text"] == "raw" and meta["text_encoder"] is None
    assert info["extractors"]["audio"]["name"] == "egemaps"
    assert info["extractors"]["audio"]["version"] == __import__("opensmile").__version__
    assert info["extractors"]["audio"]["settings"]["feature_set"] == "eGeMAPSv02"
    assert info["decoder"]["package"] == "av" and info["decoder"]["version"] == __import__("av").__version__
    assert len(info["feature_names"]["audio"]) == 25 and info["frame_rates"] == {"audio": 100.0}
    for report in ("report.json", "report.md"):
        text += (extracted.out / report).read_text()
    for machine_path in (str(extracted.out.parent), str(Path.home()), "/tmp/"):
        assert machine_path not in text


def test_folder_loads_and_trains_one_epoch_of_lf_dnn(extracted, tmp_path):
    pytest.importorskip("transformers")
    ds = sentangle.load_dataset(str(extracted.out))
    assert ds.modalities == ("text", "audio") and ds.input_dims["audio"] == 25
    summary = sentangle.train("lf_dnn", str(extracted.out), seeds=1, out=str(tmp_path), train={"epochs": 1})
    assert set(summary["splits"]) == {"train", "valid", "test"}
    assert np.isfinite(summary["splits"]["test"]["mae"]["mean"])


# ---- the cache ------------------------------------------------------------------------------------
def refuse(*args, **kwargs):
    raise AssertionError("the extractor ran although every clip is cached")


def test_second_run_extracts_nothing(extracted, clips, tmp_path, monkeypatch):
    monkeypatch.setattr(Egemaps, "compute", refuse)
    r = sentangle.extract(clips.root, clips.csv, tmp_path / "again", cache_dir=extracted.cache, progress=False)
    assert r["cache"] == {"reused": GOOD, "extracted": 0} and r["clips"]["failed"] == 2
    first, again = arrays(extracted.out), arrays(tmp_path / "again")
    assert first.keys() == again.keys()
    for k in first:
        np.testing.assert_array_equal(first[k][0], again[k][0])
        np.testing.assert_array_equal(first[k][1], again[k][1])


def test_a_changed_file_is_extracted_again(extracted, clips, tmp_path, media):
    root = tmp_path / "media"
    for f in ("label.csv", "v1/c1.wav", "v1/c2.flac", "v2_c1.wav", "v2_c2.mp4", "long/v3.wav", "v5/c1.m4a"):
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes((clips.root / f).read_bytes())
    media.wav(root / "v1/c1.wav", media.tone(500, 1.0))  # new content, new size: not the cached clip
    r = sentangle.extract(root, root / "label.csv", tmp_path / "out", cache_dir=extracted.cache, progress=False)
    # a copy is another path: every clip is extracted again (the key is path + size + mtime)
    assert r["cache"]["extracted"] == GOOD
    r = sentangle.extract(root, root / "label.csv", tmp_path / "out2", cache_dir=extracted.cache, progress=False)
    assert r["cache"] == {"reused": GOOD, "extracted": 0}
    media.wav(root / "v1/c1.wav", media.tone(500, 1.1))
    r = sentangle.extract(root, root / "label.csv", tmp_path / "out3", cache_dir=extracted.cache, progress=False)
    assert r["cache"] == {"reused": GOOD - 1, "extracted": 1}


def test_interrupted_run_resumes_to_identical_features(extracted, clips, tmp_path, monkeypatch):
    calls = []
    real = Egemaps.compute

    def dies_after_three(self, signal):
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a kill would: nothing after it runs
        calls.append(1)
        return real(self, signal)

    cache, out = tmp_path / "cache", tmp_path / "out"
    monkeypatch.setattr(Egemaps, "compute", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        sentangle.extract(clips.root, clips.csv, out, cache_dir=cache, progress=False)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no half folder
    entries = sorted(cache.glob("*.npz"))
    assert len(entries) == 3 and not list(cache.glob("*.tmp"))
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # a damaged entry is computed again
    monkeypatch.setattr(Egemaps, "compute", real)
    r = sentangle.extract(clips.root, clips.csv, out, cache_dir=cache, progress=False)
    assert r["cache"] == {"reused": 2, "extracted": GOOD - 2}
    first, resumed = arrays(extracted.out), arrays(out)
    for k in first:
        np.testing.assert_array_equal(first[k][0], resumed[k][0])
        np.testing.assert_array_equal(first[k][1], resumed[k][1])


def test_worker_processes_give_the_same_folder(extracted, clips, tmp_path):
    r = sentangle.extract(
        clips.root, clips.csv, tmp_path / "out", cache_dir=tmp_path / "cache", workers=2, progress=False
    )
    assert r["cache"]["extracted"] == GOOD and r["workers"] == 2
    assert [f["id"] for f in r["failures"]] == ["v4$_$c1", "v4$_$c2"]
    first, parallel = arrays(extracted.out), arrays(tmp_path / "out")
    for k in first:
        np.testing.assert_array_equal(first[k][0], parallel[k][0])


def test_clips_are_found_in_each_layout_and_cut_only_from_whole_files(tmp_path):
    for f in ("a/1.mp4", "a_2.wav", "b.mkv", "named.flac"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(b"x")

    def clip(video, clip, start=None, end=None, file=""):
        return Clip(2, f"{video}$_${clip}", video, clip, "", "", "test", start, end, file)

    assert locate(tmp_path, clip("a", "1", 1.0, 2.0))[:2] == (tmp_path / "a/1.mp4", False)  # a clip file: no cut
    assert locate(tmp_path, clip("a", "2"))[:2] == (tmp_path / "a_2.wav", False)
    assert locate(tmp_path, clip("b", "7", 1.0, 2.0))[:2] == (tmp_path / "b.mkv", True)  # the whole video, cut
    assert locate(tmp_path, clip("b", "7"))[0] is None  # a whole video without start/end is not a clip
    assert locate(tmp_path, clip("z", "1", 0, 1, file="named.flac"))[:2] == (tmp_path / "named.flac", True)
    path, _, tried = locate(tmp_path, clip("c", "3"))
    assert path is None and tried[:2] == ["c/3.mp4", "c/3.mkv"] and "c_3.wav" in tried


def test_a_clip_too_short_for_a_frame_fails_with_the_reason(media, tmp_path):
    path = media.wav(tmp_path / "short.wav", media.tone(200, 0.03))
    job = Job(0, str(path), None, None, "egemaps", None, 5.0, str(tmp_path / "cache"))
    r = extract_clip(job)
    assert r == {"index": 0, "error": f"{path}: too short for egemaps: no complete audio feature frame"}


# ---- frames, labels, exports ------------------------------------------------------------------------
def test_window_average_matches_the_models_downsampling():
    rng = np.random.default_rng(0)
    for t, cap in [(23, 5), (40, 8), (7, 3), (10, 10), (9, 20)]:
        x = rng.normal(size=(t, 4)).astype(np.float32)
        mask = rng.random(t) > 0.3
        mask[:2] = [False, True]  # a window may start with padding
        y, m = window_average(x, mask, cap)
        ref_y, ref_m = masked_downsample(torch.from_numpy(x)[None], torch.from_numpy(mask)[None], cap)
        np.testing.assert_allclose(y, ref_y[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(m, ref_m[0].numpy())
        assert len(y) == capped_length(t, cap) <= max(cap, 1)
    # by hand: frames 1..6 with frame 2 missing, windows of 2 -> (1), (3 + 4) / 2, (5 + 6) / 2
    x = np.arange(1.0, 7.0, dtype=np.float32)[:, None]
    y, m = window_average(x, np.array([1, 0, 1, 1, 1, 1], bool), 3)
    np.testing.assert_allclose(y[:, 0], [1.0, 3.5, 5.5])


def test_max_frames_caps_every_clip(extracted, clips, tmp_path):
    r = sentangle.extract(
        clips.root, clips.csv, tmp_path / "out", cache_dir=extracted.cache, max_frames=20, progress=False
    )
    assert r["cache"]["reused"] == GOOD  # the cache holds uncapped frames: capping reuses it
    full, capped = arrays(extracted.out), arrays(tmp_path / "out")
    for (split, m), (x, mask) in capped.items():
        assert x.shape[1] <= 20
        fx, fmask = full[(split, m)]
        for row in range(len(x)):
            t = int(fmask[row].sum())  # audio: the clip's real frames come first; windows are the clip's own
            ref_y, ref_m = masked_downsample(
                torch.from_numpy(fx[row : row + 1, :t]), torch.from_numpy(fmask[row : row + 1, :t]), 20
            )
            n = int(ref_m.sum())
            np.testing.assert_allclose(x[row, :n], ref_y[0, :n].numpy(), rtol=1e-5, atol=1e-5)
            assert mask[row].sum() == n


def test_labels_numbers_are_regression_names_are_sorted_classes(tmp_path):
    def labels(values):
        rows = [["v", str(i), "t", v, "train"] for i, v in enumerate(values)]
        path = write_csv(tmp_path / "l.csv", rows, HEADER[:5])
        return clip_labels(read_clips(path), path)

    task, names, y, rng = labels(["0.5", "-2", "3"])
    assert (task, names, rng) == ("regression", None, (-3.0, 3.0)) and y.tolist() == [0.5, -2.0, 3.0]
    assert labels(["1", "5"])[3] == (1.0, 5.0)  # outside the MSA scale: the labels' own range
    task, names, y, rng = labels(["sad", "happy", "sad", "angry"])
    assert (task, names, rng) == ("classification", ["angry", "happy", "sad"], None)
    assert y.dtype == np.int64 and y.tolist() == [2, 1, 2, 0]
    task, names, y, rng = labels(["", ""])
    assert (task, rng) == ("regression", None) and not y.any()
    with pytest.raises(DataError, match="line 3: column 'label' is empty"):
        labels(["1", ""])


def test_without_mode_every_clip_is_test(clips, extracted, tmp_path):
    rows = [[r[0], r[1], r[2], r[3]] for r in ROWS[:3]]
    path = write_csv(tmp_path / "predict.csv", rows, HEADER[:4])
    sentangle.extract(clips.root, path, tmp_path / "out", cache_dir=extracted.cache, progress=False)
    ds = read_lazy(tmp_path / "out")
    assert list(ds.splits) == ["test"] and ds.splits["test"].ids == ["v1$_$c1", "v1$_$c2", "v2$_$c1"]


def test_mmsa_pickle_round_trip(extracted, tmp_path):
    path = to_mmsa_pickle(extracted.out, tmp_path / "unaligned.pkl")
    back, folder = read_mmsa_pickle(path), read_lazy(extracted.out)
    assert back.info["aligned"] is False
    for s, sp in folder.splits.items():
        b = back.splits[s]
        assert b.ids == sp.ids and b.texts == sp.texts
        np.testing.assert_array_equal(b.labels, sp.labels)
        np.testing.assert_array_equal(b.masks["audio"], sp.masks["audio"])
        np.testing.assert_array_equal(b.features["audio"], np.asarray(sp.features["audio"]))


def test_mmsa_pickle_needs_three_splits(clips, extracted, tmp_path):
    path = write_csv(tmp_path / "p.csv", [r[:4] for r in ROWS[:2]], HEADER[:4])
    sentangle.extract(clips.root, path, tmp_path / "out", cache_dir=extracted.cache, progress=False)
    with pytest.raises(DataError, match="lacks \\['train', 'valid'\\]"):
        to_mmsa_pickle(tmp_path / "out", tmp_path / "x.pkl")
    assert not (tmp_path / "x.pkl").exists()


# ---- vision hook --------------------------------------------------------------------------------
def test_vision_is_refused_while_its_module_is_missing(clips, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, VISION_MODULE, None)  # as if vision.py were not installed
    with pytest.raises(ConfigError, match="vision extractor not available"):
        sentangle.extract(clips.root, clips.csv, tmp_path / "out", vision="any", progress=False)
    assert not (tmp_path / "out").exists()


def test_vision_hook_calls_extract_faces_and_stores_its_mask(clips, tmp_path, monkeypatch):
    seen = []

    def extract_faces(path, fps, start, end, detector):
        seen.append((Path(path).name, fps, start, end, detector))
        t = 6
        mask = np.array([True, False, True, True, False, True])
        return np.arange(t * 2, dtype=np.float32).reshape(t, 2), mask, ["f0", "f1"], {"name": detector, "version": "0"}

    def without_video(detector, fps):
        seen.append(("no video", fps, detector))
        return np.zeros((1, 2), np.float32), np.zeros(1, bool), ["f0", "f1"], {"name": detector, "version": "0"}

    fake = SimpleNamespace(
        extract_faces=extract_faces, cache_identity=lambda path, detector: {"version": "0"}, without_video=without_video
    )
    monkeypatch.setitem(sys.modules, VISION_MODULE, fake)
    rows = [ROWS[5], ROWS[6], ROWS[0]]  # a video, and two audio files (one cut out of a longer one)
    path = write_csv(tmp_path / "v.csv", rows)
    r = sentangle.extract(
        clips.root, path, tmp_path / "out", vision="fake", fps=2.0, cache_dir=tmp_path / "c", progress=False
    )
    # the detector reads the video; the audio files keep their audio with vision missing, not failed
    assert seen.count(("v2_c2.mp4", 2.0, None, None, "fake")) == 1 and seen.count(("no video", 2.0, "fake")) == 2
    assert r["clips"]["extracted"] == 3 and r["clips"]["failed"] == 0
    assert r["faces"] == {"frames_with_face": 4, "clips_without_face": 2} and r["frames"]["vision"] == 8
    ds = read_lazy(tmp_path / "out")
    sp = ds.splits["valid"]
    assert sp.ids == ["v2$_$c2", "v3$_$c1"]
    np.testing.assert_array_equal(sp.masks["vision"][0], [True, False, True, True, False, True])
    assert not np.asarray(sp.features["vision"][0, 1]).any()  # a frame without a face is padding: zeros
    assert not sp.masks["vision"][1].any() and sp.masks["audio"][1].any()  # no picture: vision missing only
    assert ds.info["frame_rates"]["vision"] == 2.0 and ds.info["feature_names"]["vision"] == ["f0", "f1"]


# ---- user errors --------------------------------------------------------------------------------
def test_user_errors_name_what_is_wrong(clips, tmp_path):
    out = tmp_path / "out"
    cases = [
        (dict(media_dir=tmp_path / "nope"), MissingFileError, "media folder .*nope does not exist"),
        (
            dict(transcripts=write_csv(tmp_path / "a.csv", [["v", "1"]], ["video_id", "clip_id"])),
            DataError,
            "missing column\\(s\\) \\['text'\\]",
        ),
        (
            dict(transcripts=write_csv(tmp_path / "b.csv", [["v1", "c1", "t", "1", "training"]], HEADER[:5])),
            DataError,
            "line 2: column 'mode' is 'training'",
        ),
        (dict(transcripts=write_csv(tmp_path / "c.csv", [ROWS[0], ROWS[0]])), DataError, "already on line 2"),
        (
            dict(transcripts=write_csv(tmp_path / "d.csv", [["v1", "c1", "t", "1", "train", "2", "1", ""]])),
            DataError,
            "end 1.0 is not after start 2.0",
        ),
        (dict(transcripts=tmp_path / "none.csv"), DataError, "file not found"),
        (dict(audio="egemap"), UnknownNameError, "Did you mean 'egemaps'"),
        (dict(audio="none"), ConfigError, "nothing to extract"),
        (dict(max_frames=0), ConfigError, "max_frames=0"),
        (dict(workers=0), ConfigError, "workers=0"),
        (dict(fps=-1), ConfigError, "fps=-1"),
    ]
    for kwargs, error, message in cases:
        args = {"media_dir": clips.root, "transcripts": clips.csv, "out": out, "progress": False, **kwargs}
        with pytest.raises(error, match=message):
            sentangle.extract(**args)
        assert not out.exists(), kwargs


def test_a_run_where_every_clip_fails_writes_nothing(clips, tmp_path):
    path = write_csv(tmp_path / "bad.csv", [ROWS[3], ROWS[4]])
    with pytest.raises(DataError, match="no clip could be extracted \\(2 failed; first: line 2: file not found"):
        sentangle.extract(clips.root, path, tmp_path / "out", cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "out").exists()


# ---- real speech --------------------------------------------------------------------------------
def test_five_emodb_clips_by_their_file_column(shared_data, tmp_path):
    root = shared_data / "emodb"
    if not (root / "labels.csv").exists():
        pytest.skip(f"EmoDB not found at {root}")
    with open(root / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    picked = [rows[i] for i in (0, 1, 2, 60, 300)]
    path = tmp_path / "five.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(picked)
    r = sentangle.extract(root, path, tmp_path / "out", cache_dir=tmp_path / "c", progress=False)
    assert r["clips"]["extracted"] == 5 and not r["failures"]
    ds = read_lazy(tmp_path / "out")
    assert ds.task == "classification" and ds.class_names == sorted({p["emotion"] for p in picked})
    by_id = {f"{p['video_id']}$_${p['clip_id']}": p for p in picked}
    for sp in ds.splits.values():
        for i, sid in enumerate(sp.ids):
            assert ds.class_names[sp.labels[i]] == by_id[sid]["emotion"]
            # one eGeMAPS frame per 10 ms of the recording (labels.csv gives its duration)
            assert abs(int(sp.masks["audio"][i].sum()) - 100 * float(by_id[sid]["duration_s"])) <= 6
    assert r["seconds"] == pytest.approx(sum(float(p["duration_s"]) for p in picked), abs=0.01)
