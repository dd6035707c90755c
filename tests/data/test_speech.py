"""The emotional-speech datasets emodb and ravdess (data/readers/speech.py), the openSMILE
functionals extractors and waveform perturbations inside extraction (data/extract.py).

Real-data tests read ../shared/data and skip without it; those that extract audio read a small
labels.csv in tmp_path whose audio is the real corpus's (a link to its folder)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from sentangle import cli
from sentangle.core.errors import ConfigError, DataError
from sentangle.core.registry import DATASETS
from sentangle.data.dataset import sample_groups
from sentangle.data.extract import Job, extract_clip, load_entry
from sentangle.data.extractors.audio import Egemaps, audio_extractor
from sentangle.data.media import decode_audio
from sentangle.data.named import load_dataset

pytest.importorskip("av", reason="PyAV not installed (pip install 'sentangle[extract]')")
pytest.importorskip("opensmile", reason="opensmile not installed (pip install 'sentangle[extract]')")

# From the shared data's README: the documented split sizes and emotions of the two corpora.
SIZES = {"emodb": {"train": 344, "valid": 99, "test": 92}, "ravdess": {"train": 960, "valid": 240, "test": 240}}
EMOTIONS = {
    "emodb": {"anger", "boredom", "neutral", "happiness", "fear", "sadness", "disgust"},
    "ravdess": {"neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"},
}
AUDIO = {"emodb": "wav", "ravdess": "audio"}


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def corpus(shared_data: Path, name: str) -> Path:
    if not (shared_data / name / "labels.csv").exists():
        pytest.skip(f"{name} not found at {shared_data / name}")
    return shared_data / name


def small_copy(shared_data: Path, root: Path, name: str, per_split: int = 2) -> list[dict]:
    """root/<name>/labels.csv with the first `per_split` rows of each split of the real one, its
    audio folder a link to the real corpus's. Returns the rows."""
    real = corpus(shared_data, name)
    rows = rows_of(real / "labels.csv")
    picked = [r for s in ("train", "valid", "test") for r in [r for r in rows if r["mode"] == s][:per_split]]
    (root / name).mkdir(parents=True, exist_ok=True)
    with open(root / name / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(picked)
    if not (root / name / AUDIO[name]).exists():
        (root / name / AUDIO[name]).symlink_to(real / AUDIO[name], target_is_directory=True)
    return picked


# ---- functionals ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spoken(tmp_path_factory, media) -> Path:
    return media.speech("The cloth is lying on the refrigerator.", tmp_path_factory.mktemp("speech") / "s.wav")


@pytest.mark.parametrize("name,count", [("egemaps_functionals", 88), ("compare_functionals", 6373)])
def test_functionals_are_one_frame_of_the_sets_features(spoken, name, count):
    x, names, fps = audio_extractor(name)(decode_audio(spoken))
    assert x.shape == (1, count) and len(set(names)) == count and np.isfinite(x).all()
    assert fps == 0.0 and audio_extractor(name).spec["settings"]["feature_level"] == "Functionals"


def test_functionals_summarise_the_descriptors_of_the_same_signal(spoken):
    signal = decode_audio(spoken)
    lld, lld_names, _ = audio_extractor("egemaps")(signal)
    fun, fun_names, _ = audio_extractor("egemaps_functionals")(signal)
    mean_loudness = fun[0, fun_names.index("loudness_sma3_amean")]
    assert mean_loudness == pytest.approx(lld[:, lld_names.index("Loudness_sma3")].mean(), rel=0.05)
    louder, _, _ = audio_extractor("egemaps_functionals")(4 * signal)
    assert louder[0, fun_names.index("loudness_sma3_amean")] > 1.5 * mean_loudness


def test_cache_entries_differ_between_descriptors_functionals_and_perturbations(spoken, tmp_path):
    def run(audio: str, perturb=None) -> dict:
        r = extract_clip(Job(0, str(spoken), None, None, audio, None, 5.0, str(tmp_path), perturb=perturb))
        assert "error" not in r, r
        return r

    lld, fun = run("egemaps"), run("egemaps_functionals")
    assert lld["files"]["audio"] != fun["files"]["audio"]
    assert fun["frames"]["audio"] == 1 and lld["frames"]["audio"] > 100
    noisy = run("egemaps", {"kind": "noise", "level": 0.0, "seed": 0})
    other_seed = run("egemaps", {"kind": "noise", "level": 0.0, "seed": 1})
    assert len({lld["files"]["audio"], noisy["files"]["audio"], other_seed["files"]["audio"]}) == 3
    assert run("egemaps")["files"]["audio"] == lld["files"]["audio"] and run("egemaps")["cached"]["audio"]
    clean, loud = (load_entry(Path(r["files"]["audio"])) for r in (lld, noisy))
    assert clean is not None and loud is not None
    assert not np.allclose(clean["features"], loud["features"])


# ---- the corpora's labels -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["emodb", "ravdess"])
def test_documented_splits_classes_and_speakers(shared_data, name):
    path = corpus(shared_data, name) / "labels.csv"
    ds = DATASETS.get(name)(root=shared_data, audio="none")  # raw texts, nothing extracted
    assert {s: len(sp) for s, sp in ds.splits.items()} == SIZES[name]
    assert ds.task == "classification" and ds.class_names == sorted(EMOTIONS[name])
    by_id = {f"{r['video_id']}$_${r['clip_id']}": r for r in rows_of(path)}
    speaker = {"emodb": "speaker", "ravdess": "actor"}[name]
    for s, sp in ds.splits.items():
        rows = [by_id[i] for i in sp.ids]
        assert [ds.class_names[k] for k in sp.labels] == [r["emotion"] for r in rows]
        assert all(r["mode"] == s for r in rows)
        groups = sample_groups(ds, s)
        assert [g.removeprefix("Actor_") for g in groups] == [r[speaker] for r in rows]
        assert ds.info["groups"]["count"][s] == len(set(groups))
    test, valid, train = (set(sample_groups(ds, s)) for s in ("test", "valid", "train"))
    assert not test & (train | valid) and not valid & train


def test_text_options_pick_their_column(shared_data):
    path = corpus(shared_data, "emodb") / "labels.csv"
    rows = {f"{r['video_id']}$_${r['clip_id']}": r for r in rows_of(path)}
    for option, column in (("en", "text_en"), ("de", "text_de")):
        sp = DATASETS.get("emodb")(root=shared_data, audio="none", text=option).splits["train"]
        assert sp.texts == [rows[i][column] for i in sp.ids]
    assert any(
        "Eisschrank" in t for t in DATASETS.get("emodb")(root=shared_data, audio="none", text="de").splits["test"].texts
    )
    path = corpus(shared_data, "ravdess") / "labels.csv"
    rows = {f"{r['video_id']}$_${r['clip_id']}": r for r in rows_of(path)}
    sp = DATASETS.get("ravdess")(root=shared_data, audio="none").splits["valid"]
    assert sp.texts == [rows[i]["text"] for i in sp.ids]
    with pytest.raises(ConfigError, match=r"text='de'; expected one of en, none"):
        DATASETS.get("ravdess")(root=shared_data, audio="none", text="de")


# ---- audio of a few real clips ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def emodb_six(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("emodb_six")
    return root, small_copy(shared_data, root, "emodb")


def test_six_emodb_clips_become_descriptor_sequences_and_load_again_from_the_cache(emodb_six, monkeypatch):
    root, rows = emodb_six
    ds = load_dataset("emodb", root=root, text="none", normalize=())
    assert ds.modalities == ("audio",) and ds.input_dims == {"audio": 25}
    by_id = {f"{r['video_id']}$_${r['clip_id']}": r for r in rows}
    for s, sp in ds.splits.items():
        assert len(sp) == 2 and all(by_id[i]["mode"] == s for i in sp.ids)
        for k, i in enumerate(sp.ids):
            # one eGeMAPS frame per 10 ms of the recording (labels.csv gives its duration)
            assert abs(int(sp.masks["audio"][k].sum()) - 100 * float(by_id[i]["duration_s"])) <= 6
    assert ds.info["extractors"]["audio"]["name"] == "egemaps" and ds.info["perturb"] is None

    def refuse(self, signal):
        raise AssertionError("extracted again")

    monkeypatch.setattr(Egemaps, "compute", refuse)
    again = load_dataset("emodb", root=root, text="none", normalize=())
    for s, sp in again.splits.items():
        assert np.array_equal(sp.features["audio"], ds.splits[s].features["audio"])


def test_frame_cap_functionals_and_text(emodb_six):
    root, _ = emodb_six
    capped = load_dataset("emodb", root=root, text="none", max_frames=20, normalize=())
    assert all(sp.features["audio"].shape[1] <= 20 and sp.masks["audio"].any(1).all() for sp in capped.splits.values())
    fun = load_dataset("emodb", root=root, text="none", audio="egemaps_functionals", normalize=())
    assert all(sp.features["audio"].shape == (2, 1, 88) for sp in fun.splits.values())
    text_only = DATASETS.get("emodb")(root=root, audio="none", text="de")
    assert not text_only.splits["train"].features and text_only.splits["train"].texts


def test_train_runs_end_to_end_and_names_no_text_encoder_without_text(emodb_six, tmp_path, capsys):
    root, _ = emodb_six
    argv = ["train", "-m", "tsda", "-d", "emodb", "--data-root", str(root), "--seeds", "1", "--no-progress"]
    argv += ["--out", str(tmp_path), "dataset.text=none", "dataset.max_frames=20", "train.epochs=1"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "training tsda on emodb" in err and "text encoder" not in err
    metrics = json.loads((tmp_path / "tsda-emodb" / "seed_1111" / "metrics.json").read_text())
    assert 0.0 <= metrics["metrics"]["test"]["uar"] <= 1.0


def test_perturbation_reaches_the_test_clips_only(emodb_six):
    root, _ = emodb_six
    clean = load_dataset("emodb", root=root, text="none", normalize=())
    noisy = load_dataset("emodb", root=root, text="none", normalize=(), perturb={"kind": "noise", "level": 0})
    for s in ("train", "valid"):
        assert np.array_equal(noisy.splits[s].features["audio"], clean.splits[s].features["audio"])
    a, b = clean.splits["test"], noisy.splits["test"]
    assert np.array_equal(a.masks["audio"], b.masks["audio"])  # the same frames, other values
    assert not np.allclose(a.features["audio"], b.features["audio"])
    assert noisy.info["perturb"] == {"kind": "noise", "level": 0.0, "seed": 0}


def test_ravdess_flac_clips(shared_data, tmp_path):
    rows = small_copy(shared_data, tmp_path, "ravdess", per_split=1)
    ds = load_dataset("ravdess", root=tmp_path, text="none", normalize=(), workers=2)  # extracted in 2 processes
    for s, sp in ds.splits.items():
        r = next(r for r in rows if r["mode"] == s)
        assert sp.ids == [f"{r['video_id']}$_${r['clip_id']}"] and ds.class_names[sp.labels[0]] == r["emotion"]
        assert abs(int(sp.masks["audio"][0].sum()) - 100 * float(r["duration_s"])) <= 6


# ---- errors ---------------------------------------------------------------------------------------
def test_missing_data_names_the_file_and_the_data_root(shared_data, tmp_path):
    with pytest.raises(DataError, match=r"needs emodb/labels.csv; not found .* --data-root"):
        load_dataset("emodb", root=tmp_path)
    rows = small_copy(shared_data, tmp_path, "emodb", per_split=1)
    lines = (tmp_path / "emodb" / "labels.csv").read_text(encoding="utf-8").replace(rows[1]["file"], "wav/gone.wav")
    (tmp_path / "emodb" / "labels.csv").write_text(lines, encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3: audio file .*wav/gone.wav not found.*--data-root"):
        load_dataset("emodb", root=tmp_path)


@pytest.mark.parametrize(
    "dataset,override,expected",
    [
        (
            "emodb",
            "dataset.audio=bogus",
            "dataset 'emodb': audio='bogus'; expected one of compare, compare_functionals",
        ),
        ("ravdess", "dataset.text=de", "dataset 'ravdess': text='de'; expected one of en, none"),
        ("emodb", "dataset.max_frames=0", "max_frames=0; expected a positive number of frames"),
        ("emodb", "dataset.perturb.kind=hiss", "perturb.kind is 'hiss'; expected one of noise, clip, band, drop"),
        ("ravdess", "dataset.speed=2", "dataset 'ravdess' has no option(s) ['speed']"),
    ],
)
def test_bad_options_exit_2_with_one_line_naming_them(dataset, override, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data is needed to refuse an option
    argv = ["train", "--out", str(tmp_path / "runs"), "-m", "lf_dnn", "-d", dataset, "--no-progress", override]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert "Traceback" not in err and len(lines) == 1 and expected in lines[0], err
    assert not (tmp_path / "runs").exists()


# ---- robustness to waveform perturbations ----------------------------------------------------------
def test_waveform_robustness_re_extracts_the_test_clips(shared_data, tmp_path):
    """`sentangle robust`'s waveform conditions (recipes/robust.py) give what the same checkpoint
    predicts on the dataset loaded with that perturbation directly."""
    from sentangle.config import make_config
    from sentangle.evaluation.metrics import compute_metrics
    from sentangle.recipes.robust import robust
    from sentangle.runs.checkpoint import load_checkpoint
    from sentangle.runs.runner import run
    from sentangle.training.trainer import predict

    small_copy(shared_data, tmp_path, "emodb", per_split=4)
    data = {"name": "emodb", "text": "none"}
    over = ["train.epochs=2", "train.progress=false", "model.hidden=16", "model.fusion_hidden=16"]
    cfg = make_config("lf_dnn", data, seeds=1, out=str(tmp_path / "runs"), data_root=str(tmp_path), overrides=over)
    run(cfg)
    folder = tmp_path / "runs" / "lf_dnn-emodb"
    waves = [{"kind": "noise", "level": 0}, {"kind": "clip", "level": 0.05}]
    res = robust([folder], noise_levels=(), drop_rates=(), data_root=str(tmp_path), plots=False, waveform=waves)
    conds = {c["name"]: c for c in res["results"]["lf_dnn-emodb"]["conditions"]}
    assert {"clean", "wave:noise@0", "wave:clip@0.05"} <= set(conds)
    model, _, _ = load_checkpoint(folder / "seed_1111" / "checkpoint.pt")
    for name, spec in (("wave:noise@0", waves[0]), ("wave:clip@0.05", waves[1])):
        ds = load_dataset("emodb", root=tmp_path, text="none", perturb={**spec, "seed": 0})
        pred, label, _ = predict(model, ds, "test")
        expected = compute_metrics(ds.task, pred, label, ds.num_classes)
        assert conds[name]["per_seed"]["1111"] == pytest.approx(expected)
    # features of 0 dB noise are not the clean ones: the condition changed what the model read
    clean = load_dataset("emodb", root=tmp_path, text="none").splits["test"].features["audio"]
    noisy = load_dataset("emodb", root=tmp_path, text="none", perturb={**waves[0], "seed": 0})
    assert not np.allclose(clean, noisy.splits["test"].features["audio"])
    # the same through the command line; a level that is not a number is refused with exit 2
    argv = [
        "robust",
        str(folder),
        "--noise-levels",
        "0",
        "--drop-rates",
        "0",
        "--no-plots",
        "--data-root",
        str(tmp_path),
    ]
    assert cli.main([*argv, "--waveform", "drop=0.5"]) == 0
    names = [c["name"] for c in json.loads((folder / "robust.json").read_text())["conditions"]]
    assert "wave:drop@0.5" in names
    assert cli.main([*argv, "--waveform", "noise=loud"]) == 2
    # a dataset not read from audio has no waveform to change
    syn = make_config(
        "lf_dnn", "synthetic", seeds=1, out=str(tmp_path / "runs"), overrides=over + ["dataset.scale=0.02"]
    )
    run(syn)
    with pytest.raises(ConfigError, match="dataset 'synthetic' is not read from audio"):
        robust([tmp_path / "runs" / "lf_dnn-synthetic"], noise_levels=(), drop_rates=(), plots=False, waveform=waves)
