"""Emotional-speech corpora (EmoDB, RAVDESS): a labels.csv beside the audio files, features
extracted from the audio through data/extract.py's per-clip cache (the first load extracts, later
loads read the cache).

labels.csv is MMSA-style: video_id (the speaker), clip_id, label (the emotion), mode (a fixed
speaker-independent split), `file` (the clip's audio, relative to the csv's folder) and the text
columns. Ids are "video_id$_$clip_id", so the speaker of a sample is the id's prefix
(data.dataset.sample_groups); info["groups"] says so and counts the speakers per split.

Classes are each corpus's emotions in sorted order, fixed (a subset of the file keeps the same
indices), and the order `sentangle extract` gives the same csv.

The sentences are emotion-neutral by design (the same few sentences under every emotion), so the
text is a control: a model that does better with it than without has learnt something spurious.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentangle.core.errors import ConfigError, DataError
from sentangle.data.dataset import SPLITS, MSADataset, Split, group_of
from sentangle.data.extract import Job, clip_arrays, extraction_info, run_jobs
from sentangle.data.extractors.audio import audio_extractor, audio_extractors
from sentangle.data.readers.labelcsv import MODE_ALIASES, label_rows
from sentangle.data.text import default_cache_dir, text_order
from sentangle.data.waveform import perturbation

FPS = 5.0  # vision frame rate of a Job; nothing here reads video


@dataclass(frozen=True)
class Corpus:
    folder: str
    classes: tuple[str, ...]
    texts: dict[str, str]  # text option -> column
    speaker: str  # what video_id is


CORPORA = {
    "emodb": Corpus(
        "emodb",
        ("anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness"),
        {"en": "text_en", "de": "text_de"},
        "speaker",
    ),
    "ravdess": Corpus(
        "ravdess",
        ("angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"),
        {"en": "text"},
        "actor",
    ),
}


def check_options(name: str, audio, text, max_frames, workers, perturb) -> dict | None:
    """ConfigError naming the option of corpus `name` that cannot be used; the checked
    perturbation (waveform.perturbation) otherwise."""
    where, corpus = f"dataset {name!r}", CORPORA[name]
    audio_names = [*audio_extractors(), "none"]
    if audio not in audio_names:
        raise ConfigError(f"{where}: audio={audio!r}; expected one of {', '.join(audio_names)}")
    text_names = [*corpus.texts, "none"]
    if text not in text_names:
        raise ConfigError(f"{where}: text={text!r}; expected one of {', '.join(text_names)}")
    if audio == "none" and text == "none":
        raise ConfigError(f"{where}: audio and text are both 'none'; expected at least one modality")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise ConfigError(f"{where}: max_frames={max_frames!r}; expected a positive number of frames, or none")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"{where}: workers={workers!r}; expected a positive number of processes")
    spec = perturbation(perturb, f"{where}: perturb")
    if spec is not None and audio == "none":
        raise ConfigError(f"{where}: perturb changes the audio, but audio is 'none'")
    return spec


def read_speech(
    path: str | Path,
    name: str,
    audio: str = "egemaps",
    text: str = "en",
    max_frames: int | None = None,
    workers: int = 1,
    perturb: dict | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> MSADataset:
    """The corpus `name` (a key of CORPORA) from its labels.csv `path`: audio features by the
    registered extractor `audio` ("none": text only), texts of the column `text` names ("none":
    audio only), on the csv's fixed split. `perturb` (waveform.perturbation) changes the test
    clips' audio before extraction; train and valid stay clean."""
    corpus, path = CORPORA[name], Path(path)
    spec = check_options(name, audio, text, max_frames, workers, perturb)
    if audio != "none":
        audio_extractor(audio)  # a missing package fails here, before any clip
    folder = path.parent
    column = corpus.texts.get(text)
    required = ["video_id", "clip_id", "label", "mode", "file", *([column] if column else [])]
    expected = f"the {name} labels.csv with columns {required}"
    rows: list[dict[str, Any]] = []
    for line, row, sid in label_rows(path, required, expected):
        label, mode = row["label"].strip(), MODE_ALIASES.get(row["mode"].strip().lower())
        if label not in corpus.classes:
            raise DataError(f"{path}: line {line}: label {label!r}; expected one of {list(corpus.classes)}")
        if mode is None:
            raise DataError(f"{path}: line {line}: mode {row['mode']!r}; expected one of {sorted(MODE_ALIASES)}")
        file = folder / row["file"].strip()
        if audio != "none" and not file.is_file():
            raise DataError(
                f"{path}: line {line}: audio file {file} not found; expected the {name} audio beside labels.csv "
                "(point --data-root, or $SENTANGLE_DATA_ROOT, at the folder that holds it)"
            )
        rows.append(
            {
                "id": sid,
                "file": file,
                "label": corpus.classes.index(label),
                "split": mode,
                "text": row[column] if column else None,
            }
        )
    if not rows:
        raise DataError(f"{path}: no data rows; expected one row per utterance")

    features: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    masks: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    info: dict[str, Any] = {}
    order = [r["split"] for r in rows]
    if audio != "none":
        cache = str(Path(cache_dir) if cache_dir is not None else default_cache_dir() / "extract")
        jobs = [
            Job(i, str(r["file"]), None, None, audio, None, FPS, cache, perturb=spec if r["split"] == "test" else None)
            for i, r in enumerate(rows)
        ]
        results, failures = run_jobs(jobs, workers, progress, folder)
        if failures:
            first = "; ".join(f"{rows[i]['id']}: {why}" for i, why in sorted(failures.items())[:3])
            raise DataError(f"{path}: {len(failures)} of {len(rows)} clips could not be extracted (first: {first})")
        entries: dict[str, dict] = {}
        for s in SPLITS:
            index = [i for i, split in enumerate(order) if split == s]
            if index:
                features[s], masks[s], entries = clip_arrays(results, index, max_frames)
        info.update(extraction_info(entries, max_frames))
        del info["feature_names"]  # 6,373 of them for ComParE functionals: too many for every run folder
        info.update(extracted_by=f"dataset {name}", perturb=spec, perturbed_splits=["test"] if spec else [])
    splits = {}
    for s in SPLITS:
        index = [i for i, split in enumerate(order) if split == s]
        if index:
            splits[s] = Split(
                features[s],
                masks[s],
                np.array([rows[i]["label"] for i in index], np.int64),
                [rows[i]["id"] for i in index],
                None if column is None else [rows[i]["text"] for i in index],
            )
    info["groups"] = {
        "by": corpus.speaker,
        "from": "the sample id before '$_$' (video_id); sentangle.data.dataset.sample_groups(ds, split)",
        "count": {s: len({group_of(i) for i in sp.ids}) for s, sp in splits.items()},
    }
    info.update(audio=audio, text=text, rows={s: len(sp) for s, sp in splits.items()})
    return MSADataset(
        name,
        splits,
        task="classification",
        class_names=list(corpus.classes),
        label_range=None,
        source=str(path),
        text_order=text_order(order) if column else None,
        info=info,
    )
