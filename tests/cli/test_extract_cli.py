"""`sentangle extract` from the command line: a folder `train -d` reads, and one error line per user error."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from sentangle.cli import main

pytest.importorskip("av", reason="PyAV not installed (pip install 'sentangle[extract]')")
pytest.importorskip("opensmile", reason="opensmile not installed (pip install 'sentangle[extract]')")

HEADER = ["video_id", "clip_id", "text", "label", "mode"]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory, media):
    root = tmp_path_factory.mktemp("clips")
    rows = []
    for i, (mode, hz) in enumerate([("train", 150), ("train", 300), ("valid", 200), ("test", 250)]):
        media.wav(root / "spk" / f"{i}.wav", media.tone(hz, 0.6))
        rows.append(["spk", str(i), f"sentence {i}", ["happy", "sad"][i % 2], mode])
    rows.append(["spk", "9", "no file", "sad", "test"])
    with open(root / "label.csv", "w", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    return root


def extract(*args):
    return main(["extract", *map(str, args), "--no-progress"])


def test_extract_writes_a_folder_and_says_how_to_train(media_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SENTANGLE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "feat"
    assert extract(media_dir, media_dir / "label.csv", out, "--audio", "librosa", "--max-frames", "30") == 0
    captured = capsys.readouterr()
    assert f"extracted 4 of 5 clips (2.4 s of media) into {out}" in captured.out
    assert f"train with: sentangle train -d {out}" in captured.out
    assert "1 clips failed: see" in captured.err
    meta = json.loads((out / "sentangle-features.json").read_text())
    assert meta["task"] == "classification" and meta["class_names"] == ["happy", "sad"]
    assert meta["info"]["extractors"]["audio"]["name"] == "librosa" and meta["info"]["max_frames"] == 30
    assert np.load(out / "train" / "audio.npy").shape == (2, 21, 25)  # 61 librosa frames in windows of 3 -> 21
    assert (tmp_path / "cache" / "extract").is_dir()  # the default cache: $SENTANGLE_CACHE/extract
    # and the MMSA pickle beside it, from the cache
    pkl = tmp_path / "feat.pkl"
    assert (
        extract(media_dir, media_dir / "label.csv", tmp_path / "feat2", "--audio", "librosa", "--mmsa-pickle", pkl) == 0
    )
    assert pkl.is_file() and f"wrote {pkl}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_media_dir", "nowhere does not exist; expected the folder that holds the clips"),
        ("no_columns", "missing column(s) ['text']"),
        ("out_exists", "exists; pass overwrite=True (--overwrite)"),
        ("out_symlink", "is a symbolic link"),
        ("out_device", "device or special file"),
        ("unknown_audio", "unknown audio extractor 'mfcc'"),
        ("vision_missing", "vision extractor not available"),
        ("bad_fps", "fps=0.0"),
    ],
)
def test_user_errors_exit_2_with_one_line(case, message, media_dir, tmp_path, capsys, monkeypatch):
    csv_path, out, media, extra = media_dir / "label.csv", tmp_path / "out", media_dir, []
    if case == "no_media_dir":
        media = tmp_path / "nowhere"
    elif case == "no_columns":
        csv_path = tmp_path / "bad.csv"
        csv_path.write_text("video_id,clip_id\nv,1\n")
    elif case == "out_exists":
        out.mkdir()
    elif case == "out_symlink":
        (tmp_path / "elsewhere").write_text("")
        os.symlink(tmp_path / "elsewhere", out)
    elif case == "out_device":
        out = "/dev/null"
    elif case == "unknown_audio":
        extra = ["--audio", "mfcc"]
    elif case == "vision_missing":
        monkeypatch.setitem(__import__("sys").modules, "sentangle.data.extractors.vision", None)
        extra = ["--vision", "haar"]
    elif case == "bad_fps":
        extra = ["--fps", "0"]
    before = sorted(tmp_path.iterdir())
    assert extract(media, csv_path, out, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(tmp_path.iterdir()) == before  # nothing written
