"""`sentangle extract` end to end on a folder of generated clips, as a user runs it: speech (espeak-ng),
talking faces (the astronaut photo moved and scaled, the speech muxed in), audio-only speech, a video
without a face and two broken files, with faces and two worker processes; then a rerun over a warm
cache and a run killed with SIGKILL and resumed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from sentangle.cli import main
from sentangle.data.lazy import read_lazy

pytest.importorskip("opensmile", reason="opensmile not installed (pip install 'sentangle[extract]')")
# about 25 s on 2 idle cores, most of it the start-up of processes and their workers; it is the
# issue's end-to-end check, so it runs with the default suite

SENTENCES = [
    "yes I agree",
    "not at all",
    "that was great",
    "I did not like it",
    "what a boring film",
    "it was fine",
    "the actors were good",
    "too long for me",
    "I loved the music",
    "the plot was weak",
    "a lovely story",
    "never again",
    "well worth it",
    "rather dull",
    "funny and warm",
    "quite sad really",
    "I would watch it twice",
]
FACES, VOICES = 12, 5  # talking-face videos and audio-only wavs; with the blank video, 18 good clips
GOOD, BROKEN = FACES + VOICES + 1, 2
FPS = 5  # vision frames per second (the default of --fps)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, media):
    """20 clips in the MMSA Raw layout (<video_id>/<clip_id>.<ext>) and their label.csv."""
    root = tmp_path_factory.mktemp("clips")
    rows, faces = [], {}
    for i, text in enumerate(SENTENCES):
        if i < FACES:
            faces[f"face$_${i}"] = media.talking_face(root / "face" / f"{i}.mp4", text, fps=10)
            rows.append(["face", str(i), text])
        else:
            media.speech(text, root / "voice" / f"{i}.wav")
            rows.append(["voice", str(i), text])
    voice, sr = media.speak("there is nobody here")
    media.blank_video(root / "blank" / "0.mp4", len(voice) / sr, audio=voice, sample_rate=sr)
    rows.append(["blank", "0", "there is nobody here"])
    media.corrupt_video(root / "broken" / "0.mp4", "truncated")
    media.corrupt_video(root / "broken" / "1.mp4", "empty")
    rows += [["broken", "0", "cut short"], ["broken", "1", "nothing in it"]]
    modes = ["train", "train", "valid", "test"]
    with open(root / "label.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "clip_id", "text", "label", "mode"])
        w.writerows([*row, f"{(k % 7) - 3:.1f}", modes[k % 4]] for k, row in enumerate(rows))
    assert len(rows) == GOOD + BROKEN == 20
    return SimpleNamespace(root=root, csv=root / "label.csv", faces=faces)


def command(folder, out: Path, cache: Path, *extra) -> list[str]:
    args = [folder.root, folder.csv, out, "--vision", "haar", "--workers", "2", "--cache-dir", cache, *extra]
    return ["extract", *map(str, args), "--no-progress"]


def contents(out: Path) -> dict:
    """Everything in a feature folder, by split: ids, texts, labels, and every modality's arrays."""
    ds = read_lazy(out)
    got = {}
    for s, sp in ds.splits.items():
        got[(s, "ids")], got[(s, "texts")], got[(s, "labels")] = sp.ids, sp.texts, np.asarray(sp.labels)
        for m in sp.features:
            got[(s, m)] = np.asarray(sp.features[m])
            got[(s, m, "mask")] = np.asarray(sp.masks[m])
    return got


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))
        else:
            assert a[k] == b[k], k


@pytest.fixture(scope="module")
def first(folder, tmp_path_factory):
    """One uninterrupted run on a cold cache."""
    base = tmp_path_factory.mktemp("first")
    code = main(command(folder, base / "out", base / "cache"))
    return SimpleNamespace(
        code=code, out=base / "out", cache=base / "cache", report=json.loads((base / "out" / "report.json").read_text())
    )


def test_audio_only_clips_are_extracted_beside_the_videos(first):
    r = first.report
    assert r["clips"]["extracted"] == GOOD and r["clips"]["failed"] == BROKEN
    assert not [f for f in r["failures"] if f["id"].startswith("voice")]


def test_broken_files_are_reported_with_their_reasons_and_the_run_succeeds(first):
    assert first.code == 0
    reasons = {f["id"]: f["reason"] for f in first.report["failures"] if f["id"].startswith("broken")}
    assert reasons.keys() == {"broken$_$0", "broken$_$1"}
    assert reasons["broken$_$0"].startswith("broken/0.mp4: not a readable audio or video file")
    assert reasons["broken$_$1"].startswith("broken/1.mp4: file is empty")
    ids = {i for sp in read_lazy(first.out).splits.values() for i in sp.ids}
    assert {f"face$_${i}" for i in range(FACES)} | {"blank$_$0"} <= ids
    assert not any(i.startswith("broken") for i in ids)


def test_faces_are_found_in_the_face_clips_and_none_in_the_blank_one(first, folder):
    ds = read_lazy(first.out)
    found = {}
    for sp in ds.splits.values():
        for row, sid in enumerate(sp.ids):
            found[sid] = int(np.asarray(sp.masks["vision"][row]).sum())
    for sid, clip in folder.faces.items():
        sampled = int(np.ceil(len(clip.widths) / clip.fps * FPS))  # frames at 5 fps over the clip
        assert found[sid] >= sampled - 1, (sid, found[sid], sampled)
    assert found["blank$_$0"] == 0
    faces = first.report["faces"]
    assert faces["frames_with_face"] == sum(found.values()) and faces["clips_without_face"] >= 1


def test_rerun_with_overwrite_reuses_every_cached_clip(first, folder):
    assert main(command(folder, first.out, first.cache, "--overwrite")) == 0
    again = json.loads((first.out / "report.json").read_text())
    assert again["cache"] == {"reused": first.report["clips"]["extracted"], "extracted": 0}
    assert again["failures"] == first.report["failures"]


def test_killed_run_resumes_to_the_same_features(first, folder, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    cmd = [sys.executable, "-m", "sentangle", *command(folder, out, cache)]
    # in its own process group: kill -9 of the group reaches the worker processes too
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list(cache.glob("*.npz"))) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL and not out.exists()  # no half-written folder
    assert 4 <= len(list(cache.glob("*.npz"))) < len(list(first.cache.glob("*.npz")))  # killed mid-run
    assert main(command(folder, out, cache)) == 0
    resumed = json.loads((out / "report.json").read_text())
    assert resumed["cache"]["reused"] >= 1 and resumed["clips"] == first.report["clips"]
    assert_same(contents(first.out), contents(out))
